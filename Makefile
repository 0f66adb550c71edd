# chatd — one Makefile for the whole tree.
#
#   make                 build build/chatd (release flags)
#   make SANITIZE=1      build build-san/chatd with ASan+UBSan (tests use both)
#   make unit            build and run cmocka unit tests (pure code, no services)
#   make test            install deps, build, run every test (tests/run.sh)
#   make run             install deps, start local Redis+PostgreSQL under .data/, migrate, serve
#   make bench           benchmarks against the Node reference (bench/)
#   make lint-layers     pure files must not include I/O library headers
#
# Layout rules the Makefile relies on (so nobody has to edit it to add a file):
#   every */*.c in SRC_DIRS is part of libchatd.a except gateway/main.c;
#   tests/unit/test_*.c and tests/integration/test_*.c each become one test binary
#   linked against libchatd.a + cmocka; tests/fuzz/fuzz_*.c become libFuzzer targets.

SRC_DIRS := common gateway presence queue ai rest store
CC       ?= cc
SANITIZE ?= 0
PKGS     := libwebsockets libuv hiredis libpq libcjson libjwt libcurl
PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS   := $(shell pkg-config --libs $(PKGS) 2>/dev/null) -lcrypto

WARN    := -Wall -Wextra -Werror -Wstrict-prototypes -Wno-unused-parameter -Wshadow -Wvla
CFLAGS  ?= -O2 -g
CFLAGS  += -std=gnu11 $(WARN) -I. $(PKG_CFLAGS) -MMD -MP -D_GNU_SOURCE
LDLIBS  += $(PKG_LIBS) -lm

ifeq ($(SANITIZE),1)
BUILD   := build-san
# float-cast-overflow is not part of "undefined": a double from untrusted JSON that no integer
# type holds must be caught too (gateway/auth.c's claim_time)
CFLAGS  += -O1 -fno-omit-frame-pointer -fsanitize=address,undefined,float-cast-overflow \
           -fno-sanitize-recover=undefined,float-cast-overflow
LDFLAGS += -fsanitize=address,undefined,float-cast-overflow
else
BUILD   := build
endif

LIB_SRCS  := $(filter-out gateway/main.c,$(foreach d,$(SRC_DIRS),$(wildcard $(d)/*.c)))
LIB_OBJS  := $(LIB_SRCS:%.c=$(BUILD)/%.o)
MAIN_OBJ  := $(BUILD)/gateway/main.o
UNIT_SRCS := $(wildcard tests/unit/test_*.c)
INTG_SRCS := $(wildcard tests/integration/test_*.c)
TEST_BINS := $(UNIT_SRCS:tests/%.c=$(BUILD)/tests/%) $(INTG_SRCS:tests/%.c=$(BUILD)/tests/%)
FUZZ_SRCS := $(wildcard tests/fuzz/fuzz_*.c)
FUZZ_BINS := $(FUZZ_SRCS:tests/fuzz/%.c=$(BUILD)/fuzz/%)

# A stamp of the flags: changing CFLAGS/SANITIZE rebuilds everything.
SETTINGS := $(BUILD)/.settings
$(shell mkdir -p $(BUILD) && echo '$(CC) $(CFLAGS) $(LDFLAGS)' > $(SETTINGS).new && \
  (cmp -s $(SETTINGS).new $(SETTINGS) || mv $(SETTINGS).new $(SETTINGS)); rm -f $(SETTINGS).new)

.PHONY: all chatd tests unit fuzz test run bench clean lint-layers format
all: chatd
chatd: $(BUILD)/chatd
tests: $(TEST_BINS)

$(BUILD)/%.o: %.c $(SETTINGS)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c $< -o $@

$(BUILD)/libchatd.a: $(LIB_OBJS)
	@rm -f $@
	ar rcs $@ $^

$(BUILD)/chatd: $(MAIN_OBJ) $(BUILD)/libchatd.a
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/tests/%: tests/%.c $(BUILD)/libchatd.a $(SETTINGS)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $< $(BUILD)/libchatd.a $(LDLIBS) -lcmocka

unit: $(UNIT_SRCS:tests/%.c=$(BUILD)/tests/%)
	@rc=0; for t in $^; do $$t || rc=1; done; exit $$rc

# libFuzzer targets: each fuzz_*.c #includes the pure sources it drives.
$(BUILD)/fuzz/%: tests/fuzz/%.c
	@mkdir -p $(dir $@)
	clang -g -O1 -std=gnu11 -I. $(PKG_CFLAGS) -D_GNU_SOURCE -fsanitize=fuzzer,address,undefined,float-cast-overflow \
	      -fno-sanitize-recover=undefined,float-cast-overflow -o $@ $< $(PKG_LIBS) -lm
fuzz: $(FUZZ_BINS)

test:
	bash tests/run.sh

run:
	bash tests/install-deps.sh
	$(MAKE) chatd
	bash tests/run-local.sh

-include bench/bench.mk

lint-layers:
	@bad=$$(grep -lE '#include *[<"](libwebsockets|uv|hiredis/async|libpq-fe|curl/curl)\.h' \
	  gateway/eio_packet.c gateway/sio_packet.c gateway/frame.c gateway/auth.c common/*.c \
	  queue/queue.c presence/presence.c store/keys.c store/pg_route.c $(wildcard ai/sse.c) 2>/dev/null); \
	if [ -n "$$bad" ]; then echo "pure files include I/O headers: $$bad"; exit 1; fi; echo "layers ok"

format:
	clang-format -i $(LIB_SRCS) gateway/main.c $(wildcard */*.h)

clean:
	rm -rf build build-san

-include $(LIB_OBJS:.o=.d) $(MAIN_OBJ:.o=.d)
