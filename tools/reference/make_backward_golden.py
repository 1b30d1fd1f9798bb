"""Write the float64 golden file of the whole-network backward pass of the C2I TiM network.

One tiny network (2 blocks, qk-norm, qkv_d, a separate delta embedder, a non-square 4x6 latent,
3 channels) built and initialised as make_golden.py does, one forward pass in float64, and the
gradients of L = sum(dout * F) by PyTorch's autograd through tim_reference.TiM: every parameter
under its released name and the input latent. The C++ test (tests/test_c2i_backward.cpp) runs
tim::nn::c2i_backward on the same weights and inputs and compares.
Usage: python tools/reference/make_backward_golden.py [--out DIR] [--check]  (a Python with
tools/reference/requirements.txt installed)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file
from safetensors import safe_open

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_golden import init_parameters, make_inputs, small, write_safetensors  # noqa: E402
from tim_reference import TiM, config_from_state_dict, load_released_state_dict  # noqa: E402

GENERATOR = "tools/reference/make_backward_golden.py"
REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_OUT = REPO_ROOT / "tests" / "data" / "backward_golden"
SEED = 1201
CONFIG = dict(in_channels=3, hidden_size=16, depth=2, num_heads=2, patch_size=2, num_classes=5, adaln_hidden=8)
LATENT, BATCH = (4, 6), 3


def gradients(model: TiM, inputs: dict[str, torch.Tensor], dout: torch.Tensor) -> dict[str, torch.Tensor]:
    """out, dL/dtheta for every parameter and dL/dx of L = sum(dout * F(x, t, r, y)), by autograd."""
    model.zero_grad(set_to_none=True)
    x = inputs["input.x"].clone().requires_grad_(True)
    out = model(x, inputs["input.t"], inputs["input.r"], inputs["input.y"])
    (dout * out).sum().backward()
    result = {"output.out": out.detach()}
    for name, prm in model.named_parameters():
        result["output.grad." + name] = prm.grad.detach().clone()
    result["output.grad_input.x"] = x.grad.detach().clone()
    return result


def build() -> dict[str, torch.Tensor]:
    torch.manual_seed(SEED)
    cfg = small(**CONFIG)
    model = TiM(cfg)
    init_parameters(model)
    inputs = make_inputs(cfg, LATENT, BATCH)
    dout = torch.randn(BATCH, cfg.out_channels, *LATENT)
    tensors = {k: v.detach().clone() for k, v in model.state_dict().items()}
    tensors.update(inputs)
    tensors["input.dout"] = dout
    tensors.update(gradients(model, inputs, dout))
    return {k: v.contiguous() for k, v in tensors.items()}


def check_file(path: Path) -> float:
    """Rebuild the model from the file alone and recompute output and gradients; max |diff|."""
    tensors = load_file(str(path))
    with safe_open(str(path), "pt") as f:
        meta = f.metadata()
    params = {k: v for k, v in tensors.items() if not k.startswith(("input.", "output."))}
    cfg = config_from_state_dict(params, int(meta["num_heads"]), meta["new_condition"], float(meta["mlp_ratio"]))
    model = TiM(cfg)
    load_released_state_dict(model, params)
    again = gradients(model, tensors, tensors["input.dout"])
    assert set(again) == {k for k in tensors if k.startswith("output.")}
    return max((again[k] - tensors[k]).abs().max().item() for k in again)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output folder")
    parser.add_argument("--check", action="store_true", help="only re-verify the existing file")
    args = parser.parse_args()
    torch.set_default_dtype(torch.float64)
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "tiny.safetensors"
    if not args.check:
        cfg = small(**CONFIG)
        meta = {"case": "tiny", "seed": str(SEED), "generator": GENERATOR, "num_heads": str(cfg.num_heads),
                "new_condition": cfg.new_condition, "mlp_ratio": repr(float(cfg.mlp_ratio)),
                "loss": "sum(input.dout * output.out)"}
        write_safetensors(path, build(), meta)
    diff = check_file(path)
    if diff != 0.0:
        raise SystemExit(f"recomputed output or gradients differ by {diff}")
    tensors = load_file(str(path))
    grads = [k for k in tensors if k.startswith("output.grad")]
    largest = max(tensors[k].abs().max().item() for k in grads)
    print(f"{path}: {len(grads)} gradient tensors, max |gradient| {largest:.3f}, "
          f"{path.stat().st_size / 1024:.1f} KiB, seed {SEED}")


if __name__ == "__main__":
    main()
