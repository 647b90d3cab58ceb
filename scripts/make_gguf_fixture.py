#!/usr/bin/env python3
"""Regenerates tests/fixtures/gguf/: tiny_llama.gguf, a 2-layer llama written with the `gguf`
package's own GGUFWriter and quantizers (F32 norms, and matrices in F16, BF16, Q8_0, Q4_0 and Q4_1,
q/k rows interleaved per head as llama.cpp's converter stores them), and expected.safetensors: the
same tensors as the `gguf` package dequantizes them, q/k rows put back in Hugging Face order, under
FORMATS.md names. tests/gguf_test.cc checks `fam import --gguf` against it.

  python3 -m venv .venv-ref && .venv-ref/bin/pip install gguf numpy safetensors
  .venv-ref/bin/python scripts/make_gguf_fixture.py [out_dir]
"""
import os
import sys

import numpy as np
import gguf
from gguf import GGMLQuantizationType as Q
from gguf import quants
from safetensors.numpy import save_file

OUT = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "gguf")
D, FFN, LAYERS, HEADS, KV_HEADS, VOCAB = 32, 64, 2, 4, 2, 64
HEAD_DIM = D // HEADS


def to_gguf_rows(w, heads):
    # llama.cpp's converter: each head's two rotary halves interleaved row by row.
    return w.reshape(heads, 2, w.shape[0] // heads // 2, w.shape[1]).swapaxes(1, 2).reshape(w.shape)


def to_hf_rows(w, heads):
    return w.reshape(heads, w.shape[0] // heads // 2, 2, w.shape[1]).swapaxes(1, 2).reshape(w.shape)


def main():
    rng = np.random.default_rng(7)
    os.makedirs(OUT, exist_ok=True)
    path = os.path.join(OUT, "tiny_llama.gguf")
    writer = gguf.GGUFWriter(path, "llama")
    writer.add_context_length(256)
    writer.add_embedding_length(D)
    writer.add_block_count(LAYERS)
    writer.add_feed_forward_length(FFN)
    writer.add_head_count(HEADS)
    writer.add_head_count_kv(KV_HEADS)
    writer.add_rope_dimension_count(HEAD_DIM)
    writer.add_rope_freq_base(50000.0)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_string("general.name", "famtrain tiny llama fixture")
    expected = {}
    # Each matrix type appears at least once; the layers use them in turn.
    matrix_types = [Q.F16, Q.BF16, Q.Q8_0, Q.Q4_0, Q.Q4_1]
    counter = [0]

    def add(gguf_name, ours, shape, kind="matrix", heads=None):
        w = (rng.standard_normal(shape) * (0.1 if kind == "norm" else 0.3)).astype(np.float32)
        if kind == "norm":
            w += 1.0
            qtype = Q.F32
        else:
            qtype = matrix_types[counter[0] % len(matrix_types)]
            counter[0] += 1
        stored = to_gguf_rows(w, heads) if heads else w
        if qtype == Q.F32:
            writer.add_tensor(gguf_name, stored)
            back = stored
        else:
            data = quants.quantize(stored, qtype)
            writer.add_tensor(gguf_name, data, raw_dtype=qtype)
            back = quants.dequantize(data, qtype).reshape(stored.shape).astype(np.float32)
        expected[ours] = np.ascontiguousarray(to_hf_rows(back, heads) if heads else back)

    add("token_embd.weight", "model.embed_tokens.weight", (VOCAB, D))
    for l in range(LAYERS):
        b, m = f"blk.{l}.", f"model.layers.{l}."
        add(b + "attn_norm.weight", m + "input_layernorm.weight", (D,), "norm")
        add(b + "attn_q.weight", m + "self_attn.q_proj.weight", (HEADS * HEAD_DIM, D), heads=HEADS)
        add(b + "attn_k.weight", m + "self_attn.k_proj.weight", (KV_HEADS * HEAD_DIM, D),
            heads=KV_HEADS)
        add(b + "attn_v.weight", m + "self_attn.v_proj.weight", (KV_HEADS * HEAD_DIM, D))
        add(b + "attn_output.weight", m + "self_attn.o_proj.weight", (D, HEADS * HEAD_DIM))
        add(b + "ffn_norm.weight", m + "post_attention_layernorm.weight", (D,), "norm")
        add(b + "ffn_gate.weight", m + "mlp.gate_proj.weight", (FFN, D))
        add(b + "ffn_up.weight", m + "mlp.up_proj.weight", (FFN, D))
        # down_proj rows of FFN = 64 inputs: whole quantization blocks.
        add(b + "ffn_down.weight", m + "mlp.down_proj.weight", (D, FFN))
    add("output_norm.weight", "model.norm.weight", (D,), "norm")
    add("output.weight", "lm_head.weight", (VOCAB, D))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    save_file(expected, os.path.join(OUT, "expected.safetensors"))
    print(f"{path}: {os.path.getsize(path)} bytes, {len(expected)} tensors")


if __name__ == "__main__":
    main()
