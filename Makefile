# vstorfs — see README.md.  `make` builds ./vstorfs; `make test` runs the suite.

CC      ?= cc
PKGS    := fuse3 json-c libzstd zlib devmapper
BUILD   ?= build
OPT     ?= -O2 -g
SAN     ?=
EXTRA_CFLAGS ?=
CFLAGS  += $(OPT) -std=gnu11 -D_GNU_SOURCE -D_FILE_OFFSET_BITS=64 -pthread \
           -Wall -Wextra -Werror -I. $(EXTRA_CFLAGS) $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
LDLIBS  += $(shell pkg-config --libs $(PKGS) 2>/dev/null) -pthread
ifneq ($(SAN),)
CFLAGS  += -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
LDFLAGS += -fsanitize=address,undefined
endif

CORE_SRC  := $(wildcard common/*.c chain/*.c lvm/*.c)
FS_SRC    := $(wildcard fs/*.c)
TOOL_SRC  := $(wildcard tools/*.c)
CORE_OBJ  := $(CORE_SRC:%.c=$(BUILD)/%.o)
FS_OBJ    := $(FS_SRC:%.c=$(BUILD)/%.o)
TOOLS     := $(TOOL_SRC:tools/%.c=$(BUILD)/%)

PREFIX  ?= /usr/local
PYTEST  ?= /usr/bin/python3 -m pytest

.PHONY: all deps test test-asan demo bench install clean crash
all: $(BUILD)/vstorfs $(TOOLS)
ifeq ($(BUILD),build)
all: vstorfs
endif

# The daemon lives at the repo root next to mount.vstorfs, which finds it there.
vstorfs: build/vstorfs
	ln -sf build/vstorfs $@

$(BUILD)/vstorfs: $(FS_OBJ) $(CORE_OBJ)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/%: tools/%.c $(CORE_OBJ)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $< $(CORE_OBJ) $(LDLIBS)

$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -MMD -MP -c -o $@ $<

-include $(CORE_OBJ:.o=.d) $(FS_OBJ:.o=.d)

deps:
	@.ci/install-deps

# A daemon that kills itself at a named step ($$VSTORFS_CRASH_AT), for crash-safety tests.
crash:
	$(MAKE) BUILD=build-crash EXTRA_CFLAGS=-DVSTORFS_CRASH_HOOKS build-crash/vstorfs

test: deps
	$(MAKE) all crash
	$(PYTEST) -v tests

test-asan: deps
	$(MAKE) BUILD=build-asan SAN=1 OPT="-O1 -g" build-asan/vstorfs
	VSTORFS_BIN=$(CURDIR)/build-asan/vstorfs $(PYTEST) -v tests

demo: deps all
	@examples/demo.sh

bench: deps all
	@bench/run.sh

install: all
	install -D -m 0755 vstorfs $(DESTDIR)$(PREFIX)/sbin/vstorfs
	install -D -m 0755 mount.vstorfs $(DESTDIR)/sbin/mount.vstorfs

clean:
	rm -rf build build-asan build-crash vstorfs
