#!/usr/bin/env bash
# The fine-tuning demonstration on CPU (docs/finetuning.md, "Demonstration"), end to end:
#   1. KJV text WITH verse numbers (scripts/get_kjv.sh --verse-numbers) and its own tokenizer, so
#      the base knows the digits PassKey keys are made of (data/kjv_numbered); then the
#      pretraining mix: KJV passages + PassKey documents (scripts/make_kjv_passkey_mix.py,
#      data/kjv_passkey_mix), which give the tiny base the in-window retrieval a real LLM has,
#   2. pretrain the tiny model with full attention (configs/experiments/kjv_passkey_full.yaml),
#      then probe its in-context copying (configs/eval/copy_probe.yaml),
#   3. convert it: `fam export` (HF Llama names) + `fam import --attention fam` (blocks of 64, no
#      memory segment, 8 FAM rows; prompt initialised from token embeddings) and `--attention
#      bswa` (the baseline, same weights, blocks of 64 and one memory segment: 512-token reach),
#   4. a synthetic PassKey instruction set (scripts/make_passkey_instructions.py
#      --questions-every 2 + `fam prepare-instructions --boundary-slack 512`): the key in the
#      first quarter of 155-310 filler tokens, asked for after every second filler group and at
#      the end, one example per 512-token window,
#   5. PassKey accuracy BEFORE fine-tuning (configs/eval/finetune_demo.yaml), FAM and BSWA,
#   6. LoRA fine-tuning of both (configs/experiments/finetune_demo_passkey.yaml),
#   7. `fam export --merge` of the adapters and PassKey AFTER fine-tuning,
#   8. a table (also written to <out>/table.md).
# Every step is skipped when its output exists (training runs resume), so a rerun only redoes what
# is missing; delete <out> to start over.
#
#   scripts/finetune_demo.sh [OUT_DIR]      default runs/finetune_demo
#   env: FAM_BUILD_DIR (default build), PRETRAIN_STEPS (config's: 800), FINETUNE_STEPS (config's:
#        400), SKIP_BSWA_FINETUNE=1 (fine-tune FAM only)
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-runs/finetune_demo}
BUILD=${FAM_BUILD_DIR:-build}
FAM="$BUILD/fam"
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
FT_CONFIG=configs/experiments/finetune_demo_passkey.yaml
SUITE=configs/eval/finetune_demo.yaml
DATA=data/kjv_numbered
MIX=data/kjv_passkey_mix
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
# The pretraining mix, in the same tokenizer: KJV passages and PassKey documents, every token
# trained on (without them the tiny base finds no key even inside its window; docs/finetuning.md).
if [ ! -f "$MIX/data.json" ]; then
  log "pretraining mix: KJV + PassKey documents"
  python3 scripts/make_kjv_passkey_mix.py --kjv "$DATA/kjv.txt" --out "$MIX/mix.jsonl"
  "$FAM" prepare-instructions --config configs/experiments/kjv_passkey_full.yaml \
    --tokenizer "$TOKENIZER" --input "$MIX/mix.jsonl" --out "$MIX" --val-fraction 0.01 \
    --repeat-tokens 0
fi

# 2. Pretrain with full attention (resumes; a finished run returns at once).
log "pretrain kjv_passkey_full"
PRETRAIN_SET=()
if [ -n "${PRETRAIN_STEPS:-}" ]; then PRETRAIN_SET=(--set "trainer.steps=$PRETRAIN_STEPS"); fi
"$FAM" train --config configs/experiments/kjv_passkey_full.yaml --set "run_dir=$OUT" \
  "${PRETRAIN_SET[@]}"
FULL_RUN="$OUT/kjv_passkey_full"
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

# 3. Convert: export in HF Llama names, import as FAM (block 64, no memory segment, 8 FAM rows)
# and as BSWA (block 64, one memory segment).
if [ ! -f "$OUT/base_bswa/model.safetensors" ]; then
  log "convert $FULL_CKPT"
  mkdir -p "$OUT/hf"
  "$FAM" export --checkpoint "$FULL_CKPT" --out "$OUT/hf/model.safetensors" \
    --hf-config "$OUT/hf/config.json"
  "$FAM" import --hf "$OUT/hf" --out "$OUT/base_fam" --attention fam --block-size 64 \
    --memory-segments 0 --fam-length 8
  "$FAM" import --hf "$OUT/hf" --out "$OUT/base_bswa" --attention bswa --block-size 64 \
    --memory-segments 1
fi

# 4. Synthetic PassKey instructions, one-digit keys (as the suite's passkey.key_digits), one
# example per window (--boundary-slack = seq_len), several questions per example.
if [ ! -f "$OUT/passkey_recall/data.json" ]; then
  log "PassKey instruction set passkey_recall"
  python3 scripts/make_passkey_instructions.py --out "$OUT/passkey_recall/passkey.jsonl" \
    --examples 8000 --key-digits 1 --seed 31 --min-tokens 155 --max-tokens 310 \
    --max-depth 0.25 --questions-every 2
  "$FAM" prepare-instructions --config "$FT_CONFIG" --tokenizer "$TOKENIZER" \
    --input "$OUT/passkey_recall/passkey.jsonl" --out "$OUT/passkey_recall" --val-fraction 0.01 \
    --boundary-slack 512 --repeat-tokens 0
fi

evaluate() {  # evaluate NAME MODEL_ARGS... (--model Y --weights W, or --checkpoint DIR)
  local name=$1
  shift
  if [ ! -f "$OUT/eval/$name.json" ]; then
    log "eval $name"
    "$FAM" eval "$@" --tokenizer "$TOKENIZER" --val "$DATA/val-*.bin" --config "$SUITE" \
      --out "$OUT/eval/$name.json" --no-plots
  fi
}

# 5. Before fine-tuning: the full-attention base itself (its in-window retrieval) and the two
# conversions.
evaluate full_base --checkpoint "$FULL_CKPT"
evaluate fam_before --model "$OUT/base_fam/model.yaml" --weights "$OUT/base_fam/model.safetensors"
evaluate bswa_before --model "$OUT/base_bswa/model.yaml" \
  --weights "$OUT/base_bswa/model.safetensors"
echo "before: $((SECONDS / 60)) min so far"

# 6 + 7. LoRA fine-tuning, merge, after.
finetune() {  # finetune fam|bswa
  local kind=$1
  local name="finetune_demo_$kind"
  local set=(--set "run_dir=$OUT" --set "name=$name"
    --set "finetune.base_weights=$OUT/base_$kind/model.safetensors" --set "data.tokenizer=$TOKENIZER"
    --set "data.train=$OUT/passkey_recall/train-*.bin" --set "data.val=$OUT/passkey_recall/val-*.bin")
  if [ "$kind" = bswa ]; then
    set+=(--set model.attention.type=bswa --set model.attention.memory_segments=1)
  fi
  if [ -n "${FINETUNE_STEPS:-}" ]; then set+=(--set "trainer.steps=$FINETUNE_STEPS"); fi
  log "LoRA fine-tune $kind"
  "$FAM" train --config "$FT_CONFIG" "${set[@]}"
  if [ ! -f "$OUT/merged_$kind.safetensors" ] ||
    [ "$OUT/$name/adapters.safetensors" -nt "$OUT/merged_$kind.safetensors" ]; then
    rm -f "$OUT/eval/${kind}_after.json"
    "$FAM" export --weights "$OUT/base_$kind/model.safetensors" \
      --adapters "$OUT/$name/adapters.safetensors" --merge --out "$OUT/merged_$kind.safetensors"
  fi
  evaluate "${kind}_after" --model "$OUT/base_$kind/model.yaml" \
    --weights "$OUT/merged_$kind.safetensors"
}
finetune fam
if [ "${SKIP_BSWA_FINETUNE:-0}" != 1 ]; then finetune bswa; fi
echo "total: $((SECONDS / 60)) min"

# 8. The table: exact-match accuracy per length, digits right (position by position), the
# nearest key's distance from the end of the prompt, and validation perplexity on KJV.
python3 - "$OUT" <<'EOF' | tee "$OUT/table.md"
import json, os, sys
out = sys.argv[1]
rows = [("full_base", "full attention (the base)"),
        ("fam_before", "FAM, converted, before"), ("fam_after", "FAM, LoRA fine-tuned"),
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
