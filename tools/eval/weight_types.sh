#!/usr/bin/env bash
# The shipped TiM model's accuracy and Frechet distance per weight type (docs/results.md, "Weight
# types"): models/tim-fmnist.safetensors converted with `tim convert` to each type, sampled by
# `tim sample` and scored by tools/eval/evaluate.py exactly as the main table (2,000 samples, seed
# 1000, guidance window [0, 1.01]).
#
# Types (each one row of the table):
#   float32     tim convert --to float32 (the stored float16 values widened exactly)
#   bfloat16    tim convert --to bfloat16, weights kept as stored, float32 products
#   bfloat16p   the same file, --precision bfloat16 (activations rounded to bfloat16, bfloat16
#               products with float sums; oneDNN where the CPU has AVX512-BF16 or AMX)
#   float16     the shipped file as it is (float16), weights kept as stored
#   q8_0        tim convert --to q8_0 (needs a tim that samples q8_0 files)
#
# Usage: tools/eval/weight_types.sh [--types float32,bfloat16,...] [--steps 1,4] [--cfg 1.0,2.0]
#            [--samples 2000] [--threads 2] [--out docs/data/weight-types-2000.jsonl]
# Environment: PY (python with tools/eval/requirements.txt; default python3), TIM (default
# build/apps/tim), WORK (where the converted files go; default a temporary folder, removed).
# Settings already in --out are skipped (evaluate.py run), so a rerun adds only new rows, e.g.
# `--types q8_0` once q8_0 files sample.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
PY="${PY:-python3}"
TIM="${TIM:-$ROOT/build/apps/tim}"
MODEL="$ROOT/models/tim-fmnist.safetensors"
types="float32,bfloat16,bfloat16p,float16"
steps="1,4"
cfg="1.0,2.0"
samples=2000
threads=2
out="$ROOT/docs/data/weight-types-2000.jsonl"
while [[ $# -gt 0 ]]; do
  case "$1" in
    --types) types="$2"; shift 2 ;;
    --steps) steps="$2"; shift 2 ;;
    --cfg) cfg="$2"; shift 2 ;;
    --samples) samples="$2"; shift 2 ;;
    --threads) threads="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    *) echo "weight_types.sh: unknown argument '$1' (see the header of $0)" >&2; exit 2 ;;
  esac
done

if [[ -n "${WORK:-}" ]]; then
  mkdir -p "$WORK"
else
  WORK="$(mktemp -d)"
  trap 'rm -rf "$WORK"' EXIT
fi

# convert TO: the converted file's path (converted once per WORK folder)
convert() {
  local file="$WORK/tim-fmnist-$1.safetensors"
  [[ -f "$file" ]] || "$TIM" convert "$MODEL" "$file" --to "$1" >&2
  echo "$file"
}

IFS=, read -ra list <<< "$types"
for type in "${list[@]}"; do
  precision=float32
  case "$type" in
    float32) file="$(convert float32)" ;;
    bfloat16) file="$(convert bfloat16)" ;;
    bfloat16p) file="$(convert bfloat16)"; precision=bfloat16 ;;
    float16) file="$MODEL" ;;
    q8_0) file="$(convert q8_0)" ;;
    *) echo "weight_types.sh: unknown type '$type' (float32, bfloat16, bfloat16p, float16, q8_0)" >&2; exit 2 ;;
  esac
  "$PY" "$ROOT/tools/eval/evaluate.py" run --out "$out" --model "$type=$file" --weights stored \
    --precision "$precision" --cfg "$cfg" --steps "$steps" --guidance-high 1.01 --samples "$samples" \
    --seed 1000 --threads "$threads" --tim "$TIM"
done
"$PY" "$ROOT/tools/eval/evaluate.py" report --results "$out" --samples "$samples" --by-name
