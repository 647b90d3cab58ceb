#!/usr/bin/env bash
# Data-parallel launch of `fam` with OpenMPI's mpirun: one rank per GPU (or, for CPU training,
# a few ranks per node sharing its cores), on this machine or on the hosts of a hostfile.
#
#   scripts/launch_mpirun.sh [options] [--] [FAM-BINARY] <fam arguments>
#     -H, --hostfile FILE     OpenMPI hostfile ("node1 slots=8" per line); default: this machine
#     -g, --gpus-per-node N   ranks per node (default: visible GPUs, see nvidia-smi; 2 on a CPU box)
#     -np, -n, --np N         total ranks (default: nodes x gpus-per-node)
#     -t, --threads N         CPU threads per rank (default: cores / ranks per node)
#         --fam PATH          the fam binary (default: build/fam of this checkout); a path to an
#                             executable before the fam arguments (build/fam train ...) sets it too
#         --dry-run           print the mpirun command instead of running it
#   examples (paths are relative to the directory you run it from):
#     scripts/launch_mpirun.sh -np 2 build/fam train --config configs/experiments/kjv_tiny_fam.yaml
#     scripts/launch_mpirun.sh -H hosts.txt -g 8 -- train --config my.yaml --set distributed.zero=zero1
#
# Every rank gets OMP_NUM_THREADS and the NCCL_*, FAM_*, CUDA_VISIBLE_DEVICES variables of this
# shell (docs/distributed.md lists the NCCL knobs that matter). Extra mpirun arguments: set
# FAM_MPIRUN_ARGS. Running as root (containers) needs OMPI_ALLOW_RUN_AS_ROOT*, which this sets.
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)

HOSTFILE=""
PER_NODE=""
NP=""
THREADS=""
FAM=$REPO/build/fam
DRY_RUN=0
need_value() {
  if [ $# -lt 2 ] || [ -z "$2" ]; then
    echo "$0: $1 needs a value (see --help)" >&2
    exit 2
  fi
}
while [ $# -gt 0 ]; do
  case "$1" in
    -H|--hostfile) need_value "$@"; HOSTFILE=$2; shift 2 ;;
    -g|--gpus-per-node) need_value "$@"; PER_NODE=$2; shift 2 ;;
    -n|-np|--np) need_value "$@"; NP=$2; shift 2 ;;
    -t|--threads) need_value "$@"; THREADS=$2; shift 2 ;;
    --fam) need_value "$@"; FAM=$2; shift 2 ;;
    --dry-run) DRY_RUN=1; shift ;;
    --) shift; break ;;
    -h|--help) sed -n '2,19p' "$0"; exit 0 ;;
    -*) echo "$0: unknown option $1 (see --help)" >&2; exit 2 ;;
    *) break ;;
  esac
done
# A leading path to an executable is the fam binary, as in `mpirun -np 8 build/fam train ...`.
if [ $# -gt 0 ] && [[ "$1" == */* ]] && [ -f "$1" ] && [ -x "$1" ]; then
  FAM=$1
  shift
elif [ $# -gt 0 ] && [[ "$1" == */* ]]; then
  echo "$0: $1: no such executable (the fam binary; build it with scripts/setup.sh)" >&2
  exit 2
fi
if [ $# -eq 0 ]; then
  echo "usage: $0 [options] [--] [fam-binary] <fam arguments> (see --help)" >&2
  exit 2
fi
if [ ! -x "$FAM" ]; then
  echo "$0: $FAM: no such executable (build it with scripts/setup.sh, or pass --fam PATH)" >&2
  exit 2
fi
for n in "$NP" "$PER_NODE" "$THREADS"; do
  if [ -n "$n" ] && ! [[ "$n" =~ ^[1-9][0-9]*$ ]]; then
    echo "$0: expected a positive integer, got \"$n\"" >&2
    exit 2
  fi
done

GPUS=0
if command -v nvidia-smi > /dev/null 2>&1; then
  GPUS=$(nvidia-smi -L 2> /dev/null | grep -c '^GPU' || true)
fi
if [ -z "$PER_NODE" ]; then
  if [ -z "$HOSTFILE" ] && [ -n "$NP" ]; then
    PER_NODE=$NP  # one machine: every rank on it
  else
    PER_NODE=$(( GPUS > 0 ? GPUS : 2 ))
  fi
fi
NODES=1
if [ -n "$HOSTFILE" ]; then
  NODES=$(grep -cvE '^\s*(#|$)' "$HOSTFILE")
fi
NP=${NP:-$(( NODES * PER_NODE ))}
CORES=$(nproc)
if [ -z "$THREADS" ]; then
  THREADS=$(( CORES / PER_NODE > 0 ? CORES / PER_NODE : 1 ))
fi

export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export OMP_NUM_THREADS=$THREADS

# --quiet: mpirun's own banners after a failure would repeat what the failing rank printed.
ARGS=(--quiet -np "$NP" --map-by "ppr:${PER_NODE}:node" --bind-to none)
[ -n "$HOSTFILE" ] && ARGS+=(--hostfile "$HOSTFILE")
# More ranks than slots (e.g. CPU ranks on a small machine): allow it instead of failing.
[ -z "$HOSTFILE" ] && ARGS+=(--oversubscribe)
ARGS+=(-x OMP_NUM_THREADS)
for var in $(compgen -e); do
  case "$var" in
    NCCL_*|FAM_*|CUDA_VISIBLE_DEVICES|LD_LIBRARY_PATH) ARGS+=(-x "$var") ;;
  esac
done
# shellcheck disable=SC2206
EXTRA=(${FAM_MPIRUN_ARGS:-})

CMD=(mpirun "${ARGS[@]}" "${EXTRA[@]}" "$FAM" "$@")
echo "launch: $NP ranks ($PER_NODE per node on $NODES node(s), $THREADS threads each)" >&2
if [ "$DRY_RUN" = 1 ]; then
  printf '%q ' "${CMD[@]}"
  echo
  exit 0
fi
rc=0
"${CMD[@]}" || rc=$?
# fam exits 1 or 2 with its own one-line error; anything else means a rank died on its own.
if [ "$rc" -ne 0 ] && [ "$rc" -ne 1 ] && [ "$rc" -ne 2 ]; then
  echo "launch: mpirun exited with status $rc (a rank died without an error of its own)" >&2
fi
exit "$rc"
