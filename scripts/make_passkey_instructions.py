#!/usr/bin/env python3
"""Synthetic PassKey instruction data (FAM_SPEC.md §8) for `fam prepare-instructions`.

Each JSONL line is one example in the segments form of framework/data/instructions.h:
  instruction segments: the intro, filler repetitions with the key sentence at a random depth, and
  the question "What is the pass key? The pass key is"; answer segment: "<key>." (loss weight 1 by
  default; instructions 0). The texts are those `fam eval` uses (trainers/eval/passkey.cc), one segment
  per part, so the prompt is tokenized as the evaluation tokenizes it.

Filler lengths are drawn uniformly in [--min-tokens, --max-tokens] and converted to filler
repetitions with --tokens-per-unit (tokens of one filler sentence group; 31 for the KJV tokenizer
of scripts/run.sh, vocabulary 2048). Pick lengths beyond the model's BSWA receptive field
(layers x (memory_segments + 1) x block_size: 512 tokens for the tiny preset) so that the key can
only be recalled through the feedback memory. --key-digits sets the key length (match the eval
suite's passkey.key_digits); --long-fraction mixes in examples with fillers drawn from
[--long-min-tokens, --long-max-tokens] and the key in the first --long-max-depth of the filler
(--max-depth for the others). --questions-every N asks and answers the question after every N-th
filler repetition following the key as well as at the end (several recalls per example: what the
fine-tuning demonstration trains on). --as-document writes each example as one plain-text
segment with loss weight 1, a pretraining document (scripts/make_kjv_passkey_mix.py).

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


def as_document(segments):
    """The example's text as one segment trained on every token (role "context", weight 1)."""
    return {"text": " ".join(s["text"] for s in segments) + "\n", "role": "context", "weight": 1.0}


def make_example(rng, min_tokens, max_tokens, tokens_per_unit, key_digits=5, max_depth=1.0,
                 questions_every=0):
    """One example: (segments, key, filler units).

    questions_every > 0 also asks the question (and answers it) after every questions_every-th
    filler repetition that follows the key, not only at the end: more supervised recalls per
    example, at distances growing from the key's block onwards."""
    target = rng.randint(min_tokens, max_tokens)
    units = max(1 if min_tokens > 0 else 0, round(target / tokens_per_unit))
    before = round(rng.uniform(0, max_depth) * units)
    key = rng.randint(10 ** (key_digits - 1), 10 ** key_digits - 1)
    question = [{"text": QUESTION, "role": "instruction"}, {"text": f"{key}.", "role": "answer"}]
    segments = [{"text": INTRO, "role": "instruction"}]
    segments += [{"text": FILLER, "role": "instruction"} for _ in range(before)]
    segments.append({"text": key_sentence(key), "role": "instruction"})
    for unit in range(1, units - before + 1):
        segments.append({"text": FILLER, "role": "instruction"})
        if questions_every > 0 and unit % questions_every == 0 and unit < units - before:
            segments += question
    segments += question
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
    parser.add_argument("--max-depth", type=float, default=1.0,
                        help="key depth drawn in [0, this] of the filler")
    parser.add_argument("--questions-every", type=int, default=0,
                        help="also ask (and answer) after every N-th filler repetition that follows "
                             "the key (0: only at the end)")
    parser.add_argument("--as-document", action="store_true",
                        help="write each example as one plain-text segment with loss weight 1 (a "
                             "document for pretraining data) instead of instruction/answer "
                             "segments")
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
    if not all(0 <= v <= 1 for v in (args.long_fraction, args.long_max_depth, args.max_depth)):
        parser.error("--long-fraction, --max-depth and --long-max-depth must be in [0, 1]")
    if args.questions_every < 0:
        parser.error("--questions-every must be >= 0")
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
                                              args.tokens_per_unit, args.key_digits,
                                              args.max_depth, args.questions_every)
            if args.as_document:
                segments = [as_document(segments)]
            out.write(json.dumps({"segments": segments}, ensure_ascii=False) + "\n")
    finally:
        if out is not sys.stdout:
            out.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
