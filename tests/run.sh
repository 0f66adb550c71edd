#!/usr/bin/env bash
# The whole test suite (README's test command; .ci/run calls it).
#
#   1. install what is missing (tests/install-deps.sh), build release + ASan/UBSan
#   2. cmocka unit tests (sanitized)             tests/unit/test_*.c
#   3. libFuzzer targets, bounded time           tests/fuzz/run.sh   (FUZZ_SECONDS, default 15)
#   4. real Redis + PostgreSQL in a temp dir     tests/services.sh
#   5. cmocka integration tests (sanitized)      tests/integration/test_*.c
#   6. end-to-end with socket.io-client          tests/e2e/*.test.mjs (chatd under ASan)
#   7. the official Engine.IO/Socket.IO suites   ../shared/conformance/run.sh (when fetched)
#
# Every sanitizer report of any chatd process (ASAN_OPTIONS log_path) counts as a failure.
# The last line is the summary: "N passed, N failed".
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

PASSED=0
FAILED=0
NOTES=()
pass() { PASSED=$((PASSED + $1)); }
fail() { FAILED=$((FAILED + $1)); NOTES+=("FAILED: $2"); }
note() { NOTES+=("$1"); }
section() { printf '\n===== %s =====\n' "$*"; }

section "dependencies and build"
bash tests/install-deps.sh || { echo "install-deps failed"; echo "0 passed, 1 failed"; exit 1; }
JOBS=$(nproc 2>/dev/null || echo 2)
if ! make -j"$JOBS" chatd >/tmp/chatd-build.log 2>&1 || ! make -j"$JOBS" SANITIZE=1 chatd tests >>/tmp/chatd-build.log 2>&1; then
  tail -40 /tmp/chatd-build.log
  echo "build failed"
  echo "0 passed, 1 failed"
  exit 1
fi
echo "build ok"

TMP=$(mktemp -d /tmp/chatd-tests.XXXXXX)
chmod 755 "$TMP" # the postgres user must reach its data dir inside
SAN_DIR="$TMP/sanitizer"
mkdir -p "$SAN_DIR"
export ASAN_OPTIONS="detect_leaks=1:abort_on_error=0:log_path=$SAN_DIR/asan"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:log_path=$SAN_DIR/ubsan"
export CHATD_BIN="$ROOT/build-san/chatd"
SERVICES_UP=0
cleanup() {
  # also after a partial start (e.g. Redis up, initdb failed): stop whatever it left running
  [ -d "$TMP/services" ] && bash tests/services.sh stop "$TMP/services" >/dev/null 2>&1
  rm -rf "$TMP"
}
trap cleanup EXIT

# cmocka prints "[  PASSED  ] N test(s)." and "[  FAILED  ] N test(s), listed below:".
run_cmocka() { # $1 = binary
  local bin=$1 out rc p f
  out=$("$bin" 2>&1); rc=$?
  echo "$out" | grep -E '^\[ *(RUN|OK|FAILED|PASSED|SKIPPED|  ERROR) *\]|^\[==========\]' | tail -n 200
  p=$(echo "$out" | sed -n 's/^\[  PASSED  \] \([0-9]*\) test.*/\1/p' | tail -1)
  f=$(echo "$out" | sed -n 's/^\[  FAILED  \] \([0-9]*\) test.*/\1/p' | tail -1)
  p=${p:-0}; f=${f:-0}
  if [ "$rc" != 0 ] && [ "$f" = 0 ]; then
    echo "$out" | tail -20
    f=1
  fi
  pass "$p"
  [ "$f" != 0 ] && fail "$f" "$(basename "$bin")"
  return 0
}

section "unit tests (cmocka, ASan+UBSan)"
for t in build-san/tests/unit/test_*; do
  [ -x "$t" ] && run_cmocka "$t"
done

section "fuzzing (libFuzzer, bounded)"
if [ -x tests/fuzz/run.sh ] || [ -f tests/fuzz/run.sh ]; then
  if FUZZ_SECONDS="${FUZZ_SECONDS:-15}" bash tests/fuzz/run.sh; then pass 1; else fail 1 "fuzzing"; fi
fi

section "services (Redis + PostgreSQL in $TMP/services)"
if bash tests/services.sh start "$TMP/services"; then
  SERVICES_UP=1
  # shellcheck disable=SC1091
  . "$TMP/services/env"
  export CHATD_TEST_REDIS_URL CHATD_TEST_DATABASE_URL
  export TEST_SERVICES_DIR="$TMP/services"
  if CHATD_DATABASE_URL="$CHATD_TEST_DATABASE_URL" build/chatd migrate; then pass 1; else fail 1 "chatd migrate"; fi
else
  fail 1 "services did not start"
fi

section "integration tests (cmocka against real Redis/PostgreSQL, ASan+UBSan)"
if [ "$SERVICES_UP" = 1 ]; then
  for t in build-san/tests/integration/test_*; do
    [ -x "$t" ] && run_cmocka "$t"
  done
fi

section "end-to-end (socket.io-client against chatd under ASan)"
if ls tests/e2e/*.test.mjs >/dev/null 2>&1; then
  out="$TMP/e2e.log"
  node --test --test-concurrency=1 tests/e2e/ >"$out" 2>&1
  grep -E '^(not ok|ok) |^# (tests|pass|fail)' "$out" | tail -n 200
  p=$(sed -n 's/^# pass \([0-9]*\)/\1/p' "$out" | tail -1)
  f=$(sed -n 's/^# fail \([0-9]*\)/\1/p' "$out" | tail -1)
  if [ -z "$p" ]; then tail -30 "$out"; fail 1 "e2e runner produced no summary"; else
    pass "$p"; [ "${f:-0}" != 0 ] && { grep -B2 -A25 '^not ok' "$out" | head -150; fail "$f" "e2e"; }
  fi
fi

section "official Engine.IO / Socket.IO protocol suites"
CONF="$ROOT/../shared/conformance/run.sh"
if [ -f "$CONF" ]; then
  port=$((31000 + RANDOM % 2000))
  CHATD_LISTEN=127.0.0.1:$port "$CHATD_BIN" conformance >"$TMP/conformance-chatd.log" 2>&1 &
  cpid=$!
  for _ in $(seq 1 50); do
    curl -s -o /dev/null "http://127.0.0.1:$port/healthz" && break
    sleep 0.1
  done
  out="$TMP/conformance.log"
  TARGET="http://127.0.0.1:$port" bash "$CONF" >"$out" 2>&1
  rc=$?
  kill -INT "$cpid" 2>/dev/null; wait "$cpid" 2>/dev/null
  if [ "$rc" = 2 ]; then
    tail -8 "$out"
    note "SKIPPED: official protocol suites (fetched copies of socketio/engine.io-protocol and socket.io-protocol not on this machine); tests/e2e and tests/unit cover the same behaviours"
  else
    grep -E '^\s+(engine|socket)\.io: ' "$out"
    line=$(tail -1 "$out")
    p=$(echo "$line" | sed -n 's/^\([0-9]*\) passed, \([0-9]*\) failed$/\1/p')
    f=$(echo "$line" | sed -n 's/^\([0-9]*\) passed, \([0-9]*\) failed$/\2/p')
    if [ -z "$p" ]; then tail -30 "$out"; fail 1 "conformance runner"; else
      pass "$p"; [ "$f" != 0 ] && { grep -A12 -E '^\s+[0-9]+\) ' "$out" | head -80; fail "$f" "official protocol suites"; }
    fi
  fi
else
  note "SKIPPED: official protocol suites (../shared/conformance not found)"
fi

section "sanitizer reports"
reports=$(ls "$SAN_DIR" 2>/dev/null | wc -l)
if [ "$reports" != 0 ]; then
  for r in "$SAN_DIR"/*; do echo "--- $r"; head -60 "$r"; done
  fail "$reports" "sanitizer reports from chatd processes"
else
  echo "no sanitizer reports"
  pass 1
fi

section "summary"
for n in "${NOTES[@]}"; do echo "$n"; done
echo "$PASSED passed, $FAILED failed"
[ "$FAILED" = 0 ]
