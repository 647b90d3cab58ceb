#!/usr/bin/env python3
"""PyTorch 2 peer of bench/train_bench: the same models, the same training step, timed on the CPU.

Models (bench/train_bench.cc, bench/README.md):
  gpt2-small      4 layers, d_model 256, 4 heads x 64, vocab 8192, SwiGLU ffn 683, tied
                  embeddings, full attention, batch 8 x seq 256;
  tiny-{fam,bswa,full}-{1024,4096}
                  configs/models/tiny.yaml (vocab 2048, d 128, 4 layers, 4 heads / 2 kv, head_dim
                  32, ffn 384, block 64, memory 1, FAM 8, tied), batch 1.
One timed step is what TrainHarness::Step does: zero the gradients, forward, mean cross-entropy over
all tokens, backward, AdamW (lr 1e-4, betas 0.9/0.999, eps 1e-8, no weight decay).

The layer math is FAM_SPEC.md §1 (pre-RMSNorm, SwiGLU, rotate-half RoPE, GQA, no biases) and
attention follows §2, §3 and §10:
  full  one causal scaled_dot_product_attention call over the sequence;
  bswa  blockwise and batched: every block's queries attend, in one call for all blocks, to a
        window [m previous blocks | the block] with an explicit boolean mask (causal inside the
        block, missing memory blocks masked out);
  fam   per layer, the FAM recurrence runs block by block on the F state rows only (the state
        rows attend to [state | block] unmasked, then the layer's FFN with the residual R, R = 0
        for the update from the learned initial FAM); then all block queries attend in one
        batched call to [the state S(tau-1) | m previous blocks | the block]. The initial FAM is
        the learned prompt pushed through the layers alone (§4), at positions -F..-1; the state
        S(tau) takes the positions e(tau)-F..e(tau)-1 (§5).

Usage:
  python bench/torch_peer.py [--models a,b] [--modes eager,compile] [--steps K] [--warmup W]
  python bench/torch_peer.py --check        # the correctness checks below, then exit
compile: torch.compile in its default mode, of the whole model, or per region for FAM
(--compile-scope; see FamLM.compile_regions), which keeps the block recurrence out of the graph.
Threads: torch.set_num_threads(OMP_NUM_THREADS, default 2). Output: one JSON object per line
(model, mode, tokens/s, median step time, ...) and a table at the end.
"""

import argparse
import json
import math
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass, replace

import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclass(frozen=True)
class Config:
    vocab_size: int
    d_model: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    ffn_dim: int
    tie_embeddings: bool = True
    attention: str = "full"  # full | bswa | fam
    block_size: int = 64
    memory_segments: int = 1
    fam_length: int = 0
    norm_eps: float = 1e-6
    rope_base: float = 10000.0
    init_std: float = 0.02

    @property
    def fam_rows(self):
        return self.fam_length if self.attention == "fam" else 0


def gpt2_small_config():
    return Config(vocab_size=8192, d_model=256, n_layers=4, n_heads=4, n_kv_heads=4, head_dim=64,
                  ffn_dim=683, attention="full", block_size=256, memory_segments=0, fam_length=0)


def tiny_config(attention):
    return Config(vocab_size=2048, d_model=128, n_layers=4, n_heads=4, n_kv_heads=2, head_dim=32,
                  ffn_dim=384, attention=attention, block_size=64, memory_segments=1,
                  fam_length=8)


# name -> (config, batch, seq), the benchmarks of train_bench.
MODELS = {
    "gpt2-small": (gpt2_small_config(), 8, 256),
    "tiny-fam-1024": (tiny_config("fam"), 1, 1024),
    "tiny-bswa-1024": (tiny_config("bswa"), 1, 1024),
    "tiny-full-1024": (tiny_config("full"), 1, 1024),
    "tiny-fam-4096": (tiny_config("fam"), 1, 4096),
    "tiny-bswa-4096": (tiny_config("bswa"), 1, 4096),
    "tiny-full-4096": (tiny_config("full"), 1, 4096),
}


# ---------------------------------------------------------------------------------------------
# The model
# ---------------------------------------------------------------------------------------------

def rope_tables(positions, head_dim, base, dtype):
    """cos, sin of shape [n, head_dim] for integer positions [n] (rotate-half layout)."""
    inv_freq = base ** (-torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)
    angles = positions.to(torch.float64)[:, None] * inv_freq[None, :]
    angles = torch.cat([angles, angles], dim=-1)
    return angles.cos().to(dtype), angles.sin().to(dtype)


def rotate_half(x):
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat([-x2, x1], dim=-1)


def apply_rope(x, cos, sin):
    return x * cos + rotate_half(x) * sin


class Attention(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.q_proj = nn.Linear(c.d_model, c.n_heads * c.head_dim, bias=False)
        self.k_proj = nn.Linear(c.d_model, c.n_kv_heads * c.head_dim, bias=False)
        self.v_proj = nn.Linear(c.d_model, c.n_kv_heads * c.head_dim, bias=False)
        self.o_proj = nn.Linear(c.n_heads * c.head_dim, c.d_model, bias=False)


class SwiGLU(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.gate_proj = nn.Linear(c.d_model, c.ffn_dim, bias=False)
        self.up_proj = nn.Linear(c.d_model, c.ffn_dim, bias=False)
        self.down_proj = nn.Linear(c.ffn_dim, c.d_model, bias=False)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class DecoderLayer(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.c = c
        self.input_layernorm = nn.RMSNorm(c.d_model, eps=c.norm_eps)
        self.self_attn = Attention(c)
        self.post_attention_layernorm = nn.RMSNorm(c.d_model, eps=c.norm_eps)
        self.mlp = SwiGLU(c)

    def project(self, rows, cos, sin):
        """RMSNorm1, q/k/v projections and RoPE: [B, n, d] -> q [B, H, n, D], k, v [B, Hkv, n, D]."""
        c, a = self.c, self.self_attn
        b, n, _ = rows.shape
        x = self.input_layernorm(rows)
        q = a.q_proj(x).view(b, n, c.n_heads, c.head_dim).transpose(1, 2)
        k = a.k_proj(x).view(b, n, c.n_kv_heads, c.head_dim).transpose(1, 2)
        v = a.v_proj(x).view(b, n, c.n_kv_heads, c.head_dim).transpose(1, 2)
        return apply_rope(q, cos, sin), apply_rope(k, cos, sin), v

    def out(self, heads):
        """[B, H, n, D] -> o_proj of the merged heads, [B, n, d]."""
        b, _, n, _ = heads.shape
        return self.self_attn.o_proj(heads.transpose(1, 2).reshape(b, n, -1))

    def feed_forward(self, residual):
        return residual + self.mlp(self.post_attention_layernorm(residual))

    def forward_rows(self, rows, cos, sin):
        """The layer on a set of rows that all see each other (the initial FAM, §4)."""
        q, k, v = self.project(rows, cos, sin)
        heads = F.scaled_dot_product_attention(q, k, v, enable_gqa=True)
        return self.feed_forward(rows + self.out(heads))

    def forward_full(self, x, cos, sin):
        q, k, v = self.project(x, cos, sin)
        heads = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
        return self.feed_forward(x + self.out(heads))

    def fam_step(self, state, state_is_initial: bool, cos, sin, kb, vb):
        """One FAM update (§3): the F state rows S(tau-1) attend, unmasked, to [S(tau-1) | block
        tau]; A = R + attention (R = 0 from the learned initial FAM), S(tau) = A + FF(norm2(A)).
        Returns S(tau) and the keys/values of S(tau-1), which the block's queries also see."""
        fq, fk, fv = self.project(state, cos, sin)
        heads = F.scaled_dot_product_attention(fq, torch.cat([fk, kb], dim=2),
                                               torch.cat([fv, vb], dim=2), enable_gqa=True)
        attended = self.out(heads)
        residual = attended if state_is_initial else state + attended
        return self.feed_forward(residual), fk, fv

    def blockwise_post(self, x, q, k, v, fam_k, fam_v, mask, block: int, memory: int):
        """All blocks' queries in one batched call over [S(tau-1) (FAM only) | m previous blocks
        | the block] with the boolean mask, then o_proj, residual and the feed-forward."""
        c = self.c
        batch, seq, _ = x.shape
        blocks = seq // block
        keys = window_keys(k, blocks, block, memory)  # [B, Hkv, nb, (m+1)blk, D]
        values = window_keys(v, blocks, block, memory)
        if fam_k is not None:
            keys = torch.cat([fam_k, keys], dim=3)
            values = torch.cat([fam_v, values], dim=3)
        qb = q.view(batch, c.n_heads, blocks, block, c.head_dim)
        heads = F.scaled_dot_product_attention(
            to_block_batch(qb, batch, blocks), to_block_batch(keys, batch, blocks),
            to_block_batch(values, batch, blocks), attn_mask=mask, enable_gqa=True)
        heads = heads.view(batch, blocks, c.n_heads, block, c.head_dim).transpose(1, 2)
        heads = heads.reshape(batch, c.n_heads, seq, c.head_dim)
        return self.feed_forward(x + self.out(heads))


def shifted_blocks(x, shift):
    """x [B, Hkv, nb, blk, D] -> block tau holds block tau - shift (zeros before block 0)."""
    if shift == 0:
        return x
    pad = x.new_zeros(x.shape[0], x.shape[1], shift, x.shape[3], x.shape[4])
    return torch.cat([pad, x[:, :, : x.shape[2] - shift]], dim=2)


def window_keys(x, blocks, block, memory):
    """[B, Hkv, T, D] -> per block the keys of [tau-m .. tau-1 | tau]: [B, Hkv, nb, (m+1)blk, D]."""
    xb = x.view(x.shape[0], x.shape[1], blocks, block, x.shape[3])
    return torch.cat([shifted_blocks(xb, s) for s in range(memory, -1, -1)], dim=3)


def window_mask(blocks, block, memory, fam, device):
    """Boolean mask [nb, blk, F + (m+1)blk] for block queries over [state | memory | block]."""
    tau = torch.arange(blocks, device=device)[:, None, None]
    row = torch.arange(block, device=device)[None, :, None]
    col = torch.arange((memory + 1) * block, device=device)[None, None, :]
    seg = col // block  # 0..m-1 memory blocks tau-m..tau-1, m the current block
    in_block = col % block
    memory_ok = (seg < memory) & (tau - (memory - seg) >= 0)
    causal_ok = (seg == memory) & (in_block <= row)
    mask = (memory_ok | causal_ok).expand(blocks, block, (memory + 1) * block)
    if fam:
        mask = torch.cat([mask.new_ones(blocks, block, fam), mask], dim=2)
    return mask


def to_block_batch(x, batch, blocks):
    """[B, H, nb, n, D] -> [B*nb, H, n, D]."""
    return x.transpose(1, 2).reshape(batch * blocks, x.shape[1], x.shape[3], x.shape[4])


class FamLM(nn.Module):
    """Token embeddings, decoder layers with full / bswa / fam attention, final norm, LM head;
    forward(tokens, targets) returns (mean cross-entropy, final FAM states)."""

    def __init__(self, c):
        super().__init__()
        self.c = c
        self.embed_tokens = nn.Embedding(c.vocab_size, c.d_model)
        self.layers = nn.ModuleList(DecoderLayer(c) for _ in range(c.n_layers))
        self.norm = nn.RMSNorm(c.d_model, eps=c.norm_eps)
        self.lm_head = None if c.tie_embeddings else nn.Linear(c.d_model, c.vocab_size, bias=False)
        self.fam_embeddings = nn.Parameter(torch.empty(c.fam_rows, c.d_model)) if c.fam_rows else None
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self):
        c = self.c
        out_std = c.init_std / math.sqrt(2.0 * c.n_layers)
        for name, p in self.named_parameters():
            if "norm" in name:
                p.fill_(1.0)
            elif name.endswith("o_proj.weight") or name.endswith("down_proj.weight"):
                p.normal_(0.0, out_std)
            else:
                p.normal_(0.0, c.init_std)

    def lm_weight(self):
        return self.embed_tokens.weight if self.lm_head is None else self.lm_head.weight

    def compile_regions(self):
        """torch.compile per region instead of the whole model: each layer's projections,
        FAM update step and batched block attention + feed-forward, and the loss head. The FAM
        recurrence loop stays in Python, so the graphs are not unrolled over the blocks."""
        cfg = torch._dynamo.config
        for knob in ("recompile_limit", "cache_size_limit"):  # one entry per layer and flag
            if hasattr(cfg, knob):
                setattr(cfg, knob, max(getattr(cfg, knob), 8 * self.c.n_layers))
        for layer in self.layers:
            layer.project = torch.compile(layer.project)
            layer.fam_step = torch.compile(layer.fam_step)
            layer.blockwise_post = torch.compile(layer.blockwise_post)
            layer.forward_rows = torch.compile(layer.forward_rows)
            layer.forward_full = torch.compile(layer.forward_full)
        self.head = torch.compile(self.head)
        return self

    def head(self, x, targets):
        logits = F.linear(self.norm(x), self.lm_weight())
        return F.cross_entropy(logits.view(-1, self.c.vocab_size), targets.reshape(-1))

    def forward(self, tokens, targets):
        c = self.c
        batch, seq = tokens.shape
        x = self.embed_tokens(tokens)
        dtype, device = x.dtype, x.device
        cos, sin = rope_tables(torch.arange(seq, device=device), c.head_dim, c.rope_base, dtype)
        final_states = []
        if c.attention == "full":
            for layer in self.layers:
                x = layer.forward_full(x, cos, sin)
        else:
            x, final_states = self.blockwise_layers(x, cos, sin)
        return self.head(x, targets), final_states

    def blockwise_layers(self, x, cos, sin):
        c = self.c
        batch, seq, d = x.shape
        blk, mem, f = c.block_size, c.memory_segments, c.fam_rows
        assert seq % blk == 0, "sequence length must be a multiple of the block size"
        blocks = seq // blk
        device, dtype = x.device, x.dtype
        mask = window_mask(blocks, blk, mem, f, device)  # [nb, blk, keys]
        mask = mask[None, :, None].expand(batch, blocks, 1, blk, mask.shape[-1])
        mask = mask.reshape(batch * blocks, 1, blk, mask.shape[-1])
        final_states = []
        if f:
            # State positions (§5): the initial state -F..-1, S(tau) the last F of block tau.
            init_cos, init_sin = rope_tables(torch.arange(-f, 0, device=device), c.head_dim,
                                             c.rope_base, dtype)
            starts = torch.arange(blocks, device=device) * blk - f
            starts[0] = -f
            state_pos = (starts[:, None] + torch.arange(f, device=device)[None, :]).reshape(-1)
            st_cos, st_sin = rope_tables(state_pos, c.head_dim, c.rope_base, dtype)
            st_cos, st_sin = st_cos.view(blocks, f, -1), st_sin.view(blocks, f, -1)
            init_rows = self.fam_embeddings.unsqueeze(0)  # one copy: it does not depend on tokens
        for l, layer in enumerate(self.layers):
            q, k, v = layer.project(x, cos, sin)
            fam_k = fam_v = None
            if f:
                state = init_rows.expand(batch, f, d)
                fks, fvs = [], []
                for tau in range(blocks):
                    state, fk, fv = layer.fam_step(state, tau == 0, st_cos[tau], st_sin[tau],
                                                   k[:, :, tau * blk:(tau + 1) * blk],
                                                   v[:, :, tau * blk:(tau + 1) * blk])
                    fks.append(fk)
                    fvs.append(fv)
                final_states.append(state)
                fam_k, fam_v = torch.stack(fks, dim=2), torch.stack(fvs, dim=2)
                if l + 1 < c.n_layers:
                    init_rows = layer.forward_rows(init_rows, init_cos, init_sin)
            x = layer.blockwise_post(x, q, k, v, fam_k, fam_v, mask, blk, mem)
        return x, final_states


# ---------------------------------------------------------------------------------------------
# A naive reference of the same maths, for --check: token-level masks built from FAM_SPEC §2
# rules, softmax written out, per-block loop for FAM, no SDPA, no nn.RMSNorm, no cross_entropy.
# ---------------------------------------------------------------------------------------------

def naive_rmsnorm(x, w, eps):
    return x * torch.rsqrt((x * x).mean(-1, keepdim=True) + eps) * w


def naive_rope(x, positions, head_dim, base):
    half = head_dim // 2
    out = torch.empty_like(x)
    for i in range(half):
        theta = base ** (-2.0 * i / head_dim)
        ang = positions.to(x.dtype) * theta
        c, s = torch.cos(ang), torch.sin(ang)
        a, b = x[..., i], x[..., i + half]
        out[..., i] = a * c - b * s
        out[..., i + half] = b * c + a * s
    return out


def naive_attend(q, k, v, visible, scale):
    """q [H, n, D], k/v [Hkv, S, D], visible [n, S] bool -> [H, n, D]."""
    h, hkv = q.shape[0], k.shape[0]
    out = []
    for j in range(h):
        kv = j * hkv // h
        s = (q[j] @ k[kv].T) * scale
        s = s.masked_fill(~visible, float("-inf"))
        p = torch.exp(s - s.max(-1, keepdim=True).values)
        p = p / p.sum(-1, keepdim=True)
        out.append(p @ v[kv])
    return torch.stack(out)


def naive_layer_parts(model, layer):
    c = model.c
    a = layer.self_attn

    def project(rows, positions):  # rows [n, d]
        x = naive_rmsnorm(rows, layer.input_layernorm.weight, c.norm_eps)
        q = (x @ a.q_proj.weight.T).view(-1, c.n_heads, c.head_dim).transpose(0, 1)
        k = (x @ a.k_proj.weight.T).view(-1, c.n_kv_heads, c.head_dim).transpose(0, 1)
        v = (x @ a.v_proj.weight.T).view(-1, c.n_kv_heads, c.head_dim).transpose(0, 1)
        return (naive_rope(q, positions, c.head_dim, c.rope_base),
                naive_rope(k, positions, c.head_dim, c.rope_base), v)

    def out(heads):
        return heads.transpose(0, 1).reshape(heads.shape[1], -1) @ a.o_proj.weight.T

    def ff(res):
        m = layer.mlp
        n = naive_rmsnorm(res, layer.post_attention_layernorm.weight, c.norm_eps)
        g = n @ m.gate_proj.weight.T
        return res + ((g * torch.sigmoid(g)) * (n @ m.up_proj.weight.T)) @ m.down_proj.weight.T

    return project, out, ff


def naive_loss(model, tokens, targets):
    c = model.c
    scale = 1.0 / math.sqrt(c.head_dim)
    blk, mem, f = c.block_size, c.memory_segments, c.fam_rows
    total, count = 0.0, 0
    for b in range(tokens.shape[0]):
        seq = tokens.shape[1]
        x = model.embed_tokens.weight[tokens[b]]
        pos = torch.arange(seq)
        blk_of = pos // blk
        causal = pos[None, :] <= pos[:, None]
        if c.attention == "full":
            token_visible = causal
        else:
            token_visible = causal & (blk_of[None, :] >= blk_of[:, None] - mem)
        init = model.fam_embeddings if f else None
        init_pos = torch.arange(-f, 0)
        for layer in model.layers:
            project, out, ff = naive_layer_parts(model, layer)
            q, k, v = project(x, pos)
            if not f:
                attn = naive_attend(q, k, v, token_visible, scale)
            else:
                # Block tokens of block tau see S(tau-1) and token_visible's keys; S(tau-1) sees
                # itself and all tokens of block tau.
                state, state_pos, initial = init, init_pos, True
                parts = []
                for tau in range((seq + blk - 1) // blk):
                    lo, hi = tau * blk, min((tau + 1) * blk, seq)
                    fq, fk, fv = project(state, state_pos)
                    keys, vals = torch.cat([fk, k], 1), torch.cat([fv, v], 1)
                    vis = torch.cat([torch.ones(hi - lo, f, dtype=torch.bool),
                                     token_visible[lo:hi]], 1)
                    parts.append(naive_attend(q[:, lo:hi], keys, vals, vis, scale))
                    vis_f = torch.cat([torch.ones(f, f, dtype=torch.bool),
                                       (blk_of == tau)[None, :].expand(f, seq)], 1)
                    a_f = out(naive_attend(fq, keys, vals, vis_f, scale))
                    state = ff(a_f if initial else state + a_f)
                    state_pos, initial = torch.arange(hi - f, hi), False
                attn = torch.cat(parts, 1)
                # The next layer's initial state: this layer on the prompt rows alone.
                iq, ik, iv = project(init, init_pos)
                init = ff(init + out(naive_attend(iq, ik, iv, torch.ones(f, f, dtype=torch.bool),
                                                  scale)))
            x = ff(x + out(attn))
        h = naive_rmsnorm(x, model.norm.weight, c.norm_eps)
        logits = h @ model.lm_weight().T
        lse = torch.logsumexp(logits, -1)
        total = total + (lse - logits[torch.arange(seq), targets[b]]).sum()
        count += seq
    return total / count


def run_checks():
    torch.set_default_dtype(torch.float64)
    ok = True

    def report(name, a, b, tol):
        nonlocal ok
        a, b = float(torch.as_tensor(a).detach()), float(torch.as_tensor(b).detach())
        diff = abs(a - b)
        good = diff <= tol
        ok &= good
        print(f"check {name}: {float(a):.12f} vs {float(b):.12f}  |diff| {diff:.2e}  "
              f"{'ok' if good else 'FAIL'} (tol {tol:g})")

    def data(c, batch, seq, seed=7):
        g = torch.Generator().manual_seed(seed)
        ids = torch.randint(0, c.vocab_size, (batch, seq + 1), generator=g)
        return ids[:, :-1].contiguous(), ids[:, 1:].contiguous()

    def model_of(c, seed=1234, larger_init=False):
        torch.manual_seed(seed)
        m = FamLM(c)
        if larger_init:  # larger weights so that attention patterns matter for the loss
            with torch.no_grad():
                for name, p in m.named_parameters():
                    if "norm" not in name:
                        p.mul_(10.0)
        return m

    # Loss at init, full attention: the model against the naive reference.
    for name, c, batch, seq in [("gpt2-small full", gpt2_small_config(), 2, 256),
                                ("tiny full", tiny_config("full"), 1, 256)]:
        m = model_of(c)
        tok, tgt = data(c, batch, seq)
        report(f"{name} loss at init vs naive", m(tok, tgt)[0], naive_loss(m, tok, tgt), 1e-10)
        report(f"{name} loss at init vs ln(V)", m(tok, tgt)[0], math.log(c.vocab_size), 0.05)
    # BSWA and FAM against the same reference (weights scaled up so attention is not uniform).
    for kind in ("full", "bswa", "fam"):
        c = tiny_config(kind)
        m = model_of(c, larger_init=True)
        tok, tgt = data(c, 1, 256)
        report(f"tiny {kind} (x10 weights) vs naive", m(tok, tgt)[0], naive_loss(m, tok, tgt),
               1e-9)
    # FAM with fam_length 0 equals BSWA; BSWA with memory covering the sequence equals full.
    tok, tgt = data(tiny_config("fam"), 1, 512)
    bswa = model_of(tiny_config("bswa"), larger_init=True)
    fam0 = FamLM(replace(tiny_config("fam"), fam_length=0))
    fam0.load_state_dict(bswa.state_dict())
    report("tiny fam, fam_length 0 == bswa", fam0(tok, tgt)[0], bswa(tok, tgt)[0], 1e-12)
    full = FamLM(tiny_config("full"))
    full.load_state_dict(bswa.state_dict())
    wide = FamLM(replace(tiny_config("bswa"), memory_segments=512 // 64))
    wide.load_state_dict(bswa.state_dict())
    report("tiny bswa, memory >= blocks == full", wide(tok, tgt)[0], full(tok, tgt)[0], 1e-12)
    # Gradients through the FAM recurrence: the model against the naive reference.
    c = tiny_config("fam")
    m = model_of(c, larger_init=True)
    tok, tgt = data(c, 1, 192)
    m(tok, tgt)[0].backward()
    g_model = {n: p.grad.clone() for n, p in m.named_parameters()}
    m.zero_grad()
    naive_loss(m, tok, tgt).backward()
    worst = max(((g_model[n] - p.grad).abs().max() / (p.grad.abs().max() + 1e-30)).item()
                for n, p in m.named_parameters())
    report("tiny fam gradients vs naive (max relative)", worst, 0.0, 1e-9)
    print("check:", "all ok" if ok else "FAILED")
    return 0 if ok else 1


# ---------------------------------------------------------------------------------------------
# Timing
# ---------------------------------------------------------------------------------------------

def time_model(name, mode, steps, warmup, adamw, scope):
    c, batch, seq = MODELS[name]
    torch.manual_seed(1234)
    model = FamLM(c)
    impl = {"fused": {"fused": True}, "foreach": {"foreach": True}, "default": {}}[adamw]
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.999), eps=1e-8,
                            weight_decay=0.0, **impl)
    g = torch.Generator().manual_seed(42)
    batches = []
    for _ in range(2):  # two synthetic batches, alternated (as TrainHarness)
        ids = torch.randint(0, c.vocab_size, (batch, seq + 1), generator=g)
        batches.append((ids[:, :-1].contiguous(), ids[:, 1:].contiguous()))
    if mode == "compile" and scope == "auto":
        # The whole model unrolls the FAM recurrence (4 layers x seq/64 blocks) into one graph:
        # minutes of compilation at 1024 tokens and far more at 4096. FAM compiles per region.
        scope = "regional" if c.fam_rows else "whole"
    fn = model
    if mode == "compile":
        fn = torch.compile(model) if scope == "whole" else model.compile_regions()
    counter = [0]

    def step():
        tok, tgt = batches[counter[0] % 2]
        counter[0] += 1
        opt.zero_grad(set_to_none=True)
        loss, _ = fn(tok, tgt)
        loss.backward()
        opt.step()
        return loss.item()

    result = {"peer": "torch", "model": name, "attention": c.attention, "batch": batch,
              "seq": seq, "mode": mode, "threads": torch.get_num_threads(),
              "torch": torch.__version__, "adamw": adamw,
              "compile_scope": scope if mode == "compile" else None}
    t0 = time.perf_counter()
    result["first_loss"] = step()
    result["first_step_s"] = time.perf_counter() - t0  # includes compilation in compile mode
    t0 = time.perf_counter()
    for _ in range(max(warmup - 1, 0)):
        step()
    result["warmup_rest_s"] = time.perf_counter() - t0
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        loss = step()
        times.append(time.perf_counter() - t0)
    med = statistics.median(times)
    result.update(step_ms=[round(t * 1e3, 2) for t in times], median_ms=med * 1e3,
                  mean_ms=statistics.fmean(times) * 1e3, tokens_per_s=batch * seq / med,
                  last_loss=loss)
    return result


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", default=",".join(MODELS), help="comma-separated: " + ", ".join(MODELS))
    p.add_argument("--modes", default="eager,compile", help="eager, compile or both")
    p.add_argument("--steps", type=int, default=5, help="timed steps per model and mode")
    p.add_argument("--warmup", type=int, default=2,
                   help="untimed steps first (in compile mode the first one compiles)")
    p.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", "2")))
    p.add_argument("--adamw", choices=["fused", "foreach", "default"], default="fused",
                   help="torch.optim.AdamW implementation (fused=True is the fastest on CPU)")
    p.add_argument("--compile-scope", choices=["auto", "whole", "regional"], default="auto",
                   help="torch.compile the whole model, or per layer region (projections, FAM "
                        "step, block attention + FFN, loss head); auto: regional for FAM only")
    p.add_argument("--check", action="store_true", help="run the correctness checks and exit")
    args = p.parse_args()

    torch.set_num_threads(args.threads)
    if args.check:
        return run_checks()
    print(f"# torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{platform.processor() or platform.machine()}, load {os.getloadavg()[0]:.2f}",
          flush=True)
    results = []
    for name in args.models.split(","):
        if name not in MODELS:
            print(f"unknown model {name}; known: {', '.join(MODELS)}", file=sys.stderr)
            return 2
        for mode in args.modes.split(","):
            try:
                r = time_model(name, mode, args.steps, args.warmup, args.adamw,
                               args.compile_scope)
            except Exception as e:  # a compile failure is reported and the others go on
                r = {"peer": "torch", "model": name, "mode": mode,
                     "error": f"{type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ''}"}
                torch._dynamo.reset()
            results.append(r)
            print(json.dumps(r), flush=True)
    print(f"\n{'model':<16} {'mode':<8} {'batch x seq':>11} {'ms/step':>10} {'tokens/s':>10} "
          f"{'first step s':>12} {'loss':>8}")
    for r in results:
        if "error" in r:
            print(f"{r['model']:<16} {r['mode']:<8} failed: {r['error']}")
            continue
        print(f"{r['model']:<16} {r['mode']:<8} {r['batch']:>4} x {r['seq']:<4} "
              f"{r['median_ms']:>10.1f} {r['tokens_per_s']:>10.0f} {r['first_step_s']:>12.1f} "
              f"{r['first_loss']:>8.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
