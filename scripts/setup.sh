#!/usr/bin/env bash
# A fresh machine to a working tim: install dependencies, build, then run the main job.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
bash scripts/build.sh
bash scripts/demo.sh
