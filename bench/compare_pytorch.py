#!/usr/bin/env python3
"""Times one forward of the class-conditional TiM network in PyTorch (float32, eager, CPU) at the
shapes of bench/bench_network.cpp, for a same-session comparison with the C++ numbers.

Settings: TiM-B/4 and TiM-XL/2 (SPEC 3 released shapes: qk_norm, interval qkv_d, separate
delta embedder), latent 4x32x32, batch 1 and 8, random weights (N(0, 0.02^2); q/k norm weights
1 + N(0, 0.02^2)), torch.inference_mode(), torch.set_num_threads(2) by default.

Two PyTorch variants:
  eager   written in this file with the fused library ops a port would use: F.linear,
          F.layer_norm, F.scaled_dot_product_attention, F.silu (the main comparison).
  plain   tools/reference/tim_reference.py (explicit LayerNorm / softmax / N x N scores), timed
          only with --reference.

Run (after the C++ benchmark, in the same session):
  OMP_WAIT_POLICY=PASSIVE /work/venv/bin/python bench/compare_pytorch.py \
      --cpp-json /tmp/bench_network.json [--reference] [--only TiM-XL2]
where /tmp/bench_network.json comes from
  ./bench_network --benchmark_out=/tmp/bench_network.json --benchmark_out_format=json
Each time is the median of a few forwards after warm-up. GFLOP/s uses the same analytic count
as bench_network.cpp (2*M*N*K for every matrix product, attention QK^T and PV included).
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # read when the OpenMP runtime starts

import argparse
import json
import math
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

FREQ = 256  # sinusoidal features of a scalar time


@dataclass
class Config:
    name: str
    hidden: int
    depth: int
    heads: int
    patch: int
    adaln_hidden: int
    channels: int = 4
    num_classes: int = 1000

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads

    @property
    def mlp_hidden(self) -> int:
        return (int(self.hidden * 4.0) * 2) // 3

    @property
    def final_hidden(self) -> int:
        return self.hidden // 2


CONFIGS = {
    "TiM-B4": Config("TiM-B4", 768, 12, 12, 4, 256),
    "TiM-XL2": Config("TiM-XL2", 1152, 28, 16, 2, 384),
}
# (model, batch, timed runs) -- warm-up is one forward (two for the small settings).
SETTINGS = [("TiM-B4", 1, 10), ("TiM-B4", 8, 5), ("TiM-XL2", 1, 5), ("TiM-XL2", 8, 3)]
LATENT = 32


def gemm(m: float, n: float, k: float) -> float:
    return 2.0 * m * n * k


def forward_flops(c: Config, batch: int, height: int = LATENT, width: int = LATENT) -> float:
    """Same count as forward_flops in bench_network.cpp."""
    B = float(batch)
    N = float((height // c.patch) * (width // c.patch))
    R = B * N
    D, L, Hm, Lf = float(c.hidden), float(c.adaln_hidden), float(c.mlp_hidden), float(c.final_hidden)
    pp = float(c.patch * c.patch)
    flops = gemm(R, D, c.channels * pp)
    flops += 2 * (gemm(B, D, FREQ) + gemm(B, D, D))
    block = 2 * gemm(B, L, D) + gemm(B, 6 * D, L)
    block += gemm(R, 3 * D, D) + gemm(B, 3 * D, D)
    block += 2 * B * gemm(N, N, D)
    block += gemm(R, D, D)
    block += 2 * gemm(R, Hm, D) + gemm(R, D, Hm)
    flops += c.depth * block
    flops += 2 * gemm(B, Lf, D) + gemm(B, 2 * D, Lf) + gemm(R, pp * c.channels, D)
    return flops


def parameter_shapes(c: Config) -> dict[str, tuple[int, ...]]:
    """The released parameter names and shapes (SPEC 3), projector.* excluded."""
    D, p = c.hidden, c.patch
    shapes: dict[str, tuple[int, ...]] = {}

    def linear(prefix: str, i: int, o: int, bias: bool = True) -> None:
        shapes[prefix + ".weight"] = (o, i)
        if bias:
            shapes[prefix + ".bias"] = (o,)

    def swiglu(prefix: str, i: int, h: int, o: int) -> None:
        linear(prefix + ".fc1_g", i, h)
        linear(prefix + ".fc1_x", i, h)
        linear(prefix + ".fc2", h, o)

    shapes["x_embedder.proj.weight"] = (D, c.channels, p, p)
    shapes["x_embedder.proj.bias"] = (D,)
    for e in ("t_embedder", "delta_embedder"):
        linear(e + ".mlp.0", FREQ, D)
        linear(e + ".mlp.2", D, D)
    shapes["y_embedder.embedding_table.weight"] = (c.num_classes + 1, D)
    for i in range(c.depth):
        b = f"blocks.{i}"
        swiglu(b + ".adaLN_modulation", D, c.adaln_hidden, 6 * D)
        linear(b + ".attn.qkv", D, 3 * D)
        linear(b + ".attn.qkv_d", D, 3 * D, bias=False)
        for n in ("q_norm", "k_norm"):
            shapes[f"{b}.attn.{n}.weight"] = (c.head_dim,)
            shapes[f"{b}.attn.{n}.bias"] = (c.head_dim,)
        linear(b + ".attn.proj", D, D)
        swiglu(b + ".mlp", D, c.mlp_hidden, D)
    swiglu("final_layer.adaLN_modulation", D, c.final_hidden, 2 * D)
    linear("final_layer.linear", D, p * p * c.channels)
    return shapes


def random_state_dict(c: Config, seed: int = 0) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    sd = {}
    for name, shape in parameter_shapes(c).items():
        t = torch.randn(shape, generator=gen, dtype=torch.float32) * 0.02
        if name.endswith("_norm.weight"):
            t += 1.0
        sd[name] = t
    return sd


def rope_tables(h: int, w: int, hd: int) -> tuple[torch.Tensor, torch.Tensor]:
    """SPEC 4: cos, sin (N, hd); first half angle a(n) f_{j//2}, second half b(n) f_{j//2},
    a(n) = n mod h, b(n) = n div h, f_k = 1 / 10000^(2k/dh)."""
    dh = hd // 2
    k = torch.arange(dh // 2, dtype=torch.float64)
    freqs = (1.0 / 10000.0 ** (2 * k / dh)).repeat_interleave(2)
    n = torch.arange(h * w)
    a, b = (n % h).double(), torch.div(n, h, rounding_mode="floor").double()
    angles = torch.cat([a[:, None] * freqs[None, :], b[:, None] * freqs[None, :]], dim=-1)
    return torch.cos(angles).float(), torch.sin(angles).float()


class EagerTiM:
    """The C2I forward (SPEC 3 and 4, new_condition t-r) with PyTorch's fused ops."""

    def __init__(self, c: Config, sd: dict[str, torch.Tensor]) -> None:
        self.c, self.P = c, sd
        self._rope: dict[tuple[int, int], tuple[torch.Tensor, torch.Tensor]] = {}

    def _linear(self, prefix: str, u: torch.Tensor) -> torch.Tensor:
        return F.linear(u, self.P[prefix + ".weight"], self.P.get(prefix + ".bias"))

    def _swiglu(self, prefix: str, u: torch.Tensor) -> torch.Tensor:
        return self._linear(prefix + ".fc2",
                            F.silu(self._linear(prefix + ".fc1_g", u)) * self._linear(prefix + ".fc1_x", u))

    def _embed(self, prefix: str, s: torch.Tensor) -> torch.Tensor:
        half = FREQ // 2
        freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32, device=s.device) / half)
        args = s.float()[:, None] * freqs[None, :]
        feat = torch.cat([torch.cos(args), torch.sin(args)], dim=-1).to(s.dtype)
        return self._linear(prefix + ".mlp.2", F.silu(self._linear(prefix + ".mlp.0", feat)))

    @staticmethod
    def _rotate(u: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        pairs = u.unflatten(-1, (-1, 2))
        rotated = torch.stack([-pairs[..., 1], pairs[..., 0]], dim=-1).flatten(-2)
        return u * cos + rotated * sin

    def __call__(self, x: torch.Tensor, t: torch.Tensor, r: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        c, P = self.c, self.P
        B, C, H, W = x.shape
        p, D, nh, hd = c.patch, c.hidden, c.heads, c.head_dim
        h, w = H // p, W // p
        N = h * w
        if (h, w) not in self._rope:
            self._rope[(h, w)] = tuple(u.to(x.device, x.dtype) for u in rope_tables(h, w, hd))
        cos, sin = self._rope[(h, w)]
        tokens = F.conv2d(x, P["x_embedder.proj.weight"], P["x_embedder.proj.bias"], stride=p)
        tokens = tokens.flatten(2).transpose(1, 2)  # (B, N, D)
        e_delta = self._embed("delta_embedder", t - r)
        cond = self._embed("t_embedder", t) + e_delta + P["y_embedder.embedding_table.weight"][y]
        for i in range(c.depth):
            b = f"blocks.{i}"
            mod = self._swiglu(b + ".adaLN_modulation", cond)[:, None, :]
            shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = mod.chunk(6, dim=-1)
            u = F.layer_norm(tokens, (D,), eps=1e-6) * (1 + scale_msa) + shift_msa
            qkv = self._linear(b + ".attn.qkv", u) + self._linear(b + ".attn.qkv_d", e_delta)[:, None, :]
            q, k, v = qkv.reshape(B, N, 3, nh, hd).permute(2, 0, 3, 1, 4)
            q = F.layer_norm(q, (hd,), P[b + ".attn.q_norm.weight"], P[b + ".attn.q_norm.bias"], 1e-5)
            k = F.layer_norm(k, (hd,), P[b + ".attn.k_norm.weight"], P[b + ".attn.k_norm.bias"], 1e-5)
            q, k = self._rotate(q, cos, sin), self._rotate(k, cos, sin)
            o = F.scaled_dot_product_attention(q, k, v)  # scale 1/sqrt(hd)
            o = o.transpose(1, 2).reshape(B, N, D)
            tokens = tokens + gate_msa * self._linear(b + ".attn.proj", o)
            u = F.layer_norm(tokens, (D,), eps=1e-6) * (1 + scale_mlp) + shift_mlp
            tokens = tokens + gate_mlp * self._swiglu(b + ".mlp", u)
        shift, scale = self._swiglu("final_layer.adaLN_modulation", cond)[:, None, :].chunk(2, dim=-1)
        out = self._linear("final_layer.linear", F.layer_norm(tokens, (D,), eps=1e-6) * (1 + scale) + shift)
        out = out.reshape(B, h, w, p, p, c.channels)
        return torch.einsum("bijpqc->bcipjq", out).reshape(B, c.channels, H, W)


def reference_model(c: Config, sd: dict[str, torch.Tensor]):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tools" / "reference"))
    import tim_reference as ref  # noqa: E402

    cfg = ref.TiMConfig(in_channels=c.channels, hidden_size=c.hidden, depth=c.depth, num_heads=c.heads,
                        patch_size=c.patch, num_classes=c.num_classes, adaln_hidden=c.adaln_hidden)
    model = ref.TiM(cfg).float().eval()
    ref.load_released_state_dict(model, sd)
    return model


def inputs(c: Config, batch: int, seed: int = 1234):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, c.channels, LATENT, LATENT, generator=gen)
    t = 0.5 + torch.rand(batch, generator=gen)
    r = 0.5 * torch.rand(batch, generator=gen)
    y = torch.randint(0, c.num_classes, (batch,), generator=gen)
    return x, t, r, y


def time_forward(fn, args, runs: int, warmup: int) -> float:
    """Median wall time of `runs` calls, in ms."""
    with torch.inference_mode():
        for _ in range(warmup):
            fn(*args)
        times = []
        for _ in range(runs):
            start = time.perf_counter()
            fn(*args)
            times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def time_gemm(n: int = 2048, runs: int = 5) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    return time_forward(torch.mm, (a, b), runs, 2)


def cpp_times(paths: list[str] | None) -> dict[str, float]:
    """real_time in ms per 'TiM-B4/batch:1' key (and 'gemm2048') from Google Benchmark JSON files;
    with --benchmark_repetitions, the median aggregate (else the single iteration run)."""
    scale = {"ns": 1e-6, "us": 1e-3, "ms": 1.0, "s": 1e3}
    out: dict[str, float] = {}
    benchmarks = [b for path in paths or [] for b in json.loads(Path(path).read_text())["benchmarks"]]
    medians = {b["run_name"] for b in benchmarks if b.get("aggregate_name") == "median"}
    for b in benchmarks:
        if b.get("run_type", "iteration") == "iteration":
            if b.get("run_name", b["name"]) in medians:
                continue
        elif b.get("aggregate_name") != "median":
            continue
        parts = b["run_name" if "run_name" in b else "name"].split("/")
        ms = b["real_time"] * scale[b["time_unit"]]
        if parts[0] == "BM_Forward":
            if any(q.startswith(("weights:", "precision:")) and q != "weights:float32" for q in parts):
                continue  # this table is float32's; bench/compare_network.py has the other weight types
            out[f"{parts[1]}/{parts[2]}"] = ms
        elif parts[0] == "BM_Gemm" and parts[1:4] == ["M:2048", "N:2048", "K:2048"]:
            out["gemm2048"] = ms
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--cpp-json", nargs="+", help="bench_network --benchmark_out JSON file(s) to put in the table")
    ap.add_argument("--reference", action="store_true", help="also time tools/reference/tim_reference.py")
    ap.add_argument("--only", help="run only settings whose 'model/batch:n' contains this text")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, "
          f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}, "
          f"cpu capability {torch.backends.cpu.get_cpu_capability()}", flush=True)
    cpp = cpp_times(args.cpp_json)

    gemm_ms = time_gemm()
    print(f"torch.mm 2048x2048x2048 float32: {gemm_ms:.1f} ms = {gemm(2048, 2048, 2048) / gemm_ms / 1e6:.1f} GFLOP/s",
          flush=True)

    rows = []
    for model_name in CONFIGS:
        settings = [s for s in SETTINGS if s[0] == model_name and (not args.only or args.only in f"{s[0]}/batch:{s[1]}")]
        if not settings:
            continue
        c = CONFIGS[model_name]
        sd = random_state_dict(c)
        eager = EagerTiM(c, sd)
        ref_model = reference_model(c, sd) if args.reference else None
        for _, batch, runs in settings:
            key = f"{model_name}/batch:{batch}"
            x = inputs(c, batch)
            flops = forward_flops(c, batch)
            warmup = 2 if runs >= 5 else 1
            ms = time_forward(eager, x, runs, warmup)
            ref_ms = time_forward(ref_model, x, runs, warmup) if ref_model is not None else None
            rows.append((key, flops, ms, ref_ms, cpp.get(key)))
            print(f"  {key}: eager {ms:.1f} ms" + (f", plain reference {ref_ms:.1f} ms" if ref_ms else ""),
                  flush=True)
        del eager, ref_model, sd

    print()
    header = f"| setting | GFLOP | PyTorch eager ms | GFLOP/s |"
    sep = "|---|---:|---:|---:|"
    if args.reference:
        header += " PyTorch plain ref ms |"
        sep += "---:|"
    if cpp:
        header += " tim C++ ms | GFLOP/s | C++ / PyTorch |"
        sep += "---:|---:|---:|"
    print(header)
    print(sep)
    for key, flops, ms, ref_ms, cpp_ms in rows:
        line = f"| {key} | {flops / 1e9:.1f} | {ms:.1f} | {flops / ms / 1e6:.1f} |"
        if args.reference:
            line += f" {ref_ms:.1f} |"
        if cpp:
            line += (f" {cpp_ms:.1f} | {flops / cpp_ms / 1e6:.1f} | {cpp_ms / ms:.2f}x |" if cpp_ms
                     else " - | - | - |")
        print(line)
    if "gemm2048" in cpp:
        g = cpp["gemm2048"]
        print(f"\nGEMM 2048^3: PyTorch {gemm_ms:.1f} ms ({gemm(2048, 2048, 2048) / gemm_ms / 1e6:.1f} GFLOP/s), "
              f"tim (the backend's linear_forward: Eigen, or OpenBLAS with tim::blas) {g:.1f} ms ({gemm(2048, 2048, 2048) / g / 1e6:.1f} GFLOP/s)")


if __name__ == "__main__":
    main()
