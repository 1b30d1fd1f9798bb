#!/usr/bin/env bash
# Everything a lent GPU machine should run, in one call (device time is short): builds and runs
# the CUDA tests (scripts/test-cuda.sh) and the CUDA example on the shipped model, `tim` with
# --device cuda against the CPU (tests/cuda/check_cli.py), the GPU benchmark, the PyTorch
# comparisons (bench/compare_pytorch_cuda.py, bench/compare_pytorch_cuda_vae.py) and, with TIM_PROFILE=1, the per-kernel times of one
# TiM-XL/2 bfloat16 batch-64 forward (Nsight Compute, scripts/kernel_times.py). Logs go to $OUT
# (the device tool brings back at most 8 files) or out/device/.
# Prepare on a machine with the Debian packages: scripts/device-deps.sh; then carry .device-deps.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-out/device}
mkdir -p "$out"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv | tee "$out/gpu.txt"
status=0
bash scripts/test-cuda.sh 2>&1 | tee "$out/tests.log" || status=1
if [ -x build-device/examples/cuda_sample ]; then
  for precision in float32 bfloat16; do
    timeout 60 build-device/examples/cuda_sample models/tim-fmnist.safetensors 4 "$precision" 2>&1 | tail -20 | tee -a "$out/tests.log" || status=1
  done
fi
if [ -x build-device/apps/tim ]; then  # tim forward/sample --device cuda against the CPU
  timeout 120 python3 tests/cuda/check_cli.py build-device/apps/tim models/tim-fmnist.safetensors \
    --grid "$out/grid-cuda.png" --vae-case tests/data/vae_golden/sd_layout.safetensors \
    --vae-case tests/data/dc_ae_golden/variants.safetensors --c2i-case tests/data/golden/square.safetensors 2>&1 | tee "$out/cli.log" || status=1
fi
bench=build-device/bench/bench_cuda_network
if [ -x "$bench" ]; then
  timeout ${TIM_BENCH_TIMEOUT:-180} "$bench" --benchmark_out="$out/bench_cuda_network.json" \
    --benchmark_out_format=json 2>&1 | tee "$out/bench.log" || status=1
  timeout 120 python3 bench/compare_pytorch_cuda.py --cpp-json "$out/bench_cuda_network.json" 2>&1 | tee "$out/pytorch.log" || status=1
  timeout 120 python3 bench/compare_pytorch_cuda_vae.py --cpp-json "$out/bench_cuda_network.json" 2>&1 | tee -a "$out/pytorch.log" || status=1
  ncu=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu /usr/local/cuda/bin/ncu 2>/dev/null | head -1)
  if [ "${TIM_PROFILE:-0}" = 1 ] && [ -n "$ncu" ]; then
    TIM_PROFILE_ONE_FORWARD=1 timeout 100 "$ncu" --clock-control none --profile-from-start off \
      --metrics gpu__time_duration.sum --csv --print-units base "$bench" \
      --benchmark_filter="^BM_CudaForward/TiM-XL2/bfloat16/batch:64/" --benchmark_min_time=0.2 > /tmp/ncu.csv 2>/dev/null
    python3 scripts/kernel_times.py /tmp/ncu.csv | tee "$out/kernels.txt" || status=1
  fi
fi
echo "device-run: status $status"
exit "$status"
