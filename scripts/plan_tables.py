#!/usr/bin/env python3
"""Prints the "Plans at seq 8.5k on 80 GB GPUs" table of docs/memory.md from `fam plan --json`.

  python3 scripts/plan_tables.py [path/to/fam]      (default: build/fam)

Rows: the fine-tuning configs (LoRA, Adafactor) as shipped and, for pretraining, the same configs
with AdamW; 1/8/64 GPUs of 79.6 GiB. Columns: the suggested settings and their breakdown (GiB),
the same settings with the unchunked loss, and the baseline (no ZeRO, no recompute, micro-batch 1).
"""
import json
import subprocess
import sys

FAM = sys.argv[1] if len(sys.argv) > 1 else "build/fam"
GIB = 1024.0 ** 3
PRETRAIN = ["trainer.type=pretrain", "optimizer.type=adamw", "optimizer.beta2=0.95"]
BASELINE = ["distributed.zero=none", "trainer.recompute=false", "trainer.micro_batch=1"]


def plan(model, gpus, sets):
    cmd = [FAM, "plan", "--config", f"configs/experiments/finetune_{model}.yaml", "--gpus",
           str(gpus), "--gpu-memory-gb", "79.6", "--json"]
    for s in sets:
        cmd += ["--set", s]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode not in (0, 2) or not out.stdout.strip():
        sys.exit(f"plan_tables: {' '.join(cmd)} failed: {out.stderr.strip()}")
    return json.loads(out.stdout)


def settings_sets(s):
    return [f"distributed.zero={s['zero']}", f"trainer.recompute={str(s['recompute']).lower()}",
            f"trainer.micro_batch={s['micro_batch']}"]


def g(x):
    return f"{x / GIB:.1f}"


print("| model | run | GPUs | suggested settings | weights | master | grads | optimizer | "
      "activations (kept + peak) | comm | workspace | total | unchunked | baseline |")
print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
for model, runs in [("1b", [("pretrain AdamW", PRETRAIN, [1, 8, 64]), ("LoRA Adafactor", [], [1, 8, 64])]),
                    ("8b", [("pretrain AdamW", PRETRAIN, [8, 64]), ("LoRA Adafactor", [], [8, 64])]),
                    ("24b", [("pretrain AdamW", PRETRAIN, [8, 64]), ("LoRA Adafactor", [], [8, 64])])]:
    for run, sets, gpu_list in runs:
        for gpus in gpu_list:
            p = plan(model, gpus, sets)
            base = plan(model, gpus, sets + BASELINE)["config"]
            base_cell = f"{g(base['bytes']['total'])} {'fits' if base['fits'] else 'no'}"
            if p["suggestion"] is None:
                print(f"| {model} | {run} | {gpus} | nothing fits |" + " |" * 9 + f" {base_cell} |")
                continue
            s = p["suggestion"]
            chosen = plan(model, gpus, sets + settings_sets(s))["config"]["bytes"]
            unchunked = plan(model, gpus, sets + settings_sets(s) + ["trainer.loss_chunk_tokens=0"])
            b = chosen
            print(f"| {model} | {run} | {gpus} | {s['zero']}, recompute "
                  f"{'on' if s['recompute'] else 'off'}, mb {s['micro_batch']} | {g(b['weights'])} | "
                  f"{g(b['master'])} | {g(b['gradients'])} | {g(b['optimizer'])} | "
                  f"{g(b['activations'])} ({g(b['activations_kept'])} + {g(b['activations_peak'])}) | "
                  f"{g(b['communication'])} | {g(b['workspace'])} | {g(b['total'])} | "
                  f"{g(unchunked['config']['bytes']['total'])} | {base_cell} |")
