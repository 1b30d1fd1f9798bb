#!/usr/bin/env bash
# Configures and builds tim (Release) into build/ with everything on: tests, tools, examples,
# benchmarks. Extra arguments go to the CMake configure step.
set -euo pipefail
cd "$(dirname "$0")/.."
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release "$@" >/dev/null
cmake --build build --parallel "$(nproc)"
