# vstorfs — see README.md.  `make` builds ./vstorfs; `make test` runs the suite.

CC      ?= cc
PKGS    := fuse3 json-c libzstd zlib devmapper blkid
BUILD   ?= build
OPT     ?= -O2 -g
SAN     ?=
EXTRA_CFLAGS ?=
# RBD=0: build without Ceph (no librbd/librados, no rbd/, no rbdcat); an
# rbd: SOURCE is then refused with that reason (store/store_registry.c).
RBD     ?= 1
CFLAGS  += $(OPT) -std=gnu11 -D_GNU_SOURCE -D_FILE_OFFSET_BITS=64 -pthread \
           -Wall -Wextra -Werror -I. -DVSTORFS_RBD=$(RBD) $(EXTRA_CFLAGS) $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
LDLIBS  += $(shell pkg-config --libs $(PKGS) 2>/dev/null) $(if $(filter 1,$(RBD)),-lrbd -lrados) -pthread
ifneq ($(SAN),)
CFLAGS  += -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
LDFLAGS += -fsanitize=address,undefined
CFLAGS  += -DVSTORFS_CHECKS
endif

STORE_DIRS := lvm dir $(if $(filter 1,$(RBD)),rbd)
CORE_SRC  := $(wildcard common/*.c chain/*.c store/*.c $(STORE_DIRS:%=%/*.c))
FS_SRC    := $(wildcard fs/*.c)
TOOL_SRC  := $(filter-out $(if $(filter 1,$(RBD)),,tools/rbdcat.c),$(wildcard tools/*.c))
TOOL_LIB  := $(patsubst %.c,$(BUILD)/%.o,$(wildcard tools/lib/*.c))
CORE_OBJ  := $(CORE_SRC:%.c=$(BUILD)/%.o)
FS_OBJ    := $(FS_SRC:%.c=$(BUILD)/%.o)
TOOLS     := $(TOOL_SRC:tools/%.c=$(BUILD)/%)

PREFIX  ?= /usr/local
PYTEST  ?= /usr/bin/python3 -m pytest

.PHONY: all deps test test-asan test-powerloss demo bench install clean crash fuzz fuzz-snapshot
all: $(BUILD)/vstorfs $(TOOLS)
ifeq ($(BUILD),build)
all: vstorfs
endif

# The daemon lives at the repo root next to mount.vstorfs, which finds it there.
vstorfs: build/vstorfs
	ln -sf build/vstorfs $@

$(BUILD)/vstorfs: $(FS_OBJ) $(CORE_OBJ)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/%: tools/%.c $(TOOL_LIB) $(CORE_OBJ)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $< $(TOOL_LIB) $(CORE_OBJ) $(LDLIBS)

$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -MMD -MP -c -o $@ $<

-include $(CORE_OBJ:.o=.d) $(FS_OBJ:.o=.d) $(TOOL_LIB:.o=.d)
.SECONDARY: $(TOOL_LIB)

# Fuzzing the qcow2 engine (clang/libFuzzer): fuzz_chain reads hostile chains,
# fuzz_merge merges them (the writer); a gcc replay of each target's
# regressions and seeds runs in make test.
FUZZ_LIB     := fuzz/mem_layers.c $(wildcard chain/*.c) $(wildcard common/*.c)
FUZZ_DEPS    := $(FUZZ_LIB) fuzz/mem_layers.h $(wildcard chain/*.h common/*.h)
FUZZ_SECONDS ?= 120
FUZZ_JOBS    ?= 2
REPLAY_CC    = $(CC) -O1 -g -fsanitize=address,undefined -fno-sanitize-recover=undefined -std=gnu11 \
		-D_GNU_SOURCE -Wall -Wextra -Werror -I. -o $@ fuzz/replay.c $< $(FUZZ_LIB) -lz -lzstd -lblkid -pthread

build-fuzz/fuzz_%: fuzz/fuzz_%.c $(FUZZ_DEPS)
	@mkdir -p $(dir $@)
	clang -O1 -g -fsanitize=fuzzer,address,undefined -std=gnu11 -D_GNU_SOURCE -I. -o $@ $< $(FUZZ_LIB) -lz -lzstd -lblkid -pthread

# Throughput builds for long runs: UBSan without ASan, -O2. ASan's allocator
# maps every large input afresh, and on a guest where a page fault costs
# ~20 us that made the ASan build of fuzz_merge 7x slower.
build-fuzz/fuzz_%_ubsan: fuzz/fuzz_%.c $(FUZZ_DEPS)
	@mkdir -p $(dir $@)
	clang -O2 -g -fsanitize=fuzzer,undefined -fno-sanitize-recover=undefined -std=gnu11 -D_GNU_SOURCE -I. \
		-o $@ $< $(FUZZ_LIB) -lz -lzstd -lblkid -pthread

$(BUILD)/fuzz-replay: fuzz/fuzz_chain.c fuzz/replay.c $(FUZZ_DEPS)
	@mkdir -p $(dir $@)
	$(REPLAY_CC)

$(BUILD)/fuzz-merge-replay: fuzz/fuzz_merge.c fuzz/replay.c $(FUZZ_DEPS)
	@mkdir -p $(dir $@)
	$(REPLAY_CC)

# One target after the other, each FUZZ_SECONDS; findings land in fuzz/regressions[-merge]/.
fuzz: build-fuzz/fuzz_chain build-fuzz/fuzz_merge
	@mkdir -p build-fuzz/corpus build-fuzz/seeds build-fuzz/corpus-merge build-fuzz/seeds-merge fuzz/regressions-merge
	/usr/bin/python3 fuzz/make_seeds.py build-fuzz/seeds
	/usr/bin/python3 fuzz/make_seeds.py --merge build-fuzz/seeds-merge
	cd build-fuzz && ./fuzz_chain -max_total_time=$(FUZZ_SECONDS) -max_len=1048576 -timeout=10 \
		-rss_limit_mb=2048 -jobs=$(FUZZ_JOBS) -workers=$(FUZZ_JOBS) -artifact_prefix=../fuzz/regressions/ \
		corpus seeds ../fuzz/regressions
	cd build-fuzz && ./fuzz_merge -max_total_time=$(FUZZ_SECONDS) -max_len=262144 -timeout=10 \
		-rss_limit_mb=2048 -jobs=$(FUZZ_JOBS) -workers=$(FUZZ_JOBS) -artifact_prefix=../fuzz/regressions-merge/ \
		corpus-merge seeds-merge ../fuzz/regressions-merge

# The snapshot table parser and create/delete/reclaim over hostile images (fuzz/fuzz_snapshot.c).
SNAPFUZZ_SRC := fuzz/fuzz_snapshot.c $(wildcard chain/*.c) $(wildcard common/*.c)

build-fuzz/fuzz_snapshot: $(SNAPFUZZ_SRC) $(wildcard chain/*.h common/*.h)
	@mkdir -p $(dir $@)
	clang -O1 -g -fsanitize=fuzzer,address,undefined -std=gnu11 -D_GNU_SOURCE -I. -o $@ $(SNAPFUZZ_SRC) -lz -lzstd -lblkid -pthread

$(BUILD)/fuzz-snapshot-replay: fuzz/replay.c $(SNAPFUZZ_SRC) $(wildcard chain/*.h common/*.h)
	@mkdir -p $(dir $@)
	$(CC) -O1 -g -fsanitize=address,undefined -fno-sanitize-recover=undefined -std=gnu11 -D_GNU_SOURCE \
		-Wall -Wextra -Werror -I. -o $@ fuzz/replay.c $(SNAPFUZZ_SRC) -lz -lzstd -lblkid -pthread

fuzz-snapshot: build-fuzz/fuzz_snapshot
	@mkdir -p build-fuzz/snap-corpus build-fuzz/snap-seeds fuzz/regressions-snapshot
	/usr/bin/python3 fuzz/make_snap_seeds.py build-fuzz/snap-seeds
	cd build-fuzz && ./fuzz_snapshot -max_total_time=$(FUZZ_SECONDS) -max_len=1048576 -timeout=20 \
		-rss_limit_mb=2048 -jobs=1 -workers=1 -artifact_prefix=../fuzz/regressions-snapshot/ \
		snap-corpus snap-seeds ../fuzz/regressions-snapshot

fuzz: fuzz-snapshot

deps:
	@.ci/install-deps

# A daemon that kills itself at a named step ($$VSTORFS_CRASH_AT), for crash-safety tests.
CRASH_BUILD ?= build-crash
crash:
	$(MAKE) BUILD=$(CRASH_BUILD) EXTRA_CFLAGS=-DVSTORFS_CRASH_HOOKS $(CRASH_BUILD)/vstorfs $(CRASH_BUILD)/qcow2snap $(CRASH_BUILD)/dirstore

test: deps
	$(MAKE) all crash $(BUILD)/fuzz-replay $(BUILD)/fuzz-merge-replay
	$(PYTEST) -v --durations=20 --ignore=tests/powerloss tests

# Under ASan the suite runs what a sanitized daemon or tool changes; these
# drive unsanitized engine tools (or already sanitized fuzz replays), or
# (test_clients) drive the read path other modules already run sanitized,
# and would only repeat the plain run.
ASAN_SKIP := tests/test_isnap.py tests/test_merge_engine.py tests/test_fuzz_regressions.py \
	     tests/test_check_agree.py tests/test_clients.py

# Power-cut crash states (tests/powerloss/README.md): a FUSE recorder logs every write
# and flush of an operation; the replayer builds what a power cut could leave.
# POWERLOSS_LONG=1 runs the long sweep (bigger samples, every distinct state checked).
# powerloss-check also takes LVM states (--lvm): the LVM store's recovery in one process.
$(BUILD)/powerloss-recorder: tests/powerloss/recorder.c
	@mkdir -p $(dir $@)
	$(CC) $(OPT) -std=gnu11 -D_GNU_SOURCE -Wall -Wextra -Werror $(shell pkg-config --cflags fuse3) \
		-o $@ $< $(shell pkg-config --libs fuse3)

$(BUILD)/powerloss-check: tests/powerloss/plcheck.c $(TOOL_LIB) $(CORE_OBJ)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $< $(TOOL_LIB) $(CORE_OBJ) $(LDLIBS)

test-powerloss: deps
	$(MAKE) all crash $(BUILD)/powerloss-recorder $(BUILD)/powerloss-check
	$(PYTEST) -v --durations=10 tests/powerloss

test-asan: deps
	$(MAKE) all crash build/fuzz-replay build/fuzz-merge-replay
	$(MAKE) BUILD=build-asan SAN=1 OPT="-O1 -g" build-asan/vstorfs build-asan/qcow2cat build-asan/dirstore
	$(MAKE) crash CRASH_BUILD=build-crash-asan SAN=1 OPT="-O1 -g"
	VSTORFS_BIN=$(CURDIR)/build-asan/vstorfs VSTORFS_CRASH_BIN=$(CURDIR)/build-crash-asan/vstorfs \
		QCOW2CAT=$(CURDIR)/build-asan/qcow2cat DIRSTORE=$(CURDIR)/build-asan/dirstore DIRSTORE_CRASH=$(CURDIR)/build-crash-asan/dirstore \
		$(PYTEST) -v --durations=20 $(ASAN_SKIP:%=--ignore=%) --ignore=tests/powerloss tests

demo: deps all
	@examples/demo.sh

bench: deps all
	@bench/run.sh

install: all
	install -D -m 0755 vstorfs $(DESTDIR)$(PREFIX)/sbin/vstorfs
	install -D -m 0755 mount.vstorfs $(DESTDIR)/sbin/mount.vstorfs
	install -D -m 0644 man/vstorfs.8 $(DESTDIR)$(PREFIX)/share/man/man8/vstorfs.8
	ln -sf vstorfs.8 $(DESTDIR)$(PREFIX)/share/man/man8/mount.vstorfs.8

clean:
	rm -rf build build-asan build-crash build-crash-asan build-fuzz build-norbd vstorfs
