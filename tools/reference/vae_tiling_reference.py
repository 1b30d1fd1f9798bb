"""Float64 reference of tiled latent decoding (tim/vae/tiling.hpp, docs/vae.md "Tiled decoding").

The latents are cut into overlapping tiles, each tile is decoded alone (sd_vae_reference.decode,
or any callable), and every output pixel is the weighted average of the image tiles covering it.
This file writes the average the direct way: it accumulates the 2-D raw weights of every tile
into a weight-sum image and divides by it at the end (tim normalises each axis instead; the two
agree because the raw 2-D weight is a product of per-axis weights).

Tiles along an axis of n latent pixels, tile t, overlap o: starts 0, t-o, 2(t-o), ... while a
tile ends before the border, the last tile aligned to the border (start n-t); every tile has
length min(t, n). Raw weight of tile i at image pixel X of the axis (U image pixels per latent
pixel, tile i covering [A_i, B_i) = [U s_i, U (s_i + len))):
    min(1, (X + 1/2 - A_i) / (B_{i-1} - A_i), (B_i - X - 1/2) / (B_i - A_{i+1}))
where a term is left out without that neighbour or when the overlap with it is empty.
`python vae_tiling_reference.py --self-test` checks the properties; see tools/reference/README.md.

Shape legend: B batch, L latent channels, h, w latent size, U upscale, C image channels.
"""

from __future__ import annotations

import argparse
from typing import Callable

import torch


def tile_starts(n: int, tile: int, overlap: int) -> list[int]:
    if not (n >= 1 and tile >= 1 and 0 <= overlap < tile):
        raise ValueError(f"need n >= 1, tile >= 1, 0 <= overlap < tile; got n {n}, tile {tile}, overlap {overlap}")
    starts = [0]
    while starts[-1] + tile < n:
        starts.append(min(starts[-1] + tile - overlap, n - tile))
    return starts


def raw_axis_weights(starts: list[int], length: int, upscale: int) -> list[torch.Tensor]:
    """Per tile, its raw (unnormalised) weight at each of its U * length image pixels."""
    out = []
    centres = torch.arange(upscale * length, dtype=torch.float64) + 0.5   # X + 1/2 - A_i
    for i, s in enumerate(starts):
        w = torch.ones(upscale * length, dtype=torch.float64)
        if i > 0:
            width = upscale * (starts[i - 1] + length - s)                 # B_{i-1} - A_i
            if width > 0:
                w = torch.minimum(w, centres / width)
        if i + 1 < len(starts):
            width = upscale * (s + length - starts[i + 1])                 # B_i - A_{i+1}
            if width > 0:
                w = torch.minimum(w, (upscale * length - centres) / width)
        out.append(w)
    return out


def decode_tiled(z: torch.Tensor, decode_fn: Callable[[torch.Tensor], torch.Tensor], upscale: int,
                 tile: int, overlap: int) -> torch.Tensor:
    """z (B, L, h, w) -> images (B, C, U h, U w): every tile decoded alone by decode_fn, the
    image tiles averaged with the raw weights wy(Y) wx(X) at every pixel."""
    B, _, h, w = z.shape
    th, tw = min(tile, h), min(tile, w)
    rows, cols = tile_starts(h, tile, overlap), tile_starts(w, tile, overlap)
    wy_all, wx_all = raw_axis_weights(rows, th, upscale), raw_axis_weights(cols, tw, upscale)
    total = torch.zeros(upscale * h, upscale * w, dtype=torch.float64)
    out = None
    for r, y0 in enumerate(rows):
        for c, x0 in enumerate(cols):
            image = decode_fn(z[:, :, y0:y0 + th, x0:x0 + tw])
            if out is None:
                out = torch.zeros(B, image.shape[1], upscale * h, upscale * w, dtype=torch.float64)
            weight = wy_all[r][:, None] * wx_all[c][None, :]
            Y, X = slice(upscale * y0, upscale * (y0 + th)), slice(upscale * x0, upscale * (x0 + tw))
            out[:, :, Y, X] += weight * image
            total[Y, X] += weight
    return out / total


def self_test() -> None:
    torch.set_default_dtype(torch.float64)
    assert tile_starts(9, 4, 2) == [0, 2, 4, 5]
    assert tile_starts(13, 4, 2) == [0, 2, 4, 6, 8, 9]
    assert tile_starts(8, 4, 0) == [0, 4]
    assert tile_starts(3, 4, 2) == [0]
    # Raw weights of equal overlaps sum to 1 already (before the division).
    weights = raw_axis_weights([0, 2, 4], 4, 3)     # n 8, t 4, o 2, U 3
    total = torch.zeros(24)
    for s, wt in zip([0, 2, 4], weights):
        total[3 * s:3 * s + 12] += wt
    assert torch.allclose(total, torch.ones(24), rtol=0, atol=1e-15), total
    # A constant decoder gives the constant; a decoder that paints global positions (tile offsets
    # are recovered from the latents, which hold the global coordinates) gives the position map.
    U = 4
    h, w = 9, 13
    grid = torch.stack(torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64),
                                      indexing="ij"))[None]                      # (1, 2, h, w): y, x

    def position_decoder(t: torch.Tensor) -> torch.Tensor:
        y0, x0 = t[0, 0, 0, 0].item(), t[0, 1, 0, 0].item()
        H, W = U * t.shape[2], U * t.shape[3]
        Y = torch.arange(H, dtype=torch.float64)[:, None] + U * y0
        X = torch.arange(W, dtype=torch.float64)[None, :] + U * x0
        return torch.stack([Y.expand(H, W), X.expand(H, W), torch.full((H, W), 0.75)])[None]

    for tile, overlap in [(4, 2), (5, 1), (4, 0), (3, 2), (20, 5)]:
        out = decode_tiled(grid, position_decoder, U, tile, overlap)
        Y = torch.arange(U * h, dtype=torch.float64)[:, None].expand(U * h, U * w)
        X = torch.arange(U * w, dtype=torch.float64)[None, :].expand(U * h, U * w)
        assert torch.allclose(out[0, 0], Y, rtol=0, atol=1e-12) and torch.allclose(out[0, 1], X, rtol=0, atol=1e-12)
        assert torch.allclose(out[0, 2], torch.full_like(Y, 0.75), rtol=0, atol=1e-15)
    # One tile covering everything is the plain decode.
    z = torch.randn(2, 3, 5, 6)
    smooth = lambda t: torch.nn.functional.interpolate(t, scale_factor=2, mode="bilinear")  # noqa: E731
    assert torch.equal(decode_tiled(z, smooth, 2, 6, 2), smooth(z))
    print("vae_tiling_reference self-test: ok")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--self-test", action="store_true")
    args = parser.parse_args()
    if args.self_test:
        self_test()
    else:
        parser.print_help()


if __name__ == "__main__":
    main()
