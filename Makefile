# torrentd — one non-recursive Makefile.
#
# Objects live in build/<variant>/ so that flag sets never mix:
#   default  the optimised binaries that `make`, `make run`, `make install`
#            and `make bench` use
#   asan     AddressSanitizer + UBSan: unit tests, corpus replay and the
#            binaries the integration tests run (`make check`)
#   tsan     ThreadSanitizer: unit tests and the integration tests marked
#            tsan (`make check-tsan`, also part of `make check`)
#   fuzz     clang + libFuzzer targets (`make fuzz`)
#
# CFLAGS, CPPFLAGS and LDFLAGS belong to the user; the project's flags live
# in TD_CFLAGS and come last.  V=1 shows the commands.  CI=true or
# DEVELOPER=1 turns warnings into errors.

PREFIX     ?= /usr/local
BINDIR     ?= $(PREFIX)/bin
SBINDIR    ?= $(PREFIX)/bin
MANDIR     ?= $(PREFIX)/share/man
DATADIR    ?= $(PREFIX)/share
SYSCONFDIR ?= /etc
LIBDIR     ?= $(PREFIX)/lib
UNITDIR    ?= $(LIBDIR)/systemd/system
DESTDIR    ?=

CC         ?= cc
FUZZ_CC    ?= clang
PKG_CONFIG ?= pkg-config
PYTHON     ?= /usr/bin/python3
CFLAGS     ?= -O2 -g
FUZZ_SECONDS ?= 60

VERSION := $(shell cat VERSION 2>/dev/null || echo 0.0.0)

ifeq ($(V),1)
Q :=
else
Q := @
endif

ifneq ($(filter true 1,$(CI) $(DEVELOPER)),)
WERROR := -Werror
endif

PKGS := json-c libsystemd libcrypto libcurl
PKG_CFLAGS = $(shell $(PKG_CONFIG) --cflags $(PKGS) 2>/dev/null)
PKG_LIBS   = $(shell $(PKG_CONFIG) --libs $(PKGS) 2>/dev/null) -lev
CMOCKA_LIBS = $(shell $(PKG_CONFIG) --libs cmocka 2>/dev/null || echo -lcmocka)

TD_WARN := -Wall -Wextra -Wshadow -Wstrict-prototypes -Wmissing-prototypes \
	-Wpointer-arith -Wcast-qual -Wformat=2 -Wvla -Wwrite-strings -Wundef \
	-fno-common
TD_CFLAGS = -std=gnu11 -D_GNU_SOURCE -pthread -I. \
	-DTD_VERSION='"$(VERSION)"' $(TD_WARN) $(WERROR) -MMD -MP \
	$(PKG_CFLAGS)
TD_LIBS = $(PKG_LIBS) -pthread -lm

SAN_ASAN := -fsanitize=address,undefined -fno-sanitize-recover=all \
	-fno-omit-frame-pointer
SAN_TSAN := -fsanitize=thread -fno-omit-frame-pointer

VFLAGS_default :=
VFLAGS_asan    := -O1 $(SAN_ASAN)
VFLAGS_tsan    := -O1 $(SAN_TSAN)
VFLAGS_fuzz    := -O1 -fsanitize=fuzzer-no-link,address,undefined \
	-fno-sanitize-recover=all -fno-omit-frame-pointer
VCC_default = $(CC)
VCC_asan    = $(CC)
VCC_tsan    = $(CC)
VCC_fuzz    = $(FUZZ_CC)

COMMON_SRCS := $(sort $(wildcard common/*.c))
DAEMON_SRCS := $(sort $(filter-out daemon/main.c,$(wildcard daemon/*.c)))
CTL_SRCS    := $(sort $(wildcard ctl/*.c))
UNIT_SRCS   := $(sort $(wildcard tests/unit/test_*.c))
FUZZ_SRCS   := $(sort $(wildcard tests/fuzz/fuzz_*.c))
UNIT_NAMES  := $(UNIT_SRCS:tests/unit/%.c=%)
FUZZ_NAMES  := $(FUZZ_SRCS:tests/fuzz/fuzz_%.c=%)
HAVE_DAEMON := $(wildcard daemon/main.c)

MANPAGES := $(sort $(wildcard man/*.[1-9]))

.PHONY: all run check check-unit check-corpus check-integration check-man \
	check-src check-tsan check-tsan-run fuzz bench install uninstall clean style deps

all: deps build/default/torrentctl $(if $(HAVE_DAEMON),build/default/torrentd)

deps:
	$(Q)scripts/deps build

# ---------------------------------------------------------------------------
# Per-variant rules.  $(1) is the variant name.
define VARIANT_RULES
build/$(1)/%.o: %.c
	@mkdir -p $$(@D)
	@$$(if $$(Q),echo "  CC [$(1)] $$<")
	$$(Q)$$(VCC_$(1)) $$(CPPFLAGS) $$(CFLAGS) $$(VFLAGS_$(1)) $$(TD_CFLAGS) -c $$< -o $$@

build/$(1)/libcommon.a: $(COMMON_SRCS:%.c=build/$(1)/%.o)
	@mkdir -p $$(@D)
	$$(Q)rm -f $$@ && ar rcs $$@ $$^

build/$(1)/libdaemon.a: $(DAEMON_SRCS:%.c=build/$(1)/%.o) build/$(1)/empty.o
	@mkdir -p $$(@D)
	$$(Q)rm -f $$@ && ar rcs $$@ $$^

build/$(1)/torrentctl: $(CTL_SRCS:%.c=build/$(1)/%.o) build/$(1)/libcommon.a
	@$$(if $$(Q),echo "  LD [$(1)] $$@")
	$$(Q)$$(VCC_$(1)) $$(CFLAGS) $$(VFLAGS_$(1)) $$(LDFLAGS) -o $$@ $$^ $$(TD_LIBS)

build/$(1)/torrentd: build/$(1)/daemon/main.o build/$(1)/libdaemon.a build/$(1)/libcommon.a
	@$$(if $$(Q),echo "  LD [$(1)] $$@")
	$$(Q)$$(VCC_$(1)) $$(CFLAGS) $$(VFLAGS_$(1)) $$(LDFLAGS) -o $$@ $$^ $$(TD_LIBS)

build/$(1)/tests/unit/%: build/$(1)/tests/unit/%.o build/$(1)/libdaemon.a build/$(1)/libcommon.a
	$$(Q)$$(VCC_$(1)) $$(CFLAGS) $$(VFLAGS_$(1)) $$(LDFLAGS) -o $$@ $$^ $$(CMOCKA_LIBS) $$(TD_LIBS)
endef

$(foreach v,default asan tsan fuzz,$(eval $(call VARIANT_RULES,$(v))))

# An empty object so that libdaemon.a exists before the daemon has modules.
build/%/empty.o:
	@mkdir -p $(@D)
	$(Q)echo 'typedef int td_empty_unit;' | $(CC) -x c -c -o $@ -

.SECONDARY:

# Corpus replay: each fuzz target linked with a plain main() under ASan.
build/asan/tests/fuzz/replay_%: build/asan/tests/fuzz/fuzz_%.o build/asan/tests/fuzz/replay.o build/asan/libdaemon.a build/asan/libcommon.a
	$(Q)$(CC) $(CFLAGS) $(VFLAGS_asan) $(LDFLAGS) -o $@ $^ $(TD_LIBS)

# libFuzzer binaries.
build/fuzz/tests/fuzz/fuzz_%: build/fuzz/tests/fuzz/fuzz_%.o build/fuzz/libdaemon.a build/fuzz/libcommon.a
	$(Q)$(FUZZ_CC) $(VFLAGS_fuzz) -fsanitize=fuzzer $(LDFLAGS) -o $@ $^ $(TD_LIBS)

# ---------------------------------------------------------------------------
ASAN_BINS := build/asan/torrentctl $(if $(HAVE_DAEMON),build/asan/torrentd)
UNIT_BINS := $(UNIT_NAMES:%=build/asan/tests/unit/%)
REPLAY_BINS := $(FUZZ_NAMES:%=build/asan/tests/fuzz/replay_%)

export ASAN_OPTIONS ?= abort_on_error=0:detect_leaks=1:strict_string_checks=1
export UBSAN_OPTIONS ?= print_stacktrace=1:halt_on_error=1

check: deps
	$(Q)scripts/deps test
	$(Q)$(MAKE) --no-print-directory check-src check-man check-unit \
		check-corpus check-tsan-run check-integration

check-src:
	$(Q)scripts/checksrc

check-man:
	$(Q)for m in $(MANPAGES); do \
		mandoc -T lint -W warning $$m || exit 1; done; \
	echo "man pages: $(words $(MANPAGES)) linted"

check-unit: $(UNIT_BINS)
	$(Q)scripts/run-unit $(UNIT_BINS)

check-corpus: $(REPLAY_BINS)
	$(Q)for n in $(FUZZ_NAMES); do \
		build/asan/tests/fuzz/replay_$$n tests/fuzz/corpus/$$n || exit 1; \
	done

check-integration: $(ASAN_BINS)
	$(Q)TORRENTD_BUILD=build/asan $(PYTHON) -m pytest -q --durations=15 tests/integration

TSAN_UNIT_BINS := $(UNIT_NAMES:%=build/tsan/tests/unit/%)

# ThreadSanitizer: every unit test, and the integration tests marked tsan
# (those that exercise the daemon's threads), against build/tsan binaries.
check-tsan: deps
	$(Q)scripts/deps test
	$(Q)$(MAKE) --no-print-directory check-tsan-run

check-tsan-run: $(TSAN_UNIT_BINS) build/tsan/torrentctl $(if $(HAVE_DAEMON),build/tsan/torrentd)
	$(Q)TSAN_OPTIONS="halt_on_error=1 second_deadlock_stack=1" \
		scripts/run-unit $(TSAN_UNIT_BINS)
	$(Q)TORRENTD_BUILD=build/tsan TSAN_OPTIONS="halt_on_error=1" \
		$(PYTHON) -m pytest -q -m tsan tests/integration

fuzz: deps
	$(Q)scripts/deps test
	$(Q)$(MAKE) --no-print-directory $(FUZZ_NAMES:%=build/fuzz/tests/fuzz/fuzz_%)
	$(Q)for n in $(FUZZ_NAMES); do \
		mkdir -p build/fuzz/corpus/$$n; \
		echo "fuzzing $$n for $(FUZZ_SECONDS) s"; \
		build/fuzz/tests/fuzz/fuzz_$$n -max_total_time=$(FUZZ_SECONDS) \
			-print_final_stats=1 build/fuzz/corpus/$$n \
			tests/fuzz/corpus/$$n || exit 1; \
	done

bench: all
	$(Q)scripts/deps test
	$(Q)tests/bench/run

run: all
	$(Q)scripts/sandbox-run

install: all
	install -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(SBINDIR)
	install -m 755 build/default/torrentctl $(DESTDIR)$(BINDIR)/torrentctl
	$(if $(HAVE_DAEMON),install -m 755 build/default/torrentd $(DESTDIR)$(SBINDIR)/torrentd)
	for m in $(MANPAGES); do \
		s=$${m##*.}; install -d $(DESTDIR)$(MANDIR)/man$$s; \
		install -m 644 $$m $(DESTDIR)$(MANDIR)/man$$s/; done
	install -d $(DESTDIR)$(DATADIR)/bash-completion/completions
	[ ! -f scripts/torrentctl.bash ] || install -m 644 scripts/torrentctl.bash \
		$(DESTDIR)$(DATADIR)/bash-completion/completions/torrentctl
	install -d $(DESTDIR)$(UNITDIR)
	for u in systemd/*.service systemd/*.socket; do \
		sed 's|/usr/local/bin/torrentd|$(SBINDIR)/torrentd|' $$u \
			>$(DESTDIR)$(UNITDIR)/$${u##*/}; done
	install -d $(DESTDIR)$(LIBDIR)/sysusers.d $(DESTDIR)$(LIBDIR)/tmpfiles.d
	install -m 644 systemd/torrentd.sysusers $(DESTDIR)$(LIBDIR)/sysusers.d/torrentd.conf
	install -m 644 systemd/torrentd.tmpfiles $(DESTDIR)$(LIBDIR)/tmpfiles.d/torrentd.conf
	install -d $(DESTDIR)$(SYSCONFDIR)/torrentd
	[ -f $(DESTDIR)$(SYSCONFDIR)/torrentd/torrentd.conf ] || \
		install -m 644 systemd/torrentd.conf $(DESTDIR)$(SYSCONFDIR)/torrentd/torrentd.conf

uninstall:
	rm -f $(DESTDIR)$(BINDIR)/torrentctl $(DESTDIR)$(SBINDIR)/torrentd
	rm -f $(DESTDIR)$(DATADIR)/bash-completion/completions/torrentctl
	rm -f $(DESTDIR)$(LIBDIR)/sysusers.d/torrentd.conf \
		$(DESTDIR)$(LIBDIR)/tmpfiles.d/torrentd.conf
	for u in systemd/*.service systemd/*.socket; do \
		rm -f $(DESTDIR)$(UNITDIR)/$${u##*/}; done
	for m in $(MANPAGES); do \
		rm -f $(DESTDIR)$(MANDIR)/man$${m##*.}/$${m##*/}; done

style:
	clang-format -i common/*.[ch] daemon/*.[ch] ctl/*.[ch] tests/unit/*.c tests/fuzz/*.c 2>/dev/null || true

clean:
	rm -rf build

-include $(shell find build -name '*.d' 2>/dev/null)
