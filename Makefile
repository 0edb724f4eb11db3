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
