#!/usr/bin/env bash
# Training throughput of famtrain against a PyTorch 2 implementation of the same models
# (bench/torch_peer.py), eager and torch.compile, timed alternately in one run: ours, torch, ours,
# torch ... with the same OMP_NUM_THREADS. Prints tokens/s of both and ours / torch per model
# (goals: >= 1.5 x eager and >= 1.0 x torch.compile on tiny FAM and GPT-small).
#
#   scripts/bench_torch.sh [build-dir]       (default build; train_bench built via scripts/setup.sh)
#   FAM_REF_VENV=/path/to/venv               python with torch (default .venv-ref, else python3);
#                                            without an importable torch the script skips (exit 0)
#   STEPS=4 ROUNDS=2                         timed steps per model and program run; rounds
#   WARMUP=2                                 torch's untimed steps (ours: one, train_bench's own)
#   MODES=eager,compile  MODELS=a,b          torch peer's modes and models (all by default)
#   OURS_FILTER=regex                        train_bench's --benchmark_filter (default: both
#                                            training benchmarks); pair it with MODELS, e.g.
#                                            OURS_FILTER=seq:4096 MODELS=tiny-fam-4096,tiny-bswa-4096,tiny-full-4096
#   BENCH_NO_BUILD=1                         use build-dir's train_bench as it is
#   BENCH_WAIT_LOAD=1.0                      if the 1-min load average is above it, wait 60 s once
#   BENCH_OUT=dir                            keep the raw JSON there (default: a temp dir, removed)
#
# train_bench runs BM_TrainGpt2Small and BM_TrainTiny (FAM, BSWA and full, rotating, each step of
# each timed) for STEPS iterations after one untimed step and reports the mean step time; the
# peer reports the median of its STEPS timed steps per model and mode. Each peer run compiles in
# a fresh inductor cache directory made for this script, so round 1 shows the cold compile time
# and later rounds the cached one (both printed). Takes ~5-10 minutes with the defaults.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${1:-build}
STEPS=${STEPS:-4}
ROUNDS=${ROUNDS:-2}
WARMUP=${WARMUP:-2}
MODES=${MODES:-eager,compile}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}

if [ -n "${FAM_REF_VENV:-}" ]; then
  PY="$FAM_REF_VENV/bin/python"
elif [ -x .venv-ref/bin/python ]; then
  PY=.venv-ref/bin/python
else
  PY=python3
fi
if ! torch_version=$("$PY" -c 'import torch; print(torch.__version__)' 2> /dev/null); then
  echo "bench_torch: torch is not importable from $PY (set FAM_REF_VENV to a venv with torch); skipped"
  exit 0
fi

if [ -n "${BENCH_OUT:-}" ]; then
  OUT=$BENCH_OUT
  mkdir -p "$OUT"
else
  OUT=$(mktemp -d /tmp/fam-bench-torch.XXXXXX)
  trap 'rm -rf "$OUT"' EXIT
fi

if [ -z "${BENCH_NO_BUILD:-}" ]; then
  FAM_SETUP_TARGETS=train_bench scripts/setup.sh "$BUILD_DIR" > "$OUT/build.log" 2>&1 ||
    { tail -30 "$OUT/build.log"; exit 1; }
fi
[ -x "$BUILD_DIR/bench/train_bench" ] || { echo "bench_torch: $BUILD_DIR/bench/train_bench not found" >&2; exit 1; }

load1() { cut -d' ' -f1 /proc/loadavg; }
if [ -n "${BENCH_WAIT_LOAD:-}" ] && awk -v l="$(load1)" -v m="$BENCH_WAIT_LOAD" 'BEGIN { exit !(l > m) }'; then
  echo "bench_torch: load average $(load1) > $BENCH_WAIT_LOAD, waiting 60 s"
  sleep 60
fi

peer_args=(--modes "$MODES" --steps "$STEPS" --warmup "$WARMUP" --threads "$OMP_NUM_THREADS")
[ -n "${MODELS:-}" ] && peer_args+=(--models "$MODELS")
mkdir -p "$OUT/inductor"
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
echo "bench_torch: OMP_NUM_THREADS=$OMP_NUM_THREADS OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-default}, $(nproc) cores, torch $torch_version ($PY), load average $load_before"
for ((r = 0; r < ROUNDS; r++)); do
  echo "bench_torch: round $((r + 1))/$ROUNDS: train_bench ..."
  FAM_BENCH_STEPS=$STEPS "$BUILD_DIR/bench/train_bench" \
    --benchmark_filter="${OURS_FILTER:-BM_TrainGpt2Small|BM_TrainTiny}" --benchmark_format=json \
    > "$OUT/ours_$r.json" 2> "$OUT/ours_$r.err" || { cat "$OUT/ours_$r.err"; exit 1; }
  echo "bench_torch: round $((r + 1))/$ROUNDS: torch peer ($MODES) ..."
  TORCHINDUCTOR_CACHE_DIR="$OUT/inductor" "$PY" bench/torch_peer.py "${peer_args[@]}" \
    > "$OUT/torch_$r.txt" 2> "$OUT/torch_$r.err" || { tail -20 "$OUT/torch_$r.err"; exit 1; }
  echo "  load average now $(cut -d' ' -f1-3 /proc/loadavg)"
done
load_after=$(cut -d' ' -f1-3 /proc/loadavg)

python3 - "$OUT" "$ROUNDS" "$STEPS" "$load_before" "$load_after" <<'EOF'
import json, os, re, statistics, sys

out, rounds, steps, load_before, load_after = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
ours = {}    # (round, model) -> tokens/s (train_bench: mean step time of the round)
torch = {}   # (round, model, mode) -> tokens/s (peer: median step time of the round)
first = {}   # (model, mode) -> [first step seconds (compilation included), per round]
scope, errors, models = {}, {}, []
for r in range(rounds):
    with open(os.path.join(out, f"ours_{r}.json")) as f:
        for b in json.load(f)["benchmarks"]:
            if b.get("run_type", "iteration") != "iteration":
                continue
            args = dict(re.findall(r"/(\w+):(\d+)", b["name"]))
            if b["name"].startswith("BM_TrainGpt2Small"):
                ours[(r, "gpt2-small")] = b["tokens_per_s"]
            else:
                for kind in ("fam", "bswa", "full"):
                    ours[(r, f"tiny-{kind}-{args['seq']}")] = b[f"{kind}_tokens_per_s"]
    with open(os.path.join(out, f"torch_{r}.txt")) as f:
        for line in f:
            if not line.startswith("{"):
                continue
            j = json.loads(line)
            if j["model"] not in models:
                models.append(j["model"])
            key = (j["model"], j["mode"])
            if "error" in j:
                errors[key] = j["error"]
                continue
            torch[(r, *key)] = j["tokens_per_s"]
            first.setdefault(key, []).append(j["first_step_s"])
            scope[key] = j.get("compile_scope")

med = statistics.median
print(f"\n== famtrain vs PyTorch (OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}, "
      f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY') or 'default'}; {rounds} rounds x "
      f"{steps} timed steps, alternating; load average before {load_before}, after {load_after}) ==")
print("tokens/s: median over the rounds; ratio: median of the per-round ratios (round by round in [])")
header = ["model", "ours tok/s", "eager tok/s", "ours/eager", "compile tok/s", "ours/compile",
          "compile warm-up s"]
rows, summary = [], []
for model in models:
    o = [ours[(r, model)] for r in range(rounds) if (r, model) in ours]
    if not o:
        continue
    row = [model, f"{med(o):,.0f}"]
    rec = {"model": model, "ours_tokens_per_s": med(o)}
    for mode in ("eager", "compile"):
        pairs = [(ours[(r, model)], torch[(r, model, mode)]) for r in range(rounds)
                 if (r, model) in ours and (r, model, mode) in torch]
        if pairs:
            ratios = [a / b for a, b in pairs]
            row += [f"{med([b for _, b in pairs]):,.0f}",
                    f"{med(ratios):.2f} [{' '.join(f'{x:.2f}' for x in ratios)}]"]
            rec.update({f"torch_{mode}_tokens_per_s": med([b for _, b in pairs]),
                        f"ours_vs_{mode}": med(ratios), f"ours_vs_{mode}_rounds": ratios})
        elif (model, mode) in errors:
            row += ["failed", "-"]
            rec[f"torch_{mode}_error"] = errors[(model, mode)]
        else:
            row += ["-", "-"]
    key = (model, "compile")
    row.append(" / ".join(f"{s:.0f}" for s in first.get(key, [])) +
               (f" ({scope[key]})" if scope.get(key) else ""))
    rec["compile_first_step_s"] = first.get(key, [])
    rows.append(row)
    summary.append(rec)
widths = [max(len(str(r[i])) for r in [header] + rows) for i in range(len(header))]
line = lambda r: "  ".join(str(c).rjust(w) for c, w in zip(r, widths))
print(line(header))
print("  ".join("-" * w for w in widths))
for r in rows:
    print(line(r))
print("compile warm-up: the first step of each round (compilation included; round 1 starts from an "
      "empty inductor cache)")
for (model, mode), e in errors.items():
    print(f"torch {mode} failed for {model}: {e}")
for rec in summary:
    print(json.dumps(rec))
EOF
