"""Write the golden files of the C++ optimizer (tim/train/optimizer.hpp) from PyTorch itself.

A tiny C2I network's parameters (tim_reference.TiM, released names, random values) take four
optimizer steps with given random gradients, exactly as tools/reference/train.py steps: the
learning rate from train.lr_at (linear warm-up over 2 steps), torch.nn.utils.clip_grad_norm_,
torch.optim.AdamW, then the EMA by torch._foreach_lerp_. Run twice, in float64 and in float32,
from the same float32 values. One gradient tensor (the label table) is scaled to ~1e-6 so that
AdamW's eps (1e-6, added outside the square root) changes the result visibly; step 2's gradients
are scaled down so that it is the one step the clip leaves alone.

Files (tests/data/optim_golden/): model.safetensors, the float32 initial weights (a checkpoint
tim loads), and steps.safetensors: grad.<k>.<name> (float32, k = 0..3), lr (4,) float64,
norm64 / norm32 (4,) the norms clip_grad_norm_ returned, and after the last step
param64.<name> / param32.<name>, ema64.<name> / ema32.<name>, m64/v64/m32/v32.<name>.
Usage: /tmp/nnvenv/bin/python tools/reference/make_optim_golden.py [--out DIR]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

sys.path.insert(0, str(Path(__file__).resolve().parent))
import tim_reference as tr  # noqa: E402
from train import lr_at  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_OUT = REPO_ROOT / "tests" / "data" / "optim_golden"
SEED = 1717
CONFIG = dict(in_channels=1, hidden_size=8, depth=1, num_heads=2, patch_size=2, num_classes=3, adaln_hidden=4,
              separate_delta_embedder=False)
STEPS = 4
OPTIONS = dict(lr=1e-2, warmup_steps=2, betas=(0.9, 0.95), eps=1e-6, weight_decay=0.1, max_norm=40.0,
               ema_decay=0.9)
TINY_GRAD = "y_embedder.embedding_table.weight"


def run(init: dict, grads: list, dtype: torch.dtype) -> dict:
    params = {k: torch.nn.Parameter(v.to(dtype).clone()) for k, v in init.items()}
    names = list(params)
    plist = [params[k] for k in names]
    ema = [p.detach().clone() for p in plist]
    opt = torch.optim.AdamW(plist, lr=OPTIONS["lr"], betas=OPTIONS["betas"], eps=OPTIONS["eps"],
                            weight_decay=OPTIONS["weight_decay"])
    args = argparse.Namespace(lr=OPTIONS["lr"], warmup_steps=OPTIONS["warmup_steps"])
    norms, lrs = [], []
    for k in range(STEPS):
        lr = lr_at(args, k)
        for g in opt.param_groups:
            g["lr"] = lr
        for name, p in zip(names, plist):
            p.grad = grads[k][name].to(dtype).clone()
        norms.append(torch.nn.utils.clip_grad_norm_(plist, OPTIONS["max_norm"]).item())
        opt.step()
        with torch.no_grad():
            torch._foreach_lerp_(ema, plist, 1.0 - OPTIONS["ema_decay"])
        lrs.append(lr)
    state = opt.state
    return {"param": {n: p.detach() for n, p in zip(names, plist)}, "ema": dict(zip(names, ema)),
            "m": {n: state[p]["exp_avg"] for n, p in zip(names, plist)},
            "v": {n: state[p]["exp_avg_sq"] for n, p in zip(names, plist)}, "norms": norms, "lrs": lrs}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    out = parser.parse_args().out
    torch.manual_seed(SEED)
    model = tr.TiM(tr.TiMConfig(**CONFIG))
    init = {k: (0.5 * torch.randn(v.shape)).float() for k, v in model.state_dict().items()}
    grads = []
    for k in range(STEPS):
        g = {n: torch.randn(v.shape).float() for n, v in init.items()}
        g[TINY_GRAD] = g[TINY_GRAD] * 1e-6
        if k == 1:
            g = {n: 0.3 * v for n, v in g.items()}
        grads.append(g)
    r64, r32 = run(init, grads, torch.float64), run(init, grads, torch.float32)
    assert r64["norms"][1] < OPTIONS["max_norm"] < min(r64["norms"][0], r64["norms"][2], r64["norms"][3]), r64["norms"]
    out.mkdir(parents=True, exist_ok=True)
    meta = {"num_heads": str(CONFIG["num_heads"]), "new_condition": "t-r",
            "generator": "tools/reference/make_optim_golden.py", "seed": str(SEED)}
    save_file({k: v.contiguous() for k, v in init.items()}, str(out / "model.safetensors"), metadata=meta)
    tensors = {"lr": torch.tensor(r64["lrs"], dtype=torch.float64),
               "norm64": torch.tensor(r64["norms"], dtype=torch.float64),
               "norm32": torch.tensor(r32["norms"], dtype=torch.float64)}
    for k in range(STEPS):
        tensors.update({f"grad.{k}.{n}": v for n, v in grads[k].items()})
    for tag, r in (("64", r64), ("32", r32)):
        for part in ("param", "ema", "m", "v"):
            tensors.update({f"{part}{tag}.{n}": v.contiguous() for n, v in r[part].items()})
    options = {k: repr(v) for k, v in OPTIONS.items()}
    save_file(tensors, str(out / "steps.safetensors"), metadata={**meta, **options, "steps": str(STEPS),
                                                                   "torch_version": torch.__version__})
    print(f"wrote {out}: {sum(v.numel() for v in init.values())} parameters, {STEPS} steps, "
          f"norms {r64['norms']}, lrs {r64['lrs']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
