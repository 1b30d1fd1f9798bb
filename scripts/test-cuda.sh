#!/usr/bin/env bash
# On a GPU machine: configures, builds and runs only the CUDA tests (and builds the CUDA example,
# the CUDA benchmark when Google Benchmark is available, and the `tim` program when CLI11,
# yaml-cpp and libpng are) into build-device/. Dependencies
# come from the system or from .device-deps/ (made by scripts/device-deps.sh on a machine with the
# Debian packages); only header-only libraries are needed for the tests. The CPU reference the
# tests compare against is the same header-only library, compiled into the test program.
# Extra arguments go to the CMake configure step (e.g. -DCMAKE_CUDA_ARCHITECTURES=80).
set -euo pipefail
cd "$(dirname "$0")/.."
nvcc_path=$(command -v nvcc || true)
if [ -z "$nvcc_path" ] && [ -x /usr/local/cuda/bin/nvcc ]; then nvcc_path=/usr/local/cuda/bin/nvcc; fi
test -n "$nvcc_path" || { echo "test-cuda: nvcc not found" >&2; exit 1; }
generator=()
if command -v ninja >/dev/null; then generator=(-G Ninja); fi
prefix_args=()
if [ -d .device-deps ]; then prefix_args=("-DCMAKE_PREFIX_PATH=$PWD/.device-deps"); fi
bench=OFF
if [ -d .device-deps/include/benchmark ] || [ -f /usr/include/benchmark/benchmark.h ]; then bench=ON; fi
apps=OFF  # the `tim` program (--device cuda) needs CLI11, yaml-cpp and libpng
if [ -d .device-deps/include/CLI ] || [ -f /usr/include/CLI/CLI.hpp ]; then apps=ON; fi
cmake -S . -B build-device "${generator[@]}" -DCMAKE_BUILD_TYPE=Release \
  -DTIM_CUDA=ON "-DCMAKE_CUDA_COMPILER=$nvcc_path" \
  -DTIM_BUILD_TESTS=OFF -DTIM_BUILD_CUDA_TESTS=ON -DTIM_BLAS=OFF -DTIM_BUILD_APPS=$apps -DTIM_INSTALL=OFF \
  -DTIM_BUILD_EXAMPLES=ON -DTIM_BUILD_BENCHMARKS=$bench \
  "${prefix_args[@]}" "$@" >/dev/null
cmake --build build-device --parallel "$(nproc)"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null || true
ctest --test-dir build-device --output-on-failure
# The relative error of every network and sampler case (MESSAGE lines), from the program itself.
status=0
build-device/tests/cuda/tim_cuda_tests --require-device --test-suite=cuda --duration=true || status=$?
if [ "$status" -eq 77 ]; then echo "test-cuda: no usable GPU here: the device tests were skipped"; exit 0; fi
exit "$status"
