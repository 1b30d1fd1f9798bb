"""Reference trainer: the TiM objective (SPEC.md section 7) on Fashion-MNIST, in PyTorch, on the CPU.

Trains tim_reference.TiM (the network the C++ library runs, parameter names as released) with the
Transition Models objective: time pairs (t, r) with diffusion and consistency ratios, the DDE
finite-difference derivative, the transport's target F*, tangent + sqrt time weighting times the
adaptive weight, label dropout to the null class, AdamW, grad-norm clipping and an EMA. The same
script trains the flow-matching baseline (`--baseline flow-matching`: every pair r = t, all else
equal). Runs checkpoint (every K steps, at SIGTERM/SIGINT, at the end) and `--resume` continues
bit-for-bit. `--export` writes the EMA weights as a safetensors file the C++ loader reads;
`--sample-grid` draws a 10x10 class grid with the PyTorch model for eyeballing.

  python train.py --run-dir out/train/tim --time-budget-minutes 120          # train (or continue: --resume)
  python train.py --run-dir out/train/tim --resume --time-budget-minutes 150 # extend / continue
  python train.py --run-dir out/train/tim --export models/x.safetensors      # EMA -> safetensors
  python train.py --run-dir out/train/tim --sample-grid grid.png --steps 4 --cfg 2.0

docs/training.md explains the objective, every flag and the shipped recipe.
Shape legend: B batch, C channels (1), H = W = 32, D hidden, p patch.
"""

from __future__ import annotations

import argparse
import copy
import csv
import glob
import gzip
import json
import math
import os
import signal
import struct
import sys
import time
import zlib
from dataclasses import asdict, dataclass
from typing import Callable, Optional

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import tim_reference as tr  # noqa: E402

CHECKPOINT_FORMAT = "tim-reference-train-checkpoint-v1"
CHECKPOINT_NAME = "checkpoint.pt"
LOG_NAME = "log.csv"
FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                         "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
IMAGE_SIZE = 32          # 28x28 padded by 2 px each side with the background (-1)
NUM_CLASSES = 10         # label 10 is the null class
ADAPTIVE_EPS = 10e-6     # adaptive weight 1 / (l.detach() + eps): the released eps=10e-6, which is 1e-5


# ==============================================================================================
# Transports (SPEC 2). Each one: interpolant, c_noise, time sampling, target, transition.
# t, r are (B,) float tensors; x, z, F are (B, C, H, W). Add a transport by adding a class and an
# entry in TRANSPORTS.

def _bc(t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """(B,) -> (B, 1, 1, 1) so it broadcasts against images."""
    return t.reshape(-1, *([1] * (like.dim() - 1)))


class Transport:
    name = ""
    t_max = 1.0
    t_min = 0.0
    sigma_d = 1.0
    p_mean = 0.0       # default time-sampling location (log-normal transports)
    p_std = 1.0

    def interpolant(self, t: torch.Tensor):
        """alpha_t, sigma_t, alpha'_t, sigma'_t, each shaped like t."""
        raise NotImplementedError

    def c_noise(self, t: torch.Tensor) -> torch.Tensor:
        return t

    def sample_t(self, n: int, gen: torch.Generator, p_mean: float, p_std: float) -> torch.Tensor:
        raise NotImplementedError

    guidance_sign = 1.0   # the EMA outputs enter the enhanced base with this sign (VE: -1, as released)

    def base(self, x, z, v_t, t) -> torch.Tensor:
        """The part of F* that the guidance-enhanced target replaces (released transports.py):
        v_t for OT-FM and TrigFlow, ah x + sh z for EDM, z for VP and VE."""
        return v_t

    def target_from_base(self, base, x, z, x_t, t, r, dF_dt) -> torch.Tensor:
        """F* from its base; t, r already broadcast to (B, 1, 1, 1)."""
        raise NotImplementedError

    def target(self, x, z, x_t, v_t, t, r, dF_dt) -> torch.Tensor:
        """F*; t, r already broadcast to (B, 1, 1, 1)."""
        return self.target_from_base(self.base(x, z, v_t, t), x, z, x_t, t, r, dF_dt)

    def coefficients(self, t: float, r: float) -> tuple[float, float]:
        """(a, b) with x_r = a x_t + b F (deterministic transition)."""
        raise NotImplementedError

    def transition(self, x_t: torch.Tensor, t: float, r: float, F_: torch.Tensor, s: float = 0.0,
                   gen: Optional[torch.Generator] = None) -> torch.Tensor:
        if s > 0:
            raise ValueError(f"{self.name} has no stochastic transition")
        a, b = self.coefficients(t, r)
        return a * x_t + b * F_


class OTFM(Transport):
    """Linear flow matching: alpha = 1 - t, sigma = t (the released models)."""
    name, t_max, t_min, sigma_d = "ot-fm", 1.0, 0.0, 1.0
    p_mean, p_std = -0.4, 1.0

    def interpolant(self, t):
        one = torch.ones_like(t)
        return 1 - t, t, -one, one

    def sample_t(self, n, gen, p_mean, p_std):
        sigma = torch.exp(p_mean + p_std * torch.randn(n, generator=gen, dtype=torch.float64))
        return (sigma / (1 + sigma)).float()

    def target_from_base(self, base, x, z, x_t, t, r, dF_dt):
        return base - (t - r) * dF_dt

    def coefficients(self, t, r):
        return 1.0, -(t - r)

    def transition(self, x_t, t, r, F_, s=0.0, gen=None):
        if s <= 0:
            return x_t - (t - r) * F_
        d = t - r
        z_hat = x_t + (1 - t) * F_
        eps = torch.randn(x_t.shape, generator=gen, dtype=x_t.dtype)
        return x_t - d * F_ - s * z_hat * d + math.sqrt(2 * s * t * d) * eps


class TrigFlow(Transport):
    name, t_max, t_min, sigma_d = "trigflow", 1.57, 0.0, 0.5
    p_mean, p_std = -1.0, 1.6

    def interpolant(self, t):
        return torch.cos(t), torch.sin(t), -torch.sin(t), torch.cos(t)

    def sample_t(self, n, gen, p_mean, p_std):
        return torch.atan(torch.exp(p_mean + p_std * torch.randn(n, generator=gen, dtype=torch.float64))).float()

    def target_from_base(self, base, x, z, x_t, t, r, dF_dt):
        return base - torch.tan(t - r) * (x_t + dF_dt)

    def coefficients(self, t, r):
        return math.cos(t - r), -math.sin(t - r)


class EDM(Transport):
    """alpha = sd / sqrt(t^2 + sd^2) (SPEC 2: NOT the released 1 / sqrt(...), which breaks the target)."""
    name, t_max, t_min, sigma_d = "edm", 80.0, 0.01, 0.5
    p_mean, p_std = -1.2, 1.2

    def interpolant(self, t):
        sd = self.sigma_d
        q = t * t + sd * sd
        return sd / torch.sqrt(q), t / torch.sqrt(q), -sd * t / q ** 1.5, sd * sd / q ** 1.5

    def c_noise(self, t):
        return torch.log(t) / 4

    def sample_t(self, n, gen, p_mean, p_std):
        return torch.exp(p_mean + p_std * torch.randn(n, generator=gen, dtype=torch.float64)).float()

    def base(self, x, z, v_t, t):
        sd = self.sigma_d
        q2 = sd * sd + t * t
        return (t / (sd * torch.sqrt(q2))) * x + (-sd / torch.sqrt(q2)) * z

    def target_from_base(self, base, x, z, x_t, t, r, dF_dt):
        sd = self.sigma_d
        q2, q3 = sd * sd + t * t, sd ** 3 + t * t
        dah = -t * t / (sd * q2 ** 1.5) + 1 / (sd * torch.sqrt(q2))
        dsh = sd * t / q2 ** 1.5
        k = (t - r) * q2 * q3 / (2 * t * (r - t) * q2 - t * (r - t) * q3 + q2 * q3)
        return base + k * (dah * x + dsh * z - dF_dt)

    def coefficients(self, t, r):
        sd = self.sigma_d
        q = math.sqrt(t * t + sd * sd) / math.sqrt(r * r + sd * sd) / (sd ** 3 + t * t)
        return (sd ** 3 + t * r) * q, sd * sd * (t - r) * q


class VPSDE(Transport):
    name, t_max, t_min, sigma_d = "vp", 1.0, 1e-5, 1.0   # sigma_d (time weighting only): our choice
    beta_min, beta_d, T = 0.1, 19.9, 1000

    def b(self, t):
        return torch.sqrt(torch.exp(0.5 * self.beta_d * t * t + self.beta_min * t) - 1)

    def db(self, t):
        b = self.b(t)
        return (self.beta_d * t + self.beta_min) * (b * b + 1) / (2 * b)

    def interpolant(self, t):
        b, db = self.b(t), self.db(t)
        q = b * b + 1
        return 1 / torch.sqrt(q), b / torch.sqrt(q), -b * db / q ** 1.5, db / q ** 1.5

    def c_noise(self, t):
        return (self.T - 1) * t

    def sample_t(self, n, gen, p_mean, p_std):
        u = torch.rand(n, generator=gen, dtype=torch.float64)
        return (1 + u * (self.t_min - 1)).float()

    def base(self, x, z, v_t, t):
        return z

    def target_from_base(self, base, x, z, x_t, t, r, dF_dt):
        return base - dF_dt * (self.b(t) - self.b(r)) / self.db(t)

    def coefficients(self, t, r):
        bt = math.sqrt(math.exp(0.5 * self.beta_d * t * t + self.beta_min * t) - 1)
        br = math.sqrt(math.exp(0.5 * self.beta_d * r * r + self.beta_min * r) - 1)
        root_r = math.sqrt(br * br + 1)
        return math.sqrt(bt * bt + 1) / root_r, (br - bt) / root_r


class VESDE(Transport):
    name, t_max, t_min, sigma_d = "ve", 100.0, 0.02, 1.0  # sigma_d (time weighting only): our choice

    def interpolant(self, t):
        return torch.ones_like(t), t, torch.zeros_like(t), torch.ones_like(t)

    def c_noise(self, t):
        return torch.log(0.5 * t)

    def sample_t(self, n, gen, p_mean, p_std):
        u = torch.rand(n, generator=gen, dtype=torch.float64)
        return (self.t_min * (self.t_max / self.t_min) ** u).float()

    guidance_sign = -1.0

    def base(self, x, z, v_t, t):
        return z

    def target_from_base(self, base, x, z, x_t, t, r, dF_dt):
        return (r - t) * dF_dt - base

    def coefficients(self, t, r):
        return 1.0, t - r


TRANSPORTS: dict[str, Callable[[], Transport]] = {
    "ot-fm": OTFM, "trigflow": TrigFlow, "edm": EDM, "vp": VPSDE, "ve": VESDE}


# ==============================================================================================
# The objective (SPEC 7).

@dataclass
class Objective:
    transport: Transport
    diffusion_ratio: float = 0.5
    consistency_ratio: float = 0.1
    epsilon: float = 0.005             # DDE finite-difference half-step
    p_mean: float = -0.4
    p_std: float = 1.0
    weight_time: str = "sqrt"          # constant | reciprocal | sqrt | square | soft-min-snr
    weight_transform: str = "tangent"  # none | tangent | sigmoid
    weight_t_and_r: bool = True        # d = t - r in the time weight (released weight_t_and_r; else d = t)
    adaptive: bool = True
    directional: bool = False          # add 1 - cos(F, F*) over channels
    label_dropout: float = 0.1
    # guidance-enhanced target (off when enhance_w_gt is None); the window is in absolute times
    # (released w_start, w_end), not fractions of T_max
    enhance_w_gt: Optional[float] = None
    enhance_w_cond: float = 0.0
    enhance_low: float = 0.0
    enhance_high: float = 1.0

    def sample_t_r(self, n: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, int]:
        """t = max, r = min of two draws; first round(diffusion_ratio n) get r = t, last
        round(consistency_ratio n) get r = T_min."""
        t1 = self.transport.sample_t(n, gen, self.p_mean, self.p_std)
        t2 = self.transport.sample_t(n, gen, self.p_mean, self.p_std)
        t, r = torch.maximum(t1, t2), torch.minimum(t1, t2)
        n_diffusion = round(self.diffusion_ratio * n)
        r[:n_diffusion] = t[:n_diffusion]
        n_consistency = round(self.consistency_ratio * n)
        if n_consistency:
            r[n - n_consistency:] = self.transport.t_min
        return t, r, n_diffusion

    def time_weight(self, t: torch.Tensor, r: torch.Tensor, n_diffusion: int) -> torch.Tensor:
        if self.weight_transform == "tangent":
            t, r = torch.tan(t), torch.tan(r)
        elif self.weight_transform == "sigmoid":
            t, r = t / (1 - t), r / (1 - r)
        elif self.weight_transform != "none":
            raise ValueError(f"unknown weight transform {self.weight_transform!r}")
        d, sd = (t - r if self.weight_t_and_r else t), self.transport.sigma_d
        kind = self.weight_time
        if kind == "constant":
            w = torch.ones_like(d)
        elif kind == "reciprocal":
            w = 1 / (d + sd)
        elif kind == "sqrt":
            w = 1 / torch.sqrt(d + sd)
        elif kind == "square":
            w = 1 / (d + sd) ** 2
        elif kind == "soft-min-snr":
            w = 1 / (d * d + sd * sd)
        else:
            raise ValueError(f"unknown time weighting {kind!r}")
        w = w.clone()
        w[:n_diffusion] = 1.0
        return w

    def dde(self, model, x, z, t, r, y, n_diffusion: int) -> torch.Tensor:
        """dF/dt = F(x_{t+e}, t+e, r) / (2e) - F(x_{t-e}, t-e, r) / (2e) (the released order of
        operations), same x, z, y; zero for the r = t rows."""
        dF_dt = torch.zeros_like(x)
        B = x.shape[0]
        if n_diffusion >= B:
            return dF_dt
        tr_ = self.transport
        s = slice(n_diffusion, B)
        xs, zs, ts, rs, ys = x[s], z[s], t[s], r[s], y[s]
        e = self.epsilon

        def f(tt):
            a, sg, _, _ = tr_.interpolant(tt)
            return model(_bc(a, xs) * xs + _bc(sg, xs) * zs, tr_.c_noise(tt), tr_.c_noise(rs), ys)

        with torch.no_grad():
            half_inverse = 1 / (2 * e)
            dF_dt[s] = f(ts + e) * half_inverse - f(ts - e) * half_inverse
        return dF_dt

    def losses(self, model, ema, x: torch.Tensor, y: torch.Tensor, gen: torch.Generator,
               null_label: int, y_cond: Optional[torch.Tensor] = None) -> dict:
        """One batch: x (B, C, H, W) clean data, y (B,) labels (already dropped), y_cond the labels
        before dropout (the EMA's conditional labels of the enhanced target, as the released
        trainer passes them; None: y). Draws z, then (t, r). Returns the weighted loss (for
        backward) and per-sample diagnostics."""
        z = torch.randn(x.shape, generator=gen, dtype=x.dtype)
        t, r, n_diffusion = self.sample_t_r(x.shape[0], gen)
        return self.loss_parts(model, ema, x, z, t, r, n_diffusion, y, y if y_cond is None else y_cond, null_label)

    def loss_parts(self, model, ema, x, z, t, r, n_diffusion: int, y, y_cond, null_label: int) -> dict:
        """The deterministic part of the objective (released TransitionSchedule.__call__): given
        x, z, the time pairs (the first n_diffusion rows have r = t), the network's labels y and
        the EMA's conditional labels y_cond."""
        tr_ = self.transport
        a, sg, da, dsg = (_bc(u, x) for u in tr_.interpolant(t))
        x_t = a * x + sg * z
        v_t = da * x + dsg * z
        F_pred = model(x_t, tr_.c_noise(t), tr_.c_noise(r), y)
        dF_dt = self.dde(model, x, z, t, r, y, n_diffusion)
        base = tr_.base(x, z, v_t, _bc(t, x))
        if self.enhance_w_gt is not None:
            base = self.enhanced_base(ema, x_t, base, t, y_cond, null_label)
        tb, rb = _bc(t, x), _bc(r, x)
        target = tr_.target_from_base(base, x, z, x_t, tb, rb, dF_dt)
        per_sample = ((F_pred - target) ** 2).flatten(1).mean(1)
        per_sample = torch.nan_to_num(per_sample, nan=0.0, posinf=1e5, neginf=-1e5)
        if self.directional:
            cos = 1 - F.cosine_similarity(F_pred, target, dim=1)
            per_sample = per_sample + torch.nan_to_num(cos.flatten(1).mean(1), nan=0.0, posinf=1e5, neginf=-1e5)
        weight = self.time_weight(t, r, n_diffusion)
        if self.adaptive:
            weight = weight / (per_sample.detach() + ADAPTIVE_EPS)
        loss = (weight * per_sample).mean()
        return {"loss": loss, "per_sample": per_sample.detach(), "t": t, "r": r, "n_diffusion": n_diffusion,
                "F": F_pred.detach(), "target": target, "x_t": x_t, "z": z, "dF_dt": dF_dt, "weight": weight}

    @torch.no_grad()
    def enhanced_base(self, ema, x_t, base, t, y_cond, null_label):
        """As released (transports.py target): on every row with enhance_low <= t <= enhance_high
        (absolute times), base -> w_gt base + w_cond s F_c + (1 - w_gt - w_cond) s F_u, else
        w_gt = 1, w_cond = 0; F_c (with y_cond; only evaluated when w_cond > 0) and F_u (null class)
        are the EMA model at (x_t, c_noise(t), c_noise(t)); s is the transport's guidance_sign."""
        tr_ = self.transport
        c = tr_.c_noise(t)
        if self.enhance_w_cond > 0:
            F_c = ema(x_t, c, c, y_cond)
        else:
            F_c = torch.zeros_like(x_t)
        F_u = ema(x_t, c, c, torch.full_like(y_cond, null_label))
        inside = _bc((t >= self.enhance_low) & (t <= self.enhance_high), x_t)
        w_gt = torch.where(inside, self.enhance_w_gt, 1.0).to(x_t.dtype)
        w_c = torch.where(inside, self.enhance_w_cond, 0.0).to(x_t.dtype)
        sign = tr_.guidance_sign
        return w_gt * base + w_c * (sign * F_c) + (1 - w_gt - w_c) * (sign * F_u)


# ==============================================================================================
# The network: tim_reference.TiM, with faster (mathematically identical) CPU kernels swapped in
# by class (parameter names and state dicts unchanged).

class _FastLinear(tr.Linear):
    def forward(self, u):
        return F.linear(u, self.weight, self.bias)


class _FastAffineNorm(tr.AffineNorm):
    def forward(self, u):
        return F.layer_norm(u, (u.shape[-1],), self.weight, self.bias, self.eps)


class _FastSwiGLU(tr.SwiGLU):
    def forward(self, u):
        return self.fc2(F.silu(self.fc1_g(u)) * self.fc1_x(u))


class _FastTimestepEmbedder(tr.TimestepEmbedder):
    def forward(self, s):
        return self.mlp["2"](F.silu(self.mlp["0"](tr.sinusoidal_features(s))))


_ROPE_CACHE: dict = {}


def _rope(h: int, w: int, hd: int, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    key = (h, w, hd, dtype)
    if key not in _ROPE_CACHE:
        cos, sin = tr.rope_tables(h, w, hd, torch.float64)
        _ROPE_CACHE[key] = (cos.to(dtype), sin.to(dtype))
    return _ROPE_CACHE[key]


def _apply_rope_cached(u: torch.Tensor, h: int, w: int) -> torch.Tensor:
    cos, sin = _rope(h, w, u.shape[-1], u.dtype)
    pairs = u.unflatten(-1, (-1, 2))
    rotated = torch.stack([-pairs[..., 1], pairs[..., 0]], dim=-1).flatten(-2)
    return u * cos + rotated * sin


class _FastAttention(tr.Attention):
    def forward(self, u, e_delta, h, w):
        B, N, D = u.shape
        qkv = self.qkv(u)
        if self.qkv_d is not None:
            qkv = qkv + self.qkv_d(e_delta).unsqueeze(1)
        q, k, v = qkv.reshape(B, N, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        q, k = _apply_rope_cached(q, h, w), _apply_rope_cached(k, h, w)
        out = F.scaled_dot_product_attention(q, k, v)   # scale 1/sqrt(hd)
        return self.proj(out.transpose(1, 2).reshape(B, N, D))


class _FastBlock(tr.TiMBlock):
    def forward(self, x, c, e_delta, h, w):
        D = x.shape[-1]
        (shift_msa, scale_msa, gate_msa,
         shift_mlp, scale_mlp, gate_mlp) = self.adaLN_modulation(c).chunk(6, dim=-1)
        x = x + gate_msa.unsqueeze(1) * self.attn(
            tr.modulate(F.layer_norm(x, (D,), eps=tr.NORM_EPS), shift_msa, scale_msa), e_delta, h, w)
        x = x + gate_mlp.unsqueeze(1) * self.mlp(
            tr.modulate(F.layer_norm(x, (D,), eps=tr.NORM_EPS), shift_mlp, scale_mlp))
        return x


class _FastFinalLayer(tr.FinalLayer):
    def forward(self, x, c):
        shift, scale = self.adaLN_modulation(c).chunk(2, dim=-1)
        return self.linear(tr.modulate(F.layer_norm(x, (x.shape[-1],), eps=tr.NORM_EPS), shift, scale))


_FAST = {tr.Linear: _FastLinear, tr.AffineNorm: _FastAffineNorm, tr.SwiGLU: _FastSwiGLU,
         tr.TimestepEmbedder: _FastTimestepEmbedder, tr.Attention: _FastAttention,
         tr.TiMBlock: _FastBlock, tr.FinalLayer: _FastFinalLayer}


def accelerate(model: tr.TiM) -> tr.TiM:
    """Swap every submodule to its fast twin (F.linear, F.layer_norm, SDPA, cached rotary tables).
    Same parameters, same names, same math; only rounding differs."""
    for m in model.modules():
        fast = _FAST.get(type(m))
        if fast is not None:
            m.__class__ = fast
    return model


def init_weights(model: tr.TiM) -> None:
    """The released (DiT-style) initialisation: xavier-uniform linears with zero bias, patch
    embedding like a linear, N(0, 0.02) label table and time-MLP weights, zeroed adaLN fc2 in every
    block and in the final layer, zeroed final linear (the network starts at F = 0), q/k norms 1, 0."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, tr.Linear):
                torch.nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    m.bias.zero_()
            elif isinstance(m, tr.AffineNorm):
                m.weight.fill_(1.0)
                m.bias.zero_()
        w = model.x_embedder.proj.weight
        torch.nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        model.x_embedder.proj.bias.zero_()
        torch.nn.init.normal_(model.y_embedder.embedding_table.weight, std=0.02)
        for emb in (model.t_embedder, model.delta_embedder):
            if emb is not None:
                torch.nn.init.normal_(emb.mlp["0"].weight, std=0.02)
                torch.nn.init.normal_(emb.mlp["2"].weight, std=0.02)
        for block in model.blocks:
            block.adaLN_modulation.fc2.weight.zero_()
            block.adaLN_modulation.fc2.bias.zero_()
        model.final_layer.adaLN_modulation.fc2.weight.zero_()
        model.final_layer.adaLN_modulation.fc2.bias.zero_()
        model.final_layer.linear.weight.zero_()
        model.final_layer.linear.bias.zero_()


def model_config(args) -> tr.TiMConfig:
    return tr.TiMConfig(in_channels=1, hidden_size=args.hidden, depth=args.depth, num_heads=args.heads,
                        patch_size=args.patch, num_classes=NUM_CLASSES, adaln_hidden=args.adaln_hidden,
                        mlp_ratio=args.mlp_ratio, qk_norm=True, interval_qkv=True,
                        separate_delta_embedder=True, new_condition="t-r")


def build_model(cfg: tr.TiMConfig) -> tr.TiM:
    return accelerate(tr.TiM(cfg))


def count_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# ==============================================================================================
# Data: Fashion-MNIST from the Debian package dataset-fashion-mnist (gzipped idx files).

DATA_GLOBS = ("/usr/share/datasets/fashion-mnist", "/usr/share/*/fashion-mnist", "/usr/share/**/fashion-mnist*")


def find_data_dir(explicit: Optional[str]) -> str:
    want = "train-images-idx3-ubyte.gz"
    if explicit:
        if not os.path.exists(os.path.join(explicit, want)):
            raise SystemExit(f"--data-dir {explicit}: no {want} there")
        return explicit
    for pattern in DATA_GLOBS:
        for d in sorted(glob.glob(pattern, recursive=True)):
            if os.path.exists(os.path.join(d, want)):
                return d
    raise SystemExit("Fashion-MNIST not found under /usr/share: install the Debian package "
                     "(sudo apt-get install dataset-fashion-mnist; `dpkg -L dataset-fashion-mnist` lists "
                     "its files) or pass --data-dir DIR holding train-images-idx3-ubyte.gz and "
                     "train-labels-idx1-ubyte.gz")


def read_idx(path: str) -> torch.Tensor:
    """An idx file (gzipped or not): magic 0x0000 08 <ndim>, big-endian int32 dims, uint8 data."""
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        data = f.read()
    zero, dtype_code, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype_code != 0x08:
        raise ValueError(f"{path}: not a uint8 idx file (magic {data[:4].hex()})")
    dims = struct.unpack(f">{ndim}I", data[4:4 + 4 * ndim])
    body = data[4 + 4 * ndim:]
    if len(body) != math.prod(dims):
        raise ValueError(f"{path}: {len(body)} bytes of data, dims {dims} need {math.prod(dims)}")
    return torch.frombuffer(bytearray(body), dtype=torch.uint8).reshape(dims)


def load_fashion_mnist(data_dir: Optional[str], split: str) -> tuple[torch.Tensor, torch.Tensor, str]:
    """uint8 images (N, 1, 32, 32) (28x28 centred, 2 px of 0 each side) and int64 labels."""
    d = find_data_dir(data_dir)
    parts = {"train": ["train"], "test": ["t10k"], "all": ["train", "t10k"]}[split]
    images, labels = [], []
    for p in parts:
        img = read_idx(os.path.join(d, f"{p}-images-idx3-ubyte.gz"))
        lab = read_idx(os.path.join(d, f"{p}-labels-idx1-ubyte.gz"))
        if img.shape[1:] != (28, 28) or lab.shape[0] != img.shape[0]:
            raise ValueError(f"{d}/{p}: unexpected shapes {tuple(img.shape)}, {tuple(lab.shape)}")
        images.append(img)
        labels.append(lab)
    img = torch.cat(images)
    pad = (IMAGE_SIZE - 28) // 2
    img = F.pad(img, (pad, pad, pad, pad), value=0).unsqueeze(1).contiguous()
    return img, torch.cat(labels).long(), d


def to_model_range(u8: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] -> float32 [-1, 1] (background 0 -> -1)."""
    return u8.float() / 127.5 - 1.0


class Batches:
    """Epoch-wise shuffles: the order of epoch e is randperm(N) from a generator seeded with
    seed * 1_000_003 + e, so (epoch, position) is the whole data-loader state."""

    def __init__(self, images, labels, batch: int, seed: int, epoch: int = 0, pos: int = 0):
        self.images, self.labels, self.batch, self.seed = images, labels, batch, seed
        self.epoch, self.pos = epoch, pos
        self._perm_epoch, self._perm = -1, None

    def _order(self):
        if self._perm_epoch != self.epoch:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
            self._perm, self._perm_epoch = torch.randperm(len(self.images), generator=g), self.epoch
        return self._perm

    def next(self):
        if self.pos + self.batch > len(self.images):   # drop the ragged tail
            self.epoch, self.pos = self.epoch + 1, 0
        idx = self._order()[self.pos:self.pos + self.batch]
        self.pos += self.batch
        return to_model_range(self.images[idx]), self.labels[idx]


# ==============================================================================================
# Sampling (SPEC 6) and a minimal PNG writer, for eyeballing.

@torch.no_grad()
def sample(model, transport: Transport, z: torch.Tensor, y: torch.Tensor, steps: int, cfg: float = 1.0,
           cfg_low: float = 0.0, cfg_high: float = 1.0, mode: str = "transition", stochasticity: float = 0.0,
           gen: Optional[torch.Generator] = None) -> torch.Tensor:
    """Linear grid T_max -> T_min (float64), state in float64, network in float32. Guidance when
    cfg > 1 and cfg_low*T_max < t < cfg_high*T_max (strict: never at the first step of the default
    window). mode 'diffusion' feeds r = t to the network (flow-matching models)."""
    if mode == "ddiffusion":
        mode = "diffusion"
    times = torch.linspace(transport.t_max, transport.t_min, steps + 1, dtype=torch.float64).tolist()
    B = z.shape[0]
    x = z.double()
    null = torch.full_like(y, NUM_CLASSES)
    for i in range(steps):
        t, r = times[i], times[i + 1]
        r_net = t if mode == "diffusion" else r
        t_in = transport.c_noise(torch.tensor(t, dtype=torch.float64)).float().item()
        r_in = transport.c_noise(torch.tensor(r_net, dtype=torch.float64)).float().item()
        guided = cfg > 1.0 and cfg_low * transport.t_max < t < cfg_high * transport.t_max
        xin = x.float()
        if guided:
            out = model(torch.cat([xin, xin]), torch.full((2 * B,), t_in), torch.full((2 * B,), r_in),
                        torch.cat([y, null])).double()
            F_ = out[B:] + cfg * (out[:B] - out[B:])
        else:
            F_ = model(xin, torch.full((B,), t_in), torch.full((B,), r_in), y).double()
        s = stochasticity if (stochasticity > 0 and t < transport.t_max and r > transport.t_min) else 0.0
        x = transport.transition(x, t, r, F_, s, gen)
    return x.float()


def write_png_gray(path: str, img: torch.Tensor) -> None:
    """img: (H, W) uint8 -> 8-bit grayscale PNG (zlib only)."""
    h, w = img.shape
    raw = b"".join(b"\x00" + bytes(img[i].tolist()) for i in range(h))

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    png = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0))
           + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(png)
    os.replace(tmp, path)


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """[-1, 1] -> [0, 255] as the C2I script: clamp(255 (x + 1) / 2), truncated."""
    return torch.clamp(255 * (x + 1) / 2, 0, 255).to(torch.uint8)


def grid_image(images: torch.Tensor, rows: int, cols: int, scale: int = 2, gap: int = 2) -> torch.Tensor:
    """images (rows*cols, 1, S, S) in [-1, 1] -> one uint8 canvas, mid-grey gaps."""
    S = images.shape[-1] * scale
    canvas = torch.full((rows * S + (rows + 1) * gap, cols * S + (cols + 1) * gap), 128, dtype=torch.uint8)
    u8 = to_uint8(images[:, 0])
    if scale > 1:
        u8 = u8.repeat_interleave(scale, 1).repeat_interleave(scale, 2)
    for k in range(rows * cols):
        i, j = divmod(k, cols)
        y0, x0 = gap + i * (S + gap), gap + j * (S + gap)
        canvas[y0:y0 + S, x0:x0 + S] = u8[k]
    return canvas


def sample_grid(model, transport, path: str, steps: int, cfg: float, cfg_low: float, cfg_high: float,
                mode: str, seed: int, stochasticity: float = 0.0, scale: int = 2) -> None:
    """10x10 grid: row = class 0..9, column = noise seed; the same noise for every row."""
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(10, 1, IMAGE_SIZE, IMAGE_SIZE, generator=gen).repeat(10, 1, 1, 1)
    y = torch.arange(10).repeat_interleave(10)
    x = sample(model, transport, z, y, steps, cfg, cfg_low, cfg_high, mode, stochasticity, gen)
    write_png_gray(path, grid_image(x, 10, 10, scale))


# ==============================================================================================
# Checkpoints, export.

def save_checkpoint(run_dir: str, state: dict) -> None:
    path = os.path.join(run_dir, CHECKPOINT_NAME)
    tmp = path + ".tmp"
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_checkpoint(run_dir: str) -> dict:
    path = os.path.join(run_dir, CHECKPOINT_NAME)
    if not os.path.exists(path):
        raise SystemExit(f"no checkpoint at {path}")
    ck = torch.load(path, map_location="cpu", weights_only=False)
    if ck.get("format") != CHECKPOINT_FORMAT:
        raise SystemExit(f"{path}: not a {CHECKPOINT_FORMAT} file")
    return ck


def recipe_summary(args) -> dict:
    return {k: v for k, v in sorted(vars(args).items()) if k not in RUNTIME_ONLY_EXPORT}


SAMPLING_KEYS = {"steps": int, "cfg_scale": float, "guidance_low": float, "guidance_high": float}


def parse_sampling(text: Optional[str]) -> dict:
    """"steps=4,cfg_scale=2" -> {"sample_steps": "4", "sample_cfg_scale": "2.0"} (metadata strings)."""
    out = {}
    for item in filter(None, (text or "").split(",")):
        key, sep, value = item.partition("=")
        if not sep or key not in SAMPLING_KEYS:
            raise SystemExit(f"--export-sampling: '{item}' is not KEY=VALUE with KEY one of {sorted(SAMPLING_KEYS)}")
        try:
            out["sample_" + key] = repr(SAMPLING_KEYS[key](value))
        except ValueError:
            raise SystemExit(f"--export-sampling: {key} needs a {SAMPLING_KEYS[key].__name__}, got '{value}'")
    return out


def export_safetensors(ck: dict, out: str, dtype: str, weights: str = "ema", sampling: Optional[str] = None) -> dict:
    from safetensors.torch import save_file
    args = argparse.Namespace(**ck["args"])
    cfg = model_config(args)
    sd = ck["ema"] if weights == "ema" else ck["model"]
    torch_dtype = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}[dtype]
    if dtype == "float16":
        too_big = [k for k, v in sd.items() if v.abs().max().item() > 65504]
        if too_big:
            raise SystemExit(f"float16 cannot hold {too_big[:3]}: export as bfloat16 or float32")
    tensors = {k: v.detach().to(torch_dtype).contiguous() for k, v in sorted(sd.items())}
    baseline = args.baseline == "flow-matching"
    meta = {
        "generator": "tools/reference/train.py",
        "model_type": "tim-c2i",
        "num_heads": str(cfg.num_heads),
        "new_condition": cfg.new_condition,
        "mlp_ratio": repr(float(cfg.mlp_ratio)),
        "num_classes": str(cfg.num_classes),
        "null_class": str(cfg.num_classes),
        "class_names": json.dumps(list(FASHION_MNIST_CLASSES)),
        "transport": args.transport,
        "t_max": repr(TRANSPORTS[args.transport]().t_max),
        "t_min": repr(TRANSPORTS[args.transport]().t_min),
        "sample_type": "diffusion" if baseline else "transition",
        "objective": "flow-matching baseline (every r = t)" if baseline else "TiM (SPEC 7)",
        "image_size": f"{IMAGE_SIZE}x{IMAGE_SIZE}x1",
        "pixel_range": "[-1, 1]; to uint8 with clamp(255 (x + 1) / 2)",
        "dataset": ("Fashion-MNIST (Debian package dataset-fashion-mnist, idx gz), split " + args.split
                    + ", pixels / 127.5 - 1, 28x28 padded to 32x32 with -1 (2 px each side), 1 channel, "
                    "10 classes + null class 10"),
        "weights": weights + (f" (decay {args.ema_decay})" if weights == "ema" else ""),
        "storage_dtype": dtype,
        "config": json.dumps(asdict(cfg), sort_keys=True),
        "recipe": json.dumps(recipe_summary(args), sort_keys=True),
        "steps": str(ck["step"]),
        "images_seen": str(ck["step"] * args.batch),
        "train_seconds": f"{ck['train_seconds']:.1f}",
        "final_loss": "" if ck.get("last_loss") is None else repr(ck["last_loss"]),
        "final_loss_note": "unweighted per-sample MSE ||F - F*||^2 averaged over the last log interval",
        "torch_version": torch.__version__,
        "parameters": str(sum(v.numel() for v in tensors.values())),
        **parse_sampling(sampling),
    }
    tmp = out + ".tmp"
    save_file(tensors, tmp, metadata=meta)
    os.replace(tmp, out)
    # check: the file rebuilds the network and matches the float32 weights closely
    from safetensors.torch import load_file
    back = load_file(out)
    model = build_model(tr.config_from_state_dict(back, int(meta["num_heads"]), meta["new_condition"],
                                                  float(meta["mlp_ratio"])))
    tr.load_released_state_dict(model, {k: v.float() for k, v in back.items()})
    ref = build_model(cfg)
    ref.load_state_dict(sd)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4, 1, IMAGE_SIZE, IMAGE_SIZE, generator=g)
    t = torch.tensor([1.0, 0.7, 0.4, 0.1])
    r = torch.tensor([0.0, 0.7, 0.1, 0.0])
    y = torch.tensor([0, 3, 9, NUM_CLASSES])
    with torch.no_grad():
        a, b = model(x, t, r, y), ref(x, t, r, y)
    rel = ((a - b).norm() / b.norm().clamp_min(1e-12)).item()
    size = os.path.getsize(out)
    print(f"exported {weights} weights -> {out}: {len(tensors)} tensors, {meta['parameters']} parameters, "
          f"{dtype}, {size / 1e6:.2f} MB; forward vs float32 weights: relative L2 diff {rel:.2e}")
    if rel > 1e-2:
        print("warning: the stored weights change the output by more than 1%: an early checkpoint whose "
              "output layer is still near zero (harmless), or weights outside the storage dtype's range")
    return meta


# ==============================================================================================
# Training.

# Flags that do not change the math of a run: taken from the command line on --resume.
RUNTIME_ONLY = {"run_dir", "resume", "time_budget_minutes", "max_steps", "checkpoint_every", "log_every",
                "sample_every", "sample_steps", "threads", "export", "export_dtype", "export_weights", "export_sampling",
                "sample_grid", "steps", "cfg", "cfg_low", "cfg_high", "sample_type", "sample_seed",
                "stochasticity", "grid_scale", "sample_weights", "data_dir"}
RUNTIME_ONLY_EXPORT = {"run_dir", "resume", "export", "export_dtype", "export_weights", "export_sampling",
                       "sample_grid", "steps",
                       "cfg", "cfg_low", "cfg_high", "sample_type", "sample_seed", "stochasticity",
                       "grid_scale", "sample_weights"}


def make_objective(args) -> Objective:
    transport = TRANSPORTS[args.transport]()
    fm = args.baseline == "flow-matching"
    return Objective(
        transport=transport,
        diffusion_ratio=1.0 if fm else args.diffusion_ratio,
        consistency_ratio=0.0 if fm else args.consistency_ratio,
        epsilon=args.dde_epsilon,
        p_mean=transport.p_mean if args.p_mean is None else args.p_mean,
        p_std=transport.p_std if args.p_std is None else args.p_std,
        weight_time=args.weight_time, weight_transform=args.weight_transform,
        adaptive=not args.no_adaptive_weight, directional=args.directional_loss,
        label_dropout=args.label_dropout,
        enhance_w_gt=args.enhance_w_gt, enhance_w_cond=args.enhance_w_cond,
        enhance_low=args.enhance_window[0], enhance_high=args.enhance_window[1])


def lr_at(args, step: int) -> float:
    """Linear warm-up over --warmup-steps, then constant (step counts from 0)."""
    if args.warmup_steps > 0 and step < args.warmup_steps:
        return args.lr * (step + 1) / args.warmup_steps
    return args.lr


class _Stop:
    signum = 0

    @classmethod
    def handler(cls, signum, frame):
        if cls.signum:                      # second signal: give up at once
            raise KeyboardInterrupt
        cls.signum = signum
        print(f"\nsignal {signum}: finishing this step, saving the checkpoint, exiting", flush=True)


LOG_FIELDS = ["step", "epoch", "train_seconds", "lr", "loss", "loss_weighted", "loss_diffusion",
              "loss_transition", "grad_norm", "sec_per_step"]


def _open_log(run_dir: str, step: int):
    """CSV log; on resume, rows past the checkpoint's step are dropped so the log stays consistent."""
    path = os.path.join(run_dir, LOG_NAME)
    rows = []
    if os.path.exists(path):
        with open(path, newline="") as f:
            rows = [row for row in csv.DictReader(f) if int(row["step"]) <= step]
    f = open(path, "w", newline="")
    w = csv.DictWriter(f, LOG_FIELDS)
    w.writeheader()
    w.writerows(rows)
    f.flush()
    return f, w


def train(args) -> dict:
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    os.makedirs(args.run_dir, exist_ok=True)
    ck = None
    if args.resume and os.path.exists(os.path.join(args.run_dir, CHECKPOINT_NAME)):
        ck = load_checkpoint(args.run_dir)
        saved = ck["args"]
        for k, v in vars(args).items():
            if k not in RUNTIME_ONLY and k in saved and saved[k] != v and _explicit(k):
                print(f"note: --{k.replace('_', '-')} {v} ignored on resume (the run uses {saved[k]})")
        merged = dict(saved)
        merged.update({k: v for k, v in vars(args).items() if k in RUNTIME_ONLY})
        args = argparse.Namespace(**merged)
    elif args.resume:
        print(f"--resume: no checkpoint in {args.run_dir} yet, starting a new run")
    elif os.path.exists(os.path.join(args.run_dir, CHECKPOINT_NAME)):
        raise SystemExit(f"{args.run_dir} already holds a checkpoint: pass --resume to continue it, "
                         "or choose another --run-dir")

    objective = make_objective(args)
    cfg = model_config(args)
    torch.manual_seed(args.seed)
    model = build_model(cfg)
    init_weights(model)
    ema = copy.deepcopy(model).requires_grad_(False)
    params = [p for p in model.parameters()]
    opt = torch.optim.AdamW(params, lr=args.lr, betas=(args.beta1, args.beta2), eps=args.adam_eps,
                            weight_decay=args.weight_decay)
    gen = torch.Generator().manual_seed(args.seed + 1)
    step, epoch, pos, train_seconds, last_loss = 0, 0, 0, 0.0, None
    if ck is not None:
        model.load_state_dict(ck["model"])
        ema.load_state_dict(ck["ema"])
        opt.load_state_dict(ck["optimizer"])
        gen.set_state(ck["gen_state"])
        torch.set_rng_state(ck["torch_rng_state"])
        step, epoch, pos = ck["step"], ck["epoch"], ck["pos"]
        train_seconds, last_loss = ck["train_seconds"], ck.get("last_loss")
        print(f"resumed {args.run_dir} at step {step} ({train_seconds / 60:.1f} min trained)")
    images, labels, data_dir = load_fashion_mnist(args.data_dir, args.split)
    batches = Batches(images, labels, args.batch, args.seed, epoch, pos)
    with open(os.path.join(args.run_dir, "args.json"), "w") as f:
        json.dump(vars(args), f, indent=1, sort_keys=True)
    n_params = count_params(model)
    print(f"model: D {cfg.hidden_size}, depth {cfg.depth}, heads {cfg.num_heads}, patch {cfg.patch_size}, "
          f"L {cfg.adaln_hidden}, Hm {cfg.mlp_hidden}: {n_params / 1e6:.3f} M parameters; "
          f"{'flow-matching baseline' if args.baseline == 'flow-matching' else 'TiM'} objective, "
          f"{args.transport}, P_mean {objective.p_mean}, P_std {objective.p_std}; data {data_dir} "
          f"({len(images)} images); threads {torch.get_num_threads()}", flush=True)

    def state():
        return {"format": CHECKPOINT_FORMAT, "step": step, "epoch": batches.epoch, "pos": batches.pos,
                "model": model.state_dict(), "ema": ema.state_dict(), "optimizer": opt.state_dict(),
                "gen_state": gen.get_state(), "torch_rng_state": torch.get_rng_state(),
                "args": vars(args), "train_seconds": train_seconds, "last_loss": last_loss,
                "config": asdict(cfg), "torch_version": torch.__version__}

    log_file, log = _open_log(args.run_dir, step)
    old_handlers = {s: signal.signal(s, _Stop.handler) for s in (signal.SIGINT, signal.SIGTERM)}
    _Stop.signum = 0
    budget = None if args.time_budget_minutes is None else args.time_budget_minutes * 60.0
    ema_params = list(ema.parameters())
    sample_mode = "diffusion" if args.baseline == "flow-matching" else "transition"

    def fresh():
        return {"n": 0, "loss": 0.0, "w": 0.0, "ld": 0.0, "nd": 0, "lt": 0.0, "nt": 0, "g": 0.0}

    acc = fresh()
    losses = []
    finished_reason = None
    clock = interval_start = time.perf_counter()
    try:
        while True:
            if args.max_steps is not None and step >= args.max_steps:
                finished_reason = f"max steps {args.max_steps}"
                break
            if budget is not None and train_seconds >= budget:
                finished_reason = f"time budget {args.time_budget_minutes} min"
                break
            if _Stop.signum:
                break
            lr = lr_at(args, step)
            for g in opt.param_groups:
                g["lr"] = lr
            x, y = batches.next()
            drop = torch.rand(len(y), generator=gen) < objective.label_dropout
            y_dropped = torch.where(drop, torch.full_like(y, NUM_CLASSES), y)
            out = objective.losses(model, ema, x, y_dropped, gen, NUM_CLASSES, y_cond=y)
            opt.zero_grad(set_to_none=True)
            out["loss"].backward()
            gnorm = torch.nn.utils.clip_grad_norm_(params, args.grad_clip)
            opt.step()
            with torch.no_grad():
                torch._foreach_lerp_(ema_params, params, 1.0 - args.ema_decay)
            step += 1
            ps, nd = out["per_sample"], out["n_diffusion"]
            loss_value = ps.mean().item()
            losses.append(loss_value)
            acc["n"] += 1
            acc["loss"] += loss_value
            acc["w"] += out["loss"].item()
            acc["g"] += gnorm.item()
            if nd:
                acc["ld"] += ps[:nd].sum().item()
                acc["nd"] += nd
            if nd < len(ps):
                acc["lt"] += ps[nd:].sum().item()
                acc["nt"] += len(ps) - nd
            now = time.perf_counter()
            train_seconds += now - clock
            clock = now
            if step % args.log_every == 0:
                n = acc["n"]
                last_loss = acc["loss"] / n
                row = {"step": step, "epoch": batches.epoch, "train_seconds": f"{train_seconds:.2f}",
                       "lr": repr(lr), "loss": repr(last_loss), "loss_weighted": repr(acc["w"] / n),
                       "loss_diffusion": repr(acc["ld"] / acc["nd"]) if acc["nd"] else "",
                       "loss_transition": repr(acc["lt"] / acc["nt"]) if acc["nt"] else "",
                       "grad_norm": repr(acc["g"] / n), "sec_per_step": f"{(now - interval_start) / n:.4f}"}
                log.writerow(row)
                log_file.flush()
                print(f"step {step:6d}  ep {batches.epoch:3d}  {train_seconds / 60:7.2f} min  lr {lr:.2e}  "
                      f"loss {last_loss:.4f} (r=t {row['loss_diffusion'][:6] or '-':>6s}, "
                      f"r<t {row['loss_transition'][:6] or '-':>6s})  |g| {acc['g'] / n:.3f}  "
                      f"{(now - interval_start) / n:.3f} s/step", flush=True)
                acc = fresh()
                interval_start = now
            if args.checkpoint_every and step % args.checkpoint_every == 0:
                save_checkpoint(args.run_dir, state())
            if args.sample_every and step % args.sample_every == 0:
                path = os.path.join(args.run_dir, f"grid_{step:07d}.png")
                sample_grid(ema, objective.transport, path, args.sample_steps, args.cfg, args.cfg_low,
                            args.cfg_high, sample_mode, args.sample_seed)
                print(f"  wrote {path}", flush=True)
            now = time.perf_counter()       # checkpoint and grid time counts against the budget too
            train_seconds += now - clock
            clock = now
        if acc["n"]:
            last_loss = acc["loss"] / acc["n"]
        save_checkpoint(args.run_dir, state())   # only at a clean stop: a crash keeps the last periodic one
    finally:
        log_file.close()
        for s, h in old_handlers.items():
            signal.signal(s, h)
    print(f"saved {os.path.join(args.run_dir, CHECKPOINT_NAME)} at step {step} "
          f"({train_seconds / 60:.1f} min trained)" + (f"; finished: {finished_reason}" if finished_reason else
                                                      "; interrupted, continue with --resume"), flush=True)
    return {"step": step, "losses": losses, "finished": finished_reason, "signum": _Stop.signum}


# ==============================================================================================
# Command line.

_EXPLICIT: set = set()


def _explicit(name: str) -> bool:
    return name in _EXPLICIT


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    g = p.add_argument_group("run")
    g.add_argument("--run-dir", required=True, help="checkpoint, log.csv, args.json and grids go here")
    g.add_argument("--resume", action="store_true", help="continue the run in --run-dir (exactly)")
    g.add_argument("--time-budget-minutes", type=float, default=None,
                   help="stop (and save) once this much training wall time has accumulated, over all resumes")
    g.add_argument("--max-steps", type=int, default=None, help="stop (and save) at this step")
    g.add_argument("--checkpoint-every", type=int, default=250, help="steps between checkpoints (0: only at exit)")
    g.add_argument("--log-every", type=int, default=25)
    g.add_argument("--sample-every", type=int, default=0, help="steps between 10x10 EMA sample grids (0: never)")
    g.add_argument("--sample-steps", type=int, default=4, help="sampling steps for the training-time grids")
    g.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    g.add_argument("--seed", type=int, default=0)

    g = p.add_argument_group("data")
    g.add_argument("--data-dir", default=None,
                   help="folder with the Fashion-MNIST idx .gz files (default: found under /usr/share)")
    g.add_argument("--split", choices=("train", "test", "all"), default="train")
    g.add_argument("--batch", type=int, default=64)

    g = p.add_argument_group("model (tim_reference.TiM: qk_norm, interval qkv, separate delta embedder, t-r)")
    g.add_argument("--hidden", type=int, default=192, help="D")
    g.add_argument("--depth", type=int, default=4)
    g.add_argument("--heads", type=int, default=4)
    g.add_argument("--patch", type=int, default=4)
    g.add_argument("--adaln-hidden", type=int, default=64, help="L, hidden width of the block adaLN SwiGLU")
    g.add_argument("--mlp-ratio", type=float, default=4.0)

    g = p.add_argument_group("objective (SPEC 7)")
    g.add_argument("--baseline", choices=("none", "flow-matching"), default="none",
                   help="flow-matching: every pair r = t (diffusion ratio 1, consistency 0), all else equal")
    g.add_argument("--transport", choices=sorted(TRANSPORTS), default="ot-fm")
    g.add_argument("--p-mean", type=float, default=None,
                   help="time sampling location (default: the transport's; OT-FM -0.4)")
    g.add_argument("--p-std", type=float, default=None,
                   help="time sampling spread (default: the transport's; OT-FM 1.0)")
    g.add_argument("--diffusion-ratio", type=float, default=0.5)
    g.add_argument("--consistency-ratio", type=float, default=0.1)
    g.add_argument("--dde-epsilon", type=float, default=0.005)
    g.add_argument("--weight-time", choices=("constant", "reciprocal", "sqrt", "square", "soft-min-snr"),
                   default="sqrt")
    g.add_argument("--weight-transform", choices=("none", "tangent", "sigmoid"), default="tangent")
    g.add_argument("--no-adaptive-weight", action="store_true")
    g.add_argument("--directional-loss", action="store_true", help="add 1 - cos(F, F*) over channels")
    g.add_argument("--label-dropout", type=float, default=0.1)
    g.add_argument("--enhance-w-gt", type=float, default=None,
                   help="guidance-enhanced target: weight of v_t (off when unset)")
    g.add_argument("--enhance-w-cond", type=float, default=0.0)
    g.add_argument("--enhance-window", type=float, nargs=2, default=(0.0, 1.0), metavar=("LOW", "HIGH"),
                   help="rows with LOW <= t <= HIGH (absolute times, released w_start, w_end) get the enhanced target")

    g = p.add_argument_group("optimiser")
    g.add_argument("--lr", type=float, default=1e-4)
    g.add_argument("--warmup-steps", type=int, default=0)
    g.add_argument("--beta1", type=float, default=0.9)
    g.add_argument("--beta2", type=float, default=0.95)
    g.add_argument("--adam-eps", type=float, default=1e-6)
    g.add_argument("--weight-decay", type=float, default=0.01)
    g.add_argument("--grad-clip", type=float, default=1.0)
    g.add_argument("--ema-decay", type=float, default=0.999,
                   help="0.999 (half-life ~700 steps) suits runs of a few thousand steps; released 0.9999")

    g = p.add_argument_group("export / sampling (use the checkpoint in --run-dir instead of training)")
    g.add_argument("--export", metavar="OUT.safetensors", default=None)
    g.add_argument("--export-dtype", choices=("float16", "bfloat16", "float32"), default="float16")
    g.add_argument("--export-weights", choices=("ema", "online"), default="ema")
    g.add_argument("--export-sampling", metavar="K=V,...", default=None,
                   help="recommended settings stored in the metadata as sample_<key> and used by `tim sample` "
                        "when its option is not given: keys steps, cfg_scale, guidance_low, guidance_high")
    g.add_argument("--sample-grid", metavar="PNG", default=None)
    g.add_argument("--sample-weights", choices=("ema", "online"), default="ema")
    g.add_argument("--steps", type=int, default=4, help="sampling steps for --sample-grid")
    g.add_argument("--cfg", type=float, default=2.0)
    g.add_argument("--cfg-low", type=float, default=0.0)
    g.add_argument("--cfg-high", type=float, default=1.0)
    g.add_argument("--sample-type", choices=("auto", "transition", "diffusion"), default="auto",
                   help="auto: diffusion for the flow-matching baseline, transition otherwise")
    g.add_argument("--stochasticity", type=float, default=0.0)
    g.add_argument("--sample-seed", type=int, default=0)
    g.add_argument("--grid-scale", type=int, default=2)
    return p


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _EXPLICIT.clear()
    _EXPLICIT.update(k for k, v in vars(args).items() if v != parser.get_default(k))
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    if args.export or args.sample_grid:
        ck = load_checkpoint(args.run_dir)
        if args.export:
            export_safetensors(ck, args.export, args.export_dtype, args.export_weights, args.export_sampling)
        if args.sample_grid:
            run_args = argparse.Namespace(**ck["args"])
            model = build_model(model_config(run_args))
            model.load_state_dict(ck["ema"] if args.sample_weights == "ema" else ck["model"])
            mode = args.sample_type
            if mode == "auto":
                mode = "diffusion" if run_args.baseline == "flow-matching" else "transition"
            t0 = time.perf_counter()
            sample_grid(model, TRANSPORTS[run_args.transport](), args.sample_grid, args.steps, args.cfg,
                        args.cfg_low, args.cfg_high, mode, args.sample_seed, args.stochasticity, args.grid_scale)
            print(f"wrote {args.sample_grid}: step {ck['step']}, {args.steps} {mode} steps, cfg {args.cfg} "
                  f"in ({args.cfg_low}, {args.cfg_high}), {time.perf_counter() - t0:.1f} s")
        return 0
    result = train(args)
    return 128 + result["signum"] if result["signum"] else 0


if __name__ == "__main__":
    sys.exit(main())
