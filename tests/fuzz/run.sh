#!/usr/bin/env bash
# Builds and runs every libFuzzer target in tests/fuzz/ for a bounded time,
# then replays its checked-in corpus. Exit non-zero on any crash, leak or
# sanitizer report.
#   FUZZ_SECONDS  seconds of fuzzing per target (default 20; 0 = replay only)
#   FUZZ_JOBS     unused by default; the run is single-process for stable output
# New inputs found while fuzzing go to a temp dir, not into the checked-in corpus
# (copy interesting ones by hand). Crash artifacts land in build/fuzz/artifacts/.
set -uo pipefail
cd "$(dirname "$0")/../.."
secs="${FUZZ_SECONDS:-20}"
if ! command -v clang >/dev/null; then
  echo "fuzz: clang not found, skipping libFuzzer targets" >&2
  exit 0
fi
targets=$(ls tests/fuzz/fuzz_*.c 2>/dev/null | sed 's#tests/fuzz/\(.*\)\.c#\1#')
mkdir -p build/fuzz/artifacts
rc=0
for t in $targets; do
  # -B: the Makefile rule depends only on the harness, not on the sources it includes
  if ! make -s -B "build/fuzz/$t" >&2; then echo "fuzz: $t does not build" >&2; rc=1; continue; fi
  corpus="tests/fuzz/corpus/$t"
  mkdir -p "$corpus"
  # 1. replay the checked-in corpus (every file once)
  if ! "build/fuzz/$t" -runs=0 "$corpus" >"build/fuzz/$t.replay.log" 2>&1; then
    echo "fuzz: $t FAILED replaying $corpus (see build/fuzz/$t.replay.log)" >&2
    tail -30 "build/fuzz/$t.replay.log" >&2
    rc=1; continue
  fi
  # 2. fuzz for a bounded time from the corpus into a scratch dir
  if [ "$secs" -gt 0 ]; then
    work=$(mktemp -d)
    if "build/fuzz/$t" -max_total_time="$secs" -max_len=4096 -timeout=10 -rss_limit_mb=2048 \
         -artifact_prefix="build/fuzz/artifacts/$t-" -print_final_stats=1 \
         "$work" "$corpus" >"build/fuzz/$t.log" 2>&1; then
      execs=$(grep -a 'stat::number_of_executed_units' "build/fuzz/$t.log" | tail -1 | awk '{print $2}' | tr -d '\r\n')
      echo "fuzz: $t ok (${secs}s, ${execs:-?} runs)"
    else
      echo "fuzz: $t FAILED (see build/fuzz/$t.log, artifacts in build/fuzz/artifacts/)" >&2
      grep -a -m5 -E 'ERROR|SUMMARY|Test unit written' "build/fuzz/$t.log" >&2
      rc=1
    fi
    rm -rf "$work"
  else
    echo "fuzz: $t corpus replay ok"
  fi
done
exit $rc
