#!/usr/bin/env bash
# Plots of a `fam eval` report. fam eval writes the data next to the report and calls this script
# with the report's path without ".json" (STEM):
#   STEM.passkey.dat     "context_tokens accuracy" lines   → STEM.passkey.png (accuracy vs length)
#   STEM.loss_train.dat  "step loss" lines (metrics.jsonl)  ┐
#   STEM.loss_val.dat    "step val_loss" lines              ┘→ STEM.loss.png (train/val loss)
# Needs gnuplot (Debian: gnuplot-nox); without it the plots are skipped with a warning.
#   scripts/plot_report.sh runs/NAME/eval/report
set -euo pipefail
if [ $# -ne 1 ]; then
  echo "usage: $0 <report path without .json>" >&2
  exit 2
fi
stem=$1
if ! command -v gnuplot >/dev/null 2>&1; then
  echo "plot_report.sh: gnuplot not found; skipping plots (apt-get install gnuplot-nox)" >&2
  exit 0
fi
case "$stem" in
  *\"*) echo "plot_report.sh: a path with a double quote is not supported: $stem" >&2; exit 2 ;;
esac

# pngcairo draws nicer lines; the libgd png terminal is the fallback.
if gnuplot -e 'set terminal pngcairo' >/dev/null 2>&1; then
  terminal='pngcairo size 800,500 font "sans,10"'
else
  terminal='png size 800,500'
fi

if [ -s "$stem.passkey.dat" ]; then
  gnuplot <<GNUPLOT
set terminal $terminal
set output "$stem.passkey.png"
set title "PassKey retrieval"
set xlabel "context length (tokens)"
set ylabel "accuracy"
set logscale x 2
set yrange [-0.05:1.05]
set offsets graph 0.04, graph 0.04, 0, 0
set grid
set key off
plot "$stem.passkey.dat" using 1:2 with linespoints linewidth 2 pointtype 7
GNUPLOT
fi

have_train=0
have_val=0
[ -s "$stem.loss_train.dat" ] && have_train=1
[ -s "$stem.loss_val.dat" ] && have_val=1
if [ $have_train = 1 ] || [ $have_val = 1 ]; then
  plots=()
  [ $have_train = 1 ] && plots+=("\"$stem.loss_train.dat\" using 1:2 with lines linewidth 1.5 title \"train\"")
  [ $have_val = 1 ] && plots+=("\"$stem.loss_val.dat\" using 1:2 with linespoints linewidth 2 pointtype 7 title \"val\"")
  joined=$(IFS=,; echo "${plots[*]}")
  gnuplot <<GNUPLOT
set terminal $terminal
set output "$stem.loss.png"
set title "Loss"
set xlabel "step"
set ylabel "cross-entropy (nats)"
set grid
plot $joined
GNUPLOT
fi
