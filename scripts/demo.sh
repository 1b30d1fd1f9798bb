#!/usr/bin/env bash
# The main job on a fresh build: sample a labelled grid (a row per class) from the shipped
# Fashion-MNIST TiM model with the C++ library.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p out
build/apps/tim sample --grid out/fashion-mnist-1step.png --steps 1 --per-class 8
build/apps/tim sample --grid out/fashion-mnist-4steps.png --steps 4 --cfg-scale 2.0 --per-class 8
echo "wrote out/fashion-mnist-1step.png and out/fashion-mnist-4steps.png"
