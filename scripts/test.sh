#!/usr/bin/env bash
# Builds (through setup.sh) and runs the whole test suite with ctest, printing ctest's summary.
#   scripts/test.sh              all tests (what CI runs first)
#   scripts/test.sh --asan       a subset under AddressSanitizer + UBSan in build-asan (CI runs it too)
#   scripts/test.sh -R attn      other arguments are passed to ctest
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}  # see trainers/cli/fam_main.cc
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1

if [ "${1:-}" = "--asan" ]; then
  shift
  # The runtime, ops, io and model tests: where memory errors would hide. CUDA off keeps it quick.
  ASAN_TESTS=(tensor_test autograd_test fused_ops_test attention_test fam_model_test fam_golden_test
    safetensors_test npy_test checkpoint_test config_test data_test loader_test optim_test
    recompute_test memory_plan_test attention_tiling_test cuda_allocator_test dist_zero_test
    linear_cross_entropy_test device_emulation_test printable_text_test op_harness_test hash_test
    hf_tokenizer_test hf_families_test gguf_test fuzz_replay_test trainer_progress_test)
  # fam itself: hf_families_test runs `fam import` and `fam forward`.
  FAM_BUILD_TYPE=RelWithDebInfo FAM_SANITIZE=ON FAM_ENABLE_CUDA=OFF FAM_SETUP_TARGETS="${ASAN_TESTS[*]} fam" \
    scripts/setup.sh build-asan
  export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
  cd build-asan
  regex=$(IFS='|'; echo "^(${ASAN_TESTS[*]})\$")
  exec ctest --output-on-failure -j "${FAM_TEST_JOBS:-2}" -R "$regex" "$@"
fi

scripts/setup.sh build
cd build
ctest --output-on-failure -j "${FAM_TEST_JOBS:-2}" "$@"
