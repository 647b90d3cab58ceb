#!/usr/bin/env bash
# Training throughput of famtrain against llm.c's CPU trainer (github.com/karpathy/llm.c,
# train_gpt2.c) on the same GPT-2-like small config: 4 layers, d_model 256, 4 heads of 64, vocab
# 8192, batch 8, seq 256, tied embeddings, AdamW, OMP_NUM_THREADS=2. Prints both tokens/s and the
# ratio ours/llm.c (target: >= 3).
#
#   scripts/bench_llmc.sh [LLMC_DIR]        LLMC_DIR: an llm.c checkout (never modified, nothing
#                                           is downloaded); without it, our figures alone
#   BUILD_DIR=build STEPS=10 WARMUP=1 ROUNDS=1 scripts/bench_llmc.sh /path/to/llm.c
#
# llm.c side: bench/llmc/llmc_synth.cc writes a synthetic checkpoint (GPT-2 init) and token file in
# llm.c's binary formats; bench/llmc/llmc_train_driver.c compiles their train_gpt2.c unchanged
# (TESTING defined, their main() left out) with their Makefile's CPU flags (-Ofast -march=native
# -fopenmp -DOMP) and runs their training step for STEPS steps at B=8, T=256, printing per-step
# times like their main(). The first WARMUP steps (llm.c allocates activations and gradients
# lazily in step 0) are dropped; tokens/s = B·T / mean step time. Ours: train_bench's
# BM_TrainGpt2Small for the same number of timed steps (after one untimed warm-up step).
# ROUNDS > 1 alternates the two programs and averages over all rounds. Both programs get the same
# environment (OMP_WAIT_POLICY=passive helps both on a machine shared with other jobs).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
LLMC_DIR=${1:-}
BUILD_DIR=${BUILD_DIR:-build}
STEPS=${STEPS:-10}
WARMUP=${WARMUP:-1}
ROUNDS=${ROUNDS:-1}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
B=8 T=256 L=4 C=256 NH=4 V=8192

WORK=$(mktemp -d /tmp/fam-bench-llmc.XXXXXX)
trap 'rm -rf "$WORK"' EXIT

if [ -z "${BENCH_NO_BUILD:-}" ]; then  # BENCH_NO_BUILD=1: use build-dir's train_bench as it is
  FAM_SETUP_TARGETS=train_bench scripts/setup.sh "$BUILD_DIR" > "$WORK/build.log" 2>&1 ||
    { tail -30 "$WORK/build.log"; exit 1; }
fi

if [ -n "$LLMC_DIR" ]; then
  [ -f "$LLMC_DIR/train_gpt2.c" ] || { echo "bench_llmc: $LLMC_DIR/train_gpt2.c not found" >&2; exit 2; }
  LLMC_DIR=$(cd "$LLMC_DIR" && pwd)
  g++ -O2 -std=c++20 -o "$WORK/llmc_synth" "$ROOT/bench/llmc/llmc_synth.cc"
  gcc -Ofast -march=native -fopenmp -DOMP -Wno-unused-result -I"$LLMC_DIR" \
    -o "$WORK/llmc_train" "$ROOT/bench/llmc/llmc_train_driver.c" -lm
  "$WORK/llmc_synth" "$WORK/gpt2_synth.bin" "$WORK/train_tokens.bin" $L $C $NH $V $T \
    $((20 * B * T + 1)) > /dev/null
fi

llmc_ms=()  # per-step milliseconds, all rounds
ours_ms=()
run_llmc() {
  local log="$WORK/llmc_round$1.log"
  "$WORK/llmc_train" "$WORK/gpt2_synth.bin" "$WORK/train_tokens.bin" $B $T $((STEPS + WARMUP)) \
    > "$log" 2>&1 || { cat "$log"; exit 1; }
  mapfile -t -O "${#llmc_ms[@]}" llmc_ms < <(
    sed -n 's/^step \([0-9]*\): .*(took \([0-9.]*\) ms)$/\1 \2/p' "$log" |
      awk -v w="$WARMUP" '$1 >= w { print $2 }')
}
run_ours() {
  local json="$WORK/ours_round$1.json"
  FAM_BENCH_STEPS=$STEPS "$BUILD_DIR/bench/train_bench" --benchmark_filter=BM_TrainGpt2Small \
    --benchmark_format=json > "$json" 2> "$WORK/ours_round$1.err" ||
    { cat "$WORK/ours_round$1.err"; exit 1; }
  # real_time is the mean step time in ms (the benchmark's unit); one entry per timed step.
  local ms
  ms=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["benchmarks"][0]["real_time"])' "$json")
  for ((i = 0; i < STEPS; i++)); do ours_ms+=("$ms"); done
}

load_before=$(cut -d' ' -f1-3 /proc/loadavg)
for ((r = 0; r < ROUNDS; r++)); do
  if [ -n "$LLMC_DIR" ] && ((r % 2 == 0)); then run_llmc $r; fi
  run_ours $r
  if [ -n "$LLMC_DIR" ] && ((r % 2 == 1)); then run_llmc $r; fi
done
load_after=$(cut -d' ' -f1-3 /proc/loadavg)

mean() { printf '%s\n' "$@" | awk '{ s += $1; n++ } END { if (n) printf "%.1f", s / n }'; }
tps() { awk -v ms="$1" -v n=$((B * T)) 'BEGIN { printf "%.0f", n / (ms / 1000) }'; }
ours_mean=$(mean "${ours_ms[@]}")
echo "GPT-2-like small: L=$L d=$C heads=$NH vocab=$V batch=$B seq=$T, OMP_NUM_THREADS=$OMP_NUM_THREADS OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-default}"
echo "load average before $load_before, after $load_after; $STEPS timed steps x $ROUNDS round(s)"
printf '%-34s %12s %12s\n' "trainer" "ms/step" "tokens/s"
printf '%-34s %12s %12s\n' "famtrain (SwiGLU f=683, RMSNorm)" "$ours_mean" "$(tps "$ours_mean")"
if [ -n "$LLMC_DIR" ]; then
  ((${#llmc_ms[@]})) || { echo "bench_llmc: no step timings parsed from llm.c's output" >&2; exit 1; }
  llmc_mean=$(mean "${llmc_ms[@]}")
  printf '%-34s %12s %12s\n' "llm.c train_gpt2.c (GELU 4d, LN)" "$llmc_mean" "$(tps "$llmc_mean")"
  echo "ratio famtrain / llm.c tokens/s: $(awk -v a="$llmc_mean" -v b="$ours_mean" \
    'BEGIN { printf "%.2f", a / b }') (target >= 3)"
  echo "llm.c: $(cd "$LLMC_DIR" && git rev-parse --short HEAD 2>/dev/null || echo 'checkout') built with gcc -Ofast -march=native -fopenmp -DOMP"
else
  echo "(no LLMC_DIR given: pass an llm.c checkout to compare)"
fi
