"""Independent PyTorch reference of the text-conditioned TiM network (SPEC.md section 5).

The T2I network is the C2I network of tim_reference.py with three changes: the label embedder
becomes a caption embedder applied to per-token caption features, the condition is
c = E_t + E_delta only, and every block gains a cross-attention from the image tokens to the
embedded caption between its self-attention and its MLP (nine modulation chunks instead of
six). Everything shared (patch embedding, time embedders, rotary, self-attention, SwiGLU,
final layer, unpatchify) is imported from tim_reference.py, so the two references cannot
drift apart. Interpretation choices are listed in README.md ("T2I") and docs/t2i.md.
Run `python tim_t2i_reference.py --self-test`.

Shape legend: B batch, C channels, H, W latent size, p patch, h = H/p, w = W/p token grid,
N = h*w image tokens, M caption tokens, Dc caption feature dim (cap_dim), D hidden, nh heads,
hd = D/nh head dim, L adaLN hidden, Hm MLP hidden.
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from tim_reference import (NEW_CONDITIONS, BackboneChecks, NORM_EPS, QK_NORM_EPS, AffineNorm, Attention, FinalLayer, Linear,
                           PatchEmbed, SwiGLU, TiM, TimestepEmbedder, _close, _random_init, apply_rope,
                           apply_rope_naive, layer_norm, modulate, softmax_last, unpatchify)

CAPTION_NORM_EPS = 1e-5   # y_embedder.norm: nn.LayerNorm(cap_dim) defaults (affine, eps 1e-5)
CAPTION_MLP_RATIO = 4     # y_embedder.mlp: SwiGLU cap_dim -> 4D -> D


@dataclass
class T2IConfig(BackboneChecks):
    in_channels: int            # C
    hidden_size: int            # D
    depth: int                  # number of blocks
    num_heads: int              # nh
    patch_size: int             # p
    caption_dim: int            # Dc, width of the text encoder's hidden state (1152 for Gemma-3-1B)
    adaln_hidden: int           # L, hidden width of the block adaLN SwiGLU
    mlp_ratio: float = 4.0
    qk_norm: bool = True        # q_norm/k_norm in both attn and cross_attn (one flag, as released)
    interval_qkv: bool = True   # attn.qkv_d (self-attention only)
    separate_delta_embedder: bool = True
    new_condition: str = "t-r"
    out_channels: Optional[int] = None


    @property
    def caption_hidden(self) -> int:
        return CAPTION_MLP_RATIO * self.hidden_size


class CaptionEmbedder(nn.Module):
    """y_embedder: norm (LayerNorm over Dc, affine, eps 1e-5), then mlp SwiGLU Dc -> 4D -> D,
    applied to every caption token independently: (B, M, Dc) -> (B, M, D)."""

    def __init__(self, cfg: T2IConfig) -> None:
        super().__init__()
        self.norm = AffineNorm(cfg.caption_dim, CAPTION_NORM_EPS)
        self.mlp = SwiGLU(cfg.caption_dim, cfg.caption_hidden, cfg.hidden_size)

    def forward(self, cap_feats: torch.Tensor) -> torch.Tensor:
        return self.mlp(self.norm(cap_feats))


class CrossAttention(nn.Module):
    """Image tokens attend to caption tokens. q from the image (Linear D -> D), k and v from the
    caption (Linear D -> 2D, split [2, nh, hd]); q_norm/k_norm over hd; the image grid's 2-D
    rotary on q ONLY (caption tokens have no grid position); no mask; proj Linear D -> D."""

    def __init__(self, cfg: T2IConfig) -> None:
        super().__init__()
        D = cfg.hidden_size
        self.num_heads = cfg.num_heads
        self.head_dim = cfg.head_dim
        self.q = Linear(D, D)
        self.kv = Linear(D, 2 * D)
        self.q_norm = AffineNorm(cfg.head_dim, QK_NORM_EPS) if cfg.qk_norm else None
        self.k_norm = AffineNorm(cfg.head_dim, QK_NORM_EPS) if cfg.qk_norm else None
        self.proj = Linear(D, D)

    def forward(self, u: torch.Tensor, y: torch.Tensor, h: int, w: int) -> torch.Tensor:
        # u: (B, N, D) modulated image tokens; y: (B, M, D) normalised caption embedding
        B, N, D = u.shape
        M = y.shape[1]
        q = self.q(u).reshape(B, N, self.num_heads, self.head_dim).transpose(1, 2)   # (B, nh, N, hd)
        kv = self.kv(y).reshape(B, M, 2, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        k, v = kv[0], kv[1]                                                          # (B, nh, M, hd)
        if self.q_norm is not None:
            q = self.q_norm(q)
            k = self.k_norm(k)
        q = apply_rope(q, h, w)
        scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(self.head_dim)    # (B, nh, N, M)
        out = torch.matmul(softmax_last(scores), v)                                  # (B, nh, N, hd)
        return self.proj(out.transpose(1, 2).reshape(B, N, D))


class T2IBlock(nn.Module):
    def __init__(self, cfg: T2IConfig) -> None:
        super().__init__()
        D = cfg.hidden_size
        self.adaLN_modulation = SwiGLU(D, cfg.adaln_hidden, 9 * D)
        self.attn = Attention(cfg)           # same self-attention as C2I (qkv, qkv_d, q/k norm, rotary)
        self.cross_attn = CrossAttention(cfg)
        self.mlp = SwiGLU(D, cfg.mlp_hidden, D)

    def forward(self, x: torch.Tensor, y: torch.Tensor, c: torch.Tensor, e_delta: torch.Tensor,
                h: int, w: int) -> torch.Tensor:
        # norm1, norm2_i, norm2_t, norm3: LayerNorm over D, no affine, eps 1e-6 (no parameters)
        (shift_msa, scale_msa, gate_msa,
         shift_msc, scale_msc, gate_msc,
         shift_mlp, scale_mlp, gate_mlp) = self.adaLN_modulation(c).chunk(9, dim=-1)
        x = x + gate_msa.unsqueeze(1) * self.attn(
            modulate(layer_norm(x, NORM_EPS), shift_msa, scale_msa), e_delta, h, w)
        x = x + gate_msc.unsqueeze(1) * self.cross_attn(
            modulate(layer_norm(x, NORM_EPS), shift_msc, scale_msc), layer_norm(y, NORM_EPS), h, w)
        x = x + gate_mlp.unsqueeze(1) * self.mlp(
            modulate(layer_norm(x, NORM_EPS), shift_mlp, scale_mlp))
        return x


class TiMT2I(nn.Module):
    def __init__(self, cfg: T2IConfig) -> None:
        super().__init__()
        self.cfg = cfg
        D = cfg.hidden_size
        self.x_embedder = PatchEmbed(cfg.in_channels, D, cfg.patch_size)
        self.t_embedder = TimestepEmbedder(D)
        self.delta_embedder = TimestepEmbedder(D) if cfg.separate_delta_embedder else None
        self.y_embedder = CaptionEmbedder(cfg)
        self.blocks = nn.ModuleList([T2IBlock(cfg) for _ in range(cfg.depth)])
        self.final_layer = FinalLayer(cfg)

    # E_delta exactly as the C2I reference computes it (same new_condition rules).
    interval_embedding = TiM.interval_embedding

    def forward(self, x: torch.Tensor, t_in: torch.Tensor, r_in: torch.Tensor,
                cap_feats: torch.Tensor) -> torch.Tensor:
        """x: (B, C, H, W); t_in, r_in: (B,) network time inputs; cap_feats: (B, M, Dc)."""
        cfg = self.cfg
        p = cfg.patch_size
        B, C, H, W = x.shape
        if C != cfg.in_channels or H % p or W % p:
            raise ValueError(f"bad input shape {tuple(x.shape)}")
        if cap_feats.dim() != 3 or cap_feats.shape[0] != B or cap_feats.shape[2] != cfg.caption_dim:
            raise ValueError(f"bad caption features shape {tuple(cap_feats.shape)}")
        h, w = H // p, W // p
        tokens = self.x_embedder(x)                           # (B, N, D)
        e_delta = self.interval_embedding(t_in, r_in)         # (B, D)
        c = self.t_embedder(t_in) + e_delta                   # (B, D): no caption term
        y = self.y_embedder(cap_feats)                        # (B, M, D)
        for block in self.blocks:
            tokens = block(tokens, y, c, e_delta, h, w)
        out = self.final_layer(tokens, c)                     # (B, N, p*p*out_C)
        return unpatchify(out, h, w, p, cfg.out_channels)


def t2i_config_from_state_dict(sd: dict, num_heads: int, new_condition: str = "t-r",
                               mlp_ratio: float = 4.0) -> T2IConfig:
    """Recover the configuration from tensor shapes (plus the hyper-parameters shapes hide)."""
    D, C, p, _ = sd["x_embedder.proj.weight"].shape
    depth = 0
    while f"blocks.{depth}.attn.qkv.weight" in sd:
        depth += 1
    cfg = T2IConfig(
        in_channels=C, hidden_size=D, depth=depth, num_heads=num_heads, patch_size=p,
        caption_dim=sd["y_embedder.norm.weight"].shape[0],
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
    if cfg.caption_hidden != sd["y_embedder.mlp.fc1_g.weight"].shape[0]:
        raise ValueError("y_embedder.mlp hidden width is not 4 D")
    return cfg


def load_released_state_dict(model: TiMT2I, sd: dict) -> None:
    """Strict load under the released names; projector.* (training only) is ignored."""
    model.load_state_dict({k: v for k, v in sd.items() if not k.startswith("projector.")}, strict=True)


# ----------------------------------------------------------------------------------------------
# Self-checks.

def self_test() -> None:
    torch.set_default_dtype(torch.float64)
    gen = torch.Generator().manual_seed(4321)
    rnd = lambda *s: torch.randn(*s, generator=gen)

    cfg = T2IConfig(in_channels=4, hidden_size=32, depth=2, num_heads=2, patch_size=2, caption_dim=24,
                    adaln_hidden=16)

    print("cross-attention: written-out == torch SDPA; rotary on q only; naive loops")
    xattn = CrossAttention(cfg)
    _random_init(xattn, gen)
    h, w = 4, 6
    u, y = rnd(2, h * w, 32), rnd(2, 5, 32)
    ref = xattn(u, y, h, w)
    q = xattn.q(u).reshape(2, h * w, 2, 16).transpose(1, 2)
    kv = xattn.kv(y).reshape(2, 5, 2, 2, 16).permute(2, 0, 3, 1, 4)
    q = apply_rope_naive(xattn.q_norm(q), h, w)
    k = xattn.k_norm(kv[0])
    sdpa = F.scaled_dot_product_attention(q, k, kv[1]).transpose(1, 2).reshape(2, h * w, 32)
    _close("cross-attention vs SDPA (naive rotary on q, none on k)", ref, xattn.proj(sdpa))
    # Permuting the caption tokens must not change the result: keys carry no position.
    perm = torch.tensor([3, 0, 4, 1, 2])
    _close("caption token order does not matter", xattn(u, y[:, perm], h, w), ref)
    # A caption of one token: every query gets exactly that token's value.
    one = y[:, :1]
    v1 = xattn.kv(one)[..., 32:]                                        # (B, 1, D)
    _close("one caption token: output = proj(v)", xattn(u, one, h, w), xattn.proj(v1.expand(2, h * w, 32)))

    print("caption embedder == torch LayerNorm + SwiGLU")
    emb = CaptionEmbedder(cfg)
    _random_init(emb, gen)
    with torch.no_grad():
        emb.norm.weight.add_(1.0)
    feats = rnd(2, 5, 24)
    normed = F.layer_norm(feats, (24,), emb.norm.weight, emb.norm.bias, 1e-5)
    m = emb.mlp
    expect = F.linear(F.silu(F.linear(normed, m.fc1_g.weight, m.fc1_g.bias)) * F.linear(normed, m.fc1_x.weight, m.fc1_x.bias),
                      m.fc2.weight, m.fc2.bias)
    _close("y_embedder", emb(feats), expect)

    print("whole model: batch independence, caption dependence, round trip")
    for nc in ("t-r", "t,r,t-r"):
        cfg = T2IConfig(in_channels=4, hidden_size=32, depth=2, num_heads=2, patch_size=2, caption_dim=24,
                        adaln_hidden=16, new_condition=nc)
        model = TiMT2I(cfg)
        _random_init(model, gen)
        x, t, r = rnd(3, 4, 8, 12), torch.tensor([0.9, 0.5, 1.0]), torch.tensor([0.2, 0.5, 0.0])
        cap = rnd(3, 5, 24)
        out = model(x, t, r, cap)
        assert out.shape == (3, 4, 8, 12) and torch.isfinite(out).all()
        single = torch.cat([model(x[i:i + 1], t[i:i + 1], r[i:i + 1], cap[i:i + 1]) for i in range(3)])
        _close(f"{nc:8s} batch of 3 == three batches of 1", out, single)
        other = model(x, t, r, cap.flip(1))   # same tokens, other order: keys have no position
        _close(f"{nc:8s} caption token order does not matter", other, out)
        changed = model(x, t, r, cap + 0.5 * rnd(3, 5, 24))  # (a constant shift would be normalised away)
        assert (changed - out).abs().max() > 1e-3, "output ignores the caption"
        print(f"  ok   {nc:8s} output depends on the caption features")
    clone = TiMT2I(cfg)
    load_released_state_dict(clone, {**model.state_dict(), "projector.0.weight": rnd(8, 32)})
    _close("state dict round trip (projector ignored)", clone(x, t, r, cap), model(x, t, r, cap), 0.0)
    cfg2 = t2i_config_from_state_dict(model.state_dict(), 2, cfg.new_condition)
    assert cfg2 == cfg, (cfg2, cfg)
    print("  ok   t2i_config_from_state_dict")
    names = set(model.state_dict())
    for name in ("y_embedder.norm.weight", "y_embedder.mlp.fc1_g.weight", "blocks.0.cross_attn.q.weight",
                 "blocks.0.cross_attn.kv.bias", "blocks.0.cross_attn.q_norm.weight",
                 "blocks.0.cross_attn.k_norm.bias", "blocks.0.cross_attn.proj.weight",
                 "blocks.1.adaLN_modulation.fc2.weight"):
        assert name in names, name
    assert model.state_dict()["blocks.0.adaLN_modulation.fc2.weight"].shape == (9 * 32, 16)
    assert not any("embedding_table" in n for n in names)
    print("  ok   released parameter names; adaLN fc2 has 9 D rows")
    print("self-test passed")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--self-test", action="store_true", help="run the self-checks")
    args = parser.parse_args()
    if args.self_test:
        self_test()
    else:
        parser.print_help()
