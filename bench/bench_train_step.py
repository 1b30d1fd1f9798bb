"""One training step of tools/reference/train.py at bench/bench_train_step.cpp's settings: the
objective's losses (z and the time pairs drawn, two DDE forwards without gradient, the forward
with gradient), backward, clip_grad_norm_, torch.optim.AdamW and the EMA lerp, float32, in the
same order as train.py's loop. Shapes: the shipped Fashion-MNIST model (D 256, depth 4, 4 heads,
p 4, L 96, 1 channel, 10 classes, batch 64 of 32 x 32) and TiM-B/4 (D 768, depth 12, 12 heads,
p 4, L 256, 4 channels of 32 x 32, 1000 classes, batch 8). Prints the median and mean ms per step.

Run (2 threads, as the C++ benchmark):
  env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE OMP_WAIT_POLICY=PASSIVE \
      /tmp/nnvenv/bin/python bench/bench_train_step.py --threads 2
"""
from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tools", "reference"))
import tim_reference as tr  # noqa: E402
import train  # noqa: E402

SHAPES = {
    "shipped": dict(cfg=dict(in_channels=1, hidden_size=256, depth=4, num_heads=4, patch_size=4, num_classes=10,
                             adaln_hidden=96), batch=64, size=32, steps=20),
    "tim-b4": dict(cfg=dict(in_channels=4, hidden_size=768, depth=12, num_heads=12, patch_size=4, num_classes=1000,
                            adaln_hidden=256), batch=8, size=32, steps=3),
}


def bench(name: str, warmup: int) -> None:
    s = SHAPES[name]
    cfg = tr.TiMConfig(**s["cfg"])
    torch.manual_seed(0)
    model = train.build_model(cfg)
    train.init_weights(model)
    with torch.no_grad():  # random weights, as the C++ benchmark (the initialisation zeroes F)
        for p in model.parameters():
            p.normal_(0.0, 0.02)
    ema = copy.deepcopy(model).requires_grad_(False)
    params = list(model.parameters())
    ema_params = list(ema.parameters())
    opt = torch.optim.AdamW(params, lr=1e-4, betas=(0.9, 0.95), eps=1e-6, weight_decay=0.01)
    objective = train.Objective(transport=train.TRANSPORTS["ot-fm"](), diffusion_ratio=0.5, consistency_ratio=0.1,
                                epsilon=0.005, p_mean=-0.4, p_std=1.0, weight_time="sqrt", weight_transform="tangent",
                                adaptive=True, directional=False, label_dropout=0.1)
    gen = torch.Generator().manual_seed(1)
    B, C, H = s["batch"], s["cfg"]["in_channels"], s["size"]
    x = torch.tanh(torch.randn(B, C, H, H, generator=gen))
    y = torch.arange(B) % s["cfg"]["num_classes"]
    null = s["cfg"]["num_classes"]
    times = []
    for i in range(warmup + s["steps"]):
        start = time.perf_counter()
        drop = torch.rand(len(y), generator=gen) < objective.label_dropout
        y_dropped = torch.where(drop, torch.full_like(y, null), y)
        out = objective.losses(model, ema, x, y_dropped, gen, null, y_cond=y)
        opt.zero_grad(set_to_none=True)
        out["loss"].backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        with torch.no_grad():
            torch._foreach_lerp_(ema_params, params, 1.0 - 0.999)
        if i >= warmup:
            times.append(time.perf_counter() - start)
    ms = [1e3 * t for t in times]
    print(f"{name}: {len(ms)} steps, median {statistics.median(ms):.1f} ms, mean {statistics.mean(ms):.1f} ms, "
          f"min {min(ms):.1f} ms; {B} samples per step; torch {torch.__version__}, {torch.get_num_threads()} threads")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--shape", choices=sorted(SHAPES) + ["all"], default="all")
    p.add_argument("--warmup", type=int, default=2)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    for name in (sorted(SHAPES) if a.shape == "all" else [a.shape]):
        bench(name, a.warmup)


if __name__ == "__main__":
    main()
