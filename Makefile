# Build with PGXS:  make && make install
# Warnings are errors: the code must stay clean under -Wall -Wextra -Werror.

EXTENSION = line_status
EXTVERSION = $(shell sed -n "s/^default_version = '\(.*\)'/\1/p" line_status.control)

MODULE_big = line_status
OBJS = src/line_status.o src/settings.o src/phone.o src/http.o src/twilio.o src/cache.o src/bulk.o src/trigger.o src/worker.o

DATA = $(wildcard sql/line_status--*.sql)

REGRESS = core input errors privileges tls cache bulk upgrade trigger

CURL_CONFIG ?= curl-config
CURL_VERNUM := $(shell $(CURL_CONFIG) --vernum 2>/dev/null)
ifeq ($(CURL_VERNUM),)
$(error libcurl development files not found: install libcurl4-openssl-dev (curl-config is missing))
endif
# curl_multi_poll() needs libcurl 7.66.0 (0x074200).
ifeq ($(shell [ $$((0x$(CURL_VERNUM))) -ge $$((0x074200)) ] && echo ok),)
$(error libcurl $(shell $(CURL_CONFIG) --version) is too old: line_status needs 7.66.0 or later)
endif

PG_CPPFLAGS = -DLINE_STATUS_VERSION=\"$(EXTVERSION)\" $(shell $(CURL_CONFIG) --cflags)
# PostgreSQL's own headers (and every callback signature) have unused
# parameters, so that one -Wextra warning is off.
PG_CFLAGS = -Wall -Wextra -Werror -Wno-unused-parameter
SHLIB_LINK = $(shell $(CURL_CONFIG) --libs)

PG_CONFIG ?= pg_config
PGXS := $(shell $(PG_CONFIG) --pgxs)
include $(PGXS)

# The version is compiled in (User-Agent), and every object uses the headers.
# (After the include, so that PGXS's "all" stays the default goal.)
$(OBJS): line_status.control $(wildcard src/*.h)
