#!/usr/bin/env python3
"""Times one forward of TiM-XL/2 (latent 4x32x32) in PyTorch eager on a CUDA GPU, at the settings
of bench/bench_cuda_network.cu (batch 1, 16, 64; float32 and bfloat16), for a same-machine
comparison with the C++ CUDA backend.

The model is EagerTiM of bench/compare_pytorch.py (F.linear, F.layer_norm,
F.scaled_dot_product_attention, F.silu) with random weights, moved to the GPU in the timed dtype.
float32 runs without TF32 (torch.backends.cuda.matmul.allow_tf32 = False, PyTorch's default), as
the C++ float32 GEMMs do. Each time is the median of CUDA-event-timed forwards after warm-up.

Run on the GPU machine, after the C++ benchmark:
  build-device/bench/bench_cuda_network --benchmark_out=cuda.json --benchmark_out_format=json
  python3 bench/compare_pytorch_cuda.py --cpp-json cuda.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from compare_pytorch import CONFIGS, EagerTiM, forward_flops, inputs, random_state_dict  # noqa: E402

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def time_cuda(fn, args, runs: int, warmup: int) -> float:
    """Median time of `runs` calls in ms, each timed with CUDA events."""
    with torch.inference_mode():
        for _ in range(warmup):
            fn(*args)
        torch.cuda.synchronize()
        times = []
        for _ in range(runs):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn(*args)
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
    return statistics.median(times)


def cpp_times(path: str | None) -> dict[str, float]:
    """real_time in ms per 'float32/batch:1' key from a bench_cuda_network JSON file."""
    if not path:
        return {}
    scale = {"ns": 1e-6, "us": 1e-3, "ms": 1.0, "s": 1e3}
    out = {}
    for b in json.loads(Path(path).read_text())["benchmarks"]:
        parts = b["name"].split("/")
        if b.get("run_type", "iteration") == "iteration" and parts[0] == "BM_CudaForward":
            out[f"{parts[2]}/{parts[3]}"] = b["real_time"] * scale[b["time_unit"]]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cpp-json", help="bench_cuda_network --benchmark_out JSON file")
    ap.add_argument("--batches", default="1,16,64")
    ap.add_argument("--runs", type=int, default=20)
    args = ap.parse_args()
    if not torch.cuda.is_available():
        sys.exit("compare_pytorch_cuda: PyTorch sees no CUDA device")
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    print(f"torch {torch.__version__}, device {torch.cuda.get_device_name()}", flush=True)
    cpp = cpp_times(args.cpp_json)
    c = CONFIGS["TiM-XL2"]
    sd = random_state_dict(c)
    rows = []
    for dtype_name, dtype in DTYPES.items():
        model = EagerTiM(c, {k: v.to("cuda", dtype) for k, v in sd.items()})
        for batch in (int(b) for b in args.batches.split(",")):
            x, t, r, y = inputs(c, batch)
            dev = (x.to("cuda", dtype), t.to("cuda", dtype), r.to("cuda", dtype), y.to("cuda"))
            ms = time_cuda(model, dev, args.runs, 3)
            key = f"{dtype_name}/batch:{batch}"
            rows.append((key, forward_flops(c, batch), ms, cpp.get(key)))
            print(f"  TiM-XL2/{key}: eager {ms:.2f} ms", flush=True)
        del model
        torch.cuda.empty_cache()
    print()
    print("| TiM-XL/2 setting | GFLOP | PyTorch eager ms | TFLOP/s |" + (" tim CUDA ms | TFLOP/s | PyTorch / tim |" if cpp else ""))
    print("|---|---:|---:|---:|" + ("---:|---:|---:|" if cpp else ""))
    for key, flops, ms, cpp_ms in rows:
        line = f"| {key} | {flops / 1e9:.1f} | {ms:.2f} | {flops / ms / 1e9:.1f} |"
        if cpp:
            line += (f" {cpp_ms:.2f} | {flops / cpp_ms / 1e9:.1f} | {ms / cpp_ms:.2f}x |" if cpp_ms else " - | - | - |")
        print(line)


if __name__ == "__main__":
    main()
