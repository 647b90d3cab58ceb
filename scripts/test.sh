#!/usr/bin/env bash
# Builds (through setup.sh) and runs the whole test suite with ctest, printing ctest's summary.
#   scripts/test.sh            all tests
#   scripts/test.sh -R attn    ctest arguments are passed through
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh build
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
cd build
ctest --output-on-failure -j "${FAM_TEST_JOBS:-2}" "$@"
