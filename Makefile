# Makefile for the maestro extension (PGXS)

MODULE_big = maestro
OBJS = \
	src/maestro.o \
	src/options.o \
	src/auth.o \
	src/http.o \
	src/errors.o \
	src/json.o \
	src/api.o \
	src/convert.o \
	src/parse.o \
	src/functions.o \
	src/queue.o \
	src/stats.o \
	src/worker.o

EXTENSION = maestro
DATA = maestro--0.1.sql
PGFILEDESC = "maestro - DocuSign Maestro workflows from SQL"

REGRESS = setup config privileges workflows trigger instances actions errors interrupts bad_input queue auth sync stats
REGRESS_OPTS = --load-extension=maestro

PG_CPPFLAGS = -I$(srcdir)/src
# -Wno-unused-parameter: PostgreSQL's own headers trip it under -Wextra
PG_CFLAGS = -Wall -Wextra -Wno-unused-parameter
SHLIB_LINK = -lcurl -lcjson -lssl -lcrypto

PG_CONFIG ?= pg_config
PGXS := $(shell $(PG_CONFIG) --pgxs)
include $(PGXS)

# every object depends on the private header (PGXS does not track it)
$(OBJS): src/maestro.h

# parse.c is shared by the extension and the fuzzer
src/parse.o src/convert.o src/errors.o: src/parse.h

# Fuzzing (test/fuzz/README.md): libFuzzer over src/parse.c, no server needed.
# "make fuzz" builds the target; "make fuzz-run FUZZ_SECONDS=600" runs it on a
# copy of test/fuzz/corpus and fails on any crash, leak or undefined behaviour.
FUZZ_CC ?= clang
FUZZ_SECONDS ?= 300
FUZZ_CFLAGS ?= -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all

test/fuzz/fuzz_parsers: test/fuzz/fuzz_parsers.c src/parse.c src/parse.h
	$(FUZZ_CC) $(FUZZ_CFLAGS) -I src -o $@ test/fuzz/fuzz_parsers.c src/parse.c -lcjson

.PHONY: fuzz fuzz-run fuzz-clean
fuzz: test/fuzz/fuzz_parsers

fuzz-run: fuzz
	FUZZ_SECONDS=$(FUZZ_SECONDS) bash test/fuzz/run.sh

fuzz-clean:
	rm -f test/fuzz/fuzz_parsers
