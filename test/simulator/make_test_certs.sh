#!/bin/sh
# Create throw-away TLS certificates and JWT signing keys for the simulator's
# HTTPS and OAuth tests, with the openssl command-line tool.
#
#   test/simulator/make_test_certs.sh DIR
#
# Writes into DIR (created if needed):
#   ca.pem, ca.key                  a test CA
#   server.pem, server.key          server certificate for 127.0.0.1 and localhost,
#                                   signed by the CA (subjectAltName IP:127.0.0.1, DNS:localhost)
#   selfsigned.pem, selfsigned.key  a self-signed certificate for the same names, not from the CA
#   jwt_private.pem                 RSA 2048 private key, PKCS#8  (BEGIN PRIVATE KEY)
#   jwt_private_pkcs1.pem           the same key, PKCS#1          (BEGIN RSA PRIVATE KEY)
#   jwt_public.pem                  its public key, SPKI          (BEGIN PUBLIC KEY)
#   jwt_public_pkcs1.pem            its public key, PKCS#1        (BEGIN RSA PUBLIC KEY)
#   jwt_other_private.pem           an unrelated RSA 2048 key, PKCS#8 (the "wrong key")
#   jwt_other_public.pem            its public key, SPKI
#
# Idempotent: when every file is already there and server.pem still verifies
# against ca.pem for at least a day, nothing is touched. Otherwise the whole set
# is generated again (in a temporary directory, then moved into place).
# Quiet on success; on failure prints openssl's messages and exits non-zero.
# Never commit these files: generate them at test time into a temporary directory.

set -eu

if [ $# -ne 1 ] || [ -z "$1" ]; then
	echo "usage: $0 DIR" >&2
	exit 2
fi
dir=$1
command -v openssl >/dev/null 2>&1 || {
	echo "$0: the openssl command-line tool is needed (Debian/Ubuntu package: openssl)" >&2
	exit 1
}

files="ca.pem ca.key server.pem server.key selfsigned.pem selfsigned.key
jwt_private.pem jwt_private_pkcs1.pem jwt_public.pem jwt_public_pkcs1.pem
jwt_other_private.pem jwt_other_public.pem"

mkdir -p "$dir"
dir=$(cd "$dir" && pwd)

complete=yes
for f in $files; do
	[ -s "$dir/$f" ] || complete=no
done
if [ $complete = yes ] &&
	openssl verify -CAfile "$dir/ca.pem" "$dir/server.pem" >/dev/null 2>&1 &&
	openssl x509 -checkend 86400 -noout -in "$dir/server.pem" >/dev/null 2>&1; then
	exit 0
fi

tmp=$(mktemp -d "$dir/.make_test_certs.XXXXXX")
log=$tmp/openssl.log
trap 'rm -rf "$tmp"' EXIT
trap 'exit 1' HUP INT TERM

run() {
	if ! "$@" >"$log" 2>&1; then
		echo "$0: failed: $*" >&2
		cat "$log" >&2
		exit 1
	fi
}

# Our own config, so nothing depends on the system openssl.cnf.
cat >"$tmp/openssl.cnf" <<'EOF'
[ req ]
distinguished_name = dn
prompt = no
[ dn ]
CN = unused
[ ca_ext ]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
[ server_ext ]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = IP:127.0.0.1, DNS:localhost
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
EOF
cnf=$tmp/openssl.cnf

umask 077
# (set -e does not apply inside "( ... ) ||", so every step checks itself.)
(
	cd "$tmp" || exit 1
	run openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out ca.key
	run openssl req -config "$cnf" -new -x509 -key ca.key -out ca.pem -days 3650 \
		-subj "/CN=maestro simulator test CA" -extensions ca_ext -sha256

	run openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out server.key
	run openssl req -config "$cnf" -new -key server.key -out server.csr \
		-subj "/CN=localhost"
	run openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key \
		-set_serial "0x$(openssl rand -hex 16)" -days 825 -sha256 \
		-extfile "$cnf" -extensions server_ext -out server.pem

	run openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out selfsigned.key
	run openssl req -config "$cnf" -new -x509 -key selfsigned.key -out selfsigned.pem \
		-days 825 -subj "/CN=localhost" -extensions server_ext -sha256

	run openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out jwt_private.pem
	# OpenSSL 3 writes PKCS#8 unless told -traditional; 1.1.1 writes PKCS#1 by default.
	if ! openssl rsa -in jwt_private.pem -traditional -out jwt_private_pkcs1.pem >>"$log" 2>&1; then
		run openssl rsa -in jwt_private.pem -out jwt_private_pkcs1.pem
	fi
	run openssl pkey -in jwt_private.pem -pubout -out jwt_public.pem
	run openssl rsa -in jwt_private.pem -RSAPublicKey_out -out jwt_public_pkcs1.pem

	run openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out jwt_other_private.pem
	run openssl pkey -in jwt_other_private.pem -pubout -out jwt_other_public.pem

	run openssl verify -CAfile ca.pem server.pem
	grep -q "BEGIN PRIVATE KEY" jwt_private.pem || { echo "$0: jwt_private.pem is not PKCS#8" >&2; exit 1; }
	grep -q "BEGIN RSA PRIVATE KEY" jwt_private_pkcs1.pem || { echo "$0: jwt_private_pkcs1.pem is not PKCS#1" >&2; exit 1; }
	grep -q "BEGIN RSA PUBLIC KEY" jwt_public_pkcs1.pem || { echo "$0: jwt_public_pkcs1.pem is not PKCS#1" >&2; exit 1; }
	# Certificates and public keys are not secret; private keys stay 0600.
	run chmod 644 ca.pem server.pem selfsigned.pem jwt_public.pem jwt_public_pkcs1.pem \
		jwt_other_public.pem
) || exit 1

for f in $files; do
	mv -f "$tmp/$f" "$dir/$f" || exit 1
done
exit 0
