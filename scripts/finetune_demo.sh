#!/usr/bin/env bash
# The fine-tuning demonstration on CPU (docs/finetuning.md, "Demonstration"), end to end:
#   1. the KJV data (as scripts/run.sh prepares it),
#   2. pretrain the tiny model with full attention (configs/experiments/kjv_tiny_full.yaml),
#   3. convert it: `fam export` (HF Llama names) + `fam import --attention fam` (FAM prompt
#      initialised from token embeddings) and `--attention bswa` (the baseline, same weights),
#   4. a synthetic PassKey instruction set (scripts/make_passkey_instructions.py +
#      `fam prepare-instructions`),
#   5. PassKey accuracy BEFORE fine-tuning (configs/eval/finetune_demo.yaml: keys always further
#      back than the BSWA receptive field at the long lengths), FAM and BSWA,
#   6. LoRA fine-tuning of both (configs/experiments/finetune_demo_passkey.yaml),
#   7. `fam export --merge` of the adapters and PassKey AFTER fine-tuning,
#   8. a table (also written to <out>/table.md).
# Every step is skipped when its output exists (training runs resume), so a rerun only redoes what
# is missing; delete <out> to start over.
#
#   scripts/finetune_demo.sh [OUT_DIR]      default runs/finetune_demo
#   env: FAM_BUILD_DIR (default build), PRETRAIN_STEPS (100), FINETUNE_STEPS (config's),
#        EXAMPLES (16000), SKIP_BSWA_FINETUNE=1 (fine-tune FAM only)
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-runs/finetune_demo}
BUILD=${FAM_BUILD_DIR:-build}
FAM="$BUILD/fam"
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
PRETRAIN_STEPS=${PRETRAIN_STEPS:-100}
EXAMPLES=${EXAMPLES:-16000}
FT_CONFIG=configs/experiments/finetune_demo_passkey.yaml
SUITE=configs/eval/finetune_demo.yaml
TOKENIZER=data/kjv/tokenizer.model

if [ ! -x "$FAM" ]; then
  echo "finetune_demo.sh: $FAM not found; build first (scripts/setup.sh) or set FAM_BUILD_DIR" >&2
  exit 2
fi
mkdir -p "$OUT/eval"
log() { echo "== $(date +%T) $*"; }
SECONDS=0

# 1. Data.
if [ ! -f data/kjv/data.json ]; then
  log "KJV data"
  mkdir -p data/kjv
  scripts/get_kjv.sh data/kjv/kjv.txt
  "$FAM" prepare-data --input data/kjv/kjv.txt --out data/kjv --vocab-size 2048
fi

# 2. Pretrain with full attention (resumes; a finished run returns at once).
log "pretrain kjv_tiny_full ($PRETRAIN_STEPS steps)"
"$FAM" train --config configs/experiments/kjv_tiny_full.yaml --set "run_dir=$OUT" \
  --set "trainer.steps=$PRETRAIN_STEPS"
FULL_RUN="$OUT/kjv_tiny_full"
FULL_CKPT="$FULL_RUN/checkpoints/$(cat "$FULL_RUN/checkpoints/latest")"
echo "pretrain: $((SECONDS / 60)) min so far"

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

# 4. Synthetic PassKey instructions: one-digit keys (as the suite's passkey.key_digits), short
# fillers (the key inside the attention window). Long ones (key beyond the BSWA reach) would be
# the next stage: --long-fraction 0.2 --long-min-tokens 600 --long-max-tokens 1500
# --long-max-depth 0.4.
if [ ! -f "$OUT/passkey/data.json" ]; then
  log "PassKey instruction set ($EXAMPLES examples)"
  mkdir -p "$OUT/passkey"
  python3 scripts/make_passkey_instructions.py --out "$OUT/passkey/passkey.jsonl" \
    --examples "$EXAMPLES" --min-tokens 20 --max-tokens 250 --key-digits 1 --seed 1
  "$FAM" prepare-instructions --config "$FT_CONFIG" --input "$OUT/passkey/passkey.jsonl" \
    --out "$OUT/passkey" --val-fraction 0.01
fi

evaluate() {  # evaluate NAME MODEL_YAML WEIGHTS
  if [ ! -f "$OUT/eval/$1.json" ]; then
    log "eval $1"
    "$FAM" eval --model "$2" --weights "$3" --tokenizer "$TOKENIZER" --val "data/kjv/val-*.bin" \
      --config "$SUITE" --out "$OUT/eval/$1.json" --no-plots
  fi
}

# 5. Before fine-tuning.
evaluate fam_before "$OUT/base_fam/model.yaml" "$OUT/base_fam/model.safetensors"
evaluate bswa_before "$OUT/base_bswa/model.yaml" "$OUT/base_bswa/model.safetensors"
echo "before: $((SECONDS / 60)) min so far"

# 6 + 7. LoRA fine-tuning, merge, after.
finetune() {  # finetune fam|bswa
  local kind=$1 name="finetune_demo_$1"
  local sets=(--set "run_dir=$OUT" --set "name=$name"
    --set "finetune.base_weights=$OUT/base_$kind/model.safetensors"
    --set "data.train=$OUT/passkey/train-*.bin" --set "data.val=$OUT/passkey/val-*.bin"
    --set "model.attention.type=$kind")
  if [ -n "${FINETUNE_STEPS:-}" ]; then sets+=(--set "trainer.steps=$FINETUNE_STEPS"); fi
  log "LoRA fine-tune $kind"
  "$FAM" train --config "$FT_CONFIG" "${sets[@]}"
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
