#!/usr/bin/env bash
# Builds tim and runs the whole test suite through CTest. When nvcc is found (PATH or
# /usr/local/cuda) the build also compiles the CUDA backend's tests, example and benchmark
# (-DTIM_CUDA=ON); on a machine without a GPU the CUDA device tests report themselves skipped.
# TIM_CUDA=OFF in the environment keeps the CUDA targets out. Then the Python package
# (docs/python.md) as a user installs it, `pip install .` in a fresh virtual environment, and its
# tests, which compare it with the tim program just built (with CUDA when the C++ build has it);
# TIM_PYTHON=OFF skips that part.
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

if [ "${TIM_PYTHON:-ON}" != "OFF" ]; then
  venv=build/python-venv
  python3 -m venv --clear "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check numpy pytest
  # The package as `pip install .` builds it: with device='cuda' when the C++ build above had
  # CUDA (the same nvcc, one architecture, like the C++ build), CPU-only otherwise.
  python_cuda=(-C cmake.define.TIM_PYTHON_CUDA=OFF)
  if [ "${#cuda_args[@]}" -gt 0 ] && [ "${cuda_args[0]}" = "-DTIM_CUDA=ON" ]; then
    python_cuda=(-C cmake.define.TIM_PYTHON_CUDA=ON -C "cmake.define.CMAKE_CUDA_COMPILER=$nvcc_path"
                 -C "cmake.define.CMAKE_CUDA_ARCHITECTURES=${TIM_CUDA_ARCHITECTURES:-90}")
  fi
  "$venv/bin/pip" install --quiet --disable-pip-version-check "${python_cuda[@]}" .
  TIM_PROGRAM=build/apps/tim TIM_REQUIRE_PROGRAM=1 OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-passive} \
    "$venv/bin/python" -m pytest -q -p no:cacheprovider tests/python
fi
