#!/usr/bin/env bash
# A fresh machine to a working tim: install dependencies, build only the `tim` program, then run
# the main job. The tests, benchmarks and examples are left to the second command
# (scripts/test.sh), which builds them in the same build/ folder.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build --target tim_cli --parallel "$(nproc)"
bash scripts/demo.sh
