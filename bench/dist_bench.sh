#!/usr/bin/env bash
# Data-parallel step time of the tiny preset (configs/experiments/kjv_tiny_fam.yaml: 4 layers,
# seq 512, global batch 8 in micro-batches of 4) on the CPU: one process with T threads against `mpirun -np 2` with T/2
# threads per rank (the same cores, the same global batch, so the same losses), and for -np 2 the
# gradient communication per step and the part of it hidden behind backward (bucketed all-reduce
# on the communication thread; the trainer reports comm_s / comm_wait_s in metrics.jsonl).
#
#   bench/dist_bench.sh [build-dir] [steps] [threads] [extra --set ...]
#   e.g. bench/dist_bench.sh build 20 2
#        bench/dist_bench.sh build 20 16 distributed.zero=zero1
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${1:-build}
STEPS=${2:-20}
THREADS=${3:-$(nproc)}
shift $(( $# < 3 ? $# : 3 )) || true
FAM="$BUILD/fam"
MPIRUN=${MPIRUN:-mpirun}
WARMUP=3
OUT=${DIST_BENCH_DIR:-/tmp/fam_dist_bench}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1

if [ ! -f data/kjv/data.json ]; then
  mkdir -p data/kjv
  scripts/get_kjv.sh data/kjv/kjv.txt
  "$FAM" prepare-data --input data/kjv/kjv.txt --out data/kjv --vocab-size 2048
fi
rm -rf "$OUT"

SETS=(--set run_dir="$OUT" --set trainer.steps="$STEPS" --set trainer.log_interval=1
      --set data.val= --set checkpoint.interval=0 --set checkpoint.resume=never
      --set trainer.micro_batch=4 --set schedule.warmup_steps=0 --set distributed.bucket_mb=1)
for s in "$@"; do SETS+=(--set "$s"); done

run() {  # run <name> <ranks> <threads per rank>
  local name=$1 ranks=$2 threads=$3
  local cmd=("$FAM" train --config configs/experiments/kjv_tiny_fam.yaml "${SETS[@]}"
             --set name="$name" --set trainer.threads="$threads")
  if [ "$ranks" -gt 1 ]; then
    cmd=("$MPIRUN" -np "$ranks" --oversubscribe --bind-to none "${cmd[@]}")
  fi
  OMP_NUM_THREADS=$threads "${cmd[@]}" > "$OUT.$name.log" 2>&1 || { cat "$OUT.$name.log"; exit 1; }
}

# Mean seconds per step after the warm-up steps, and the mean of comm_s / comm_wait_s (if any).
summarize() {  # summarize <name>
  awk -v warmup="$WARMUP" '
    function num(key,   m) {
      if (match($0, "\"" key "\":[-0-9.eE+]+")) return substr($0, RSTART + length(key) + 3, RLENGTH - length(key) - 3) + 0
      return -1
    }
    /"kind":"train"/ {
      step = num("step"); t = num("elapsed_s")
      if (step == warmup) { t0 = t; s0 = step }
      if (step > warmup) { last = t; sl = step; c = num("comm_s"); w = num("comm_wait_s")
                           if (c >= 0) { comm += c; wait += w; n++ } }
    }
    END {
      printf "%.1f", 1000 * (last - t0) / (sl - s0)
      if (n > 0) printf " %.2f %.2f", 1000 * comm / n, 1000 * wait / n
      printf "\n"
    }' "$OUT/$1/metrics.jsonl"
}

HALF=$(( THREADS / 2 > 0 ? THREADS / 2 : 1 ))
run np1 1 "$THREADS"
run np2 2 "$HALF"
read -r T1 <<< "$(summarize np1)"
read -r T2 COMM WAIT <<< "$(summarize np2)"
L1=$(grep -o '"loss":[-0-9.eE+]*' "$OUT/np1/metrics.jsonl" | tail -1 | cut -d: -f2)
L2=$(grep -o '"loss":[-0-9.eE+]*' "$OUT/np2/metrics.jsonl" | tail -1 | cut -d: -f2)
echo "tiny preset, global batch 8 x 512 tokens, $STEPS steps (first $WARMUP not timed), $(nproc) cores"
printf "  -np 1, %2d threads:             %8.1f ms/step   final loss %s\n" "$THREADS" "$T1" "$L1"
printf "  -np 2, %2d threads per rank:    %8.1f ms/step   final loss %s\n" "$HALF" "$T2" "$L2"
awk -v a="$T1" -v b="$T2" -v c="$COMM" -v w="$WAIT" 'BEGIN {
  printf "  speed-up -np 2 vs -np 1:       %.2fx\n", a / b
  printf "  gradient communication:        %.2f ms/step on the communication thread\n", c
  printf "  not hidden behind backward:    %.2f ms/step (%.0f%% overlapped)\n", w, (c > 0 ? 100 * (1 - w / c) : 0)
}'
grep -h "^distributed:\|^memory per rank" "$OUT.np2.log" | sed 's/^/  /'
