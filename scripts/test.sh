#!/usr/bin/env bash
# Builds tim and runs the whole test suite through CTest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/build.sh
# Passive OpenMP waiting: parallel test processes would otherwise spin against each other.
OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-passive} ctest --test-dir build --output-on-failure --parallel "$(nproc)"
