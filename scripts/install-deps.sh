#!/usr/bin/env bash
# Installs everything tim's build, tests, tools and benchmarks need from Debian's packages (the
# Python package's build tools, NumPy and pytest come from PyPI into a virtual environment:
# scripts/test.sh).
# Safe to run again; needs root (or sudo).
set -euo pipefail
packages=(
  build-essential cmake ninja-build
  libeigen3-dev nlohmann-json3-dev doctest-dev libbenchmark-dev libopenblas-openmp-dev
  libcli11-dev libyaml-cpp-dev libpng-dev libsentencepiece-dev libcpp-httplib-dev pkg-config
  libdnnl-dev ocl-icd-opencl-dev  # tim::dnnl: bfloat16 matmuls (gemm_bf16.hpp); its CMake package needs OpenCL
  python3-dev python3-venv
  openmpi-bin  # tests/test_cli_scale.cpp: tim sample under mpirun -np 2 (docs/scale.md)
  qemu-user  # the x86-64-v3 `tim` on emulated CPUs without AVX2 and with AVX2 only (tests/CMakeLists.txt)
  dataset-fashion-mnist
)
sudo_cmd=()
if [ "$(id -u)" -ne 0 ]; then sudo_cmd=(sudo); fi
export DEBIAN_FRONTEND=noninteractive
"${sudo_cmd[@]}" apt-get update -qq
"${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null
echo "install-deps: ok"
