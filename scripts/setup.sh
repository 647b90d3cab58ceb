#!/usr/bin/env bash
# Installs every build/test dependency with apt-get (when missing), then configures and builds.
# Idempotent and fast when everything is already there. CUDA is optional: the CUDA backend is built
# only when a toolkit is found (e.g. /usr/local/cuda); a CPU-only build works everywhere.
#
#   scripts/setup.sh [build-dir]        (default: build)
#   FAM_BUILD_TYPE=Debug FAM_SANITIZE=ON scripts/setup.sh build-asan
#   FAM_FUZZ=ON scripts/setup.sh build-fuzz    (clang + libFuzzer; scripts/fuzz.sh does this)
# FAM_CMAKE_ARGS: more arguments for the first configure of a build folder.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${1:-build}

PACKAGES=(cmake ninja-build g++ pkg-config libyaml-cpp-dev libabsl-dev libopenmpi-dev openmpi-bin
  libgtest-dev libgmock-dev libbenchmark-dev libopenblas-dev libopenblas-openmp-dev libsentencepiece-dev sentencepiece
  libpcre2-dev libutf8proc-dev nlohmann-json3-dev bible-kjv python3-numpy gnuplot-nox)
# The fuzz build: clang with libFuzzer and its OpenMP runtime.
if [ "${FAM_FUZZ:-}" = ON ]; then PACKAGES+=(clang libomp-dev); fi

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}"
  SUDO=""
  if [ "$(id -u)" != 0 ]; then SUDO=sudo; fi
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

CMAKE_ARGS=(-G Ninja -DCMAKE_BUILD_TYPE="${FAM_BUILD_TYPE:-Release}")
[ -n "${FAM_SANITIZE:-}" ] && CMAKE_ARGS+=(-DFAM_SANITIZE="${FAM_SANITIZE}")
[ -n "${FAM_ENABLE_CUDA:-}" ] && CMAKE_ARGS+=(-DFAM_ENABLE_CUDA="${FAM_ENABLE_CUDA}")
if [ "${FAM_FUZZ:-}" = ON ]; then
  CMAKE_ARGS+=(-DFAM_FUZZ=ON -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++)
fi
# shellcheck disable=SC2206
[ -n "${FAM_CMAKE_ARGS:-}" ] && CMAKE_ARGS+=(${FAM_CMAKE_ARGS})
if [ ! -f "$BUILD_DIR/build.ninja" ]; then
  cmake -S . -B "$BUILD_DIR" "${CMAKE_ARGS[@]}" > "$BUILD_DIR.configure.log" 2>&1 ||
    { cat "$BUILD_DIR.configure.log"; exit 1; }
  rm -f "$BUILD_DIR.configure.log"
fi
# FAM_SETUP_TARGETS: build only these targets (default: everything).
if [ -n "${FAM_SETUP_TARGETS:-}" ]; then
  # shellcheck disable=SC2086
  cmake --build "$BUILD_DIR" -j "$(nproc)" --target ${FAM_SETUP_TARGETS}
else
  cmake --build "$BUILD_DIR" -j "$(nproc)"
fi
echo "setup: built into $BUILD_DIR ($(ls "$BUILD_DIR"/fam 2>/dev/null || echo 'no fam binary yet'))"
