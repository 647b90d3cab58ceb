#!/usr/bin/env bash
# Checks famtrain against transformers on a real pretrained model, SmolLM2-135M, end to end, and
# prints PASS/FAIL with the figures (docs/pretrained_models.md). A by-hand check, not part of CI.
#
#   scripts/check_smollm2.sh [WORK_DIR]        # default runs/smollm2_check
#   FAM=/path/to/fam FAM_REF_VENV=/path/to/venv scripts/check_smollm2.sh
#
# Steps (1-3 skipped when their output exists; the fam steps always run):
#   1. scripts/get_smollm2.sh: the model as a HF directory (data/smollm2-135m)
#   2. KJV text (scripts/get_kjv.sh) as token shards of HF tokenizer ids (data/smollm2-kjv), split
#      like `fam prepare-data`
#   3. scripts/smollm2_reference.py: transformers' logits, perplexity, greedy generations and
#      tokenizer ids → WORK/reference-w<windows>.json
#   4. fam import --attention full (full attention is what transformers computes)
#   5. fam forward on the fixed ids: max relative logit error (≤ 1e-4 passes)
#   6. fam eval on the same windows: perplexity against transformers' (within 0.5% passes)
#   7. greedy decisions: fam forward on each prompt + transformers' continuation, the argmax at
#      every generated position must be transformers' next token (= the same greedy generation)
#   8. fam generate --temperature 0 and fam prepare-data --tokenizer tokenizer.json against the
#      reference text/ids (SKIP when the fam binary cannot read a tokenizer.json)
#
# Settings: FAM (default build/fam), FAM_REF_VENV (default .venv-ref), FAM_SMOLLM2_WINDOWS
# (perplexity windows of 2048 tokens, default 8 = 16,384 tokens). Exit 0 on PASS, 1 on FAIL.
# Run time on a shared 2-core CPU, model and packages present: about 6 minutes (transformers'
# reference ~4.5 min, fam eval ~2 min, the rest seconds); ~2 minutes once the reference JSON
# exists. Getting the model adds ~30 s (plus the package downloads, torch being large).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
FAM="${FAM:-$ROOT/build/fam}"
VENV="${FAM_REF_VENV:-$ROOT/.venv-ref}"
export FAM_REF_VENV="$VENV"
PY="$VENV/bin/python"
HF="$ROOT/data/smollm2-135m"
SHARDS="$ROOT/data/smollm2-kjv"
WORK="${1:-$ROOT/runs/smollm2_check}"
WINDOWS="${FAM_SMOLLM2_WINDOWS:-8}"
SEQ_LEN=2048
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-2}"

[[ -x "$FAM" ]] || { echo "no fam binary at $FAM (set FAM=...)" >&2; exit 2; }
mkdir -p "$WORK"
SECONDS=0
stamp() { echo "== [$SECONDS s] $*"; }

stamp "model"
if [[ ! -f "$HF/model.safetensors" || ! -f "$HF/config.json" ]]; then
  scripts/get_smollm2.sh "$HF"
fi

stamp "token shards (HF tokenizer ids of the KJV, split like fam prepare-data)"
if [[ ! -f "$SHARDS/val-00000.bin" ]]; then
  [[ -f data/kjv/kjv.txt ]] || scripts/get_kjv.sh data/kjv/kjv.txt
  "$PY" scripts/smollm2_reference.py --hf "$HF" --write-shards "$SHARDS" --text data/kjv/kjv.txt
fi

REF="$WORK/reference-w$WINDOWS.json"
stamp "transformers reference -> $REF"
if [[ ! -f "$REF" || ! -f "$REF.logits.npy" ]]; then
  t0=$SECONDS
  "$PY" scripts/smollm2_reference.py --hf "$HF" --out "$REF" --val "$SHARDS/val-*.bin" \
    --seq-len "$SEQ_LEN" --max-windows "$WINDOWS" 2>&1 | grep -v 'it/s\]'
  echo "reference: $((SECONDS - t0)) s"
fi

# Import the directory as written. A fam whose importer does not read transformers 5's
# "rope_parameters" {rope_theta, rope_type} (it lists the key as ignored and keeps rope_base 10000)
# imports the wrong RoPE base; then import once more from a copy whose config.json carries the
# legacy top-level rope_theta (weights linked, not copied) and keep the first import's logits for
# the record. A refusal is printed as fam wrote it.
stamp "fam import --attention full"
rm -rf "$WORK/fam" "$WORK/fam-as-written" "$WORK/hf"
rm -f "$WORK"/fam_logits*.npy "$WORK"/gen[0-9]*.npy "$WORK"/generate* "$WORK"/prepare.*
if ! "$FAM" import --hf "$HF" --out "$WORK/fam-as-written" --attention full 2>&1 \
     | tee "$WORK/import.log"; then
  echo "fam import refused $HF (above)"
fi
ROPE=$("$PY" - "$HF/config.json" "$WORK/fam-as-written/model.yaml" "$WORK/hf" <<'EOF'
import json, os, re, sys
cfg = json.load(open(sys.argv[1]))
rp = cfg.get("rope_parameters") or {}
theta = float(cfg.get("rope_theta", rp.get("rope_theta", 10000.0)))
got = None
if os.path.exists(sys.argv[2]):
    m = re.search(r"^\s*rope_base:\s*(\S+)", open(sys.argv[2]).read(), re.M)
    got = float(m.group(1)) if m else None
if got is not None and abs(got - theta) <= 1e-6 * theta:
    print(f"ok {theta:g}")
    sys.exit(0)
if "rope_theta" in cfg or not rp or rp.get("rope_type", "default") != "default" \
        or set(rp) - {"rope_theta", "rope_type"}:
    print(f"fail {theta:g} {got}")  # not a plain rope_parameters case: nothing to work around
    sys.exit(0)
src, out = os.path.dirname(os.path.abspath(sys.argv[1])), sys.argv[3]
os.makedirs(out, exist_ok=True)
for name in os.listdir(src):
    if name != "config.json" and not os.path.lexists(os.path.join(out, name)):
        os.symlink(os.path.join(src, name), os.path.join(out, name))
cfg.pop("rope_parameters")
cfg["rope_theta"] = rp["rope_theta"]
with open(os.path.join(out, "config.json"), "w") as f:
    json.dump(cfg, f, indent=2)
print(f"shim {theta:g} {got}")
EOF
)
read -r rope_state rope_theta rope_got <<< "$ROPE"
ROPE_FIX=""
case "$rope_state" in
  ok)
    mv "$WORK/fam-as-written" "$WORK/fam"
    echo "rope_base $rope_theta read from config.json" ;;
  shim)
    ROPE_FIX="$rope_theta"
    echo "note: fam import read rope_base $rope_got from a config.json whose rope_parameters say" \
         "rope_theta $rope_theta; importing $WORK/hf (top-level rope_theta) instead"
    "$FAM" import --hf "$WORK/hf" --out "$WORK/fam" --attention full ;;
  *)
    echo "FAIL: fam import: rope_base ${rope_got:-none} against rope_theta $rope_theta" >&2
    exit 1 ;;
esac

stamp "fam forward"
"$PY" -c "import json,sys; print(' '.join(map(str, json.load(open(sys.argv[1]))['logits']['ids'])))" \
  "$REF" > "$WORK/ids.txt"
"$FAM" forward --model "$WORK/fam/model.yaml" --weights "$WORK/fam/model.safetensors" \
  --tokens "$WORK/ids.txt" --out "$WORK/fam_logits.npy"
if [[ -n "$ROPE_FIX" ]]; then
  "$FAM" forward --model "$WORK/fam-as-written/model.yaml" \
    --weights "$WORK/fam-as-written/model.safetensors" --tokens "$WORK/ids.txt" \
    --out "$WORK/fam_logits_as_written.npy"
fi

stamp "fam eval ($WINDOWS windows of $SEQ_LEN)"
cat > "$WORK/suite.yaml" <<EOF
# Validation perplexity only, the windows transformers scored (scripts/smollm2_reference.py).
name: smollm2_kjv
val:
  enabled: true
  mode: windows
  seq_len: $SEQ_LEN
  max_windows: $WINDOWS
passkey:
  enabled: false
plots: false
EOF
t0=$SECONDS
EVAL="$WORK/eval-w$WINDOWS.json"
"$FAM" eval --model "$WORK/fam/model.yaml" --weights "$WORK/fam/model.safetensors" \
  --val "$SHARDS/val-*.bin" --config "$WORK/suite.yaml" --out "$EVAL" --no-plots
echo "fam eval: $((SECONDS - t0)) s"

stamp "greedy decisions through fam forward (teacher-forced on transformers' continuations)"
"$PY" - "$REF" "$WORK" <<'EOF'
import json, os, sys
ref, work = json.load(open(sys.argv[1])), sys.argv[2]
for i, g in enumerate(ref["generation"]["prompts"]):
    seq = g["prompt_ids"] + g["new_ids"][:-1]
    with open(os.path.join(work, f"gen{i}.txt"), "w") as f:
        f.write(" ".join(map(str, seq)) + "\n")
EOF
n_prompts=$("$PY" -c "import json,sys; print(len(json.load(open(sys.argv[1]))['generation']['prompts']))" "$REF")
for ((i = 0; i < n_prompts; i++)); do
  "$FAM" forward --model "$WORK/fam/model.yaml" --weights "$WORK/fam/model.safetensors" \
    --tokens "$WORK/gen$i.txt" --out "$WORK/gen$i.npy" > /dev/null
done

stamp "fam generate --temperature 0"
: > "$WORK/generate.status"
for ((i = 0; i < n_prompts; i++)); do
  # The trailing x keeps a prompt's final newline through the command substitution.
  prompt=$("$PY" -c "import json,sys; print(json.load(open(sys.argv[1]))['generation']['prompts'][int(sys.argv[2])]['prompt'], end='x')" "$REF" "$i")
  prompt=${prompt%x}
  if "$FAM" generate --model "$WORK/fam/model.yaml" --weights "$WORK/fam/model.safetensors" \
       --tokenizer "$HF/tokenizer.json" --prompt "$prompt" --temperature 0 --ignore-eos \
       --no-echo --max-new-tokens 32 > "$WORK/generate$i.txt" 2> "$WORK/generate$i.err"; then
    echo "ok" >> "$WORK/generate.status"
  else
    echo "unsupported: $(head -c 300 "$WORK/generate$i.err" | tr '\n' ' ')" >> "$WORK/generate.status"
    break
  fi
done

stamp "fam prepare-data --tokenizer tokenizer.json"
"$PY" -c "import json,sys; open(sys.argv[2],'w').write(json.load(open(sys.argv[1]))['tokenizer']['text'])" \
  "$REF" "$WORK/excerpt.txt"
rm -rf "$WORK/tok-excerpt" "$WORK/tok-kjv"
if "$FAM" prepare-data --input "$WORK/excerpt.txt" --out "$WORK/tok-excerpt" \
     --tokenizer "$HF/tokenizer.json" --documents file --val-fraction 0 \
     > "$WORK/prepare.log" 2>&1; then
  "$FAM" prepare-data --input data/kjv/kjv.txt --out "$WORK/tok-kjv" \
    --tokenizer "$HF/tokenizer.json" >> "$WORK/prepare.log" 2>&1 || true
  echo "ok" > "$WORK/prepare.status"
else
  echo "unsupported: $(head -c 300 "$WORK/prepare.log" | tr '\n' ' ')" > "$WORK/prepare.status"
fi

stamp "compare"
rc=0
"$PY" - "$REF" "$WORK" "$SHARDS" "$EVAL" <<'EOF' || rc=$?
import glob, json, math, os, sys
import numpy as np
sys.path.insert(0, os.path.join(os.getcwd(), "scripts"))
from smollm2_reference import read_shards

ref, work, shards = json.load(open(sys.argv[1])), sys.argv[2], sys.argv[3]
verdicts = []


def verdict(name, ok, text):
    word = {True: "PASS", False: "FAIL", None: "SKIP"}[ok]
    verdicts.append(ok)
    print(f"{word}  {name}: {text}")


# Logits: per position, max |fam - ref| over the vocabulary relative to max |ref| at that
# position; the figure is the worst position.
want = np.load(ref["logits"]["npy"] if os.path.exists(ref["logits"]["npy"])
               else sys.argv[1] + ".logits.npy")
got = np.load(os.path.join(work, "fam_logits.npy"))
if got.shape != want.shape:
    verdict("logits", False, f"shape {got.shape} vs {want.shape}")
else:
    diff = np.abs(got.astype(np.float64) - want)
    rel = float((diff.max(1) / np.abs(want).max(1)).max())
    big = np.abs(want) > 1.0
    rel_elem = float((diff[big] / np.abs(want[big])).max())
    last = np.asarray(ref["logits"]["last"])
    same_last = np.allclose(want[-len(last):], last, rtol=0, atol=0)
    agree = float((got.argmax(1) == want.argmax(1)).mean())
    verdict("logits", rel <= 1e-4,
            f"{got.shape[0]} positions x {got.shape[1]}: max rel error {rel:.2e} (max |diff| "
            f"{diff.max():.2e}, max |ref| {np.abs(want).max():.2f}; elementwise where |ref|>1: "
            f"{rel_elem:.2e}); argmax agree {agree:.3f}; JSON rows = npy: {same_last}")
aw = os.path.join(work, "fam_logits_as_written.npy")
if os.path.exists(aw):
    g2 = np.load(aw)
    d2 = np.abs(g2.astype(np.float64) - want)
    print(f"      config as written (rope_base 10000): max rel error "
          f"{float((d2.max(1) / np.abs(want).max(1)).max()):.3f}, argmax agree "
          f"{float((g2.argmax(1) == want.argmax(1)).mean()):.3f}")

# Perplexity.
rp = ref.get("perplexity")
ev = json.load(open(sys.argv[4]))["val"]
if rp is None or ev is None:
    verdict("perplexity", False, "missing from the reference or the fam report")
else:
    rel = abs(ev["ppl"] - rp["ppl"]) / rp["ppl"]
    verdict("perplexity", rel <= 0.005 and ev["tokens"] == rp["tokens"],
            f"fam {ev['ppl']:.4f} (loss {ev['loss']:.6f}) vs transformers {rp['ppl']:.4f} "
            f"(loss {rp['loss']:.6f}) over {ev['tokens']}/{rp['tokens']} tokens "
            f"({rp['windows']} windows of {rp['seq_len']}): relative difference {rel:.2e}")

# Greedy decisions.
prompts = ref["generation"]["prompts"]
matched, total, notes = 0, 0, []
for i, g in enumerate(prompts):
    logits = np.load(os.path.join(work, f"gen{i}.npy"))
    choices = logits[len(g["prompt_ids"]) - 1:].argmax(1).tolist()
    first_bad = next((k for k, (a, b) in enumerate(zip(choices, g["new_ids"])) if a != b), None)
    total += len(g["new_ids"])
    if first_bad is None:
        matched += len(g["new_ids"])
    else:
        matched += first_bad
        notes.append(f"prompt {i} diverges at step {first_bad} (transformers' top-2 margin "
                     f"there {g['margins'][first_bad]:.2e})")
verdict("greedy generation (fam forward)", matched == total,
        f"{matched}/{total} tokens identical over {len(prompts)} prompts x "
        f"{ref['generation']['max_new_tokens']}; smallest top-2 margin in transformers "
        f"{min(g['min_margin'] for g in prompts):.3f}" + ("; " + "; ".join(notes) if notes else ""))

# fam generate.
status = open(os.path.join(work, "generate.status")).read().splitlines()
if not status or status[0] != "ok":
    verdict("fam generate", None, status[0] if status else "not run")
else:
    same = 0
    for i, g in enumerate(prompts):
        text = open(os.path.join(work, f"generate{i}.txt"), encoding="utf-8").read()
        if text.rstrip("\n") == g["text"].rstrip("\n"):
            same += 1
        else:
            print(f"      prompt {i}: fam {text!r} vs transformers {g['text']!r}")
    verdict("fam generate", same == len(prompts), f"{same}/{len(prompts)} texts identical")

# Tokenizer.
status = open(os.path.join(work, "prepare.status")).read().strip()
if status != "ok":
    verdict("tokenizer.json (fam prepare-data)", None, status)
else:
    ids = read_shards(os.path.join(work, "tok-excerpt", "train-*.bin")).tolist()
    want_ids = ref["tokenizer"]["document_ids"]
    ok = ids[:len(want_ids)] == want_ids and len(ids) - len(want_ids) <= 1
    text = f"excerpt: {len(ids)} ids (fam, eos included) vs {len(want_ids)} (HF)"
    if not ok:
        k = next((k for k, (a, b) in enumerate(zip(ids, want_ids)) if a != b), None)
        text += f", first difference at {k}"
    kjv = glob.glob(os.path.join(work, "tok-kjv", "val-*.bin"))
    if kjv:
        a = read_shards(os.path.join(work, "tok-kjv", "val-*.bin"))
        b = read_shards(os.path.join(shards, "val-*.bin"))
        same = a.shape == b.shape and bool((a == b).all())
        if not same and a.shape == b.shape:
            dif = np.nonzero(a != b)[0]
            text += (f"; KJV val shard: {len(dif)} ids differ (fam {sorted(set(a[dif].tolist()))[:5]}"
                     f" vs HF {sorted(set(b[dif].tolist()))[:5]}: eos choice?)")
        else:
            text += f"; KJV val shard identical to the HF-id shard: {same} ({len(a)} vs {len(b)})"
        ok = ok and same
    verdict("tokenizer.json (fam prepare-data)", ok, text)

failed = any(v is False for v in verdicts)
print("RESULT:", "FAIL" if failed else "PASS",
      f"({sum(v is True for v in verdicts)} pass, {sum(v is None for v in verdicts)} skipped, "
      f"{sum(v is False for v in verdicts)} failed)")
sys.exit(1 if failed else 0)
EOF
stamp "done"
exit $rc
