"""Write the float64 golden files for the C++ conformance tests of the C2I TiM network.

Each case builds a tiny TiM with tim_reference.py, fills EVERY parameter with seeded random values
(not the released zero initialisation, which would make the output trivially zero), runs one
forward pass in float64 and writes tests/data/golden/<case>.safetensors. See README.md here.
Usage: /work/venv/bin/python tools/reference/make_golden.py [--out DIR] [--check]
"""

from __future__ import annotations

import argparse
import json
import math
import struct
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file
from safetensors import safe_open

sys.path.insert(0, str(Path(__file__).resolve().parent))
from tim_reference import TiM, TiMConfig, config_from_state_dict, load_released_state_dict  # noqa: E402

GENERATOR = "tools/reference/make_golden.py"
REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_OUT = REPO_ROOT / "tests" / "data" / "golden"


@dataclass
class Case:
    name: str
    seed: int                 # torch.manual_seed(seed) before any draw of this case
    cfg: TiMConfig
    latent: tuple[int, int]   # (H, W)
    batch: int
    projector: bool = False   # add training-only projector.* tensors the loader must ignore
    note: str = ""


def small(**kw) -> TiMConfig:
    """Released-style block (qk_norm, qkv_d, separate delta embedder) at toy size, overridable."""
    base = dict(in_channels=4, hidden_size=16, depth=1, num_heads=2, patch_size=2, num_classes=5,
                adaln_hidden=8, mlp_ratio=4.0, qk_norm=True, interval_qkv=True,
                separate_delta_embedder=True, new_condition="t-r")
    base.update(kw)
    return TiMConfig(**base)


SQUARE = dict(in_channels=4, hidden_size=32, depth=2, num_heads=2, patch_size=2, num_classes=5,
              adaln_hidden=16)

CASES = [
    Case("square", 1001, small(**SQUARE), (8, 8), 3,
         note="4x4 tokens, D32 nh2 hd16, all released features"),
    Case("nonsquare", 1002, small(**SQUARE), (8, 12), 2,
         note="h=4, w=6 tokens: released rotary indexing differs from (row, col)"),
    Case("nonsquare_tall", 1003, small(**SQUARE), (12, 8), 2,
         note="h=6, w=4 tokens"),
    Case("plain", 1004, small(in_channels=4, hidden_size=32, depth=2, num_heads=4, patch_size=1,
                               adaln_hidden=16, qk_norm=False, interval_qkv=False,
                               separate_delta_embedder=False), (4, 6), 3,
         note="no q/k norm, no qkv_d, t_embedder reused for t-r; p=1, hd=8"),
    Case("cond_r", 1005, small(new_condition="r"), (4, 4), 3,
         note="E_delta = E_delta(r): an r term without t-r uses delta_embedder (as released)"),
    Case("cond_t_r", 1006, small(new_condition="t,r"), (4, 4), 3,
         note="E_delta = E_t(t) + E_delta(r): r through delta_embedder (as released)"),
    Case("cond_t_tr", 1007, small(new_condition="t,t-r"), (4, 4), 3,
         note="E_delta = E_t(t) + E_delta(t-r)"),
    Case("cond_r_tr", 1008, small(new_condition="r,t-r"), (4, 4), 3,
         note="E_delta = E_t(r) + E_delta(t-r): with a t-r term, r uses t_embedder"),
    Case("cond_t_r_tr", 1009, small(new_condition="t,r,t-r", separate_delta_embedder=False), (4, 4), 3,
         note="E_delta = E_t(t) + E_t(r) + E_t(t-r): no delta_embedder"),
    Case("patch4", 1010, small(in_channels=1, out_channels=1, depth=2, patch_size=4, num_classes=10,
                                mlp_ratio=2.5), (16, 16), 2,
         note="Fashion-MNIST-like shrunk: C=1, p=4, 4x4 tokens; mlp_ratio 2.5 so Hm=26 must come from shapes"),
    Case("projector", 1011, small(depth=2), (8, 8), 2, projector=True,
         note="extra projector.* tensors the C++ loader must ignore"),
]


def init_parameters(model: TiM) -> None:
    """Every parameter random (global torch generator, named_parameters order), sized so that
    activations stay O(1): weights N(0, gain^2 / fan_in), biases N(0, 0.1^2), norm gains ~1."""
    gains = {
        "adaLN_modulation.fc2": 0.5,   # shift/scale/gate around 0.3..0.5
        "attn.qkv_d": 0.5,
        "y_embedder": 0.5,             # embedding rows (fan_in taken as 1)
    }
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
                fan_in = 1 if name.startswith("y_embedder") else math.prod(prm.shape[1:])
                prm.copy_(gain / math.sqrt(fan_in) * torch.randn(prm.shape))


def make_inputs(cfg: TiMConfig, latent: tuple[int, int], batch: int) -> dict[str, torch.Tensor]:
    """x ~ N(0, 1); t ~ U(0, 1), r = t u (r <= t). Sample 1 has r == t (a diffusion step),
    sample 2 has t = 1, r = 0 (the one-step jump); the last sample gets the null label."""
    H, W = latent
    x = torch.randn(batch, cfg.in_channels, H, W)
    t = torch.rand(batch)
    r = t * torch.rand(batch)
    y = torch.randint(0, cfg.num_classes, (batch,), dtype=torch.int64)
    if batch >= 2:
        r[1] = t[1]
    if batch >= 3:
        t[2], r[2] = 1.0, 0.0
    y[-1] = cfg.num_classes
    return {"input.x": x, "input.t": t, "input.r": r, "input.y": y}


def write_safetensors(path: Path, tensors: dict[str, torch.Tensor], meta: dict[str, str]) -> None:
    """safetensors writer with a deterministic header (sorted names, sorted metadata) so that
    regenerating gives byte-identical files; safetensors' own writer orders metadata randomly."""
    dtype_names = {torch.float64: "F64", torch.float32: "F32", torch.int64: "I64"}
    header: dict[str, object] = {"__metadata__": dict(sorted(meta.items()))}
    blobs, offset = [], 0
    for name in sorted(tensors):
        t = tensors[name].contiguous()
        data = t.numpy().astype(t.numpy().dtype.newbyteorder("<"), copy=False).tobytes()
        header[name] = {"dtype": dtype_names[t.dtype], "shape": list(t.shape),
                        "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    head = json.dumps(header, separators=(",", ":")).encode()
    head += b" " * (-len(head) % 8)  # pad so the data starts 8-byte aligned
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(head)))
        f.write(head)
        for data in blobs:
            f.write(data)


def metadata(case: Case) -> dict[str, str]:
    return {
        "case": case.name,
        "seed": str(case.seed),
        "generator": GENERATOR,
        "num_heads": str(case.cfg.num_heads),
        "new_condition": case.cfg.new_condition,
        "mlp_ratio": repr(float(case.cfg.mlp_ratio)),
        "has_projector": "1" if case.projector else "0",
    }


def build(case: Case) -> dict[str, torch.Tensor]:
    torch.manual_seed(case.seed)
    model = TiM(case.cfg)
    init_parameters(model)
    inputs = make_inputs(case.cfg, case.latent, case.batch)
    tensors = dict(model.state_dict())
    if case.projector:
        D = case.cfg.hidden_size
        for name, shape in (("projector.0.weight", (8, D)), ("projector.0.bias", (8,)),
                            ("projector.2.weight", (8, 8)), ("projector.2.bias", (8,)),
                            ("projector.4.weight", (4, 8)), ("projector.4.bias", (4,))):
            tensors[name] = torch.randn(shape)
    with torch.no_grad():
        out = model(inputs["input.x"], inputs["input.t"], inputs["input.r"], inputs["input.y"])
    tensors.update(inputs)
    tensors["output.out"] = out
    return {k: v.detach().contiguous() for k, v in tensors.items()}


def check_file(path: Path) -> float:
    """Rebuild the model from the file alone and recompute the output; returns max |diff|."""
    tensors = load_file(str(path))
    with safe_open(str(path), "pt") as f:
        meta = f.metadata()
    params = {k: v for k, v in tensors.items() if not k.startswith(("input.", "output."))}
    cfg = config_from_state_dict(params, int(meta["num_heads"]), meta["new_condition"],
                                 float(meta["mlp_ratio"]))
    model = TiM(cfg)
    load_released_state_dict(model, params)
    for k, v in tensors.items():
        expected = torch.int64 if k == "input.y" else torch.float64
        assert v.dtype == expected, f"{path.name}: {k} is {v.dtype}"
    with torch.no_grad():
        out = model(tensors["input.x"], tensors["input.t"], tensors["input.r"], tensors["input.y"])
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
        total += size
        print(f"{case.name:15s} out {tuple(out.shape)} max|out| {out.abs().max().item():7.3f} "
              f"rms {out.pow(2).mean().sqrt().item():6.3f}  {size / 1024:6.1f} KiB  seed {case.seed}")
    print(f"total {total / 1024:.1f} KiB in {args.out}")


if __name__ == "__main__":
    main()
