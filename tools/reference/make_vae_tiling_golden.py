"""Write the float64 golden files for the C++ test of tiled decoding (tests/test_vae_tiling.cpp).

Each case reuses the decoder weights of a tests/data/vae_golden/ case (not copied: the file names
it in `weights_case`, with its SHA-256), draws seeded latents larger than a tile, decodes them
tiled with our float64 reference (vae_tiling_reference.decode_tiled over sd_vae_reference.decode)
and writes tests/data/vae_tiling_golden/<case>.safetensors holding only `input.latents` and
`output.images`. It also decodes the latents untiled and records how far the tiled output is
from it (GroupNorm statistics are per tile). Then every file is read back and recomputed
(bit-identical).
Usage: /work/venv/bin/python tools/reference/make_vae_tiling_golden.py [--check]
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_vae_golden import config_from_metadata, write_safetensors  # noqa: E402
from sd_vae_reference import decode  # noqa: E402
from vae_tiling_reference import decode_tiled, tile_starts  # noqa: E402

GENERATOR = "tools/reference/make_vae_tiling_golden.py"
REPO_ROOT = Path(__file__).resolve().parents[2]
WEIGHTS_DIR = REPO_ROOT / "tests" / "data" / "vae_golden"
OUT_DIR = REPO_ROOT / "tests" / "data" / "vae_tiling_golden"
SIZE_LIMIT = 300 * 1024  # all files together


@dataclass
class Case:
    name: str
    weights_case: str          # tests/data/vae_golden/<weights_case>.safetensors
    seed: int                  # torch.manual_seed(seed), then input.latents ~ N(0, 1)
    latent: tuple[int, int]    # (h, w)
    batch: int
    tile: int
    overlap: int
    note: str = ""


CASES = [
    Case("layout_9x13", "nonsquare", 3101, (9, 13), 1, 4, 2,
         note="8x decoder; rows 0,2,4,5 and columns 0,2,4,6,8,9: border-aligned last tiles, three tiles meet"),
    Case("batch2_7x10", "old_names", 3102, (7, 10), 2, 3, 1, note="2x decoder, batch 2, rows 0,2,4 columns 0,2,4,6,7"),
    Case("no_overlap_5x8", "old_names", 3103, (5, 8), 1, 4, 0,
         note="overlap 0: rows 0,1 (border-aligned, overlap 3), columns 0,4 (no overlap, no ramp)"),
]


def weights(case: Case) -> tuple[dict[str, torch.Tensor], object, str]:
    path = WEIGHTS_DIR / f"{case.weights_case}.safetensors"
    tensors = {k: v.clone() for k, v in load_file(str(path)).items()}  # fresh, aligned memory
    sd = {k: v.double() for k, v in tensors.items() if not k.startswith(("input.", "output."))}
    return sd, config_from_metadata(path, tensors), hashlib.sha256(path.read_bytes()).hexdigest()


def tiled_and_untiled(case: Case, latents: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    sd, cfg, _ = weights(case)
    upscale = 2 ** (len(cfg.block_out_channels) - 1)
    with torch.no_grad():
        tiled = decode_tiled(latents, lambda z: decode(z, sd, cfg), upscale, case.tile, case.overlap)
        return tiled, decode(latents, sd, cfg)


def build(case: Case) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    _, _, digest = weights(case)
    torch.manual_seed(case.seed)
    h, w = case.latent
    latents = torch.randn(case.batch, 4, h, w)
    tiled, untiled = tiled_and_untiled(case, latents)
    difference = ((tiled - untiled).abs().max() / untiled.abs().max()).item()
    meta = {"case": case.name, "seed": str(case.seed), "generator": GENERATOR, "weights_case": case.weights_case,
            "weights_sha256": digest, "tile": str(case.tile), "overlap": str(case.overlap),
            "untiled_relative_difference": f"{difference:.3e}",
            "rows": ",".join(map(str, tile_starts(h, case.tile, case.overlap))),
            "columns": ",".join(map(str, tile_starts(w, case.tile, case.overlap)))}
    return {"input.latents": latents, "output.images": tiled}, meta


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only re-verify the existing files")
    args = parser.parse_args()
    torch.set_default_dtype(torch.float64)
    torch.set_num_threads(1)  # oneDNN float64 sums depend on the thread split
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    total = 0
    for case in CASES:
        path = OUT_DIR / f"{case.name}.safetensors"
        if not args.check:
            tensors, meta = build(case)
            write_safetensors(path, tensors, meta)
        with safe_open(str(path), "pt") as f:
            meta = f.metadata()
        stored = {k: v.clone() for k, v in load_file(str(path)).items()}
        if meta["weights_sha256"] != weights(case)[2]:
            raise SystemExit(f"{case.name}: {case.weights_case}.safetensors changed since this file was written")
        tiled, untiled = tiled_and_untiled(case, stored["input.latents"])
        diff = (tiled - stored["output.images"]).abs().max().item()
        if diff != 0.0:
            raise SystemExit(f"{case.name}: recomputed output differs by {diff}")
        out = stored["output.images"]
        relative = ((out - untiled).abs().max() / untiled.abs().max()).item()
        rms = ((out - untiled).pow(2).mean().sqrt() / untiled.pow(2).mean().sqrt()).item()
        total += path.stat().st_size
        print(f"{case.name:15s} weights {case.weights_case:9s} latents {tuple(stored['input.latents'].shape)} "
              f"images {tuple(out.shape)} tile {case.tile} overlap {case.overlap} rows {meta['rows']} "
              f"columns {meta['columns']} max|out| {out.abs().max().item():.3f}  tiled vs untiled: max "
              f"{relative:.2e} rms {rms:.2e} (relative)  {path.stat().st_size / 1024:.1f} KiB  seed {case.seed}")
    print(f"total {total / 1024:.1f} KiB in {OUT_DIR}")
    if total > SIZE_LIMIT:
        raise SystemExit(f"golden files total {total} bytes, over the {SIZE_LIMIT} limit")


if __name__ == "__main__":
    main()
