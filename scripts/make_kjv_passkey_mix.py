#!/usr/bin/env python3
"""Pretraining text for the fine-tuning demonstration: KJV passages plus PassKey documents.

Writes JSONL for `fam prepare-instructions` in which every segment has loss weight 1 (plain
language-model pretraining): the KJV text (one verse per line, as scripts/get_kjv.sh writes it) in
passages of --verses verses, and --documents PassKey texts (scripts/make_passkey_instructions.py
--as-document: intro, filler with the key sentence, question and answer, 0 to --max-tokens filler
tokens), shuffled together. A tiny model pretrained on KJV alone has no in-context retrieval at
all (docs/finetuning.md measures it), whereas the paper's base, like any real LLM, finds a pass key
inside its attention window; the PassKey documents give the tiny base that ability, so that the
fine-tuning demonstration asks what the paper asks: can LoRA extend it beyond the window through
the feedback memory.

  python3 scripts/make_kjv_passkey_mix.py --kjv data/kjv_numbered/kjv.txt --out mix.jsonl

Standard library only; deterministic for a given --seed.
"""

import argparse
import json
import os
import random
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_passkey_instructions as passkey  # noqa: E402


def main(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kjv", required=True, help="KJV text, one verse per line")
    parser.add_argument("--out", required=True, help="output JSONL file")
    parser.add_argument("--verses", type=int, default=24, help="verses per KJV passage")
    parser.add_argument("--documents", type=int, default=4500, help="PassKey documents")
    parser.add_argument("--max-tokens", type=int, default=450,
                        help="longest filler of a PassKey document, in tokens")
    parser.add_argument("--key-digits", type=int, default=1, help="digits of each key")
    parser.add_argument("--seed", type=int, default=21, help="random seed")
    args = parser.parse_args(argv)
    if args.verses < 1 or args.documents < 0 or args.max_tokens < 0:
        parser.error("need --verses >= 1, --documents >= 0, --max-tokens >= 0")
    try:
        with open(args.kjv, encoding="utf-8") as f:
            verses = [v for v in f.read().split("\n") if v.strip()]
    except OSError as e:
        parser.error(f"--kjv: {e}")
    if not verses:
        parser.error(f"--kjv: {args.kjv} holds no text")
    rng = random.Random(args.seed)
    docs = [{"text": "\n".join(verses[i:i + args.verses]) + "\n", "role": "context", "weight": 1.0}
            for i in range(0, len(verses), args.verses)]
    passages = len(docs)
    for _ in range(args.documents):
        segments, _, _ = passkey.make_example(rng, 0, args.max_tokens, 31.0, args.key_digits)
        docs.append(passkey.as_document(segments))
    rng.shuffle(docs)
    if os.path.dirname(args.out):
        os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w", encoding="utf-8") as f:
        for doc in docs:
            f.write(json.dumps({"segments": [doc]}, ensure_ascii=False) + "\n")
    print(f"{args.out}: {passages} KJV passages + {args.documents} PassKey documents")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
