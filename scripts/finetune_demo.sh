#!/usr/bin/env bash
# The fine-tuning demonstration on CPU (docs/finetuning.md, "Demonstration"), end to end:
#   1. KJV text WITH verse numbers (scripts/get_kjv.sh --verse-numbers) and its own tokenizer, so
#      the base knows the digits PassKey keys are made of (data/kjv_numbered),
#   2. pretrain the tiny model with full attention (configs/experiments/kjv_tiny_full.yaml), then
#      probe its in-context copying (configs/eval/copy_probe.yaml),
#   3. convert it: `fam export` (HF Llama names) + `fam import --attention fam` (FAM prompt
#      initialised from token embeddings) and `--attention bswa` (the baseline, same weights),
#   4. two synthetic PassKey instruction sets (scripts/make_passkey_instructions.py +
#      `fam prepare-instructions`): "short" (no filler or one sentence group: the key a few dozen
#      tokens back) and "mixed" (60% with 31-248 filler tokens, 40% with 300-700 and the key in
#      the first half: 150 to 700 tokens back, up to beyond BSWA's 512-token reach),
#   5. PassKey accuracy BEFORE fine-tuning (configs/eval/finetune_demo.yaml), FAM and BSWA,
#   6. LoRA fine-tuning of both (configs/experiments/finetune_demo_passkey.yaml) in two stages:
#      "short" from fresh adapters, then "mixed" from the short stage's adapters at half the
#      learning rate,
#   7. `fam export --merge` of the adapters and PassKey AFTER fine-tuning,
#   8. a table (also written to <out>/table.md).
# Every step is skipped when its output exists (training runs resume), so a rerun only redoes what
# is missing; delete <out> to start over.
#
#   scripts/finetune_demo.sh [OUT_DIR]      default runs/finetune_demo
#   env: FAM_BUILD_DIR (default build), PRETRAIN_STEPS (config's: 400), SHORT_STEPS (300),
#        MIXED_STEPS (600), SKIP_BSWA_FINETUNE=1 (fine-tune FAM only)
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-runs/finetune_demo}
BUILD=${FAM_BUILD_DIR:-build}
FAM="$BUILD/fam"
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
SHORT_STEPS=${SHORT_STEPS:-300}
MIXED_STEPS=${MIXED_STEPS:-600}
FT_CONFIG=configs/experiments/finetune_demo_passkey.yaml
SUITE=configs/eval/finetune_demo.yaml
DATA=data/kjv_numbered
TOKENIZER=$DATA/tokenizer.model

if [ ! -x "$FAM" ]; then
  echo "finetune_demo.sh: $FAM not found; build first (scripts/setup.sh) or set FAM_BUILD_DIR" >&2
  exit 2
fi
mkdir -p "$OUT/eval"
log() { echo "== $(date +%T) $*"; }
SECONDS=0

# 1. Data: KJV with verse numbers. (On the plain KJV text, which has no digits, the digit
# tokens' embeddings never get a gradient of their own and end up nearly parallel, cosine 0.99:
# the model cannot tell keys apart and no fine-tuning gets past chance.)
if [ ! -f "$DATA/data.json" ]; then
  log "KJV data with verse numbers"
  mkdir -p "$DATA"
  scripts/get_kjv.sh --verse-numbers "$DATA/kjv.txt"
  "$FAM" prepare-data --input "$DATA/kjv.txt" --out "$DATA" --vocab-size 2048
fi

# 2. Pretrain with full attention (resumes; a finished run returns at once).
log "pretrain kjv_tiny_full"
PRETRAIN_SET=()
if [ -n "${PRETRAIN_STEPS:-}" ]; then PRETRAIN_SET=(--set "trainer.steps=$PRETRAIN_STEPS"); fi
"$FAM" train --config configs/experiments/kjv_tiny_full.yaml --set "run_dir=$OUT" \
  "${PRETRAIN_SET[@]}"
FULL_RUN="$OUT/kjv_tiny_full"
FULL_CKPT="$FULL_RUN/checkpoints/$(cat "$FULL_RUN/checkpoints/latest")"
echo "pretrain: $((SECONDS / 60)) min so far"

# 2b. In-context copy probe of the base (configs/eval/copy_probe.yaml): loss on random spans that
# repeat against spans that do not. Equal losses: the base has no induction circuit to adapt.
if [ ! -f "$OUT/eval/copy_probe_random.json" ]; then
  mkdir -p "$OUT/probe"
  for kind in repeat random; do
    python3 scripts/make_copy_shard.py --out "$OUT/probe/$kind-00000.bin" --tokens 4096 \
      --probe "$kind" --seed "$([ "$kind" = repeat ] && echo 1 || echo 2)"
    "$FAM" eval --checkpoint "$FULL_CKPT" --val "$OUT/probe/$kind-*.bin" \
      --config configs/eval/copy_probe.yaml --out "$OUT/eval/copy_probe_$kind.json" --no-plots
  done
fi
python3 - "$OUT" <<'EOF'
import json, sys
loss = {k: json.load(open(f"{sys.argv[1]}/eval/copy_probe_{k}.json"))["val"]["loss"]
        for k in ("repeat", "random")}
print(f"copy probe: loss {loss['repeat']:.3f} on repeated spans, {loss['random']:.3f} on random "
      f"ones ({'copies' if loss['repeat'] < loss['random'] - 0.5 else 'NO in-context copying'})")
EOF

# 3. Convert: export in HF Llama names, import as FAM and as BSWA (block 64, 1 memory segment).
if [ ! -f "$OUT/base_bswa/model.safetensors" ]; then
  log "convert $FULL_CKPT"
  mkdir -p "$OUT/hf"
  "$FAM" export --checkpoint "$FULL_CKPT" --out "$OUT/hf/model.safetensors" \
    --hf-config "$OUT/hf/config.json"
  "$FAM" import --hf "$OUT/hf" --out "$OUT/base_fam" --attention fam --block-size 64 \
    --memory-segments 1 --fam-length 8
  "$FAM" import --hf "$OUT/hf" --out "$OUT/base_bswa" --attention bswa --block-size 64 \
    --memory-segments 1
fi

# 4. Synthetic PassKey instructions, one-digit keys (as the suite's passkey.key_digits).
instructions() {  # instructions NAME EXAMPLES SEED GENERATOR_ARGS...
  local name=$1 examples=$2 seed=$3
  shift 3
  if [ ! -f "$OUT/$name/data.json" ]; then
    log "PassKey instruction set $name ($examples examples)"
    mkdir -p "$OUT/$name"
    python3 scripts/make_passkey_instructions.py --out "$OUT/$name/passkey.jsonl" \
      --examples "$examples" --key-digits 1 --seed "$seed" "$@"
    "$FAM" prepare-instructions --config "$FT_CONFIG" --tokenizer "$TOKENIZER" \
      --input "$OUT/$name/passkey.jsonl" --out "$OUT/$name" --val-fraction 0.01
  fi
}
instructions passkey_short 24000 3 --min-tokens 0 --max-tokens 31
instructions passkey_mixed 12000 4 --min-tokens 31 --max-tokens 248 --long-fraction 0.4 \
  --long-min-tokens 300 --long-max-tokens 700 --long-max-depth 0.5

evaluate() {  # evaluate NAME MODEL_YAML WEIGHTS
  if [ ! -f "$OUT/eval/$1.json" ]; then
    log "eval $1"
    "$FAM" eval --model "$2" --weights "$3" --tokenizer "$TOKENIZER" --val "$DATA/val-*.bin" \
      --config "$SUITE" --out "$OUT/eval/$1.json" --no-plots
  fi
}

# 5. Before fine-tuning.
evaluate fam_before "$OUT/base_fam/model.yaml" "$OUT/base_fam/model.safetensors"
evaluate bswa_before "$OUT/base_bswa/model.yaml" "$OUT/base_bswa/model.safetensors"
echo "before: $((SECONDS / 60)) min so far"

# 6 + 7. LoRA fine-tuning in two stages, merge, after.
finetune() {  # finetune fam|bswa
  local kind=$1
  local base=(--set "run_dir=$OUT" --set "finetune.base_weights=$OUT/base_$kind/model.safetensors"
    --set "data.tokenizer=$TOKENIZER" --set "model.attention.type=$kind")
  log "LoRA fine-tune $kind, stage short"
  "$FAM" train --config "$FT_CONFIG" "${base[@]}" --set "name=finetune_demo_${kind}_short" \
    --set "data.train=$OUT/passkey_short/train-*.bin" \
    --set "data.val=$OUT/passkey_short/val-*.bin" --set "trainer.steps=$SHORT_STEPS"
  local name="finetune_demo_$kind"
  log "LoRA fine-tune $kind, stage mixed"
  "$FAM" train --config "$FT_CONFIG" "${base[@]}" --set "name=$name" \
    --set "finetune.adapters=$OUT/finetune_demo_${kind}_short/adapters.safetensors" \
    --set "data.train=$OUT/passkey_mixed/train-*.bin" \
    --set "data.val=$OUT/passkey_mixed/val-*.bin" --set "trainer.steps=$MIXED_STEPS" \
    --set optimizer.lr=5e-3
  if [ ! -f "$OUT/merged_$kind.safetensors" ] ||
    [ "$OUT/$name/adapters.safetensors" -nt "$OUT/merged_$kind.safetensors" ]; then
    rm -f "$OUT/eval/${kind}_after.json"
    "$FAM" export --weights "$OUT/base_$kind/model.safetensors" \
      --adapters "$OUT/$name/adapters.safetensors" --merge --out "$OUT/merged_$kind.safetensors"
  fi
  evaluate "${kind}_after" "$OUT/base_$kind/model.yaml" "$OUT/merged_$kind.safetensors"
}
finetune fam
if [ "${SKIP_BSWA_FINETUNE:-0}" != 1 ]; then finetune bswa; fi
echo "total: $((SECONDS / 60)) min"

# 8. The table: exact-match accuracy per length, digits right (position by position), the
# nearest key's distance from the end of the prompt, and validation perplexity on KJV.
python3 - "$OUT" <<'EOF' | tee "$OUT/table.md"
import json, os, sys
out = sys.argv[1]
rows = [("fam_before", "FAM, converted, before"), ("fam_after", "FAM, LoRA fine-tuned"),
        ("bswa_before", "BSWA, converted, before"), ("bswa_after", "BSWA, LoRA fine-tuned")]
reports = {k: json.load(open(f"{out}/eval/{k}.json")) for k, _ in rows
           if os.path.exists(f"{out}/eval/{k}.json")}
lengths = [p["context_tokens"] for p in next(iter(reports.values()))["passkey"]]

def digits(trial):
    key = str(trial["key"])
    answer = "".join(c for c in trial["answer"] if c.isdigit())[:len(key)]
    return sum(a == b for a, b in zip(key, answer))

head = "| model | KJV val ppl | " + " | ".join(f"PassKey {n}" for n in lengths) + " |"
print(head)
print("|" + "---|" * (2 + len(lengths)))
for key, label in rows:
    if key not in reports:
        continue
    r = reports[key]
    cells = []
    for p in r["passkey"]:
        d = (sum(digits(t) for t in p["results"]) /
             sum(len(str(t["key"])) for t in p["results"]))
        kinds = len({"".join(c for c in t["answer"] if c.isdigit()) for t in p["results"]})
        cells.append(f"{p['accuracy']:.2f} ({d:.2f}, {kinds})")
    ppl = r["val"]["ppl"] if r.get("val") else float("nan")
    print(f"| {label} | {ppl:.1f} | " + " | ".join(cells) + " |")
r = next(iter(reports.values()))
for p in r["passkey"]:
    deepest = max(t["depth"] for t in p["results"])
    print(f"\n{p['context_tokens']} tokens: {p['trials']} trials, prompts of "
          f"{p['mean_prompt_tokens']:.0f} tokens, key depths <= {deepest:.2f} of the filler", end="")
print("\n\ncells: exact-match accuracy (fraction of the key digits right, position by position; "
      "number of distinct digit strings answered: 1 = a constant answer)")
EOF
