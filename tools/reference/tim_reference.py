"""Independent PyTorch reference of the class-conditional TiM network (SPEC.md sections 3 and 4).

Written from SPEC.md only, deliberately plain (explicit LayerNorm, softmax, rotary, SwiGLU) so that
it runs in float64 and every formula can be read off. make_golden.py uses it to write the golden
files the C++ conformance tests compare against. Run `python tim_reference.py --self-test`.

Shape legend: B batch, C channels, H, W latent size, p patch, h = H/p, w = W/p token grid,
N = h*w tokens, D hidden, nh heads, hd = D/nh head dim, L adaLN hidden, Hm MLP hidden.
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

NEW_CONDITIONS = ("t-r", "r", "t,r", "t,t-r", "r,t-r", "t,r,t-r")
FREQUENCY_EMBEDDING_SIZE = 256  # sinusoidal features of a scalar time: 128 cosines, 128 sines
NORM_EPS = 1e-6                 # norm1, norm2, final-layer norm (no affine)
QK_NORM_EPS = 1e-5              # q_norm, k_norm (affine, over hd)
ROPE_THETA = 10000.0


class BackboneChecks:
    """What the C2I and T2I configurations share: derived widths and the shape checks."""

    def __post_init__(self) -> None:
        if self.out_channels is None:
            self.out_channels = self.in_channels
        if self.new_condition not in NEW_CONDITIONS:
            raise ValueError(f"new_condition {self.new_condition!r} not in {NEW_CONDITIONS}")
        if self.hidden_size % self.num_heads:
            raise ValueError("hidden_size must be divisible by num_heads")
        if self.head_dim % 4:
            raise ValueError("head dim must be divisible by 4 (two rotary halves of pairs)")
        if self.hidden_size % 2:
            raise ValueError("hidden_size must be even (final adaLN hidden is D/2)")

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @property
    def mlp_hidden(self) -> int:
        return (int(self.hidden_size * self.mlp_ratio) * 2) // 3


@dataclass
class TiMConfig(BackboneChecks):
    in_channels: int            # C
    hidden_size: int            # D
    depth: int                  # number of blocks
    num_heads: int              # nh
    patch_size: int             # p
    num_classes: int            # labels 0..num_classes-1; num_classes is the null class
    adaln_hidden: int           # L, hidden width of the block adaLN SwiGLU
    mlp_ratio: float = 4.0
    qk_norm: bool = True
    interval_qkv: bool = True   # attn.qkv_d: Linear(D -> 3D), no bias
    separate_delta_embedder: bool = True  # delta_embedder present (else t_embedder is reused)
    new_condition: str = "t-r"
    out_channels: Optional[int] = None    # defaults to in_channels



# ----------------------------------------------------------------------------------------------
# Elementary ops, written out.

def silu(u: torch.Tensor) -> torch.Tensor:
    return u * torch.sigmoid(u)


def layer_norm(u: torch.Tensor, eps: float, weight: Optional[torch.Tensor] = None,
               bias: Optional[torch.Tensor] = None) -> torch.Tensor:
    """LayerNorm over the last dim with biased variance, as torch.nn.LayerNorm."""
    mean = u.mean(dim=-1, keepdim=True)
    var = ((u - mean) ** 2).mean(dim=-1, keepdim=True)
    out = (u - mean) / torch.sqrt(var + eps)
    if weight is not None:
        out = out * weight + bias
    return out


def softmax_last(u: torch.Tensor) -> torch.Tensor:
    e = torch.exp(u - u.max(dim=-1, keepdim=True).values)
    return e / e.sum(dim=-1, keepdim=True)


def modulate(u: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    # u: (B, N, D); shift, scale: (B, D)
    return u * (1 + scale.unsqueeze(1)) + shift.unsqueeze(1)


class Linear(nn.Module):
    """y = u W^T + b with weight [out, in] and bias [out] (bias optional)."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(out_features, in_features))
        self.bias = nn.Parameter(torch.empty(out_features)) if bias else None

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        out = torch.matmul(u, self.weight.t())
        if self.bias is not None:
            out = out + self.bias
        return out


class AffineNorm(nn.Module):
    """LayerNorm with affine weight/bias (used for q_norm, k_norm)."""

    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.empty(dim))
        self.bias = nn.Parameter(torch.empty(dim))

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        return layer_norm(u, self.eps, self.weight, self.bias)


class SwiGLU(nn.Module):
    """fc2(silu(fc1_g(u)) * fc1_x(u)); used for the MLP and for every adaLN modulation."""

    def __init__(self, in_features: int, hidden: int, out_features: int) -> None:
        super().__init__()
        self.fc1_g = Linear(in_features, hidden)
        self.fc1_x = Linear(in_features, hidden)
        self.fc2 = Linear(hidden, out_features)

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        return self.fc2(silu(self.fc1_g(u)) * self.fc1_x(u))


# ----------------------------------------------------------------------------------------------
# Embeddings.

def sinusoidal_features(s: torch.Tensor) -> torch.Tensor:
    """s: (B,) -> (B, 256) = [cos(s f_0..f_127), sin(s f_0..f_127)], f_i = exp(-ln(1e4) i / 128)."""
    half = FREQUENCY_EMBEDDING_SIZE // 2
    i = torch.arange(half, dtype=s.dtype, device=s.device)
    freqs = torch.exp(-math.log(10000.0) * i / half)
    args = s[:, None] * freqs[None, :]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


class TimestepEmbedder(nn.Module):
    """Scalar -> (B, D): sinusoidal features, mlp.0 Linear(256->D), SiLU, mlp.2 Linear(D->D)."""

    def __init__(self, hidden_size: int) -> None:
        super().__init__()
        # ModuleDict with keys "0" and "2" so the parameter names are mlp.0.* and mlp.2.*
        self.mlp = nn.ModuleDict({"0": Linear(FREQUENCY_EMBEDDING_SIZE, hidden_size),
                                  "2": Linear(hidden_size, hidden_size)})

    def forward(self, s: torch.Tensor) -> torch.Tensor:
        return self.mlp["2"](silu(self.mlp["0"](sinusoidal_features(s))))


class PatchEmbed(nn.Module):
    """x_embedder.proj: p x p stride-p convolution C -> D; tokens flattened row-major (row*w+col)."""

    def __init__(self, in_channels: int, hidden_size: int, patch: int) -> None:
        super().__init__()
        self.patch = patch
        self.proj = nn.Module()
        self.proj.weight = nn.Parameter(torch.empty(hidden_size, in_channels, patch, patch))
        self.proj.bias = nn.Parameter(torch.empty(hidden_size))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: (B, C, H, W) -> (B, D, h, w) -> (B, N, D)
        y = F.conv2d(x, self.proj.weight, self.proj.bias, stride=self.patch)
        return y.flatten(2).transpose(1, 2)


class LabelEmbedder(nn.Module):
    def __init__(self, num_classes: int, hidden_size: int) -> None:
        super().__init__()
        # row num_classes is the null class (classifier-free guidance)
        self.embedding_table = nn.Module()
        self.embedding_table.weight = nn.Parameter(torch.empty(num_classes + 1, hidden_size))

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        return self.embedding_table.weight[y]


# ----------------------------------------------------------------------------------------------
# 2-D rotary embedding (SPEC 4), with the released token indexing a(n) = n mod h, b(n) = n div h.

def rope_frequencies(half_dim: int, dtype=torch.float64) -> torch.Tensor:
    """f_k = 1 / 10000^(2k/dh), k = 0..dh/2-1, for one half of the head dim (dh = half_dim)."""
    k = torch.arange(half_dim // 2, dtype=dtype)
    return 1.0 / ROPE_THETA ** (2 * k / half_dim)


def rope_positions(h: int, w: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(a, b) per token n = row*w + col: a = n mod h, b = n div h (NOT (col,row) unless h == w)."""
    n = torch.arange(h * w)
    return n % h, torch.div(n, h, rounding_mode="floor")


def rope_tables(h: int, w: int, head_dim: int, dtype=torch.float64) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin: (N, hd). Element j of the first half has angle a(n) f_{j//2}, of the second b(n) f_{j//2}."""
    dh = head_dim // 2
    freqs = rope_frequencies(dh, dtype).repeat_interleave(2)  # (dh,) pairs share a frequency
    a, b = rope_positions(h, w)
    angles = torch.cat([a.to(dtype)[:, None] * freqs[None, :],
                        b.to(dtype)[:, None] * freqs[None, :]], dim=-1)  # (N, hd)
    return torch.cos(angles), torch.sin(angles)


def apply_rope(u: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """u: (B, nh, N, hd). Pairs (u0, u1) -> (u0 cos - u1 sin, u1 cos + u0 sin)."""
    cos, sin = rope_tables(h, w, u.shape[-1], u.dtype)
    pairs = u.unflatten(-1, (-1, 2))
    rotated_half = torch.stack([-pairs[..., 1], pairs[..., 0]], dim=-1).flatten(-2)  # (-u1, u0)
    return u * cos + rotated_half * sin


def apply_rope_naive(u: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Loop version of apply_rope with Python floats, straight from SPEC 4 (for self-checks)."""
    B, nh, N, hd = u.shape
    dh = hd // 2
    out = u.clone()
    for n in range(N):
        a, b = n % h, n // h
        for half, pos in ((0, a), (1, b)):
            for k in range(dh // 2):
                f = 1.0 / (10000.0 ** (2 * k / dh))
                c, s = math.cos(pos * f), math.sin(pos * f)
                j0 = half * dh + 2 * k
                u0, u1 = u[:, :, n, j0], u[:, :, n, j0 + 1]
                out[:, :, n, j0] = u0 * c - u1 * s
                out[:, :, n, j0 + 1] = u1 * c + u0 * s
    return out


# ----------------------------------------------------------------------------------------------
# Blocks.

class Attention(nn.Module):
    def __init__(self, cfg: TiMConfig) -> None:
        super().__init__()
        D = cfg.hidden_size
        self.num_heads = cfg.num_heads
        self.head_dim = cfg.head_dim
        self.qkv = Linear(D, 3 * D)
        self.qkv_d = Linear(D, 3 * D, bias=False) if cfg.interval_qkv else None
        self.q_norm = AffineNorm(cfg.head_dim, QK_NORM_EPS) if cfg.qk_norm else None
        self.k_norm = AffineNorm(cfg.head_dim, QK_NORM_EPS) if cfg.qk_norm else None
        self.proj = Linear(D, D)

    def forward(self, u: torch.Tensor, e_delta: torch.Tensor, h: int, w: int) -> torch.Tensor:
        # u: (B, N, D), e_delta: (B, D)
        B, N, D = u.shape
        qkv = self.qkv(u)                                     # (B, N, 3D)
        if self.qkv_d is not None:
            qkv = qkv + self.qkv_d(e_delta).unsqueeze(1)      # broadcast over tokens
        qkv = qkv.reshape(B, N, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]                      # (B, nh, N, hd)
        if self.q_norm is not None:
            q = self.q_norm(q)
            k = self.k_norm(k)
        q = apply_rope(q, h, w)
        k = apply_rope(k, h, w)
        scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(self.head_dim)  # (B, nh, N, N)
        out = torch.matmul(softmax_last(scores), v)           # (B, nh, N, hd)
        out = out.transpose(1, 2).reshape(B, N, D)            # heads concatenated
        return self.proj(out)


class TiMBlock(nn.Module):
    def __init__(self, cfg: TiMConfig) -> None:
        super().__init__()
        D = cfg.hidden_size
        self.adaLN_modulation = SwiGLU(D, cfg.adaln_hidden, 6 * D)
        self.attn = Attention(cfg)
        self.mlp = SwiGLU(D, cfg.mlp_hidden, D)

    def forward(self, x: torch.Tensor, c: torch.Tensor, e_delta: torch.Tensor, h: int, w: int) -> torch.Tensor:
        (shift_msa, scale_msa, gate_msa,
         shift_mlp, scale_mlp, gate_mlp) = self.adaLN_modulation(c).chunk(6, dim=-1)
        x = x + gate_msa.unsqueeze(1) * self.attn(
            modulate(layer_norm(x, NORM_EPS), shift_msa, scale_msa), e_delta, h, w)
        x = x + gate_mlp.unsqueeze(1) * self.mlp(
            modulate(layer_norm(x, NORM_EPS), shift_mlp, scale_mlp))
        return x


class FinalLayer(nn.Module):
    def __init__(self, cfg: TiMConfig) -> None:
        super().__init__()
        D = cfg.hidden_size
        self.adaLN_modulation = SwiGLU(D, D // 2, 2 * D)
        self.linear = Linear(D, cfg.patch_size * cfg.patch_size * cfg.out_channels)

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift, scale = self.adaLN_modulation(c).chunk(2, dim=-1)
        return self.linear(modulate(layer_norm(x, NORM_EPS), shift, scale))


def patchify(x: torch.Tensor, p: int) -> torch.Tensor:
    """Inverse of unpatchify: (B, C, H, W) -> (B, N, p*p*C) with values ordered (pi, pj, c)."""
    B, C, H, W = x.shape
    x = x.reshape(B, C, H // p, p, W // p, p)
    return torch.einsum("bcipjq->bijpqc", x).reshape(B, (H // p) * (W // p), p * p * C)


def unpatchify(tokens: torch.Tensor, h: int, w: int, p: int, channels: int) -> torch.Tensor:
    """(B, N, p*p*C) -> (B, C, h*p, w*p); token (row, col) value (pi, pj, c) -> pixel [c, row*p+pi, col*p+pj]."""
    B = tokens.shape[0]
    t = tokens.reshape(B, h, w, p, p, channels)
    return torch.einsum("bijpqc->bcipjq", t).reshape(B, channels, h * p, w * p)


# ----------------------------------------------------------------------------------------------
# The model.

class TiM(nn.Module):
    def __init__(self, cfg: TiMConfig) -> None:
        super().__init__()
        self.cfg = cfg
        D = cfg.hidden_size
        self.x_embedder = PatchEmbed(cfg.in_channels, D, cfg.patch_size)
        self.t_embedder = TimestepEmbedder(D)
        self.delta_embedder = TimestepEmbedder(D) if cfg.separate_delta_embedder else None
        self.y_embedder = LabelEmbedder(cfg.num_classes, D)
        self.blocks = nn.ModuleList([TiMBlock(cfg) for _ in range(cfg.depth)])
        self.final_layer = FinalLayer(cfg)

    def interval_embedding(self, t_in: torch.Tensor, r_in: torch.Tensor) -> torch.Tensor:
        """E_delta (SPEC 3, as released): the sum of the embeddings new_condition lists. With
        De = delta_embedder (t_embedder when there is none) and Et = t_embedder: 't' is Et(t),
        't-r' is De(t - r), and 'r' is De(r) when the condition has no 't-r' term, Et(r) otherwise
        (so 'r' -> De(r), 't,r' -> Et(t) + De(r), 'r,t-r' -> Et(r) + De(t - r))."""
        names = self.cfg.new_condition.split(",")
        delta_embedder = self.delta_embedder if self.delta_embedder is not None else self.t_embedder
        r_embedder = self.t_embedder if "t-r" in names else delta_embedder
        terms = {"t": lambda: self.t_embedder(t_in),
                 "r": lambda: r_embedder(r_in),
                 "t-r": lambda: delta_embedder(t_in - r_in)}
        e_delta = None
        for name in self.cfg.new_condition.split(","):
            e = terms[name]()
            e_delta = e if e_delta is None else e_delta + e
        return e_delta

    def forward(self, x: torch.Tensor, t_in: torch.Tensor, r_in: torch.Tensor,
                y: torch.Tensor) -> torch.Tensor:
        """x: (B, C, H, W); t_in, r_in: (B,) network time inputs (c_noise); y: (B,) int64 labels."""
        cfg = self.cfg
        p = cfg.patch_size
        B, C, H, W = x.shape
        if C != cfg.in_channels or H % p or W % p:
            raise ValueError(f"bad input shape {tuple(x.shape)}")
        h, w = H // p, W // p
        tokens = self.x_embedder(x)                           # (B, N, D)
        e_delta = self.interval_embedding(t_in, r_in)         # (B, D)
        c = self.t_embedder(t_in) + e_delta + self.y_embedder(y)  # (B, D)
        for block in self.blocks:
            tokens = block(tokens, c, e_delta, h, w)
        out = self.final_layer(tokens, c)                     # (B, N, p*p*out_C)
        return unpatchify(out, h, w, p, cfg.out_channels)


def config_from_state_dict(sd: dict, num_heads: int, new_condition: str = "t-r",
                           mlp_ratio: float = 4.0) -> TiMConfig:
    """Recover the configuration from tensor shapes (plus the hyper-parameters shapes hide)."""
    w = sd["x_embedder.proj.weight"]
    D, C, p, _ = w.shape
    depth = 0
    while f"blocks.{depth}.attn.qkv.weight" in sd:
        depth += 1
    cfg = TiMConfig(
        in_channels=C, hidden_size=D, depth=depth, num_heads=num_heads, patch_size=p,
        num_classes=sd["y_embedder.embedding_table.weight"].shape[0] - 1,
        adaln_hidden=sd["blocks.0.adaLN_modulation.fc1_g.weight"].shape[0],
        mlp_ratio=mlp_ratio,
        qk_norm="blocks.0.attn.q_norm.weight" in sd,
        interval_qkv="blocks.0.attn.qkv_d.weight" in sd,
        separate_delta_embedder="delta_embedder.mlp.0.weight" in sd,
        new_condition=new_condition,
        out_channels=sd["final_layer.linear.weight"].shape[0] // (p * p),
    )
    if cfg.mlp_hidden != sd["blocks.0.mlp.fc1_g.weight"].shape[0]:
        raise ValueError("mlp_ratio does not match blocks.0.mlp.fc1_g.weight")
    return cfg


def load_released_state_dict(model: TiM, sd: dict) -> None:
    """Load a state dict under the released names; projector.* (training only) is ignored,
    anything else missing or unexpected is an error."""
    model.load_state_dict({k: v for k, v in sd.items() if not k.startswith("projector.")}, strict=True)


# ----------------------------------------------------------------------------------------------
# Self-checks.

def _close(name: str, a: torch.Tensor, b: torch.Tensor, tol: float = 1e-12) -> None:
    err = (a - b).abs().max().item()
    status = "ok" if err <= tol else "FAIL"
    print(f"  {status:4s} {name}: max |diff| = {err:.3e}")
    if err > tol:
        raise AssertionError(f"{name}: {err} > {tol}")


def _random_init(model: nn.Module, gen: torch.Generator) -> None:
    with torch.no_grad():
        for _, prm in model.named_parameters():
            fan_in = prm.shape[1] if prm.dim() >= 2 else 1
            for d in prm.shape[2:]:
                fan_in *= d
            prm.copy_(torch.randn(prm.shape, generator=gen, dtype=prm.dtype) / math.sqrt(fan_in))


def self_test() -> None:
    torch.set_default_dtype(torch.float64)
    gen = torch.Generator().manual_seed(1234)
    rnd = lambda *s: torch.randn(*s, generator=gen)

    print("patch embedding conv == manual unfold + matmul")
    for (B, C, H, W, D, p) in ((2, 4, 8, 12, 32, 2), (1, 1, 16, 16, 16, 4), (2, 3, 4, 6, 8, 1)):
        emb = PatchEmbed(C, D, p)
        _random_init(emb, gen)
        x = rnd(B, C, H, W)
        h, w = H // p, W // p
        # patch (row, col) flattened (c, pi, pj), as the convolution weight [D, C, p, p] is
        patches = x.reshape(B, C, h, p, w, p).permute(0, 2, 4, 1, 3, 5).reshape(B, h * w, C * p * p)
        manual = patches @ emb.proj.weight.reshape(D, -1).t() + emb.proj.bias
        _close(f"B{B} C{C} {H}x{W} p{p}", emb(x), manual)
        # one explicit token, element by element
        row, col, d = h - 1, w // 2, D - 1
        val = emb.proj.bias[d] + sum(emb.proj.weight[d, c, i, j] * x[0, c, row * p + i, col * p + j]
                                     for c in range(C) for i in range(p) for j in range(p))
        _close(f"  token ({row},{col}) channel {d} by hand", emb(x)[0, row * w + col, d], val)

    print("rotary: vectorised == naive loops; norms preserved; square grid a = col, b = row")
    for (h, w, hd) in ((4, 4, 16), (4, 6, 16), (6, 4, 8), (3, 5, 12)):
        u = rnd(2, 3, h * w, hd)
        fast, naive = apply_rope(u, h, w), apply_rope_naive(u, h, w)
        _close(f"h{h} w{w} hd{hd} vectorised vs naive", fast, naive)
        _close(f"h{h} w{w} hd{hd} pair norms", fast.unflatten(-1, (-1, 2)).norm(dim=-1),
               u.unflatten(-1, (-1, 2)).norm(dim=-1))
        _close(f"h{h} w{w} hd{hd} token 0 unchanged", fast[:, :, 0], u[:, :, 0], 0.0)
    a, b = rope_positions(4, 4)
    n = torch.arange(16)
    assert torch.equal(a, n % 4) and torch.equal(b, n // 4), "square grid positions"
    a, b = rope_positions(4, 6)  # h=4 rows, w=6 cols: token n=5 is (row 0, col 5) but gets (1, 1)
    assert (a[5].item(), b[5].item()) == (1, 1), "non-square released indexing"
    print("  ok   released indexing: 4x6 grid token 5 (row 0, col 5) -> (a, b) = (1, 1)")
    # rotary relative property on a square grid: <R(m)q, R(n)k> depends only on position offsets
    q, k = rnd(1, 1, 1, 16), rnd(1, 1, 1, 16)
    def rot_at(u, n, h, w):
        full = torch.zeros(1, 1, h * w, u.shape[-1]); full[:, :, n] = u[:, :, 0]
        return apply_rope(full, h, w)[:, :, n]
    d1 = (rot_at(q, 5, 4, 4) * rot_at(k, 0, 4, 4)).sum()   # (a,b): (1,1) vs (0,0)
    d2 = (rot_at(q, 15, 4, 4) * rot_at(k, 10, 4, 4)).sum() # (3,3) vs (2,2)
    _close("relative position property", d1, d2)

    print("unpatchify(patchify(x)) == x, and pixel order (pi, pj, c)")
    for (B, C, H, W, p) in ((2, 4, 8, 12, 2), (1, 1, 16, 16, 4), (2, 3, 4, 6, 1)):
        x = rnd(B, C, H, W)
        _close(f"B{B} C{C} {H}x{W} p{p}", unpatchify(patchify(x, p), H // p, W // p, p, C), x, 0.0)
    h, w, p, C = 2, 3, 2, 3
    tok = torch.arange(h * w * p * p * C, dtype=torch.float64).reshape(1, h * w, p * p * C)
    img = unpatchify(tok, h, w, p, C)
    for (c, row, col, pi, pj) in ((2, 1, 2, 1, 0), (0, 0, 1, 0, 1), (1, 1, 0, 1, 1)):
        assert img[0, c, row * p + pi, col * p + pj] == tok[0, row * w + col, (pi * p + pj) * C + c]
    print("  ok   explicit pixel positions")

    print("elementary ops vs torch built-ins")
    u = rnd(3, 5, 24)
    _close("layer_norm (no affine, eps 1e-6)", layer_norm(u, 1e-6), F.layer_norm(u, (24,), eps=1e-6))
    g, bb = rnd(24), rnd(24)
    _close("layer_norm (affine, eps 1e-5)", layer_norm(u, 1e-5, g, bb), F.layer_norm(u, (24,), g, bb, 1e-5))
    _close("softmax", softmax_last(u), torch.softmax(u, -1))
    _close("silu", silu(u), F.silu(u))
    s = torch.tensor([0.0, 0.3, 1.0])
    feat = sinusoidal_features(s)
    _close("sinusoid at s=0 is [1]*128 + [0]*128", feat[0], torch.cat([torch.ones(128), torch.zeros(128)]), 0.0)
    _close("sinusoid element 1 (cos s f_1)", feat[1, 1], torch.cos(torch.tensor(0.3 * math.exp(-math.log(1e4) / 128))))
    _close("sinusoid element 128+127 (sin s f_127)", feat[2, 255], torch.sin(torch.tensor(math.exp(-math.log(1e4) * 127 / 128))))

    print("attention: written-out softmax attention == torch SDPA (cross-check only)")
    cfg = TiMConfig(in_channels=4, hidden_size=32, depth=1, num_heads=2, patch_size=2, num_classes=3,
                    adaln_hidden=8)
    attn = Attention(cfg)
    _random_init(attn, gen)
    u, e = rnd(2, 24, 32), rnd(2, 32)
    ref = attn(u, e, 4, 6)
    qkv = (attn.qkv(u) + attn.qkv_d(e)[:, None]).reshape(2, 24, 3, 2, 16).permute(2, 0, 3, 1, 4)
    q, k, v = apply_rope(attn.q_norm(qkv[0]), 4, 6), apply_rope(attn.k_norm(qkv[1]), 4, 6), qkv[2]
    sdpa = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(2, 24, 32)
    _close("attention", ref, attn.proj(sdpa))

    print("whole model: batch independence, new_condition sums, load/save round trip")
    for nc in NEW_CONDITIONS:
        cfg = TiMConfig(in_channels=4, hidden_size=32, depth=2, num_heads=2, patch_size=2, num_classes=5,
                        adaln_hidden=16, new_condition=nc)
        model = TiM(cfg)
        _random_init(model, gen)
        x, t = rnd(3, 4, 8, 12), torch.tensor([0.9, 0.5, 1.0])
        r, y = torch.tensor([0.2, 0.5, 0.0]), torch.tensor([0, 4, 5])
        out = model(x, t, r, y)
        assert out.shape == (3, 4, 8, 12) and torch.isfinite(out).all()
        single = torch.cat([model(x[i:i + 1], t[i:i + 1], r[i:i + 1], y[i:i + 1]) for i in range(3)])
        _close(f"{nc:8s} batch of 3 == three batches of 1", out, single)
        # SPEC 3 written out per value (Et = t_embedder, De = delta_embedder), independently of
        # the rule interval_embedding applies.
        te, de = model.t_embedder, model.delta_embedder
        expect = {"t-r": de(t - r), "r": de(r), "t,r": te(t) + de(r), "t,t-r": te(t) + de(t - r),
                  "r,t-r": te(r) + de(t - r), "t,r,t-r": te(t) + te(r) + de(t - r)}[nc]
        _close(f"{nc:8s} E_delta", model.interval_embedding(t, r), expect, 0.0)
        # Without a delta_embedder every term goes through t_embedder.
        shared = TiM(TiMConfig(**{**cfg.__dict__, "separate_delta_embedder": False}))
        shared.load_state_dict({k: v for k, v in model.state_dict().items()
                                if not k.startswith("delta_embedder.")}, strict=True)
        te = shared.t_embedder
        expect = {"t-r": te(t - r), "r": te(r), "t,r": te(t) + te(r), "t,t-r": te(t) + te(t - r),
                  "r,t-r": te(r) + te(t - r), "t,r,t-r": te(t) + te(r) + te(t - r)}[nc]
        _close(f"{nc:8s} E_delta, no delta_embedder", shared.interval_embedding(t, r), expect, 0.0)
    # The check above can tell the embedders apart: Et(r) and De(r) differ by O(1).
    gap = (model.t_embedder(r) - model.delta_embedder(r)).abs().max().item()
    assert gap > 0.1, f"t_embedder and delta_embedder too close to tell apart ({gap})"
    print(f"  ok   Et(r) and De(r) differ by {gap:.2f}")
    clone = TiM(cfg)
    load_released_state_dict(clone, {**model.state_dict(), "projector.0.weight": rnd(8, 32)})
    _close("state dict round trip (projector ignored)", clone(x, t, r, y), model(x, t, r, y), 0.0)
    cfg2 = config_from_state_dict(model.state_dict(), 2, cfg.new_condition)
    assert cfg2 == cfg, (cfg2, cfg)
    print("  ok   config_from_state_dict")
    print("self-test passed")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--self-test", action="store_true", help="run the self-checks")
    args = parser.parse_args()
    if args.self_test:
        self_test()
    else:
        parser.print_help()
