#!/usr/bin/env bash
# Builds and runs the Google Benchmark programs of bench/ (gemm, ops, train) with OMP_NUM_THREADS=2
# and prints one summary table: every figure next to the peer measured in the same run (OpenBLAS
# sgemm, the STREAM-like bandwidth, full attention), as ratios. Raw JSON stays in the output dir.
#
#   scripts/bench.sh [build-dir]              (default: build; built through scripts/setup.sh)
#   BENCH_ONLY="gemm ops" scripts/bench.sh    run a subset of {gemm, ops, train}
#   BENCH_ARGS="--benchmark_filter=Tq:256" …  extra arguments for every bench binary
#   BENCH_OUT=dir                             keep the JSON there (default: a fresh temp dir)
#   FAM_BENCH_STEPS=N                         train_bench: exactly N timed steps per benchmark
#   BENCH_NO_BUILD=1                          use the binaries already in build-dir as they are
# Takes 2-3 minutes on 2 quiet cores. Note the load average it prints: the machine should be quiet.
# On a shared machine, OMP_WAIT_POLICY=passive is much faster (spinning threads fight the other
# jobs for the cores); it is passed through to every bench, as are all other variables.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${1:-build}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
ONLY=${BENCH_ONLY:-gemm ops train}
OUT=${BENCH_OUT:-$(mktemp -d /tmp/fam-bench.XXXXXX)}
mkdir -p "$OUT"

targets=""
for b in $ONLY; do targets+="${b}_bench "; done
if [ -z "${BENCH_NO_BUILD:-}" ]; then
  FAM_SETUP_TARGETS="$targets" scripts/setup.sh "$BUILD_DIR" > "$OUT/build.log" 2>&1 ||
    { tail -30 "$OUT/build.log"; exit 1; }
fi

load_before=$(cut -d' ' -f1-3 /proc/loadavg)
echo "bench: OMP_NUM_THREADS=$OMP_NUM_THREADS OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-default}, $(nproc) cores, load average $load_before, JSON in $OUT"
for b in $ONLY; do
  echo "bench: running ${b}_bench ..."
  # shellcheck disable=SC2086
  "$BUILD_DIR/bench/${b}_bench" --benchmark_out="$OUT/$b.json" --benchmark_out_format=json \
    ${BENCH_ARGS:-} > "$OUT/$b.txt" 2>&1 || { cat "$OUT/$b.txt"; exit 1; }
done
load_after=$(cut -d' ' -f1-3 /proc/loadavg)

python3 - "$OUT" "$load_before" "$load_after" <<'EOF'
import json, os, re, sys

out, load_before, load_after = sys.argv[1], sys.argv[2], sys.argv[3]

def load(name):
    path = os.path.join(out, name + ".json")
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [b for b in json.load(f)["benchmarks"] if b.get("run_type", "iteration") == "iteration"]

def args(b):
    return dict(re.findall(r"/(\w+):([\w.]+)", b["name"]))

def base(b):
    return b["name"].split("/")[0]

def f(x, digits=1):
    return "-" if x is None else f"{x:,.{digits}f}"

def table(title, header, rows):
    if not rows:
        return
    print(f"\n{title}")
    widths = [max(len(str(r[i])) for r in [header] + rows) for i in range(len(header))]
    line = lambda r: "  ".join(str(c).rjust(w) for c, w in zip(r, widths))
    print(line(header))
    print("  ".join("-" * w for w in widths))
    for r in rows:
        print(line(r))

print(f"\n== famtrain benchmarks (OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}, "
      f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY') or 'default'}, "
      f"load average before {load_before}, after {load_after}) ==")

gemm = load("gemm")
if gemm:
    by_shape = {}
    for b in gemm:
        s = args(b)["shape"]
        by_shape.setdefault(s, {"label": b.get("label", "")})[base(b)] = b
    rows = []
    for s, d in sorted(by_shape.items(), key=lambda kv: int(kv[0])):
        def cell(name):
            b = d.get(name)
            return "-" if b is None else f"{b['GFLOPs']:.1f} ({b['ratio']:.2f})"
        blas = d.get("BM_OpenBlasSgemm")
        rows.append([d["label"], f(blas["GFLOPs"]) if blas else "-", cell("BM_Matmul"),
                     cell("BM_Linear"), cell("BM_GemmTiled")])
    table("GEMM, GFLOP/s (ratio ours/OpenBLAS, same buffers, interleaved; target >= 0.9)",
          ["M x K x N", "OpenBLAS", "ops::Matmul", "ops::Linear", "GemmTiled"], rows)

ops = load("ops")
if ops:
    refs = {base(b) + args(b).get("triad", ""): b for b in ops if base(b).startswith("BM_Machine")}
    sgemm = refs.get("BM_MachineSgemm", {}).get("GFLOPs")
    stream = max([b["GBps"] for k, b in refs.items() if k.startswith("BM_MachineStream")] or [0])
    print(f"\nmachine references (same run): cblas_sgemm 1024^3 {f(sgemm)} GFLOP/s, "
          f"STREAM-like copy/triad {f(stream)} GB/s")
    att = {}
    for b in ops:
        if base(b) in ("BM_AttentionForward", "BM_AttentionBackward"):
            a = args(b)
            att.setdefault((int(a["D"]), int(a["Tq"])), {})[base(b)] = b
    rows = []
    for (d, tq), v in sorted(att.items()):
        cell = lambda b: "-" if b is None else f"{b['GFLOPs']:.1f} ({b['of_sgemm']:.2f})"
        rows.append([f"Tq={tq} keys={tq}+{tq} D={d}", cell(v.get("BM_AttentionForward")),
                     cell(v.get("BM_AttentionBackward"))])
    table("Attention kernel, B=1 H=4, GFLOP/s over visible pairs (ratio to sgemm)",
          ["shape", "forward", "backward"], rows)
    rows = []
    for b in ops:
        if "GBps" in b and not base(b).startswith("BM_Machine"):
            a = args(b)
            shape = " x ".join(f"{k}={v}" for k, v in a.items() if k in ("N", "D", "V"))
            rows.append([base(b)[3:], shape, f(b["GBps"]), f"{b['of_stream']:.2f}"])
    table("Memory-bound fused ops, GB/s of compulsory traffic (ratio to STREAM)",
          ["op", "shape", "GB/s", "of_stream"], rows)

train = load("train")
if train:
    rows = []
    for b in train:
        a = args(b)
        shape = f"batch {a.get('batch')} x seq {a.get('seq')}"
        if base(b) == "BM_TrainGpt2Small":
            rows.append(["gpt2-like small, full", shape, f(b["tokens_per_s"], 0), f(b["GFLOPs"]),
                         f"{b.get('of_sgemm', 0):.2f}", "-"])
        elif base(b) == "BM_TrainTiny":
            for kind in ("fam", "bswa", "full"):
                ratio = "1.00" if kind == "fam" else f"{b[f'fam_vs_{kind}']:.2f}"
                rows.append([f"tiny, {kind}", shape, f(b[f"{kind}_tokens_per_s"], 0),
                             f(b[f"{kind}_GFLOPs"]), f"{b.get(f'{kind}_of_sgemm', 0):.2f}", ratio])
    table("Training step (forward + backward + AdamW), synthetic tokens",
          ["model", "shape", "tokens/s", "GFLOP/s", "of_sgemm", "FAM speedup vs it"], rows)
EOF
