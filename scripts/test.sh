#!/usr/bin/env bash
# Builds tim and runs the whole test suite through CTest. When nvcc is found (PATH or
# /usr/local/cuda) the build also compiles the CUDA backend's tests, example and benchmark
# (-DTIM_CUDA=ON); on a machine without a GPU the CUDA device tests report themselves skipped.
# TIM_CUDA=OFF in the environment keeps the CUDA targets out.
set -euo pipefail
cd "$(dirname "$0")/.."
cuda_args=()
if [ "${TIM_CUDA:-auto}" != "OFF" ]; then
  nvcc_path=$(command -v nvcc || true)
  if [ -z "$nvcc_path" ] && [ -x /usr/local/cuda/bin/nvcc ]; then nvcc_path=/usr/local/cuda/bin/nvcc; fi
  if [ -n "$nvcc_path" ]; then
    # CI compiles every CUDA translation unit for one architecture (9.0) to stay well inside its
    # time limit; a user's build compiles for 8.0, 8.6, 8.9 and 9.0 (CMakeLists.txt).
    # TIM_CUDA_ARCHITECTURES overrides it (e.g. "80;86;89;90").
    cuda_args=(-DTIM_CUDA=ON "-DCMAKE_CUDA_COMPILER=$nvcc_path" "-DCMAKE_CUDA_ARCHITECTURES=${TIM_CUDA_ARCHITECTURES:-90}")
  else
    cuda_args=(-DTIM_CUDA=OFF)
  fi
fi
bash scripts/build.sh "${cuda_args[@]}"
# Passive OpenMP waiting: parallel test processes would otherwise spin against each other.
OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-passive} ctest --test-dir build --output-on-failure --parallel "$(nproc)"
