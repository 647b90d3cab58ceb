#!/usr/bin/env bash
# Builds the CUDA test binaries (and CUDA benches, when there are any) on this machine, which needs
# the CUDA toolkit but no GPU, and packs them with the non-CUDA shared libraries they load into
# .device/bundle/ together with run_gpu_tests.sh. On a machine with a GPU, the CUDA toolkit and
# PyTorch (cuDNN/NCCL from its nvidia-* wheels), run:  .device/bundle/run_gpu_tests.sh
#
#   scripts/device_bundle.sh            # build dir build-cuda (Release, CUDA backend on, sm_90,
#                                       # no OpenBLAS)
#   FAM_BUNDLE_BUILD=dir JOBS=1 scripts/device_bundle.sh
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${FAM_BUNDLE_BUILD:-$root/build-cuda}
out=$root/.device/bundle
jobs=${JOBS:-2}
arch=${FAM_CUDA_ARCH:-90}

launcher=()
if command -v ccache >/dev/null; then
  launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache -DCMAKE_CUDA_COMPILER_LAUNCHER=ccache)
fi
# OpenBLAS off: its dynamic-arch library alone is 35 MiB; the CPU reference of the tests then uses
# the built-in tiled GEMM.
cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DFAM_BUILD_CUDA_BACKEND=ON \
  -DFAM_USE_OPENBLAS=OFF -DCMAKE_CUDA_ARCHITECTURES="$arch" "${launcher[@]}" >/dev/null
grep -q "FAM_HAVE_CUDA_BACKEND" "$build/build.ninja" ||
  { echo "device_bundle: no CUDA toolkit found, the CUDA backend is not built" >&2; exit 2; }

# What runs on the device: the op harness (every op and backend row on cuda:0), every
# tests/cuda_*_test.cc, the attention tiling test, CUDA benches,
# the whole-trainer benchmark (MFU, FAM vs BSWA) and fam itself.
targets=(train_device_bench fam)
for src in "$root"/tests/op_harness_test.cc "$root"/tests/cuda_*_test.cc \
           "$root"/tests/attention_tiling_test.cc \
           "$root"/bench/cuda_*_bench.cc "$root"/bench/*_cuda_bench.cc; do
  [[ -f $src ]] && targets+=("$(basename "${src%.cc}")")
done
cmake --build "$build" -j "$jobs" --target "${targets[@]}"

rm -rf "$out"
mkdir -p "$out/bin" "$out/lib" "$out/configs"
cp -r "$root/configs/models" "$out/configs/"  # presets, found through FAM_CONFIG_DIR
for t in "${targets[@]}"; do
  bin=$(find "$build" -maxdepth 2 -type f -name "$t" -perm -u+x | head -1)
  [[ -n $bin ]] || { echo "device_bundle: built $t but cannot find it" >&2; exit 1; }
  cp "$bin" "$out/bin/"
  strip --strip-unneeded "$out/bin/$t"
done

# Shared libraries, except the C runtime (always there) and CUDA's own (the device has them).
skip='^(linux-vdso|ld-linux|libc\.so|libm\.so|libdl\.so|libpthread\.so|librt\.so'
skip+='|libcuda\.so|libcudart|libcublas|libcudnn|libnccl|libnvrtc|libnvJitLink|libcufft|libcurand'
skip+='|libcusparse|libcusolver)'
for bin in "$out"/bin/*; do
  ldd "$bin" | awk '/=> \// {print $1, $3}'
done | sort -u | while read -r name path; do
  [[ $name =~ $skip ]] && continue
  cp -L "$path" "$out/lib/$name"
done
strip --strip-unneeded "$out"/lib/* 2>/dev/null || true

cat > "$out/run_gpu_tests.sh" <<'RUN'
#!/usr/bin/env bash
# Runs the bundled CUDA tests on a machine with a GPU. Libraries: the bundle's own, the CUDA
# toolkit's, and the lib dirs of the nvidia-* Python wheels (cuDNN, NCCL, cuBLAS, ...).
# Extra arguments go to every test binary (e.g. --gtest_filter=Ops/BackendHarness.*gemm*).
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
paths=("$here/lib")
for d in /usr/local/cuda/lib64 /usr/local/cuda/lib /usr/local/cuda/targets/x86_64-linux/lib; do
  [[ -d $d ]] && paths+=("$d")
done
wheel_libs=$(python3 - <<'PY' 2>/dev/null
import glob, os
try:
    import nvidia
    roots = list(nvidia.__path__)
except Exception:
    import site
    roots = [os.path.join(p, "nvidia") for p in site.getsitepackages()]
for root in roots:
    for d in sorted(glob.glob(os.path.join(root, "*", "lib"))):
        print(d)
PY
)
while read -r d; do [[ -n $d ]] && paths+=("$d"); done <<<"$wheel_libs"
export LD_LIBRARY_PATH="$(IFS=:; echo "${paths[*]}")${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-4} OMP_WAIT_POLICY=PASSIVE FAM_POISON_ALLOC=1
export FAM_CONFIG_DIR="$here/configs"
if [[ ${1:-} == --bench ]]; then
  # The training benchmark instead of the tests: the issue's defaults (1B preset, seq 8192,
  # bf16, recompute, FAM vs BSWA); further arguments go to it (e.g. --seq 4096 --out r.json).
  shift
  unset FAM_POISON_ALLOC
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null || true
  exec "$here/bin/train_device_bench" "$@"
fi
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null || true
echo "== fam --version"; "$here/bin/fam" --version || true  # the libraries dlopen found, the GPUs
status=0
for t in "$here"/bin/*_test; do
  missing=$(ldd "$t" | grep "not found" || true)
  if [[ -n $missing ]]; then
    echo "== $(basename "$t"): missing libraries:"; echo "$missing"; status=1; continue
  fi
  echo "== $(basename "$t")"
  "$t" --gtest_brief=1 "$@" || status=1
done
exit $status
RUN
chmod +x "$out/run_gpu_tests.sh"
size=$(du -sm "$out" | cut -f1)
echo "device_bundle: ${size} MiB in $out ($(ls "$out/bin" | wc -l) binaries," \
  "$(ls "$out/lib" | wc -l) libraries)"
if (( size >= 64 )); then
  echo "device_bundle: the bundle is over the 64 MiB a device run can carry" >&2
  exit 1
fi
echo "on the device: .device/bundle/run_gpu_tests.sh   (the benchmark: run_gpu_tests.sh --bench)"
