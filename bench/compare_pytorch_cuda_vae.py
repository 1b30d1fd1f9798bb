#!/usr/bin/env python3
"""Times the latent decoders in PyTorch eager on a CUDA GPU, for a same-machine comparison with
tim's CUDA decoders (bench/bench_cuda_network.cu), float32, random weights:
- the SD VAE (sd-vae-ft-ema's shapes) at the settings of BM_CudaSdVaeDecode: latent 32x32 batch 1
  and 4, latent 64x64 batch 1;
- the DC-AE (dc-ae-f32c32-sana-1.1's shapes) at those of BM_CudaDcAeDecode: latent 16x16 (512 px)
  batch 1 and 4, run as tools/reference/dc_ae_reference.py's decode (F.conv2d, einsum linear
  attention) in float32.

The eager decoder is written here with PyTorch's own fused operations (F.conv2d through cuDNN,
F.group_norm, F.silu, F.interpolate, F.scaled_dot_product_attention), over the state dict of
tools/reference/sd_vae_reference.py (its parameter names, shapes and random initialisation); it
is first checked against that reference's decode (float32, same weights). float32 runs without
TF32 (torch.backends.cudnn.allow_tf32 and torch.backends.cuda.matmul.allow_tf32 off), as tim's
float32 GEMMs do. Each time is the median of CUDA-event-timed decodes after warm-up.

  python3 bench/compare_pytorch_cuda_vae.py --cpp-json bench_cuda_network.json

With --cpu-threads N it times the SD VAE on the CPU instead (N threads, latent 32x32 and 64x64,
batch 1; `OMP_WAIT_POLICY=PASSIVE` as for the other CPU comparisons), for bench/bench_vae:
  OMP_WAIT_POLICY=PASSIVE python3 bench/compare_pytorch_cuda_vae.py --cpu-threads 2 --runs 3
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools" / "reference"))
import dc_ae_reference as dc_ref  # noqa: E402
import sd_vae_reference as ref  # noqa: E402

SETTINGS = [(1, 32), (4, 32), (1, 64)]  # SD VAE (batch, latent size)
DC_AE_SETTINGS = [(1, 16), (4, 16)]       # DC-AE (batch, latent size)


def eager_decode(z: torch.Tensor, sd: dict, cfg: ref.VaeDecoderConfig) -> torch.Tensor:
    G, eps = cfg.norm_num_groups, cfg.eps

    def norm(x, name, silu=True):
        y = F.group_norm(x, G, sd[name + ".weight"], sd[name + ".bias"], eps)
        return F.silu(y) if silu else y

    def conv(x, name):
        w = sd[name + ".weight"]
        return F.conv2d(x, w, sd[name + ".bias"], padding=w.shape[-1] // 2)

    def resnet(x, name):
        h = conv(norm(x, name + ".norm1"), name + ".conv1")
        h = conv(norm(h, name + ".norm2"), name + ".conv2")
        return (conv(x, name + ".conv_shortcut") if name + ".conv_shortcut.weight" in sd else x) + h

    def attention(x, name):
        B, C, H, W = x.shape
        t = norm(x, name + ".group_norm", silu=False).reshape(B, C, H * W).transpose(1, 2)
        q, k, v = (F.linear(t, sd[f"{name}.{p}.weight"], sd[f"{name}.{p}.bias"]) for p in ("to_q", "to_k", "to_v"))
        o = F.scaled_dot_product_attention(q[:, None], k[:, None], v[:, None])[:, 0]
        o = F.linear(o, sd[name + ".to_out.0.weight"], sd[name + ".to_out.0.bias"])
        return x + o.transpose(1, 2).reshape(B, C, H, W)

    x = conv(conv(z / cfg.scaling_factor, "post_quant_conv"), "decoder.conv_in")
    x = resnet(x, "decoder.mid_block.resnets.0")
    x = attention(x, "decoder.mid_block.attentions.0")
    x = resnet(x, "decoder.mid_block.resnets.1")
    for i in range(len(cfg.block_out_channels)):
        for j in range(cfg.layers_per_block + 1):
            x = resnet(x, f"decoder.up_blocks.{i}.resnets.{j}")
        if f"decoder.up_blocks.{i}.upsamplers.0.conv.weight" in sd:
            x = conv(F.interpolate(x, scale_factor=2.0, mode="nearest"), f"decoder.up_blocks.{i}.upsamplers.0.conv")
    return conv(norm(x, "decoder.conv_norm_out"), "decoder.conv_out")


def time_cpu(fn, runs: int, warmup: int) -> float:
    import time
    with torch.inference_mode():
        for _ in range(warmup):
            fn()
        times = []
        for _ in range(runs):
            start = time.perf_counter()
            fn()
            times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def time_cuda(fn, runs: int, warmup: int) -> float:
    with torch.inference_mode():
        for _ in range(warmup):
            fn()
        torch.cuda.synchronize()
        times = []
        for _ in range(runs):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
    return statistics.median(times)


def cpp_times(path: str | None) -> dict[str, float]:
    if not path:
        return {}
    scale = {"ns": 1e-6, "us": 1e-3, "ms": 1.0, "s": 1e3}
    out = {}
    for b in json.loads(Path(path).read_text())["benchmarks"]:
        parts = b["name"].split("/")
        if b.get("run_type", "iteration") == "iteration" and parts[0] in ("BM_CudaSdVaeDecode", "BM_CudaDcAeDecode"):
            name = "SD VAE" if parts[0] == "BM_CudaSdVaeDecode" else "DC-AE"
            out[f"{name} {parts[2]}/{parts[3]}"] = (b["real_time"] * scale[b["time_unit"]], b.get("GFLOP", 0.0))
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cpp-json", help="bench_cuda_network --benchmark_out JSON, for the ratio table")
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--cpu-threads", type=int, default=0, help="time the SD VAE on the CPU with this many threads")
    args = ap.parse_args()
    if args.cpu_threads > 0:
        torch.set_num_threads(args.cpu_threads)
        cfg = ref.VaeDecoderConfig()
        torch.manual_seed(0)
        sd = {name: torch.empty(shape, dtype=torch.float32) for name, shape in ref.parameter_shapes(cfg).items()}
        ref.randomize_(sd)
        print(f"torch {torch.__version__}, CPU, {torch.get_num_threads()} threads")
        for latent in (32, 64):
            z = torch.randn(1, 4, latent, latent)
            ms = time_cpu(lambda: eager_decode(z, sd, cfg), args.runs, warmup=1)
            print(f"  SD VAE latent:{latent}x{latent}/batch:1: eager {ms / 1e3:.2f} s", flush=True)
        return 0
    if not torch.cuda.is_available():
        print("compare_pytorch_cuda_vae: no CUDA device")
        return 1
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    device = torch.device("cuda")
    cfg = ref.VaeDecoderConfig()
    torch.manual_seed(0)
    sd = {name: torch.empty(shape, dtype=torch.float32) for name, shape in ref.parameter_shapes(cfg).items()}
    ref.randomize_(sd)
    sd = {k: v.to(device) for k, v in sd.items()}
    with torch.inference_mode():
        z = torch.randn(1, 4, 8, 8, device=device)
        a, b = eager_decode(z, sd, cfg), ref.decode(z, sd, cfg)
        check = float((a - b).abs().max() / b.abs().max())
    print(f"torch {torch.__version__}, device {torch.cuda.get_device_name()}; eager vs reference decode: "
          f"relative difference {check:.2g}")
    if check > 1e-4:
        print("compare_pytorch_cuda_vae: the eager decoder does not match the reference")
        return 1
    cpp = cpp_times(args.cpp_json)
    rows = []
    for batch, latent in SETTINGS:
        z = torch.randn(batch, 4, latent, latent, device=device)
        ms = time_cuda(lambda: eager_decode(z, sd, cfg), args.runs, warmup=2)
        key = f"SD VAE latent:{latent}x{latent}/batch:{batch}"
        print(f"  {key}: eager {ms:.2f} ms", flush=True)
        rows.append((key, ms))
    dc_cfg = dc_ref.DcAeDecoderConfig()
    torch.manual_seed(1)
    dc_sd = {name: torch.empty(shape, dtype=torch.float32) for name, shape in dc_ref.parameter_shapes(dc_cfg).items()}
    dc_ref.randomize_(dc_sd)
    dc_sd = {k: v.to(device) for k, v in dc_sd.items()}
    for batch, latent in DC_AE_SETTINGS:
        z = torch.randn(batch, dc_cfg.latent_channels, latent, latent, device=device)
        ms = time_cuda(lambda: dc_ref.decode(z, dc_sd, dc_cfg), args.runs, warmup=2)
        key = f"DC-AE latent:{latent}x{latent}/batch:{batch}"
        print(f"  {key}: eager {ms:.2f} ms", flush=True)
        rows.append((key, ms))
    if cpp:
        print("\n| decode, float32 | GFLOP | PyTorch eager ms | tim CUDA ms | TFLOP/s | PyTorch / tim |")
        print("|---|---:|---:|---:|---:|---:|")
        for key, ms in rows:
            if key in cpp:
                tim_ms, gflop = cpp[key]
                print(f"| {key} | {gflop:.1f} | {ms:.2f} | {tim_ms:.2f} | {gflop / tim_ms:.1f} | {ms / tim_ms:.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
