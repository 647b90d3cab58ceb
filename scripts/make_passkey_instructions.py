#!/usr/bin/env python3
"""Synthetic PassKey instruction data (FAM_SPEC.md §8) for `fam prepare-instructions`.

Each JSONL line is one example in the segments form of framework/data/instructions.h:
  instruction segments: the intro, filler repetitions with the key sentence at a random depth, and
  the question "What is the pass key? The pass key is"; answer segment: "<key>." (loss weight 1 by
  default; instructions 0). The texts are those `fam eval` uses (trainers/evaluate.cc), one segment
  per part, so the prompt is tokenized as the evaluation tokenizes it.

Filler lengths are drawn uniformly in [--min-tokens, --max-tokens] and converted to filler
repetitions with --tokens-per-unit (tokens of one filler sentence group; 31 for the KJV tokenizer
of scripts/run.sh, vocabulary 2048). Pick lengths beyond the model's BSWA receptive field
(layers x (memory_segments + 1) x block_size: 512 tokens for the tiny preset) so that the key can
only be recalled through the feedback memory. --key-digits sets the key length (match the eval
suite's passkey.key_digits); --long-fraction mixes in examples with fillers drawn from
[--long-min-tokens, --long-max-tokens] and the key in the first --long-max-depth of the filler.

  python3 scripts/make_passkey_instructions.py --out data/passkey/passkey.jsonl --examples 2000

Standard library only; deterministic for a given --seed.
"""

import argparse
import json
import os
import random
import sys

INTRO = ("There is a pass key hidden inside a lot of irrelevant text. Find it and remember it. "
         "I will ask you for the pass key at the end.")
FILLER = ("The grass is green. The sky is blue. The sun is yellow. Here we go. "
          "There and back again.")
QUESTION = "What is the pass key? The pass key is"


def key_sentence(key):
    return f"The pass key is {key}. Remember it. {key} is the pass key."


def make_example(rng, min_tokens, max_tokens, tokens_per_unit, key_digits=5, max_depth=1.0):
    """One example: (segments, key, filler units)."""
    target = rng.randint(min_tokens, max_tokens)
    units = max(1 if min_tokens > 0 else 0, round(target / tokens_per_unit))
    before = round(rng.uniform(0, max_depth) * units)
    key = rng.randint(10 ** (key_digits - 1), 10 ** key_digits - 1)
    segments = [{"text": INTRO, "role": "instruction"}]
    segments += [{"text": FILLER, "role": "instruction"} for _ in range(before)]
    segments.append({"text": key_sentence(key), "role": "instruction"})
    segments += [{"text": FILLER, "role": "instruction"} for _ in range(units - before)]
    segments.append({"text": QUESTION, "role": "instruction"})
    segments.append({"text": f"{key}.", "role": "answer"})
    return segments, key, units


def main(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="output JSONL file ('-' for stdout)")
    parser.add_argument("--examples", type=int, default=2000, help="number of examples")
    parser.add_argument("--min-tokens", type=int, default=600,
                        help="shortest filler, in tokens (0: examples may have no filler at all)")
    parser.add_argument("--max-tokens", type=int, default=1600, help="longest filler, in tokens")
    parser.add_argument("--tokens-per-unit", type=float, default=31.0,
                        help="tokens of one filler repetition with your tokenizer")
    parser.add_argument("--key-digits", type=int, default=5,
                        help="digits of each key (1-9; match the eval suite's passkey.key_digits)")
    parser.add_argument("--long-fraction", type=float, default=0.0,
                        help="fraction of examples with a long filler drawn in "
                             "[--long-min-tokens, --long-max-tokens] instead (a mixture)")
    parser.add_argument("--long-min-tokens", type=int, default=600, help="shortest long filler")
    parser.add_argument("--long-max-tokens", type=int, default=1500, help="longest long filler")
    parser.add_argument("--long-max-depth", type=float, default=1.0,
                        help="long examples: key depth drawn in [0, this] of the filler "
                             "(< 1 keeps the key far from the question)")
    parser.add_argument("--seed", type=int, default=0, help="random seed")
    args = parser.parse_args(argv)
    if args.examples < 1 or args.min_tokens < 0 or args.max_tokens < args.min_tokens:
        parser.error("need --examples >= 1 and 0 <= --min-tokens <= --max-tokens")
    if args.tokens_per_unit <= 0:
        parser.error("--tokens-per-unit must be > 0")
    if not 1 <= args.key_digits <= 9:
        parser.error("--key-digits must be in 1-9")
    if not 0 <= args.long_fraction <= 1 or not 0 <= args.long_max_depth <= 1:
        parser.error("--long-fraction and --long-max-depth must be in [0, 1]")
    if args.long_fraction > 0 and not 1 <= args.long_min_tokens <= args.long_max_tokens:
        parser.error("need 1 <= --long-min-tokens <= --long-max-tokens")
    rng = random.Random(args.seed)
    if args.out != "-" and os.path.dirname(args.out):
        os.makedirs(os.path.dirname(args.out), exist_ok=True)
    out = sys.stdout if args.out == "-" else open(args.out, "w", encoding="utf-8")
    try:
        for _ in range(args.examples):
            if rng.random() < args.long_fraction:
                segments, _, _ = make_example(rng, args.long_min_tokens, args.long_max_tokens,
                                              args.tokens_per_unit, args.key_digits,
                                              args.long_max_depth)
            else:
                segments, _, _ = make_example(rng, args.min_tokens, args.max_tokens,
                                              args.tokens_per_unit, args.key_digits)
            out.write(json.dumps({"segments": segments}, ensure_ascii=False) + "\n")
    finally:
        if out is not sys.stdout:
            out.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
