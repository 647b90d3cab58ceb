#!/usr/bin/env python3
"""Reference figures of a Hugging Face Llama model (SmolLM2-135M) computed with transformers, to
check famtrain against (scripts/check_smollm2.sh; docs/pretrained_models.md).

Everything runs in float32 on the CPU with a fixed number of torch threads. One JSON file holds:

  logits      the ids of a fixed text and the logits at its last --logit-positions positions
              (every position also goes to <out>.logits.npy, float32 [T, vocab], like `fam forward`)
  perplexity  next-token perplexity over a famtrain token shard, computed as `fam eval` does in its
              `windows` mode (trainers/eval/perplexity.cc, framework/data/loader.h): the shards form
              one stream of N tokens; window w holds tokens [w*L, w*L + L + 1), inputs its first L,
              targets its last L; windows do not overlap, nothing is prepended (no BOS), every target
              is scored; floor((N - 1) / L) windows, the first --max-windows of them; loss = mean
              cross-entropy in nats, ppl = exp(loss)
  generation  greedy continuations (--max-new-tokens) of a few prompts: ids and text
  tokenizer   the HF tokenizers ids of a KJV excerpt (no special tokens added)

  python3 scripts/smollm2_reference.py --hf data/smollm2-135m --out ref.json \
      --val 'data/smollm2-kjv/val-*.bin' --seq-len 2048 --max-windows 8

  # write the token shards first: the KJV text cut and split exactly as `fam prepare-data`
  # (paragraph documents, every 1/val_fraction-th to val, eos after each), HF tokenizer ids
  python3 scripts/smollm2_reference.py --hf data/smollm2-135m --write-shards data/smollm2-kjv \
      --text data/kjv/kjv.txt

Shards: docs/formats.md "Token shards" (64-byte header FAMTOK01, little-endian ids, FNV-1a 64).
"""

import argparse
import glob
import json
import math
import os
import struct
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_copy_shard import write_shard  # noqa: E402  (FAMTOK01 shards)

FIXED_TEXT = ("In the beginning God created the heaven and the earth. And the earth was without "
              "form, and void; and darkness was upon the face of the deep. The quick brown fox "
              "jumps over the lazy dog. def add(a, b):\n    return a + b\n1, 2, 3, 5, 8, 13,")
PROMPTS = ["In the beginning God created",
           "The capital of France is",
           "def fibonacci(n):\n",
           "Once upon a time, there was a little"]
# Genesis 1:1-4 as in data/kjv/kjv.txt (one verse a line), a blank line, then a line of what the
# Bible text lacks: quotes, runs of spaces, digits, an em dash and non-ASCII letters.
KJV_EXCERPT = ("In the beginning God created the heaven and the earth.\n"
               "And the earth was without form, and void; and darkness was upon the face of the "
               "deep. And the Spirit of God moved upon the face of the waters.\n"
               "And God said, Let there be light: and there was light.\n"
               "And God saw the light, that it was good: and God divided the light from the "
               "darkness.\n\n"
               "Jesus wept.  \"Thou shalt not kill.\" O LORD, how manifold are thy works! (Psalm "
               "104:24) — 12,000 sealed; it's thy servant's; naïve café.\n")


# ---- token shards (docs/formats.md) -------------------------------------------------------------

def read_shards(pattern, max_tokens=0):
    paths = sorted(glob.glob(pattern)) if any(c in pattern for c in "*?[") else [pattern]
    if not paths:
        sys.exit(f"no shards match {pattern}")
    out = []
    for path in paths:
        with open(path, "rb") as f:
            head = f.read(64)
            if head[:8] != b"FAMTOK01":
                sys.exit(f"{path}: not a FAMTOK01 token shard")
            version, width, vocab, n, checksum = struct.unpack("<IIQQQ", head[8:40])
            body = f.read(n * width)
        out.append(np.frombuffer(body, dtype="<u2" if width == 2 else "<u4").astype(np.int64))
        if max_tokens and sum(len(a) for a in out) >= max_tokens:
            break
    tokens = np.concatenate(out)
    return tokens[:max_tokens] if max_tokens else tokens


def split_documents(text):
    """framework/data/corpus.cc SplitDocuments: paragraphs separated by blank lines; a document
    runs from the start of its first non-blank line to the end of its last (before its '\\n')."""
    docs, begin, end, pos = [], None, 0, 0
    while pos < len(text):
        nl = text.find("\n", pos)
        if nl < 0:
            nl = len(text)
        line = text[pos:nl]
        if not line.rstrip(" \t\r\v\f"):
            if begin is not None:
                docs.append(text[begin:end])
                begin = None
        else:
            if begin is None:
                begin = pos
            end = nl
        pos = nl + 1
    if begin is not None:
        docs.append(text[begin:end])
    return docs


def write_kjv_shards(tok, text_path, out_dir, val_fraction, eos_id):
    """The split of `fam prepare-data --documents paragraph`: document i goes to val when
    floor((i + 1) f) > floor(i f); each document's ids are followed by eos."""
    text = open(text_path, encoding="utf-8").read()
    docs = split_documents(text)
    train, val = [], []
    for i, doc in enumerate(docs):
        ids = tok.encode(doc, add_special_tokens=False) + [eos_id]
        to_val = math.floor((i + 1) * val_fraction) > math.floor(i * val_fraction)
        (val if to_val else train).extend(ids)
    os.makedirs(out_dir, exist_ok=True)
    vocab = len(tok)
    write_shard(os.path.join(out_dir, "train-00000.bin"), train, vocab)
    write_shard(os.path.join(out_dir, "val-00000.bin"), val, vocab)
    with open(os.path.join(out_dir, "data.json"), "w") as f:
        json.dump({"format": "famtrain-data", "tokenizer": "tokenizer.json (HF tokenizers)",
                   "source": text_path, "documents": len(docs), "val_fraction": val_fraction,
                   "eos_id": eos_id, "vocab_size": vocab,
                   "train": {"tokens": len(train), "shards": ["train-00000.bin"]},
                   "val": {"tokens": len(val), "shards": ["val-00000.bin"]}}, f, indent=2)
        f.write("\n")
    print(f"shards: {out_dir}: {len(docs)} documents, train {len(train)} tokens, "
          f"val {len(val)} tokens (eos id {eos_id})")


# ---- reference computations ----------------------------------------------------------------------

def main(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hf", required=True, help="HF model directory")
    parser.add_argument("--out", help="reference JSON to write")
    parser.add_argument("--val", help="famtrain token shards (path or glob) for perplexity")
    parser.add_argument("--seq-len", type=int, default=2048, help="perplexity window length L")
    parser.add_argument("--max-windows", type=int, default=8, help="windows scored (0 = all)")
    parser.add_argument("--logit-positions", type=int, default=4,
                        help="positions whose logits go into the JSON")
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    parser.add_argument("--attn", default="sdpa", choices=["sdpa", "eager"],
                        help="transformers attention implementation (both float32)")
    parser.add_argument("--write-shards", metavar="DIR",
                        help="write train/val token shards of --text with the HF tokenizer, exit")
    parser.add_argument("--text", default="data/kjv/kjv.txt", help="text for --write-shards")
    parser.add_argument("--val-fraction", type=float, default=0.02)
    parser.add_argument("--eos-token", default=None,
                        help="token after each document (default: the tokenizer's eos_token, "
                        "as fam prepare-data uses)")
    parser.add_argument("--skip", default="", help="comma list of parts to skip: "
                        "logits,perplexity,generation,tokenizer")
    args = parser.parse_args(argv)

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(args.hf)

    if args.write_shards:
        eos_id = tok.convert_tokens_to_ids(args.eos_token or tok.eos_token)
        write_kjv_shards(tok, args.text, args.write_shards, args.val_fraction, eos_id)
        return 0
    if not args.out:
        parser.error("--out is required")
    skip = set(filter(None, args.skip.split(",")))

    model = AutoModelForCausalLM.from_pretrained(args.hf, dtype=torch.float32,
                                                 attn_implementation=args.attn)
    model.eval()
    cfg = json.load(open(os.path.join(args.hf, "config.json")))
    import transformers
    result = {"model": args.hf, "transformers": transformers.__version__,
              "torch": torch.__version__, "threads": args.threads, "dtype": "float32",
              "attn_implementation": args.attn,
              "config": {k: cfg.get(k) for k in ("model_type", "num_hidden_layers", "hidden_size",
                                                 "num_attention_heads", "num_key_value_heads",
                                                 "head_dim", "vocab_size", "rope_theta",
                                                 "rope_parameters", "rope_scaling",
                                                 "tie_word_embeddings", "rms_norm_eps")},
              "seconds": {}}

    if "logits" not in skip:
        t0 = time.time()
        ids = tok.encode(FIXED_TEXT, add_special_tokens=False)
        with torch.no_grad():
            logits = model(torch.tensor([ids])).logits[0].float().numpy()
        npy = args.out + ".logits.npy"
        np.save(npy, logits)
        k = min(args.logit_positions, len(ids))
        result["logits"] = {
            "text": FIXED_TEXT, "ids": ids, "positions": list(range(len(ids) - k, len(ids))),
            "last": [[float(x) for x in row] for row in logits[-k:]],
            "argmax": [int(x) for x in logits.argmax(-1)], "npy": os.path.abspath(npy),
            "shape": list(logits.shape)}
        result["seconds"]["logits"] = time.time() - t0
        print(f"logits: {len(ids)} ids, argmax of the last: {int(logits[-1].argmax())}, "
              f"max |logit| {float(np.abs(logits).max()):.3f} -> {npy}")

    if "perplexity" not in skip and args.val:
        t0 = time.time()
        L = args.seq_len
        stream = read_shards(args.val)
        windows = (len(stream) - 1) // L
        if args.max_windows > 0:
            windows = min(windows, args.max_windows)
        total, count, per_window = 0.0, 0, []
        for w in range(windows):
            chunk = torch.tensor(stream[w * L: w * L + L + 1])
            with torch.no_grad():
                logits = model(chunk[None, :-1]).logits[0].float()
            losses = torch.nn.functional.cross_entropy(logits, chunk[1:], reduction="none")
            s = float(losses.double().sum())
            total += s
            count += L
            per_window.append(s / L)
            print(f"  window {w}: loss {s / L:.4f}", flush=True)
        loss = total / count if count else float("nan")
        result["perplexity"] = {"val": args.val, "stream_tokens": int(len(stream)),
                                "seq_len": L, "windows": windows, "tokens": count,
                                "loss": loss, "ppl": math.exp(loss),
                                "window_losses": per_window,
                                "first_ids": [int(x) for x in stream[:16]]}
        result["seconds"]["perplexity"] = time.time() - t0
        print(f"perplexity: loss {loss:.5f}, ppl {math.exp(loss):.4f} over {count} tokens "
              f"({windows} windows of {L})")

    if "generation" not in skip:
        t0 = time.time()
        gens = []
        for prompt in PROMPTS:
            ids = tok.encode(prompt, add_special_tokens=False)
            with torch.no_grad():
                out = model.generate(torch.tensor([ids]), max_new_tokens=args.max_new_tokens,
                                     do_sample=False, num_beams=1, eos_token_id=None,
                                     pad_token_id=tok.pad_token_id)
            new = [int(x) for x in out[0, len(ids):]]
            # The margin between the two best logits at each step: a tiny one can flip the
            # greedy choice under rounding differences between implementations.
            with torch.no_grad():
                full = model(out[:, :-1]).logits[0, len(ids) - 1:].float()
            top2 = torch.topk(full, 2, dim=-1).values
            margins = (top2[:, 0] - top2[:, 1]).tolist()
            gens.append({"prompt": prompt, "prompt_ids": ids, "new_ids": new,
                         "text": tok.decode(new), "min_margin": min(margins),
                         "margins": margins})
            print(f"generation: {prompt!r} -> {tok.decode(new)!r}")
        result["generation"] = {"max_new_tokens": args.max_new_tokens, "greedy": True,
                                "stop_at_eos": False, "prompts": gens}
        result["seconds"]["generation"] = time.time() - t0

    if "tokenizer" not in skip:
        # `fam prepare-data --documents file` tokenizes the file minus its leading and trailing
        # blank lines: "document" is that text, for comparing with a shard written that way.
        docs = split_documents(KJV_EXCERPT)
        start = KJV_EXCERPT.index(docs[0])
        document = KJV_EXCERPT[start:KJV_EXCERPT.rindex(docs[-1]) + len(docs[-1])]
        result["tokenizer"] = {"text": KJV_EXCERPT,
                               "ids": tok.encode(KJV_EXCERPT, add_special_tokens=False),
                               "document": document,
                               "document_ids": tok.encode(document, add_special_tokens=False),
                               "vocab_size": len(tok)}

    with open(args.out, "w") as f:
        json.dump(result, f)
        f.write("\n")
    print(f"wrote {args.out} ({os.path.getsize(args.out) / 2**20:.1f} MiB); seconds "
          + ", ".join(f"{k} {v:.1f}" for k, v in result["seconds"].items()))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
