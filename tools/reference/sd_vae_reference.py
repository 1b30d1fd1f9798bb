"""Independent float64 PyTorch reference of the Stable Diffusion VAE decoder (sd-vae-ft-ema, SPEC 8).

Written from the architecture facts (docs/vae.md), as plain functions over a state dict whose names
are the released `diffusion_pytorch_model.safetensors` names (decoder.*, post_quant_conv.*), so it
can read the released file and the golden files alike. GroupNorm, SiLU, softmax attention and the
nearest upsample are written out; convolutions use F.conv2d.
`python sd_vae_reference.py --check-diffusers` compares it with diffusers' AutoencoderKL (random
weights, several configs) in float64; see tools/reference/README.md.

Shape legend: B batch, C channels, H, W spatial size, h, w latent size, G GroupNorm groups,
N = H*W attention tokens.
"""

from __future__ import annotations

import argparse
import math
import re
from dataclasses import dataclass

import torch
import torch.nn.functional as F

SCALING_FACTOR = 0.18215   # sd-vae-ft-ema's config
GROUP_NORM_EPS = 1e-6
ATTENTION_NAMES = (("to_q", "to_k", "to_v", "to_out.0"),       # current diffusers files
                   ("query", "key", "value", "proj_attn"))     # older files (Linear or 1x1 conv)


@dataclass
class VaeDecoderConfig:
    latent_channels: int = 4
    block_out_channels: tuple[int, ...] = (128, 256, 512, 512)
    layers_per_block: int = 2       # the decoder's up blocks hold layers_per_block + 1 resnets
    norm_num_groups: int = 32
    eps: float = GROUP_NORM_EPS
    scaling_factor: float = SCALING_FACTOR
    out_channels: int = 3


def group_norm(x: torch.Tensor, groups: int, weight: torch.Tensor, bias: torch.Tensor, eps: float) -> torch.Tensor:
    """x (B, C, H, W): per sample and group of C/G channels, (x - mean) / sqrt(var + eps) over
    (C/G, H, W) with the biased variance, then the per-channel affine."""
    B, C, H, W = x.shape
    if C % groups:
        raise ValueError(f"GroupNorm: {C} channels not divisible by {groups} groups")
    u = x.reshape(B, groups, -1)
    mean = u.mean(dim=2, keepdim=True)
    var = ((u - mean) ** 2).mean(dim=2, keepdim=True)
    u = (u - mean) / torch.sqrt(var + eps)
    return u.reshape(B, C, H, W) * weight.reshape(1, C, 1, 1) + bias.reshape(1, C, 1, 1)


def silu(x: torch.Tensor) -> torch.Tensor:
    return x / (1.0 + torch.exp(-x))


def conv(x: torch.Tensor, sd: dict, name: str) -> torch.Tensor:
    """Conv2d with stride 1 and 'same' padding (k // 2): 3x3 convs pad 1, 1x1 convs pad 0."""
    weight = sd[name + ".weight"]
    return F.conv2d(x, weight, sd[name + ".bias"], padding=weight.shape[-1] // 2)


def resnet(x: torch.Tensor, sd: dict, name: str, cfg: VaeDecoderConfig) -> torch.Tensor:
    """GroupNorm, SiLU, conv3x3, GroupNorm, SiLU, conv3x3, plus the input (through a 1x1
    `conv_shortcut` when the channel count changes)."""
    G, eps = cfg.norm_num_groups, cfg.eps
    h = conv(silu(group_norm(x, G, sd[f"{name}.norm1.weight"], sd[f"{name}.norm1.bias"], eps)), sd, f"{name}.conv1")
    h = conv(silu(group_norm(h, G, sd[f"{name}.norm2.weight"], sd[f"{name}.norm2.bias"], eps)), sd, f"{name}.conv2")
    shortcut = conv(x, sd, f"{name}.conv_shortcut") if f"{name}.conv_shortcut.weight" in sd else x
    return shortcut + h


def attention_projection(sd: dict, name: str, C: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A q/k/v/out projection's (weight (C, C), bias (C)); 1x1-conv weights (C, C, 1, 1) accepted."""
    weight = sd[name + ".weight"]
    if weight.shape == (C, C, 1, 1):
        weight = weight.reshape(C, C)
    if weight.shape != (C, C):
        raise ValueError(f"{name}.weight: expected shape ({C}, {C}) or ({C}, {C}, 1, 1), got {tuple(weight.shape)}")
    return weight, sd[name + ".bias"]


def attention(x: torch.Tensor, sd: dict, name: str, cfg: VaeDecoderConfig) -> torch.Tensor:
    """Single-head self-attention over the N = H*W positions, channels as features, residual."""
    B, C, H, W = x.shape
    names = next((n for n in ATTENTION_NAMES if f"{name}.{n[0]}.weight" in sd), None)
    if names is None:
        raise KeyError(f"{name}: no to_q/query projection")
    u = group_norm(x, cfg.norm_num_groups, sd[f"{name}.group_norm.weight"], sd[f"{name}.group_norm.bias"], cfg.eps)
    tokens = u.reshape(B, C, H * W).transpose(1, 2)                      # (B, N, C)
    q, k, v, o = (attention_projection(sd, f"{name}.{n}", C) for n in names)
    q_, k_, v_ = (tokens @ w.T + b for w, b in (q, k, v))
    scores = (q_ @ k_.transpose(1, 2)) / math.sqrt(C)                    # (B, N, N)
    scores = scores - scores.max(dim=-1, keepdim=True).values
    p = torch.exp(scores)
    p = p / p.sum(dim=-1, keepdim=True)
    out = (p @ v_) @ o[0].T + o[1]                                       # (B, N, C)
    return x + out.transpose(1, 2).reshape(B, C, H, W)


def upsample_nearest2x(x: torch.Tensor) -> torch.Tensor:
    return x.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3)


def count_indexed(sd: dict, pattern: str) -> int:
    found = {int(m.group(1)) for k in sd if (m := re.match(pattern, k))}
    return max(found) + 1 if found else 0


def decode(z: torch.Tensor, sd: dict, cfg: VaeDecoderConfig, scale: bool = True) -> torch.Tensor:
    """z (B, latent_channels, h, w) -> image (B, 3, 2^(blocks-1) h, 2^(blocks-1) w), about [-1, 1],
    unclamped. With `scale`, z is divided by the scaling factor first (what the released
    pipelines do before decoding)."""
    x = z / cfg.scaling_factor if scale else z
    x = conv(x, sd, "post_quant_conv")
    x = conv(x, sd, "decoder.conv_in")
    x = resnet(x, sd, "decoder.mid_block.resnets.0", cfg)
    x = attention(x, sd, "decoder.mid_block.attentions.0", cfg)
    x = resnet(x, sd, "decoder.mid_block.resnets.1", cfg)
    blocks = count_indexed(sd, r"decoder\.up_blocks\.(\d+)\.")
    for i in range(blocks):
        for j in range(count_indexed(sd, rf"decoder\.up_blocks\.{i}\.resnets\.(\d+)\.")):
            x = resnet(x, sd, f"decoder.up_blocks.{i}.resnets.{j}", cfg)
        if f"decoder.up_blocks.{i}.upsamplers.0.conv.weight" in sd:
            x = conv(upsample_nearest2x(x), sd, f"decoder.up_blocks.{i}.upsamplers.0.conv")
    x = silu(group_norm(x, cfg.norm_num_groups, sd["decoder.conv_norm_out.weight"], sd["decoder.conv_norm_out.bias"],
                        cfg.eps))
    return conv(x, sd, "decoder.conv_out")


def parameter_shapes(cfg: VaeDecoderConfig) -> dict[str, tuple[int, ...]]:
    """Every decoder parameter's released name and shape for `cfg` (current attention names)."""
    shapes: dict[str, tuple[int, ...]] = {}

    def conv_(name: str, cout: int, cin: int, k: int) -> None:
        shapes[name + ".weight"] = (cout, cin, k, k)
        shapes[name + ".bias"] = (cout,)

    def norm_(name: str, c: int) -> None:
        shapes[name + ".weight"] = (c,)
        shapes[name + ".bias"] = (c,)

    def resnet_(name: str, cin: int, cout: int) -> None:
        norm_(name + ".norm1", cin)
        conv_(name + ".conv1", cout, cin, 3)
        norm_(name + ".norm2", cout)
        conv_(name + ".conv2", cout, cout, 3)
        if cin != cout:
            conv_(name + ".conv_shortcut", cout, cin, 1)

    L, widths = cfg.latent_channels, list(reversed(cfg.block_out_channels))
    conv_("post_quant_conv", L, L, 1)
    conv_("decoder.conv_in", widths[0], L, 3)
    resnet_("decoder.mid_block.resnets.0", widths[0], widths[0])
    norm_("decoder.mid_block.attentions.0.group_norm", widths[0])
    for n in ATTENTION_NAMES[0]:
        shapes[f"decoder.mid_block.attentions.0.{n}.weight"] = (widths[0], widths[0])
        shapes[f"decoder.mid_block.attentions.0.{n}.bias"] = (widths[0],)
    resnet_("decoder.mid_block.resnets.1", widths[0], widths[0])
    for i, out in enumerate(widths):
        cin = widths[max(i - 1, 0)]
        for j in range(cfg.layers_per_block + 1):
            resnet_(f"decoder.up_blocks.{i}.resnets.{j}", cin if j == 0 else out, out)
        if i + 1 < len(widths):
            conv_(f"decoder.up_blocks.{i}.upsamplers.0.conv", out, out, 3)
    norm_("decoder.conv_norm_out", widths[-1])
    conv_("decoder.conv_out", cfg.out_channels, widths[-1], 3)
    return shapes


def diffusers_model(cfg: VaeDecoderConfig):
    from diffusers import AutoencoderKL
    n = len(cfg.block_out_channels)
    return AutoencoderKL(in_channels=3, out_channels=cfg.out_channels,
                         down_block_types=("DownEncoderBlock2D",) * n, up_block_types=("UpDecoderBlock2D",) * n,
                         block_out_channels=cfg.block_out_channels, layers_per_block=cfg.layers_per_block,
                         latent_channels=cfg.latent_channels, norm_num_groups=cfg.norm_num_groups,
                         scaling_factor=cfg.scaling_factor)


def randomize_(state: dict[str, torch.Tensor]) -> None:
    """Random weights with O(1) activations: conv/linear N(0, 1/fan_in), biases N(0, 0.1^2),
    norm gains 1 + N(0, 0.2^2), norm biases N(0, 0.2^2). Draws in sorted-name order."""
    for name in sorted(state):
        t = state[name]
        if ".norm" in name or "group_norm" in name or "conv_norm_out" in name:
            t.copy_((1.0 if name.endswith("weight") else 0.0) + 0.2 * torch.randn(t.shape))
        elif name.endswith("bias"):
            t.copy_(0.1 * torch.randn(t.shape))
        else:
            t.copy_(torch.randn(t.shape) / math.sqrt(math.prod(t.shape[1:])))


def old_attention_names(sd: dict[str, torch.Tensor], as_conv: bool) -> dict[str, torch.Tensor]:
    """The same weights under the older query/key/value/proj_attn names (optionally as 1x1 convs)."""
    out = {}
    for k, v in sd.items():
        for new, old in zip(ATTENTION_NAMES[0], ATTENTION_NAMES[1]):
            if f".attentions.0.{new}." in k:
                k = k.replace(f".{new}.", f".{old}.")
                if as_conv and k.endswith("weight"):
                    v = v.reshape(*v.shape, 1, 1)
        out[k] = v
    return out


def check_diffusers() -> float:
    """Our decode against diffusers' AutoencoderKL.decode with the same random weights, float64."""
    torch.set_default_dtype(torch.float64)
    worst = 0.0
    configs = [(VaeDecoderConfig(block_out_channels=(32, 32, 64, 64), norm_num_groups=8), (3, 5), 11),
               (VaeDecoderConfig(block_out_channels=(32, 64), norm_num_groups=32, layers_per_block=1), (4, 4), 12),
               (VaeDecoderConfig(block_out_channels=(16, 16, 32), norm_num_groups=4, latent_channels=4), (5, 3), 13)]
    for cfg, (h, w), seed in configs:
        torch.manual_seed(seed)
        model = diffusers_model(cfg).double().eval()
        with torch.no_grad():
            state = model.state_dict()
            randomize_(state)
            model.load_state_dict(state)
            sd = {k: v for k, v in state.items() if k.startswith(("decoder.", "post_quant_conv."))}
            expected = parameter_shapes(cfg)
            if {k: tuple(v.shape) for k, v in sd.items()} != expected:
                raise SystemExit(f"parameter_shapes disagrees with diffusers: {sorted(set(sd) ^ set(expected))}")
            z = torch.randn(2, cfg.latent_channels, h, w)
            theirs = model.decode(z / cfg.scaling_factor).sample
            for variant in (sd, old_attention_names(sd, False), old_attention_names(sd, True)):
                ours = decode(z, variant, cfg)
                diff = ((ours - theirs).abs().max() / theirs.abs().max()).item()
                worst = max(worst, diff)
        print(f"widths {cfg.block_out_channels} G {cfg.norm_num_groups} layers {cfg.layers_per_block} latent {h}x{w}: "
              f"out {tuple(theirs.shape)} max|out| {theirs.abs().max().item():.3f} relative diff {diff:.2e}")
    print(f"worst relative difference vs diffusers: {worst:.2e}")
    if worst > 1e-12:
        raise SystemExit("reference and diffusers disagree")
    return worst


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check-diffusers", action="store_true", help="compare with diffusers' AutoencoderKL")
    args = parser.parse_args()
    if args.check_diffusers:
        check_diffusers()
    else:
        parser.print_help()


if __name__ == "__main__":
    main()
