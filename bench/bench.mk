# bench/bench.mk — benchmark tools and the `make bench` target (included by the top Makefile).
#
#   make bench-tools        build $(BUILD)/bench/loadgen and $(BUILD)/bench/relay
#   make bench              build them (and chatd, if it builds), run bench/run.sh, print the table
#   BENCH_QUICK=1 make bench   smoke run, about 2 minutes
#
# The tools are standalone programs (libc + libcrypto for the relay's SHA-1); they do not link
# libchatd.a so a broken tree never stops the references from being measured.

BENCH_BINS := $(BUILD)/bench/loadgen $(BUILD)/bench/relay

$(BUILD)/bench/%: bench/%.c $(SETTINGS)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -o $@ $< -lcrypto

.PHONY: bench-tools
bench-tools: $(BENCH_BINS)

bench: bench-tools
	-@$(MAKE) --no-print-directory chatd
	BUILD=$(BUILD) bash bench/run.sh

-include $(BENCH_BINS:=.d)
