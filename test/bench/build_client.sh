#!/usr/bin/env bash
# test/bench/build_client.sh DEST: builds bench_client.c, the limit of the
# side-by-side benchmarks (libcurl + cJSON), into DEST. Its User-Agent
# carries the version in maestro.control, so that it sends maestro's
# request byte for byte. Used by lib.sh and trigger_queue.sh.
set -eu
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
version=$(sed -n "s/^default_version *= *'\(.*\)'/\1/p" "$here/../../maestro.control")
exec cc -O2 -I "$here/../../src" -o "$1" "$here/bench_client.c" \
	-DMAESTRO_VERSION="\"$version\"" "$here/../../src/parse.c" -lcurl -lcjson
