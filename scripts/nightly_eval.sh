#!/usr/bin/env bash
# Nightly evaluation of every run under a runs folder (docs/evaluation.md "Nightly evaluation").
# Finds each run's newest valid checkpoint, evaluates the ones not evaluated yet with the eval
# suites, appends the results to <out>/history.jsonl, writes <out>/dashboard.md with trend plots
# and the self-contained <out>/dashboard.html, and exits non-zero when a metric regressed past its threshold against the previous night (or an
# evaluation failed), so that cron or CI can alert. Exit codes: 0 ok, 1 regression or runtime
# failure (stderr names each regressed metric), 2 bad input or config.
#
#   scripts/nightly_eval.sh runs                          default suite, default thresholds
#   scripts/nightly_eval.sh runs --threshold val.loss=0.05 --threshold passkey=off
#
# Environment:
#   FAM                 the fam binary (default: build/fam of this checkout, else fam on PATH)
#   FAM_NIGHTLY_SUITES  eval suite YAMLs, space-separated (default: configs/eval/default.yaml)
#   FAM_NIGHTLY_OUT     dashboard and history folder (default: <runs>/nightly)
# Further arguments go to `fam nightly` (see `fam nightly --help`).
#
# crontab (every night at 02:00):
#   0 2 * * * cd /path/to/famtrain && scripts/nightly_eval.sh runs >> runs/nightly.log 2>&1
set -euo pipefail
if [ $# -lt 1 ] || [ "${1#-}" != "$1" ]; then
  echo "usage: $0 <runs-dir> [fam nightly flags...]" >&2
  exit 2
fi
if [ ! -d "$1" ]; then
  echo "nightly_eval.sh: no such runs folder: $1" >&2
  exit 2
fi
runs=$(cd "$1" && pwd)
shift
root=$(cd "$(dirname "$0")/.." && pwd)
if [ -z "${FAM:-}" ]; then
  if [ -x "$root/build/fam" ]; then FAM=$root/build/fam; else FAM=fam; fi
fi
suites=${FAM_NIGHTLY_SUITES:-$root/configs/eval/default.yaml}
out=${FAM_NIGHTLY_OUT:-$runs/nightly}
mkdir -p "$out"
out=$(cd "$out" && pwd)
case "$FAM" in /*) ;; */*) FAM=$(cd "$(dirname "$FAM")" && pwd)/$(basename "$FAM") ;; esac
# The runs' configs name their data relative to the project root (where scripts/run.sh trains).
cd "$root"

# One job at a time: a night that overruns must not race the next one on the history file.
exec 9>"$out/.lock"
if command -v flock >/dev/null 2>&1 && ! flock -n 9; then
  echo "nightly_eval.sh: another nightly job holds $out/.lock; exiting" >&2
  exit 1
fi

args=(nightly --runs "$runs" --out "$out")
for suite in $suites; do args+=(--suite "$suite"); done
export FAM_SOURCE_DIR=${FAM_SOURCE_DIR:-$root}  # finds scripts/plot_report.sh for report plots
exec "$FAM" "${args[@]}" "$@"
