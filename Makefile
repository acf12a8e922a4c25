# pigato-c - hand-written Makefile (Redis style).
#   make            library + programs
#   make test       dependencies, include and format checks, build, every test
#   make check-includes   the include graph keeps the layers (no circles)
#   make format     clang-format every C file (make format-check: only check)
#   make demo       dependencies, build, a broker + worker + client session
#   make install PREFIX=/usr/local DESTDIR=   (LIBDIR=, e.g. /usr/lib/x86_64-linux-gnu)
#   make uninstall  (the same variables): removes what install put there
#   make deb        Debian packages into BUILD/deb (packaging/deb.sh)
#   SANITIZE=address,undefined make test

PREFIX  ?= /usr/local
DESTDIR ?=
LIBDIR  ?= $(PREFIX)/lib
INCLUDEDIR ?= $(PREFIX)/include
BINDIR  ?= $(PREFIX)/bin
MANDIR  ?= $(PREFIX)/share/man
VERSION := 0.1.0
# Sanitized builds go to their own folder: make cannot tell flags changed
BUILD   ?= build$(if $(SANITIZE),-sanitize)
CC      ?= cc

PKGS    := libzmq libczmq libsodium jansson libssl libcrypto libmicrohttpd sqlite3
PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS   := $(shell pkg-config --libs $(PKGS) 2>/dev/null)

OPT     ?= -O2
CFLAGS  += -std=c11 -Wall -Wextra -Werror -g $(OPT) -fPIC -fvisibility=hidden \
           -D_GNU_SOURCE -Iinclude $(PKG_CFLAGS)
LDLIBS  += $(PKG_LIBS) -lpthread -lm
ifneq ($(SANITIZE),)
CFLAGS  += -fsanitize=$(SANITIZE) -fno-omit-frame-pointer -fno-sanitize-recover=all
LDFLAGS += -fsanitize=$(SANITIZE)
endif

LIB_SRCS := mesh/base/status.c mesh/base/log.c mesh/base/util.c mesh/base/heap.c \
            mesh/base/table.c mesh/base/bkey.c mesh/base/conns.c mesh/base/tcp.c \
            mesh/wire/codec.c mesh/wire/mdp.c mesh/wire/native.c \
            keys/keyfile.c keys/key.c auth/acl.c auth/zap.c auth/guard.c \
            certs/ca.c \
            mesh/library/peer.c mesh/library/link.c mesh/library/link_budget.c \
            mesh/library/client.c \
            mesh/library/worker.c mesh/library/settings.c \
            mesh/library/titanic.c \
            mesh/broker/service.c mesh/broker/semver.c mesh/broker/cache.c \
            mesh/broker/request.c mesh/broker/alias.c mesh/broker/core.c \
            mesh/broker/core_internal.c mesh/broker/core_quota.c \
            mesh/broker/core_drain.c mesh/broker/drain.c \
            mesh/broker/outbox.c mesh/broker/budget.c mesh/broker/send.c \
            mesh/broker/front_pigato.c \
            mesh/broker/front_mdp.c mesh/broker/reload.c mesh/broker/expiry.c \
            mesh/broker/stats.c mesh/broker/metrics.c mesh/broker/metrics_http.c \
            mesh/broker/connlog.c mesh/broker/store.c mesh/broker/store_format.c \
            mesh/broker/store_vfs.c \
            mesh/broker/titanic.c \
            mesh/broker/titanic_run.c mesh/broker/titanic_service.c \
            mesh/broker/broker.c
LIB_OBJS := $(LIB_SRCS:%.c=$(BUILD)/%.o)
HEADERS  := $(wildcard include/*.h mesh/*/*.h keys/*.h auth/*.h certs/*.h)

PROGRAMS := $(BUILD)/pigato-broker $(BUILD)/pigato $(BUILD)/pigato-keygen
UNIT_TESTS := $(patsubst tests/unit/%.c,$(BUILD)/tests/%,$(wildcard tests/unit/test_*.c))

SOVERSION := 0
LIB_A  := $(BUILD)/libpigato.a
LIB_SO := $(BUILD)/libpigato.so.$(SOVERSION)

.PHONY: all deps test demo install uninstall deb clean format format-check bench bench-instructions \
        bench-titanic soak soak-hostile check-deps check-includes
all: $(LIB_A) $(LIB_SO) $(PROGRAMS) $(BUILD)/libpigato.pc

deps:
	@scripts/deps.sh

$(BUILD)/%.o: %.c $(HEADERS)
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(CFLAGS) -c $< -o $@

$(LIB_A): $(LIB_OBJS)
	@rm -f $@
	ar rcs $@ $^

$(LIB_SO): $(LIB_OBJS)
	$(CC) -shared -Wl,-soname,libpigato.so.$(SOVERSION) $(LDFLAGS) -o $@ $^ $(LDLIBS)
	ln -sf libpigato.so.$(SOVERSION) $(BUILD)/libpigato.so

# pigato-broker speaks systemd's sd_notify through libsystemd when its
# pkg-config file is there (Debian: libsystemd-dev); SYSTEMD=0 builds
# without it (the notifications are then no-ops). Only the daemon links it.
SYSTEMD ?= $(shell pkg-config --exists libsystemd 2>/dev/null && echo 1 || echo 0)
ifeq ($(SYSTEMD),1)
SYSTEMD_LIBS := $(shell pkg-config --libs libsystemd)
endif
$(BUILD)/mesh/programs/notify.o: CFLAGS += -DPIGATO_WITH_SYSTEMD=$(SYSTEMD)
$(BUILD)/pigato-broker: $(BUILD)/mesh/programs/broker_main.o \
                        $(BUILD)/mesh/programs/config.o \
                        $(BUILD)/mesh/programs/notify.o $(LIB_A)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS) $(SYSTEMD_LIBS)

$(BUILD)/pigato-keygen: $(BUILD)/mesh/programs/keygen_main.o $(LIB_A)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

BENCH_PROGRAMS := $(BUILD)/pigato-bench $(BUILD)/pigato-relay $(BUILD)/nats-bench \
                  $(BUILD)/pigato-conns $(BUILD)/pigato-floor $(BUILD)/pigato-steady \
                  $(BUILD)/titanic-bench $(BUILD)/jetstream-bench
$(BUILD)/bench/pigato_bench.o $(BUILD)/bench/nats_bench.o $(BUILD)/bench/conns.o \
$(BUILD)/bench/floor.o $(BUILD)/bench/steady.o: bench/proc.h bench/signals.h
$(BUILD)/bench/nats_bench.o $(BUILD)/bench/jetstream_bench.o: bench/nats_conn.h bench/proc.h
$(BUILD)/bench/titanic_bench.o: bench/proc.h

$(BUILD)/jetstream-bench: $(BUILD)/bench/jetstream_bench.o
	$(CC) $(LDFLAGS) -o $@ $^ $(shell pkg-config --libs openssl)

$(BUILD)/titanic-bench: $(BUILD)/bench/titanic_bench.o $(LIB_A)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)
$(BUILD)/pigato-conns: $(BUILD)/bench/conns.o
	$(CC) $(LDFLAGS) -o $@ $^ $(shell pkg-config --libs libzmq)

$(BUILD)/nats-bench: $(BUILD)/bench/nats_bench.o
	$(CC) $(LDFLAGS) -o $@ $^ $(shell pkg-config --libs openssl)

$(BUILD)/pigato-bench: $(BUILD)/bench/pigato_bench.o $(LIB_A)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/pigato-relay: $(BUILD)/bench/relay.o $(LIB_A)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/pigato-floor: $(BUILD)/bench/floor.o $(LIB_A)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/pigato-steady: $(BUILD)/bench/steady.o $(LIB_A)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/pigato: $(BUILD)/mesh/programs/cli_main.o $(BUILD)/mesh/programs/cli_serve.o \
                $(BUILD)/mesh/programs/cli_stats.o $(BUILD)/mesh/programs/cli_titanic.o \
                $(BUILD)/mesh/programs/cli.o $(LIB_A)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/tests/%: tests/unit/%.c $(LIB_A)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -o $@ $< $(LIB_A) $(LDFLAGS) $(LDLIBS) -lcmocka -lpthread

# The header includes only standard headers: the .pc names no package in
# Requires (pkg-config would then want their -dev packages and put their
# include paths into --cflags); their libraries are for static linking
PC_SED := sed -e 's|@PREFIX@|$(PREFIX)|g' -e 's|@LIBDIR@|$(LIBDIR)|g' \
              -e 's|@INCLUDEDIR@|$(INCLUDEDIR)|g' -e 's|@VERSION@|$(VERSION)|g'
$(BUILD)/libpigato.pc: libpigato.pc.in Makefile
	@mkdir -p $(BUILD)
	$(PC_SED) $< > $@

# Quoted includes between mesh/, auth/, keys/, certs/ and include/: no
# circle between files or folders, no lower layer including a higher one
# (the layers are listed in the script)
PYTHON ?= python3
check-includes:
	@$(PYTHON) scripts/check-includes.py || { echo "make: check-includes" \
	    "failed: the includes above break the layering; fix them before" \
	    "testing" >&2; exit 1; }

test: deps
	@$(MAKE) --no-print-directory check-includes
	@$(MAKE) --no-print-directory format-check
	@$(MAKE) --no-print-directory all $(UNIT_TESTS)
	@tests/run.sh $(BUILD)

demo: deps
	@$(MAKE) --no-print-directory all
	@scripts/demo.sh $(BUILD)

bench: deps
	@$(MAKE) --no-print-directory all $(BENCH_PROGRAMS)
	@bench/run.sh $(BUILD)

# Instructions per request in broker, worker and client (callgrind): a
# figure that does not drift with the machine's load, for A/B of builds
bench-instructions: deps
	@$(MAKE) --no-print-directory all $(BENCH_PROGRAMS)
	@bench/instructions.sh $(BUILD)

# Durable requests (--store) against NATS JetStream, interleaved rounds
# (bench/titanic.sh says what is measured; ROUNDS=3)
ROUNDS ?= 3
bench-titanic: deps
	@$(MAKE) --no-print-directory all $(BENCH_PROGRAMS)
	@bench/titanic.sh $(BUILD) $(ROUNDS)

# A broker under steady load and connection churn, RSS sampled every 10 s
# (default 600 s; make soak DURATION=60 for a short run)
DURATION ?= 600
soak: deps
	@$(MAKE) --no-print-directory all $(BENCH_PROGRAMS)
	@bench/soak.sh $(BUILD) $(DURATION)

# Victims at a steady rate while attackers flood the broker, one technique
# per phase of PHASE seconds (make soak-hostile PHASE=5 for a short run);
# bench/soak_hostile.py says what is measured and its other knobs
PHASE ?= 10
soak-hostile: deps
	@$(MAKE) --no-print-directory all $(BENCH_PROGRAMS)
	@SOAK_PHASE=$(PHASE) /usr/bin/python3 bench/soak_hostile.py $(BUILD)

MAN_PAGES := $(notdir $(wildcard docs/*.1))
install: all
	install -d $(DESTDIR)$(LIBDIR) $(DESTDIR)$(INCLUDEDIR) \
	    $(DESTDIR)$(BINDIR) $(DESTDIR)$(LIBDIR)/pkgconfig \
	    $(DESTDIR)$(MANDIR)/man1
	install -m 0644 include/pigato.h $(DESTDIR)$(INCLUDEDIR)/
	install -m 0644 $(LIB_A) $(DESTDIR)$(LIBDIR)/
	install -m 0644 $(LIB_SO) $(DESTDIR)$(LIBDIR)/
	ln -sf libpigato.so.$(SOVERSION) $(DESTDIR)$(LIBDIR)/libpigato.so
	$(PC_SED) libpigato.pc.in > $(DESTDIR)$(LIBDIR)/pkgconfig/libpigato.pc
	install -m 0755 $(PROGRAMS) $(DESTDIR)$(BINDIR)/
	install -m 0644 $(addprefix docs/,$(MAN_PAGES)) $(DESTDIR)$(MANDIR)/man1/

# Exactly the files install wrote, none of the folders (they may hold
# other things)
uninstall:
	rm -f $(DESTDIR)$(INCLUDEDIR)/pigato.h \
	    $(DESTDIR)$(LIBDIR)/libpigato.a \
	    $(DESTDIR)$(LIBDIR)/libpigato.so.$(SOVERSION) \
	    $(DESTDIR)$(LIBDIR)/libpigato.so \
	    $(DESTDIR)$(LIBDIR)/pkgconfig/libpigato.pc \
	    $(addprefix $(DESTDIR)$(BINDIR)/,$(notdir $(PROGRAMS))) \
	    $(addprefix $(DESTDIR)$(MANDIR)/man1/,$(MAN_PAGES))

# Debian packages (pigato-broker, pigato-tools, libpigato0, libpigato-dev)
# from a copy of the tree, with debhelper; lintian runs on them
deb:
	@packaging/deb.sh $(BUILD)/deb

# Every C file we own (.clang-format, include/.clang-format). CI runs
# make test, which runs format-check first: an unformatted file fails it.
FORMAT_FILES := $(wildcard include/*.h mesh/*/*.[ch] keys/*.[ch] auth/*.[ch] \
                  certs/*.[ch] tests/unit/*.[ch] bench/*.[ch] tests/node/*.c \
                  tests/integration/*.c)
CLANG_FORMAT ?= clang-format

format:
	$(CLANG_FORMAT) -i $(FORMAT_FILES)

format-check:
	@$(CLANG_FORMAT) --dry-run --Werror --ferror-limit=1 $(FORMAT_FILES) || { \
	    echo "format-check: the files above are not clang-formatted (first spot shown); run 'make format' and commit the result" >&2; \
	    exit 1; }

clean:
	rm -rf $(BUILD)
