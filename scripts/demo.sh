#!/usr/bin/env bash
# The main job on a fresh build: show what tim reads from a checkpoint. (Until the shipped
# Fashion-MNIST model lands this uses a golden test network; see README "Status".)
set -euo pipefail
cd "$(dirname "$0")/.."
build/apps/tim inspect tests/data/golden/square.safetensors
