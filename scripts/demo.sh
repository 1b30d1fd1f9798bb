#!/usr/bin/env bash
# The main job on a fresh build: sample a labelled grid (a row per class) from the shipped
# Fashion-MNIST TiM model with the C++ library.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p out
build/apps/tim sample --grid out/fashion-mnist-1step.png --steps 1 --cfg-scale 1 --per-class 8  # unguided: best at 1 step (docs/results.md)
build/apps/tim sample --grid out/fashion-mnist-4steps.png --per-class 8  # the model's defaults: 4 steps, guidance 2
echo "wrote out/fashion-mnist-1step.png and out/fashion-mnist-4steps.png"
