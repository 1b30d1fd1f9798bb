"""Write the float64 golden files for the C++ conformance test of the DC-AE decoder (tests/test_dc_ae.cpp).

Each case makes a small decoder with random weights (dc_ae_reference.randomize_), decodes seeded
latents with our float64 reference and writes tests/data/dc_ae_golden/<case>.safetensors. Then
every file is read back, decoded again from the file alone (bit-identical), and, when diffusers is
installed, decoded by diffusers' AutoencoderDC with the same weights, its float32 steps made
float64 (relative difference <= 1e-12).
Usage: /work/venv/bin/python tools/reference/make_dc_ae_golden.py [--out DIR] [--check]
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file

sys.path.insert(0, str(Path(__file__).resolve().parent))
from dc_ae_reference import (RES_BLOCK, VIT_BLOCK, DcAeDecoderConfig, decode, diffusers_decode,  # noqa: E402
                             diffusers_model, infer_config, parameter_shapes, randomize_)
from make_vae_golden import write_safetensors  # noqa: E402

GENERATOR = "tools/reference/make_dc_ae_golden.py"
REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_OUT = REPO_ROOT / "tests" / "data" / "dc_ae_golden"
SIZE_LIMIT = 1536 * 1024  # all files together


@dataclass
class Case:
    name: str
    seed: int                    # torch.manual_seed(seed) before any draw of this case
    cfg: DcAeDecoderConfig
    latent: tuple[int, int]      # (h, w)
    batch: int
    weights: str = "F64"         # stored dtype of the parameters ("F32" like the released file)
    note: str = ""


CASES = [
    Case("sana_layout", 4001,
         DcAeDecoderConfig(latent_channels=8, block_out_channels=(2, 4, 8, 8, 16, 16), attention_head_dim=8),
         (2, 3), 1, weights="F32",
         note="the released layout (6 stages of 3 blocks, ResBlock x3 then EfficientViT x3 with 5x5 "
              "multi-scale, interpolate upsampling, 32x) at 1/64 width; F32 weights"),
    Case("nonsquare", 4002,
         DcAeDecoderConfig(latent_channels=8, block_out_channels=(8, 16, 16), layers_per_block=(2, 1, 2),
                           block_types=(RES_BLOCK, VIT_BLOCK, VIT_BLOCK), qkv_multiscales=((), (5,), (5,)),
                           attention_head_dim=8),
         (3, 5), 2, note="3x5 latent -> 12x20 image, batch 2"),
    Case("variants", 4003,
         DcAeDecoderConfig(latent_channels=4, block_out_channels=(8, 16), layers_per_block=(1, 2),
                           block_types=(VIT_BLOCK, RES_BLOCK), qkv_multiscales=((3, 5), ()), attention_head_dim=3,
                           upsample_block_type="pixel_shuffle", in_shortcut=False),
         (4, 2), 1, note="EfficientViT at the full-resolution stage with two multi-scale branches (3x3, 5x5), "
                         "head dim 3 (6 of the 8 channels in heads), pixel-shuffle upsampling, no input shortcut"),
]


def metadata(case: Case) -> dict[str, str]:
    return {"case": case.name, "seed": str(case.seed), "generator": GENERATOR,
            "attention_head_dim": str(case.cfg.attention_head_dim),
            "in_shortcut": "true" if case.cfg.in_shortcut else "false",
            "scaling_factor": repr(case.cfg.scaling_factor), "weights_dtype": case.weights}


def build(case: Case) -> dict[str, torch.Tensor]:
    """Draws, in order: every parameter (sorted names, randomize_), then input.latents ~ N(0, 1)."""
    torch.manual_seed(case.seed)
    sd = {name: torch.empty(shape) for name, shape in parameter_shapes(case.cfg).items()}
    randomize_(sd)
    if case.weights == "F32":   # the values the file holds, so the reference decodes exactly those
        sd = {k: v.float().double() for k, v in sd.items()}
    h, w = case.latent
    latents = torch.randn(case.batch, case.cfg.latent_channels, h, w)
    with torch.no_grad():
        images = decode(latents, sd, case.cfg)
    if case.weights == "F32":
        sd = {k: v.float() for k, v in sd.items()}
    return {**sd, "input.latents": latents, "output.images": images}


def config_from_file(path: Path, sd: dict[str, torch.Tensor]) -> DcAeDecoderConfig:
    with safe_open(str(path), "pt") as f:
        meta = f.metadata()
    return infer_config(sd, attention_head_dim=int(meta["attention_head_dim"]),
                        in_shortcut=meta["in_shortcut"] == "true", scaling_factor=float(meta["scaling_factor"]))


def check_file(path: Path, case: Case) -> tuple[float, float | None]:
    """Decodes again from the file alone: (max |diff| to the stored output, which must be 0;
    relative difference to diffusers, None when diffusers is not installed)."""
    tensors = {k: v.clone() for k, v in load_file(str(path)).items()}  # fresh, aligned memory
    sd = {k: v.double() for k, v in tensors.items() if not k.startswith(("input.", "output."))}
    cfg = config_from_file(path, sd)
    if cfg != case.cfg:
        raise SystemExit(f"{path.name}: the config read back from the file differs from the case's")
    latents, expected = tensors["input.latents"], tensors["output.images"]
    assert latents.dtype == torch.float64 and expected.dtype == torch.float64
    assert torch.isfinite(expected).all()
    with torch.no_grad():
        diff = (decode(latents, sd, cfg) - expected).abs().max().item()
    try:
        model = diffusers_model(cfg).double().eval()
    except ImportError:
        return diff, None
    missing, unexpected = model.load_state_dict(sd, strict=False)
    assert not unexpected and all(k.startswith("encoder.") for k in missing), (missing, unexpected)
    theirs = diffusers_decode(model, latents, cfg)
    return diff, ((theirs - expected).abs().max() / expected.abs().max()).item()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output folder")
    parser.add_argument("--check", action="store_true", help="only re-verify the existing files")
    args = parser.parse_args()
    torch.set_default_dtype(torch.float64)
    torch.set_num_threads(1)  # oneDNN sums depend on the thread split (and on alignment: see check_file)
    args.out.mkdir(parents=True, exist_ok=True)
    total = 0
    for case in CASES:
        path = args.out / f"{case.name}.safetensors"
        if not args.check:
            write_safetensors(path, build(case), metadata(case))
        out = load_file(str(path))["output.images"]
        diff, versus_diffusers = check_file(path, case)
        if diff != 0.0:
            raise SystemExit(f"{case.name}: recomputed output differs by {diff}")
        if versus_diffusers is not None and versus_diffusers > 1e-12:
            raise SystemExit(f"{case.name}: diffusers differs by {versus_diffusers:.2e} (relative)")
        total += path.stat().st_size
        diffusers_text = "not installed" if versus_diffusers is None else f"{versus_diffusers:.1e}"
        print(f"{case.name:12s} images {tuple(out.shape)} max|out| {out.abs().max().item():6.3f} "
              f"rms {out.pow(2).mean().sqrt().item():5.3f}  {path.stat().st_size / 1024:6.1f} KiB  seed {case.seed}  "
              f"vs diffusers {diffusers_text}")
    print(f"total {total / 1024:.1f} KiB in {args.out}")
    if total > SIZE_LIMIT:
        raise SystemExit(f"golden files total {total} bytes, over the {SIZE_LIMIT} limit")


if __name__ == "__main__":
    main()
