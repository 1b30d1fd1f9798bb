#!/usr/bin/env python3
"""PyTorch's side of the weight-type speed table (issue 20 item 5; docs/performance.md): one
class-conditional TiM forward on the CPU at the shapes of bench/bench_network.cpp's BM_Forward,
with float32 weights and with bfloat16 autocast, each case's time and peak resident memory.

Network: EagerTiM of bench/compare_pytorch.py (F.linear, F.layer_norm,
F.scaled_dot_product_attention), TiM-B/4 and TiM-XL/2 at the released shapes with random weights
(N(0, 0.02^2), q/k norm weights 1 + N(0, 0.02^2)), 4x32x32 latents (256 px images), batch 1 and 8,
torch.inference_mode(), torch.set_num_threads(2) by default. Modes:
  float32    float32 weights and activations;
  autocast   the float32 weights under torch.autocast("cpu", dtype=torch.bfloat16): every F.linear,
             and the attention, in bfloat16 (the weights are cast on each call; in inference mode
             autocast keeps no cast cache), LayerNorm in float32;
  bfloat16   (only with --modes ...,bfloat16) the weights stored as bfloat16 and the inputs cast,
             the whole forward in bfloat16: the one PyTorch setting that holds half the weight memory.
Each case runs in its own child process (the weights generated tensor by tensor in their final
dtype, so the peak is the case's own): the time is the median of --repeats forwards after one
warm-up; peak RSS is the child's ru_maxrss, with its resident size after `import torch` beside it.

Run (in the same session as the C++ benchmark it is compared with):
  env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE ./build/bench/bench_network --benchmark_filter=BM_Forward \\
      --benchmark_out=/tmp/bench_network.json --benchmark_out_format=json
  OMP_WAIT_POLICY=PASSIVE /tmp/nnvenv/bin/python bench/compare_network.py --cpp-json /tmp/bench_network.json
Options: --threads N, --repeats N, --only TEXT (cases whose 'TiM-B4/batch:1' contains TEXT),
--modes float32,autocast[,bfloat16].
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # read when the OpenMP runtime starts

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from contextlib import nullcontext
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import compare_pytorch as cp  # noqa: E402  (EagerTiM, CONFIGS, parameter_shapes, inputs, forward_flops)

import torch  # noqa: E402

CASES = [("TiM-B4", 1), ("TiM-B4", 8), ("TiM-XL2", 1), ("TiM-XL2", 8)]


def rss_now_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def state_dict(c: cp.Config, dtype: torch.dtype, seed: int = 0) -> dict[str, torch.Tensor]:
    """compare_pytorch.random_state_dict's values (same generator, same order), each tensor cast to
    `dtype` as soon as it is drawn, so no float32 copy of the whole model is ever held."""
    gen = torch.Generator().manual_seed(seed)
    sd = {}
    for name, shape in cp.parameter_shapes(c).items():
        t = torch.randn(shape, generator=gen, dtype=torch.float32) * 0.02
        if name.endswith("_norm.weight"):
            t += 1.0
        sd[name] = t.to(dtype)
    return sd


def child(model: str, batch: int, mode: str, threads: int, repeats: int) -> dict:
    torch.set_num_threads(threads)
    base = rss_now_mib()
    c = cp.CONFIGS[model]
    dtype = torch.bfloat16 if mode == "bfloat16" else torch.float32
    net = cp.EagerTiM(c, state_dict(c, dtype))
    x, t, r, y = cp.inputs(c, batch)
    if mode == "bfloat16":
        x, t, r = x.to(dtype), t.to(dtype), r.to(dtype)
    context = torch.autocast("cpu", dtype=torch.bfloat16) if mode == "autocast" else nullcontext()
    times = []
    with torch.inference_mode(), context:
        out = net(x, t, r, y)  # warm-up
        for _ in range(repeats):
            start = time.perf_counter()
            out = net(x, t, r, y)
            times.append((time.perf_counter() - start) * 1e3)
    return {"case": f"{model}/batch:{batch}", "mode": mode, "median_ms": statistics.median(times), "times_ms": times,
            "out_dtype": str(out.dtype), "peak_rss_MiB": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "rss_after_import_MiB": base, "threads": torch.get_num_threads(), "torch": torch.__version__,
            "cpu_capability": torch.backends.cpu.get_cpu_capability(), "gflop": cp.forward_flops(c, batch) / 1e9}


def cpp_times(paths: list[str] | None) -> dict[str, float]:
    """bench_network BM_Forward real_time in ms per 'TiM-B4/batch:1/weights:...' key (the median
    aggregate with --benchmark_repetitions, else the single run)."""
    scale = {"ns": 1e-6, "us": 1e-3, "ms": 1.0, "s": 1e3}
    benchmarks = [b for path in paths or [] for b in json.loads(Path(path).read_text())["benchmarks"]]
    medians = {b["run_name"] for b in benchmarks if b.get("aggregate_name") == "median"}
    out: dict[str, float] = {}
    for b in benchmarks:
        name = b.get("run_name", b["name"])
        if b.get("run_type", "iteration") == "iteration" and name in medians:
            continue
        if b.get("run_type") == "aggregate" and b.get("aggregate_name") != "median":
            continue
        if name.startswith("BM_Forward/"):  # the run's settings (iterations:20, real_time, ...) dropped
            parts = [p for p in name.split("/")[1:] if p != "real_time" and not p.startswith(("iterations:", "repeats:", "min_time:", "threads:"))]
            out["/".join(parts)] = b["real_time"] * scale[b["time_unit"]]
    return out


TIM_COLUMNS = [("weights:float32", "tim f32 weights"), ("weights:bfloat16", "tim bf16 weights"),
               ("weights:bfloat16/precision:bfloat16", "tim bf16 weights, bf16 products")]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--only", help="run only cases whose 'model/batch:n' contains this text")
    ap.add_argument("--modes", default="float32,autocast", help="comma-separated: float32, autocast, bfloat16")
    ap.add_argument("--cpp-json", nargs="+", help="bench_network --benchmark_out JSON file(s) for the tim columns")
    ap.add_argument("--child", nargs=3, metavar=("MODEL", "BATCH", "MODE"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.child[0], int(args.child[1]), args.child[2], args.threads, args.repeats)))
        return 0
    modes = args.modes.split(",")
    for m in modes:
        if m not in ("float32", "autocast", "bfloat16"):
            ap.error(f"--modes: unknown mode '{m}' (float32, autocast, bfloat16)")
    cpp = cpp_times(args.cpp_json)
    results: dict[tuple[str, str], dict] = {}
    for model, batch in CASES:
        key = f"{model}/batch:{batch}"
        if args.only and args.only not in key:
            continue
        for mode in modes:
            run = subprocess.run([sys.executable, __file__, "--child", model, str(batch), mode, "--threads",
                                  str(args.threads), "--repeats", str(args.repeats)],
                                 check=True, capture_output=True, text=True)
            r = json.loads(run.stdout.strip().splitlines()[-1])
            results[(key, mode)] = r
            print(f"  {key} {mode}: {r['median_ms']:.1f} ms, peak RSS {r['peak_rss_MiB']:.0f} MiB "
                  f"({r['rss_after_import_MiB']:.0f} after import)", flush=True)
    if not results:
        print("no case matched --only", file=sys.stderr)
        return 1
    first = next(iter(results.values()))
    print(f"\ntorch {first['torch']}, {first['threads']} threads, cpu capability {first['cpu_capability']}, "
          f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}, median of {args.repeats}; peak RSS in MiB "
          f"(resident after import torch: {first['rss_after_import_MiB']:.0f})\n")
    head = "| case | GFLOP |" + "".join(f" PyTorch {m} ms | RSS |" for m in modes)
    sep = "|---|---:|" + "---:|---:|" * len(modes)
    if cpp:
        head += "".join(f" {title} ms |" for _, title in TIM_COLUMNS)
        sep += "---:|" * len(TIM_COLUMNS)
    print(head)
    print(sep)
    for key in dict.fromkeys(k for k, _ in results):
        cells = [f"{results[(key, m)]['median_ms']:.1f} | {results[(key, m)]['peak_rss_MiB']:.0f}" for m in modes]
        line = f"| {key} | {first_gflop(results, key):.1f} | " + " | ".join(cells) + " |"
        if cpp:
            line += "".join(f" {cpp[key + '/' + s]:.1f} |" if key + "/" + s in cpp else " - |" for s, _ in TIM_COLUMNS)
        print(line)
    return 0


def first_gflop(results: dict, key: str) -> float:
    return next(r["gflop"] for (k, _), r in results.items() if k == key)


if __name__ == "__main__":
    sys.exit(main())
