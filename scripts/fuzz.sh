#!/usr/bin/env bash
# Builds the libFuzzer targets of fuzz/ (clang, ASan + UBSan, in build-fuzz) and runs each for a
# bounded time, starting from the committed seeds (fuzz/corpus/<target>) and the inputs of earlier
# findings (fuzz/regressions/<target>). Prints executions, coverage and findings per target; exits 1
# when a target found a crash, hang, leak or contract violation (the input is saved under
# build-fuzz/findings/<target>/: add it to fuzz/regressions/<target>/ once fixed).
#
#   scripts/fuzz.sh                     every target, 20 s each, two at a time (what CI runs)
#   scripts/fuzz.sh --seconds 600 gguf  one target, longer, by hand
#   scripts/fuzz.sh --seeds             regenerates fuzz/corpus with fam_fuzz_seeds
# FAM_FUZZ_JOBS: targets run at once (default: the number of cores, at most 2).
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_EACH=20
SEEDS=0
TARGETS=()
while (($#)); do
  case "$1" in
    --seconds) SECONDS_EACH=$2; shift 2 ;;
    --seeds) SEEDS=1; shift ;;
    -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
    -*) echo "fuzz.sh: unknown option $1" >&2; exit 2 ;;
    *) TARGETS+=("$1"); shift ;;
  esac
done
ALL=(safetensors npy gguf token_shard weight_shard instructions tokenizer_json sentencepiece
  run_config hf_config checkpoint)
((${#TARGETS[@]})) || TARGETS=("${ALL[@]}")
for t in "${TARGETS[@]}"; do
  [[ " ${ALL[*]} " == *" $t "* ]] || { echo "fuzz.sh: no target '$t' (targets: ${ALL[*]})" >&2; exit 2; }
done

BUILD=build-fuzz
FAM_FUZZ=ON FAM_BUILD_TYPE=Debug FAM_ENABLE_CUDA=OFF \
  FAM_CMAKE_ARGS="-DFAM_USE_OPENBLAS=OFF -DFAM_BUILD_TESTS=OFF -DFAM_BUILD_BENCH=OFF" \
  FAM_SETUP_TARGETS="fuzz_all fam_fuzz_seeds" scripts/setup.sh "$BUILD"
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1:allocator_may_return_null=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
CORES=$(getconf _NPROCESSORS_ONLN)  # before OMP_NUM_THREADS=1, which nproc would report
export OMP_NUM_THREADS=1

if ((SEEDS)); then
  rm -rf fuzz/corpus
  "$BUILD/fuzz/fam_fuzz_seeds" fuzz/corpus .
  echo "fuzz.sh: seeds written to fuzz/corpus"
  exit 0
fi

run_one() {  # target → build-fuzz/fuzz-logs/<target>.log, exit status in <target>.log.rc
  local t=$1
  local work=$BUILD/fuzz-work/$t findings=$BUILD/findings/$t log=$BUILD/fuzz-logs/$t.log
  mkdir -p "$work" "$findings" "$(dirname "$log")"
  local dirs=("$work" "fuzz/corpus/$t")
  [ -d "fuzz/regressions/$t" ] && dirs+=("fuzz/regressions/$t")
  # -timeout: a hang; -malloc_limit_mb: one allocation no input of -max_len bytes justifies.
  set +e
  "$BUILD/fuzz/fuzz_$t" -max_total_time="$SECONDS_EACH" -timeout=10 -rss_limit_mb=2048 \
    -malloc_limit_mb=256 -max_len=131072 -print_final_stats=1 -artifact_prefix="$findings/" \
    "${dirs[@]}" > "$log" 2>&1
  echo $? > "$log.rc"
  set -e
}
export -f run_one
export BUILD SECONDS_EACH
JOBS=${FAM_FUZZ_JOBS:-$((CORES < 2 ? CORES : 2))}
echo "fuzz.sh: ${#TARGETS[@]} target(s), ${SECONDS_EACH} s each, $JOBS at a time"
printf '%s\n' "${TARGETS[@]}" | xargs -P "$JOBS" -I{} bash -c 'run_one {}'

failed=0
printf '%-16s %10s %8s %8s %8s  %s\n' target executions exec/s cov features result
for t in "${TARGETS[@]}"; do
  log=$BUILD/fuzz-logs/$t.log
  rc=$(cat "$log.rc")
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  speed=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
  last=$(grep -E '^#[0-9]+' "$log" | tail -1)
  cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<< "$last")
  ft=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<< "$last")
  result=ok
  if [ "$rc" != 0 ]; then
    result="FOUND (exit $rc): $(grep -m1 -E 'ERROR|contract violated|runtime error|Timeout|out-of-memory|malloc\(' "$log" || echo see log)"
    failed=1
  fi
  printf '%-16s %10s %8s %8s %8s  %s\n' "$t" "${execs:-?}" "${speed:-?}" "${cov:-?}" "${ft:-?}" "$result"
done
if ((failed)); then
  echo "fuzz.sh: findings above; inputs in $BUILD/findings/<target>/, logs in $BUILD/fuzz-logs/" >&2
  exit 1
fi
echo "fuzz.sh: no findings"
