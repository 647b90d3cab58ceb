#!/usr/bin/env python3
"""Fails when an #include points up the layer list of docs/layers.txt.

Every C++/CUDA source under the listed layers is read; an `#include "a/b/..."` of a header in a
layer listed after the including file's layer is an upward arrow and is reported as
`file:line: framework/core includes framework/ops/ops.h (a layer above it)`. Exit 0 when there is
none, 1 otherwise, 2 for a bad layer file.

  scripts/check_layers.py                 check this checkout
  scripts/check_layers.py --root DIR      check another tree (with its own docs/layers.txt)
  scripts/check_layers.py --self-test     prove the check fails on an upward include
"""
import argparse
import os
import re
import shutil
import sys
import tempfile

INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"')
SOURCE_SUFFIXES = (".h", ".cc", ".cu", ".cuh")


def read_layers(root):
    path = os.path.join(root, "docs", "layers.txt")
    layers = []
    try:
        with open(path, encoding="utf-8") as f:
            for number, line in enumerate(f, 1):
                line = line.split("#", 1)[0].strip()
                if not line:
                    continue
                name = line.split()[0].rstrip("/")
                if name in layers:
                    raise ValueError(f"{path}:{number}: {name} is listed twice")
                layers.append(name)
    except OSError as e:
        raise ValueError(f"{path}: {e.strerror}") from e
    if not layers:
        raise ValueError(f"{path}: no layers listed")
    return layers


def layer_of(path, layers):
    """The layer a repository-relative path belongs to (the longest listed prefix), or None."""
    best = None
    for name in layers:
        if path == name or path.startswith(name + "/"):
            if best is None or len(name) > len(best):
                best = name
    return best


def upward_includes(root, layers):
    rank = {name: i for i, name in enumerate(layers)}
    found = []
    for name in layers:
        top = os.path.join(root, name)
        for folder, _, files in os.walk(top):
            for file in sorted(files):
                if not file.endswith(SOURCE_SUFFIXES):
                    continue
                full = os.path.join(folder, file)
                rel = os.path.relpath(full, root)
                own = layer_of(rel, layers)
                with open(full, encoding="utf-8", errors="replace") as f:
                    for number, line in enumerate(f, 1):
                        m = INCLUDE.match(line)
                        if not m:
                            continue
                        target = layer_of(m.group(1), layers)
                        if target is not None and rank[target] > rank[own]:
                            found.append(f"{rel}:{number}: {own} includes {m.group(1)} "
                                         f"(layer {target}, above it in docs/layers.txt)")
    return found


def check(root):
    try:
        layers = read_layers(root)
    except ValueError as e:
        print(f"check_layers: {e}", file=sys.stderr)
        return 2
    found = upward_includes(root, layers)
    for line in found:
        print(line)
    print(f"check_layers: {len(found)} upward include(s) across {len(layers)} layers")
    return 1 if found else 0


def self_test(root):
    """A copy of the layer list and two small layers: clean passes, an upward include fails."""
    layers = read_layers(root)
    with tempfile.TemporaryDirectory() as tmp:
        os.makedirs(os.path.join(tmp, "docs"))
        shutil.copy(os.path.join(root, "docs", "layers.txt"), os.path.join(tmp, "docs"))
        low, high = layers[0], layers[-1]
        for layer in (low, high):
            os.makedirs(os.path.join(tmp, layer), exist_ok=True)
        with open(os.path.join(tmp, low, "base.h"), "w") as f:
            f.write('#pragma once\n#include <vector>\n')
        with open(os.path.join(tmp, high, "top.cc"), "w") as f:
            f.write(f'#include "{low}/base.h"\n')
        clean = upward_includes(tmp, layers)
        with open(os.path.join(tmp, low, "base.cc"), "w") as f:
            f.write(f'#include "{low}/base.h"\n#include "{high}/top.h"\n')
        dirty = upward_includes(tmp, layers)
    ok = not clean and len(dirty) == 1 and f"{low} includes {high}/top.h" in dirty[0]
    print(f"check_layers --self-test: clean tree {len(clean)} finding(s), tree with "
          f"{low}/base.cc including {high}/top.h: {dirty}")
    print("check_layers --self-test: " + ("ok" if ok else "FAILED"))
    return 0 if ok else 1


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default=os.path.join(os.path.dirname(__file__), ".."))
    parser.add_argument("--self-test", action="store_true")
    args = parser.parse_args()
    root = os.path.abspath(args.root)
    return self_test(root) if args.self_test else check(root)


if __name__ == "__main__":
    sys.exit(main())
