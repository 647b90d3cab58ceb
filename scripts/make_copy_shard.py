#!/usr/bin/env python3
"""Synthetic in-context copy data as a token shard (docs/formats.md "Token shards").

Each record is a random span of ordinary word pieces followed by the same span again (and, with
--copies 3, once more), records back to back. Next-token loss on the second copy can only be won by
looking the span up in the context: mixed into pretraining it gives a tiny model the in-context
copy ("induction") circuit that any real LLM base has and that PassKey retrieval and fine-tuning
build on. The tiny preset trained on KJV alone does not form one (scripts/finetune_demo.sh measures
this with --probe shards: loss on repeated random spans equal to loss on unrepeated ones).

  python3 scripts/make_copy_shard.py --out data/kjv_copy/train-00001.bin --tokens 400000
  python3 scripts/make_copy_shard.py --out probe/repeat-00000.bin --tokens 4096 --probe repeat
  python3 scripts/make_copy_shard.py --out probe/random-00000.bin --tokens 4096 --probe random

--probe repeat|random writes a probe instead: windows of 512 tokens made of 64-token random spans,
each followed by its copy (repeat) or by another random span (random). A model that copies has a
much lower loss on the repeat probe than on the random one (`fam eval --val`).

Token ids are drawn from [--min-id, vocab): past the special and byte-fallback pieces of the
KJV tokenizer (vocabulary 2048: 4 specials + 256 bytes). Standard library only; deterministic for
a given --seed.
"""

import argparse
import array
import random
import struct
import sys


def fnv1a64(data):
    value = 0xCBF29CE484222325
    for byte in data:
        value ^= byte
        value = (value * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return value


def write_shard(path, tokens, vocab_size):
    """A FAMTOK01 shard (docs/formats.md): uint16 ids up to 65,536 ids, else uint32."""
    body = array.array("H" if vocab_size <= 65536 else "I", tokens)
    if sys.byteorder != "little":
        body.byteswap()
    data = body.tobytes()
    header = b"FAMTOK01" + struct.pack("<IIQQQ", 1, body.itemsize, vocab_size, len(tokens),
                                       fnv1a64(data))
    with open(path, "wb") as f:
        f.write(header + b"\0" * (64 - len(header)) + data)


def copy_records(rng, count, vocab, min_id, min_span, max_span, copies):
    tokens = []
    while len(tokens) < count:
        span = [rng.randrange(min_id, vocab) for _ in range(rng.randint(min_span, max_span))]
        tokens += span * copies
    return tokens[:count]


def probe(rng, count, vocab, min_id, repeat):
    tokens = []
    while len(tokens) < count:
        span = [rng.randrange(min_id, vocab) for _ in range(64)]
        tokens += span + (span if repeat else [rng.randrange(min_id, vocab) for _ in range(64)])
    return tokens[:count] + [min_id]  # + 1: the loader reads windows of seq_len + 1


def main(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="output .bin token shard")
    parser.add_argument("--tokens", type=int, default=400000, help="number of tokens")
    parser.add_argument("--vocab-size", type=int, default=2048)
    parser.add_argument("--min-id", type=int, default=260, help="smallest token id drawn")
    parser.add_argument("--min-span", type=int, default=8, help="shortest span, in tokens")
    parser.add_argument("--max-span", type=int, default=96, help="longest span, in tokens")
    parser.add_argument("--copies", type=int, default=2, help="times each span appears")
    parser.add_argument("--probe", choices=["repeat", "random"], help="write a probe shard")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    if not 0 <= args.min_id < args.vocab_size or args.vocab_size > 65536:
        parser.error("need 0 <= --min-id < --vocab-size <= 65536")
    if not 1 <= args.min_span <= args.max_span or args.copies < 2 or args.tokens < 1:
        parser.error("need 1 <= --min-span <= --max-span, --copies >= 2, --tokens >= 1")
    rng = random.Random(args.seed)
    if args.probe:
        tokens = probe(rng, args.tokens, args.vocab_size, args.min_id, args.probe == "repeat")
    else:
        tokens = copy_records(rng, args.tokens, args.vocab_size, args.min_id, args.min_span,
                              args.max_span, args.copies)
    write_shard(args.out, tokens, args.vocab_size)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
