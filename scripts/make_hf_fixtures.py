#!/usr/bin/env python3
"""Regenerates tests/fixtures/hf/: one tiny random model per Hugging Face family that `fam import`
reads (llama with Llama 3 RoPE scaling and biases, llama with linear scaling and tied embeddings,
mistral, qwen2 sharded, gemma, gemma2), each saved by transformers' own save_pretrained, with the
logits transformers computes for a fixed token sequence (expected.json). tests/hf_families_test.cc
imports each one and checks `fam`'s logits against these.

Needs PyPI packages in a venv (not the README's commands or CI):
  python3 -m venv .venv-ref && .venv-ref/bin/pip install torch transformers safetensors
  .venv-ref/bin/python scripts/make_hf_fixtures.py [out_dir]
Weights are drawn with a fixed seed at a scale (std 0.25) where every nonlinearity matters:
soft-capping, the gate activations, the (1 + w) norms and the RoPE rescaling all change the logits
well beyond the tests' tolerance.
"""
import json
import os
import shutil
import sys

import torch
import transformers
from transformers import (Gemma2Config, GemmaConfig, LlamaConfig, MistralConfig, Qwen2Config,
                          AutoModelForCausalLM)

OUT = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "hf")
VOCAB = 64
TOKENS = [1, 17, 5, 63, 0, 42, 42, 8, 31, 2, 57, 19, 11, 60, 3, 25]

COMMON = dict(vocab_size=VOCAB, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
              num_attention_heads=4, num_key_value_heads=2, rms_norm_eps=1e-5,
              max_position_embeddings=256)

CASES = {
    # Llama 3.1-style: llama3 RoPE scaling (original context 16: every branch of the rescaling is
    # taken by head_dim 12's frequencies), q/k/v/o and MLP biases, head_dim != hidden / heads.
    "llama3_scaled_biases": (LlamaConfig, dict(
        COMMON, head_dim=12, rope_theta=10000.0, attention_bias=True, mlp_bias=True,
        tie_word_embeddings=False,
        rope_scaling=dict(rope_type="llama3", factor=8.0, low_freq_factor=1.0,
                          high_freq_factor=4.0, original_max_position_embeddings=16)), None),
    "llama_linear_tied": (LlamaConfig, dict(
        COMMON, rope_theta=500.0, tie_word_embeddings=True,
        rope_scaling=dict(rope_type="linear", factor=4.0)), None),
    # The window is longer than the sequence: it changes nothing here, and the import reports it.
    "mistral": (MistralConfig, dict(COMMON, sliding_window=4096, tie_word_embeddings=False), None),
    "qwen2_sharded": (Qwen2Config, dict(COMMON, tie_word_embeddings=True, rope_theta=1000000.0),
                      "40KB"),
    "gemma": (GemmaConfig, dict(COMMON, num_attention_heads=2, num_key_value_heads=1, head_dim=16,
                                hidden_act="gelu_pytorch_tanh"), None),
    # Caps low enough that tanh is far from linear at these scores and logits.
    "gemma2": (Gemma2Config, dict(COMMON, head_dim=16, query_pre_attn_scalar=24,
                                  attn_logit_softcapping=2.0, final_logit_softcapping=3.0,
                                  sliding_window=4096, hidden_activation="gelu_pytorch_tanh"),
               None),
}


def randomize(model, gemma):
    gen = torch.Generator().manual_seed(1234)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=gen)
            if name.endswith("norm.weight"):
                # Gemma's norms scale by (1 + w): w near 0; the others by w near 1.
                p.copy_(0.2 * noise + (0.0 if gemma else 1.0))
            else:
                p.copy_(0.25 * noise)


def main():
    torch.manual_seed(0)
    if os.path.isdir(OUT):
        shutil.rmtree(OUT)
    os.makedirs(OUT)
    for name, (config_class, kwargs, shard) in CASES.items():
        config = config_class(**kwargs)
        config._attn_implementation = "eager"  # soft-capping needs the eager path
        model = AutoModelForCausalLM.from_config(config, attn_implementation="eager")
        model.eval()
        randomize(model, config.model_type.startswith("gemma"))
        ids = torch.tensor([TOKENS])
        with torch.no_grad():
            logits = model(ids).logits[0].float()
        d = os.path.join(OUT, name)
        model.save_pretrained(d, max_shard_size=shard or "50MB", safe_serialization=True)
        # A model saved and loaded back by transformers gives the same logits (the files are
        # complete: no tensor is re-initialised on load).
        again = AutoModelForCausalLM.from_pretrained(d, attn_implementation="eager")
        with torch.no_grad():
            reloaded = again(ids).logits[0].float()
        assert torch.equal(reloaded, logits), name
        for extra in ("generation_config.json",):
            path = os.path.join(d, extra)
            if os.path.exists(path):
                os.remove(path)
        with open(os.path.join(d, "expected.json"), "w") as f:
            json.dump({"tokens": TOKENS, "vocab": VOCAB, "transformers": transformers.__version__,
                       "logits": [[float(x) for x in row] for row in logits.tolist()]}, f)
        files = sorted(os.listdir(d))
        size = sum(os.path.getsize(os.path.join(d, x)) for x in files)
        print(f"{name}: {', '.join(files)} ({size // 1024} KiB)")


if __name__ == "__main__":
    main()
