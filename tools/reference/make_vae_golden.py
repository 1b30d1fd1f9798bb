"""Write the float64 golden files for the C++ conformance test of the SD VAE decoder (tests/test_sd_vae.cpp).

Each case makes a small decoder with random weights (sd_vae_reference.randomize_), decodes seeded
latents with our float64 reference and writes tests/data/vae_golden/<case>.safetensors. Then every
file is read back, decoded again from the file alone (bit-identical), and, when diffusers is
installed, decoded by diffusers' AutoencoderKL with the same weights (relative difference <= 1e-12).
Usage: /work/venv/bin/python tools/reference/make_vae_golden.py [--out DIR] [--check]
"""

from __future__ import annotations

import argparse
import json
import struct
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sd_vae_reference import (VaeDecoderConfig, decode, diffusers_model, old_attention_names,  # noqa: E402
                              parameter_shapes, randomize_)

GENERATOR = "tools/reference/make_vae_golden.py"
REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_OUT = REPO_ROOT / "tests" / "data" / "vae_golden"
SIZE_LIMIT = 2 * 1024 * 1024  # all files together


@dataclass
class Case:
    name: str
    seed: int                    # torch.manual_seed(seed) before any draw of this case
    cfg: VaeDecoderConfig
    latent: tuple[int, int]      # (h, w)
    batch: int
    weights: str = "F64"         # stored dtype of the parameters ("F32" like the released file)
    attention: str = "current"   # "current" (to_q, ..., Linear) or "old_conv" (query, ..., 1x1 conv)
    note: str = ""


CASES = [
    Case("sd_layout", 3001, VaeDecoderConfig(block_out_channels=(16, 16, 32, 32), norm_num_groups=8), (4, 4), 1,
         weights="F32", note="the released layout (4 up blocks of 3 resnets, 8x) at 1/8 width; F32 weights"),
    Case("nonsquare", 3002, VaeDecoderConfig(block_out_channels=(8, 8, 16, 16), norm_num_groups=4), (3, 5), 2,
         note="3x5 latent -> 24x40 image, batch 2, 2 channels per group"),
    Case("old_names", 3003, VaeDecoderConfig(block_out_channels=(8, 16), norm_num_groups=8, layers_per_block=1),
         (5, 3), 1, attention="old_conv",
         note="2 up blocks of 2 resnets (2x), query/key/value/proj_attn stored as 1x1 convs, 1 channel per group"),
]


def write_safetensors(path: Path, tensors: dict[str, torch.Tensor], meta: dict[str, str]) -> None:
    """Deterministic header (sorted names and metadata), data 8-byte aligned, little-endian."""
    dtype_names = {torch.float64: "F64", torch.float32: "F32"}
    header: dict[str, object] = {"__metadata__": dict(sorted(meta.items()))}
    blobs, offset = [], 0
    for name in sorted(tensors):
        array = tensors[name].contiguous().numpy()
        data = array.astype(array.dtype.newbyteorder("<"), copy=False).tobytes()
        header[name] = {"dtype": dtype_names[tensors[name].dtype], "shape": list(array.shape),
                        "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    head = json.dumps(header, separators=(",", ":")).encode()
    head += b" " * (-len(head) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(head)))
        f.write(head)
        for data in blobs:
            f.write(data)


def metadata(case: Case) -> dict[str, str]:
    return {"case": case.name, "seed": str(case.seed), "generator": GENERATOR,
            "norm_num_groups": str(case.cfg.norm_num_groups), "eps": repr(case.cfg.eps),
            "scaling_factor": repr(case.cfg.scaling_factor), "weights_dtype": case.weights,
            "attention_names": case.attention}


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
    if case.attention == "old_conv":
        sd = old_attention_names(sd, as_conv=True)
    if case.weights == "F32":
        sd = {k: v.float() for k, v in sd.items()}
    return {**sd, "input.latents": latents, "output.images": images}


def config_from_metadata(path: Path, tensors: dict[str, torch.Tensor]) -> VaeDecoderConfig:
    with safe_open(str(path), "pt") as f:
        meta = f.metadata()
    widths = []
    i = 0
    while f"decoder.up_blocks.{i}.resnets.0.conv1.weight" in tensors:
        widths.append(tensors[f"decoder.up_blocks.{i}.resnets.0.conv1.weight"].shape[0])
        i += 1
    layers = sum(1 for k in tensors if k.startswith("decoder.up_blocks.0.resnets.") and k.endswith("conv1.weight"))
    return VaeDecoderConfig(block_out_channels=tuple(reversed(widths)), layers_per_block=layers - 1,
                            norm_num_groups=int(meta["norm_num_groups"]), eps=float(meta["eps"]),
                            scaling_factor=float(meta["scaling_factor"]))


def check_file(path: Path) -> tuple[float, float | None]:
    """Decodes again from the file alone: (max |diff| to the stored output, which must be 0;
    relative difference to diffusers, None when diffusers is not installed)."""
    tensors = {k: v.clone() for k, v in load_file(str(path)).items()}  # fresh, aligned memory
    sd = {k: v.double() for k, v in tensors.items() if not k.startswith(("input.", "output."))}
    cfg = config_from_metadata(path, tensors)
    latents, expected = tensors["input.latents"], tensors["output.images"]
    assert latents.dtype == torch.float64 and expected.dtype == torch.float64
    assert torch.isfinite(expected).all()
    with torch.no_grad():
        diff = (decode(latents, sd, cfg) - expected).abs().max().item()
    try:
        model = diffusers_model(cfg).double().eval()
    except ImportError:
        return diff, None
    current = {k: v for k, v in sd.items()}
    for new, old in zip(("to_q", "to_k", "to_v", "to_out.0"), ("query", "key", "value", "proj_attn")):
        for kind in ("weight", "bias"):
            old_name = f"decoder.mid_block.attentions.0.{old}.{kind}"
            if old_name in current:
                v = current.pop(old_name)
                current[f"decoder.mid_block.attentions.0.{new}.{kind}"] = v.reshape(v.shape[0], -1) if kind == "weight" else v
    missing, unexpected = model.load_state_dict(current, strict=False)
    assert not unexpected and all(k.startswith(("encoder.", "quant_conv.")) for k in missing), (missing, unexpected)
    with torch.no_grad():
        theirs = model.decode(latents / cfg.scaling_factor).sample
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
        diff, versus_diffusers = check_file(path)
        if diff != 0.0:
            raise SystemExit(f"{case.name}: recomputed output differs by {diff}")
        if versus_diffusers is not None and versus_diffusers > 1e-12:
            raise SystemExit(f"{case.name}: diffusers differs by {versus_diffusers:.2e} (relative)")
        total += path.stat().st_size
        diffusers_text = "not installed" if versus_diffusers is None else f"{versus_diffusers:.1e}"
        print(f"{case.name:10s} images {tuple(out.shape)} max|out| {out.abs().max().item():6.3f} "
              f"rms {out.pow(2).mean().sqrt().item():5.3f}  {path.stat().st_size / 1024:6.1f} KiB  seed {case.seed}  "
              f"vs diffusers {diffusers_text}")
    print(f"total {total / 1024:.1f} KiB in {args.out}")
    if total > SIZE_LIMIT:
        raise SystemExit(f"golden files total {total} bytes, over the {SIZE_LIMIT} limit")


if __name__ == "__main__":
    main()
