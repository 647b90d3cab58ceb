#!/usr/bin/env python3
"""Writes the Hugging Face tokenizer.json fixtures of tests/hf_tokenizer_test.cc.

Trains small tokenizers with the Hugging Face `tokenizers` library in the configurations that
famtrain reads natively (GPT-2 byte-level BPE, Llama 3, Qwen2, SmolLM2, Llama 2 / Mistral
SentencePiece-style BPE with byte fallback, Unigram with Metaspace), then records, for a set of
texts, the ids `Tokenizer.encode(text, add_special_tokens=False).ids` gives and what
`decode(ids, skip_special_tokens=False)` gives back. The C++ test asserts the same ids.

    /work/venv/bin/python scripts/make_tokenizer_fixtures.py [--kjv kjv.txt] [--out DIR]

The corpus is an excerpt of the King James Bible (scripts/get_kjv.sh) plus the C++ sources of
framework/data and a few lines of other scripts; output goes to tests/fixtures/tokenizers/.
"""

import argparse
import glob
import json
import os
import sys

from tokenizers import (AddedToken, Regex, Tokenizer, decoders, models, normalizers,
                        pre_tokenizers, processors, trainers)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

GPT2_PATTERN = (r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+")
LLAMA3_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|"
                  r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
QWEN2_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}|"
                 r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")

MULTILINGUAL = [
    "Ça déjà été précisé: naïve café, Zürich, São Paulo, Ærø, Łódź, Ångström.",
    "Der Bär läuft über die Straße. El niño comió piñata. Œuvre complète.",
    "Καλημέρα κόσμε. Привет, мир! Добрый день.",
    "日本語のテキストです。中文文本。한국어 텍스트.",
    "Emoji: 😀 👍🏽 👨‍👩‍👧‍👦 🏳️‍🌈 ❤️",
]


def corpus(kjv_path):
    lines = []
    with open(kjv_path, encoding="utf-8") as f:
        kjv = f.read()
    lines += kjv[:120000].splitlines()
    for path in sorted(glob.glob(os.path.join(ROOT, "framework", "data", "*.cc")))[:4]:
        with open(path, encoding="utf-8") as f:
            lines += f.read().splitlines()
    lines += MULTILINGUAL * 3
    lines += ["Verse 1:1, 2:3, 10:42 and 3.14159; 2024-05-01 12:30; 1000000 x 42."] * 5
    return lines


def texts(kjv_path):
    with open(kjv_path, encoding="utf-8") as f:
        kjv = f.read()
    start = kjv.find("The LORD is my shepherd")
    code = open(os.path.join(ROOT, "framework", "data", "token_shard.h"), encoding="utf-8").read()
    return [
        "",
        "\n",
        " ",
        "Hello world",
        "In the beginning God created the heaven and the earth.",
        kjv[start:start + 1000],
        kjv[20000:20800],
        code[:1000],
        "int main() {\n\treturn 0;\n}\n",
        "def f(x):\n    if x > 1:\n        return x ** 2  # square\n    return None\n",
        "a  b   c    d\t\te\n\nf\r\ng \n \n  \n",
        "    leading spaces and trailing spaces    ",
        "\t\ttabs\tinside\t",
        "\n\n\nthree newlines first",
        MULTILINGUAL[0],
        MULTILINGUAL[1],
        "Cafe\u0301 nai\u0308ve Ä vs A\u0308, ﬁ ligature, Ⅻ, ① ",
        MULTILINGUAL[2],
        MULTILINGUAL[3],
        MULTILINGUAL[4],
        "Family: 👨‍👩‍👧‍👦 and 🧑🏿‍🚀 and 🇫🇷🇯🇵 flags",
        "Digits 0123456789 and 1234567 and ١٢٣ and ４５ and 3.14",
        "He's, it'S, they'RE, we've, I'M, you'll, she'd, DON'T",
        "<|endoftext|>",
        "Hello<|endoftext|>world",
        "before <|endoftext|> after <|im_start|>user\nhi<|im_end|>\n",
        "<|begin_of_text|>Hello<|eot_id|><|end_of_text|>",
        "<s>Hello</s> <s> x</s>",
        "<pad><unk> and <0x41> literal",
        "<|endoftext|<|endoftext|>>",
        "ends with special <|endoftext|>",
        "mixed\u00a0nbsp\u2003em-space\u3000ideographic",
        "\u200bzero\u200dwidth\ufeffbom",
        "ſ long s and K kelvin and İstanbul",
        "a <mask> b<mask>c  <mask>",
        "ZZword fooZZword ZZwordbar ZZword. _ZZword (ZZword)",
        "<think>ok</think> <|fim_prefix|>def",
    ]


# Pipeline variants: a base fixture with some top-level keys replaced ("model" is merged into the
# model's fields), checked on the texts at VARIANT_TEXTS.
VARIANT_TEXTS = [3, 4, 8, 10, 11, 12, 16, 19, 20, 21, 22, 25, 33]
SPLIT_WORDS = {"type": "Split", "pattern": {"Regex": r"\s+"}, "invert": False}


def variants():
    bl = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False}
    out = {}
    for form in ["NFD", "NFKC", "NFKD"]:
        out["gpt2+" + form] = ("gpt2", {"normalizer": {"type": form}})
    out["gpt2+prefix_space"] = ("gpt2", {"pre_tokenizer": {
        "type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True}})
    out["gpt2+strip_replace"] = ("gpt2", {"normalizer": {"type": "Sequence", "normalizers": [
        {"type": "Strip", "strip_left": True, "strip_right": True},
        {"type": "Replace", "pattern": {"Regex": "[0-9]+"}, "content": "#"},
        {"type": "Replace", "pattern": {"String": "the"}, "content": "THE"}]}})
    for behavior in ["Removed", "Isolated", "MergedWithPrevious", "MergedWithNext", "Contiguous"]:
        for invert in [False, True]:
            split = dict(SPLIT_WORDS, behavior=behavior, invert=invert)
            out[f"llama3+split_{behavior}_{invert}"] = (
                "llama3", {"pre_tokenizer": {"type": "Sequence", "pretokenizers": [split, bl]}})
    out["llama3+split_string"] = ("llama3", {"pre_tokenizer": {"type": "Sequence", "pretokenizers": [
        {"type": "Split", "pattern": {"String": "e"}, "behavior": "MergedWithNext",
         "invert": False}, bl]}})
    out["llama3+no_ignore_merges"] = ("llama3", {"model": {"ignore_merges": False}})
    out["smollm2+digits_contiguous"] = ("smollm2", {"pre_tokenizer": {
        "type": "Sequence", "pretokenizers": [{"type": "Digits", "individual_digits": False},
                                              dict(bl, use_regex=True)]}})
    for scheme in ["always", "never", "first"]:
        for split in [True, False]:
            ms = {"type": "Metaspace", "replacement": "\u2581", "prepend_scheme": scheme,
                  "split": split}
            out[f"unigram+metaspace_{scheme}_{split}"] = (
                "unigram", {"pre_tokenizer": ms, "decoder": ms})
    out["llama2+no_fuse_unk"] = ("llama2", {"model": {"byte_fallback": False, "fuse_unk": False}})
    out["llama2+fuse_unk"] = ("llama2", {"model": {"byte_fallback": False, "fuse_unk": True}})
    return out


def patched(base, patch):
    j = json.loads(json.dumps(base))
    for key, value in patch.items():
        if key == "model":
            j["model"].update(value)
        else:
            j[key] = value
    return j


def train_bpe_byte_level(lines, vocab_size, pre_tokenizer, specials, normalizer=None,
                         ignore_merges=False):
    tok = Tokenizer(models.BPE(ignore_merges=ignore_merges))
    if normalizer is not None:
        tok.normalizer = normalizer
    tok.pre_tokenizer = pre_tokenizer
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(lines, trainer)
    return tok


def byte_piece_vocab(tok_json, specials):
    """Puts the specials first, then <0x00>..<0xFF>, then the trained pieces (as Llama 2 does)."""
    model = tok_json["model"]
    old = sorted(model["vocab"].items(), key=lambda kv: kv[1])
    vocab = {}
    for s in specials:
        vocab[s] = len(vocab)
    for b in range(256):
        vocab["<0x%02X>" % b] = len(vocab)
    for piece, _ in old:
        if piece not in vocab:
            vocab[piece] = len(vocab)
    model["vocab"] = vocab
    for t in tok_json["added_tokens"]:
        t["id"] = vocab[t["content"]]
    return tok_json


def llama2_style(lines, metaspace):
    specials = ["<unk>", "<s>", "</s>"]
    tok = Tokenizer(models.BPE(unk_token="<unk>", fuse_unk=True, byte_fallback=True))
    tok.normalizer = normalizers.Sequence(
        [normalizers.Prepend("\u2581"), normalizers.Replace(" ", "\u2581")])
    trainer = trainers.BpeTrainer(vocab_size=700, special_tokens=specials, limit_alphabet=70,
                                  show_progress=False)
    tok.train_from_iterator(lines, trainer)
    j = byte_piece_vocab(json.loads(tok.to_str()), specials)
    if metaspace:  # the newer conversion (Mistral, TinyLlama re-saves): Metaspace pre-tokenizer
        j["normalizer"] = None
        j["pre_tokenizer"] = {"type": "Metaspace", "replacement": "\u2581",
                              "prepend_scheme": "first", "split": False}
    j["decoder"] = json.loads(decoders.Sequence([
        decoders.Replace("\u2581", " "), decoders.ByteFallback(), decoders.Fuse(),
        decoders.Strip(" ", 1, 0)]).__getstate__())
    j["post_processor"] = json.loads(processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", 1)]).__getstate__())
    return j


def unigram_style(lines, byte_fallback):
    specials = ["<pad>", "</s>", "<unk>"]
    tok = Tokenizer(models.Unigram())
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="always")
    tok.decoder = decoders.Metaspace(replacement="\u2581", prepend_scheme="always")
    trainer = trainers.UnigramTrainer(vocab_size=600, special_tokens=specials, unk_token="<unk>",
                                      show_progress=False)
    tok.train_from_iterator(lines, trainer)
    if not byte_fallback:
        tok.add_special_tokens([AddedToken("<mask>", lstrip=True, rstrip=False, normalized=False)])
        tok.add_tokens([AddedToken("ZZword", single_word=True, normalized=True)])
    j = json.loads(tok.to_str())
    if byte_fallback:
        vocab = j["model"]["vocab"]
        lowest = min(score for _, score in vocab)
        have = {piece for piece, _ in vocab}
        vocab += [["<0x%02X>" % b, lowest - 1.0] for b in range(256) if "<0x%02X>" % b not in have]
        j["model"]["byte_fallback"] = True
        j["pre_tokenizer"]["split"] = False
        j["pre_tokenizer"]["prepend_scheme"] = "first"
        j["decoder"] = json.loads(decoders.Sequence([
            decoders.Replace("\u2581", " "), decoders.ByteFallback(), decoders.Fuse(),
            decoders.Strip(" ", 1, 0)]).__getstate__())
    return j


def legacy_merges(j):
    """Writes the merges as "a b" strings, the format of files saved before tokenizers 0.20."""
    j["model"]["merges"] = [m if isinstance(m, str) else " ".join(m) for m in j["model"]["merges"]]
    return j


def build(lines):
    chat = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    out = {}

    gpt2 = train_bpe_byte_level(lines, 900, pre_tokenizers.ByteLevel(add_prefix_space=False),
                                ["<|endoftext|>"])
    out["gpt2"] = (legacy_merges(json.loads(gpt2.to_str())), None)

    llama3 = train_bpe_byte_level(
        lines, 1000,
        pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(LLAMA3_PATTERN), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)]),
        ["<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>"], ignore_merges=True)
    j = json.loads(llama3.to_str())
    j["post_processor"] = json.loads(processors.TemplateProcessing(
        single="<|begin_of_text|> $A", pair="<|begin_of_text|> $A <|begin_of_text|> $B",
        special_tokens=[("<|begin_of_text|>", j["model"]["vocab"]["<|begin_of_text|>"])]
    ).__getstate__())
    out["llama3"] = (j, {"bos_token": "<|begin_of_text|>", "eos_token": "<|end_of_text|>",
                         "tokenizer_class": "PreTrainedTokenizerFast"})

    qwen2 = train_bpe_byte_level(
        lines, 1000,
        pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(QWEN2_PATTERN), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)]),
        chat, normalizer=normalizers.NFC())
    qwen2.add_special_tokens(["<|fim_prefix|>"])
    qwen2.add_tokens([AddedToken("<think>", normalized=False, special=False),
                      AddedToken("</think>", normalized=False, special=False)])
    out["qwen2"] = (json.loads(qwen2.to_str()), {
        "bos_token": None,
        "eos_token": {"content": "<|im_end|>", "lstrip": False, "normalized": False,
                      "rstrip": False, "single_word": False, "__type": "AddedToken"},
        "pad_token": "<|endoftext|>", "unk_token": None})

    smollm2 = train_bpe_byte_level(
        lines, 800,
        pre_tokenizers.Sequence([
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)]),
        chat)
    j = json.loads(smollm2.to_str())
    v = j["model"]["vocab"]
    j["post_processor"] = json.loads(processors.TemplateProcessing(
        single="<|im_start|> $A <|im_end|>", pair="<|im_start|> $A <|im_end|> $B:1",
        special_tokens=[("<|im_start|>", v["<|im_start|>"]), ("<|im_end|>", v["<|im_end|>"])]
    ).__getstate__())
    out["smollm2"] = (j, None)

    out["llama2"] = (llama2_style(lines, metaspace=False),
                     {"bos_token": {"content": "<s>", "__type": "AddedToken"},
                      "eos_token": {"content": "</s>", "__type": "AddedToken"},
                      "unk_token": {"content": "<unk>", "__type": "AddedToken"},
                      "pad_token": None})
    out["mistral"] = (llama2_style(lines, metaspace=True), None)
    out["unigram"] = (unigram_style(lines, byte_fallback=False),
                      {"eos_token": "</s>", "pad_token": "<pad>", "unk_token": "<unk>"})
    out["unigram_bytes"] = (unigram_style(lines, byte_fallback=True), None)
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--kjv", default="/tmp/kjv.txt", help="text of scripts/get_kjv.sh")
    parser.add_argument("--out", default=os.path.join(ROOT, "tests", "fixtures", "tokenizers"))
    args = parser.parse_args()
    if not os.path.exists(args.kjv):
        sys.exit(f"{args.kjv} not found: run scripts/get_kjv.sh {args.kjv} first")
    lines = corpus(args.kjv)
    cases = texts(args.kjv)
    os.makedirs(args.out, exist_ok=True)
    expected = {"texts": cases, "tokenizers": {}, "variant_texts": VARIANT_TEXTS, "variants": {}}
    built = build(lines)
    for name, (base, patch) in variants().items():
        tok = Tokenizer.from_str(json.dumps(patched(built[base][0], patch)))
        ids = [tok.encode(cases[i], add_special_tokens=False).ids for i in VARIANT_TEXTS]
        expected["variants"][name] = {
            "base": base, "patch": patch, "ids": ids,
            "decoded": [tok.decode(i, skip_special_tokens=False) for i in ids]}
    for name, (tok_json, config) in built.items():
        d = os.path.join(args.out, name)
        os.makedirs(d, exist_ok=True)
        data = json.dumps(tok_json, ensure_ascii=False, separators=(",", ":"))
        tok = Tokenizer.from_str(data)  # the file must load in the reference library as written
        with open(os.path.join(d, "tokenizer.json"), "w", encoding="utf-8") as f:
            f.write(data)
        config_path = os.path.join(d, "tokenizer_config.json")
        if config is not None:
            with open(config_path, "w", encoding="utf-8") as f:
                json.dump(config, f, ensure_ascii=False, indent=1)
        elif os.path.exists(config_path):
            os.remove(config_path)
        ids = [tok.encode(t, add_special_tokens=False).ids for t in cases]
        decoded = [tok.decode(i, skip_special_tokens=False) for i in ids]
        nl = tok.encode("\n", add_special_tokens=False).ids
        expected["tokenizers"][name] = {
            "vocab_size": tok.get_vocab_size(with_added_tokens=True),
            "newline_id": nl[0] if len(nl) == 1 else -1,
            "ids": ids,
            "decoded": decoded,
        }
        print(f"{name}: vocab {tok.get_vocab_size(True)}, {len(data)} bytes, "
              f"{sum(a == b for a, b in zip(decoded, cases))}/{len(cases)} texts round-trip")
    with open(os.path.join(args.out, "expected.json"), "w", encoding="utf-8") as f:
        json.dump(expected, f, ensure_ascii=False, separators=(",", ":"))
        f.write("\n")


if __name__ == "__main__":
    main()
