"""Write the float64 golden files for the C++ conformance tests of the T2I TiM network.

Each case builds a tiny text-conditioned TiM with tim_t2i_reference.py, fills EVERY parameter with
seeded random values, runs one forward pass in float64 on random caption features and writes
tests/data/golden_t2i/<case>.safetensors (a folder of its own, so the C2I golden test's scan of
tests/data/golden/ never sees them). See README.md here ("T2I").
Usage: /work/venv/bin/python tools/reference/make_t2i_golden.py [--out DIR] [--check]
"""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_golden import write_safetensors  # noqa: E402
from tim_t2i_reference import T2IConfig, TiMT2I, load_released_state_dict, t2i_config_from_state_dict  # noqa: E402

GENERATOR = "tools/reference/make_t2i_golden.py"
REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_OUT = REPO_ROOT / "tests" / "data" / "golden_t2i"


@dataclass
class Case:
    name: str
    seed: int                 # torch.manual_seed(seed) before any draw of this case
    cfg: T2IConfig
    latent: tuple[int, int]   # (H, W)
    batch: int
    caption_tokens: int       # M
    projector: bool = False   # add training-only projector.* tensors the loader must ignore
    note: str = ""


def small(**kw) -> T2IConfig:
    """Released-style T2I block (qk_norm, qkv_d, delta embedder) at toy size: D 16, 2 heads (hd 8),
    depth 2, L 8, C 4, caption features of width 24."""
    base = dict(in_channels=4, hidden_size=16, depth=2, num_heads=2, patch_size=2, caption_dim=24,
                adaln_hidden=8, mlp_ratio=4.0, qk_norm=True, interval_qkv=True,
                separate_delta_embedder=True, new_condition="t-r")
    base.update(kw)
    return T2IConfig(**base)


CASES = [
    Case("square", 2001, small(), (8, 8), 3, 5, projector=True,
         note="4x4 tokens, M 5, all released features, projector.* present"),
    Case("nonsquare", 2002, small(), (8, 12), 2, 7,
         note="h=4, w=6 tokens: released rotary indexing on the cross-attention queries too"),
    Case("plain", 2003, small(hidden_size=16, num_heads=4, patch_size=1, qk_norm=False, interval_qkv=False,
                              separate_delta_embedder=False, caption_dim=12), (4, 6), 2, 3,
         note="no q/k norms anywhere, no qkv_d, t_embedder reused for t-r; p=1, hd=4, heads from metadata"),
]


def init_parameters(model: TiMT2I) -> None:
    """Every parameter random (global torch generator, named_parameters order), sized so that
    activations stay O(1): weights N(0, gain^2 / fan_in), biases N(0, 0.1^2), LayerNorm gains
    1 + N(0, 0.2^2) and biases N(0, 0.2^2)."""
    gains = {"adaLN_modulation.fc2": 0.5, "attn.qkv_d": 0.5}
    with torch.no_grad():
        for name, prm in model.named_parameters():
            gain = next((g for key, g in gains.items() if key in name), 1.0)
            if name.endswith("norm.weight"):
                prm.copy_(1.0 + 0.2 * torch.randn(prm.shape))
            elif name.endswith("norm.bias"):
                prm.copy_(0.2 * torch.randn(prm.shape))
            elif name.endswith("bias"):
                prm.copy_(0.1 * torch.randn(prm.shape))
            else:
                prm.copy_(gain / math.sqrt(math.prod(prm.shape[1:])) * torch.randn(prm.shape))


def make_inputs(case: Case) -> dict[str, torch.Tensor]:
    """x ~ N(0, 1); t ~ U(0, 1), r = t u; sample 1 has r == t, sample 2 (if any) t = 1, r = 0;
    cap_feats ~ N(0, 1) of shape (B, M, Dc)."""
    H, W = case.latent
    B = case.batch
    x = torch.randn(B, case.cfg.in_channels, H, W)
    t = torch.rand(B)
    r = t * torch.rand(B)
    if B >= 2:
        r[1] = t[1]
    if B >= 3:
        t[2], r[2] = 1.0, 0.0
    cap_feats = torch.randn(B, case.caption_tokens, case.cfg.caption_dim)
    return {"input.x": x, "input.t": t, "input.r": r, "input.cap_feats": cap_feats}


def metadata(case: Case) -> dict[str, str]:
    return {
        "case": case.name,
        "seed": str(case.seed),
        "generator": GENERATOR,
        "model_type": "t2i",
        "num_heads": str(case.cfg.num_heads),
        "new_condition": case.cfg.new_condition,
        "mlp_ratio": repr(float(case.cfg.mlp_ratio)),
        "has_projector": "1" if case.projector else "0",
    }


def build(case: Case) -> dict[str, torch.Tensor]:
    torch.manual_seed(case.seed)
    model = TiMT2I(case.cfg)
    init_parameters(model)
    inputs = make_inputs(case)
    tensors = dict(model.state_dict())
    if case.projector:
        D = case.cfg.hidden_size
        for name, shape in (("projector.0.weight", (8, D)), ("projector.0.bias", (8,)),
                            ("projector.2.weight", (4, 8)), ("projector.2.bias", (4,))):
            tensors[name] = torch.randn(shape)
    with torch.no_grad():
        out = model(inputs["input.x"], inputs["input.t"], inputs["input.r"], inputs["input.cap_feats"])
    tensors.update(inputs)
    tensors["output.out"] = out
    return {k: v.detach().contiguous() for k, v in tensors.items()}


def check_file(path: Path) -> float:
    """Rebuild the model from the file alone and recompute the output; returns max |diff|."""
    tensors = load_file(str(path))
    with safe_open(str(path), "pt") as f:
        meta = f.metadata()
    assert meta["model_type"] == "t2i"
    params = {k: v for k, v in tensors.items() if not k.startswith(("input.", "output."))}
    cfg = t2i_config_from_state_dict(params, int(meta["num_heads"]), meta["new_condition"], float(meta["mlp_ratio"]))
    model = TiMT2I(cfg)
    load_released_state_dict(model, params)
    for k, v in tensors.items():
        assert v.dtype == torch.float64, f"{path.name}: {k} is {v.dtype}"
    with torch.no_grad():
        out = model(tensors["input.x"], tensors["input.t"], tensors["input.r"], tensors["input.cap_feats"])
    out_ref = tensors["output.out"]
    assert torch.isfinite(out_ref).all(), f"{path.name}: non-finite output"
    assert (tensors["input.r"] <= tensors["input.t"]).all()
    return (out - out_ref).abs().max().item()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output folder")
    parser.add_argument("--check", action="store_true",
                        help="only re-verify existing files (rebuild model from file, recompute)")
    args = parser.parse_args()
    torch.set_default_dtype(torch.float64)
    args.out.mkdir(parents=True, exist_ok=True)
    total = 0
    for case in CASES:
        path = args.out / f"{case.name}.safetensors"
        if not args.check:
            tensors = build(case)
            write_safetensors(path, tensors, metadata(case))
            out = tensors["output.out"]
        else:
            out = load_file(str(path))["output.out"]
        diff = check_file(path)
        if diff != 0.0:
            raise SystemExit(f"{case.name}: recomputed output differs by {diff}")
        size = path.stat().st_size
        if size >= 300 * 1024:
            raise SystemExit(f"{case.name}: {size} bytes, over the 300 KiB budget for a golden file")
        total += size
        print(f"{case.name:10s} out {tuple(out.shape)} M {case.caption_tokens} max|out| {out.abs().max().item():7.3f} "
              f"rms {out.pow(2).mean().sqrt().item():6.3f}  {size / 1024:6.1f} KiB  seed {case.seed}")
    print(f"total {total / 1024:.1f} KiB in {args.out}")


if __name__ == "__main__":
    main()
