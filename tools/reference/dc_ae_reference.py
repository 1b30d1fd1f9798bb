"""Independent float64 PyTorch reference of the DC-AE f32c32 decoder (dc-ae-f32c32-sana-1.1, SPEC 8).

Written from the architecture facts (docs/vae.md, "DC-AE f32c32"), as plain functions over a state
dict whose names are the released `diffusion_pytorch_model.safetensors` names (decoder.*), so it
can read the released file and the golden files alike. RMSNorm, the ReLU linear attention, the
multi-scale q/k/v aggregation, the GLU inverted bottleneck, nearest upsampling, pixel shuffle and
the channel-repeat shortcuts are written out; convolutions use F.conv2d.
`python dc_ae_reference.py --check-diffusers` compares it with diffusers' AutoencoderDC (random
weights, several configs) in float64; see tools/reference/README.md.

Shape legend: B batch, L latent channels, h, w latent size, C channels of a stage, H, W spatial
size, N = H*W pixels, nh heads, hd head dim (attention_head_dim), S multi-scale branches.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import re
from dataclasses import dataclass

import torch
import torch.nn.functional as F

SCALING_FACTOR = 0.41407   # dc-ae-f32c32-sana-1.1's config
RMS_NORM_EPS = 1e-5        # every RMSNorm of the decoder (fixed in diffusers, not in config.json)
ATTENTION_EPS = 1e-15      # the linear attention's denominator guard (fixed in diffusers)
RES_BLOCK = "ResBlock"
VIT_BLOCK = "EfficientViTBlock"


@dataclass
class DcAeDecoderConfig:
    """The decoder half of AutoencoderDC's config; the defaults are dc-ae-f32c32-sana-1.1's."""
    latent_channels: int = 32
    block_out_channels: tuple[int, ...] = (128, 256, 512, 512, 1024, 1024)
    layers_per_block: tuple[int, ...] = (3, 3, 3, 3, 3, 3)
    block_types: tuple[str, ...] = (RES_BLOCK,) * 3 + (VIT_BLOCK,) * 3
    qkv_multiscales: tuple[tuple[int, ...], ...] = ((), (), (), (5,), (5,), (5,))
    attention_head_dim: int = 32
    upsample_block_type: str = "interpolate"   # or "pixel_shuffle"
    in_shortcut: bool = True                   # decoder_in_shortcut
    scaling_factor: float = SCALING_FACTOR
    out_channels: int = 3

    def upscale(self) -> int:
        return 2 ** (len(self.block_out_channels) - 1)


def rms_norm(x: torch.Tensor, sd: dict, name: str) -> torch.Tensor:
    """x (B, C, H, W): per pixel, x / sqrt(mean over C of x^2 + eps) * weight + bias."""
    rstd = 1.0 / torch.sqrt((x * x).mean(dim=1, keepdim=True) + RMS_NORM_EPS)
    C = x.shape[1]
    return x * rstd * sd[name + ".weight"].reshape(1, C, 1, 1) + sd[name + ".bias"].reshape(1, C, 1, 1)


def silu(x: torch.Tensor) -> torch.Tensor:
    return x / (1.0 + torch.exp(-x))


def relu(x: torch.Tensor) -> torch.Tensor:
    return torch.clamp(x, min=0.0)


def conv(x: torch.Tensor, sd: dict, name: str, groups: int = 1) -> torch.Tensor:
    """Stride-1 'same' convolution (padding k // 2); the bias only where the checkpoint has one."""
    weight = sd[name + ".weight"]
    return F.conv2d(x, weight, sd.get(name + ".bias"), padding=weight.shape[-1] // 2, groups=groups)


def linear(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """A bias-free Linear applied to the channels of x (B, Ci, H, W): (B, Co, H, W)."""
    return torch.einsum("oi,bihw->bohw", weight, x)


def upsample_nearest2x(x: torch.Tensor) -> torch.Tensor:
    return x.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3)


def pixel_shuffle2x(x: torch.Tensor) -> torch.Tensor:
    """(B, 4C, H, W) -> (B, C, 2H, 2W): out[c, 2y + i, 2x + j] = in[4c + 2i + j, y, x]."""
    B, C4, H, W = x.shape
    return x.reshape(B, C4 // 4, 2, 2, H, W).permute(0, 1, 4, 2, 5, 3).reshape(B, C4 // 4, 2 * H, 2 * W)


def repeat_channels(x: torch.Tensor, repeats: int) -> torch.Tensor:
    """(B, C, H, W) -> (B, C * repeats, H, W): channel c of the output is channel c // repeats."""
    return x.repeat_interleave(repeats, dim=1)


def res_block(x: torch.Tensor, sd: dict, name: str) -> torch.Tensor:
    """x + RMSNorm(conv3x3_nobias(SiLU(conv3x3(x)))), norm over channels."""
    h = conv(silu(conv(x, sd, name + ".conv1")), sd, name + ".conv2")
    return x + rms_norm(h, sd, name + ".norm")


def linear_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """q, k, v (B, nh, hd, N), q and k already ReLU'd: out[:, n] = sum_m v_m (k_m . q_n) /
    (sum_m k_m . q_n + eps), computed as (V K^T) q_n / ((sum_m k_m) . q_n + eps)."""
    kv = torch.einsum("bhem,bhdm->bhed", v, k)                      # (B, nh, hd, hd)
    numerator = torch.einsum("bhed,bhdn->bhen", kv, q)              # (B, nh, hd, N)
    denominator = torch.einsum("bhd,bhdn->bhn", k.sum(dim=3), q)    # (B, nh, N)
    return numerator / (denominator.unsqueeze(2) + ATTENTION_EPS)


def multiscale_linear_attention(x: torch.Tensor, sd: dict, name: str, cfg: DcAeDecoderConfig) -> torch.Tensor:
    """x + RMSNorm(to_out(attention over heads of the q/k/v channels and their S multi-scale
    aggregates)). The q/k/v projections' outputs are concatenated (3 * inner channels) and then
    read in consecutive groups of 3 hd channels: group g gives one head's (q, k, v), so 'to_q',
    'to_k', 'to_v' are the three thirds of one qkv projection, not per-head roles."""
    B, C, H, W = x.shape
    hd = cfg.attention_head_dim
    qkv = torch.cat([linear(x, sd[f"{name}.to_{r}.weight"]) for r in "qkv"], dim=1)  # (B, 3 inner, H, W)
    branches = [qkv]
    s = 0
    while f"{name}.to_qkv_multiscale.{s}.proj_in.weight" in sd:
        prefix = f"{name}.to_qkv_multiscale.{s}"
        aggregated = conv(qkv, sd, prefix + ".proj_in", groups=qkv.shape[1])       # depthwise k x k
        branches.append(conv(aggregated, sd, prefix + ".proj_out", groups=qkv.shape[1] // hd))  # per hd group
        s += 1
    heads = torch.cat(branches, dim=1).reshape(B, -1, 3 * hd, H * W)    # (B, (1+S) nh, 3 hd, N)
    q, k, v = relu(heads[:, :, :hd]), relu(heads[:, :, hd:2 * hd]), heads[:, :, 2 * hd:]
    out = linear_attention(q, k, v).reshape(B, -1, H, W)                 # (B, (1+S) inner, H, W)
    return x + rms_norm(linear(out, sd[f"{name}.to_out.weight"]), sd, f"{name}.norm_out")


def glu_mb_conv(x: torch.Tensor, sd: dict, name: str) -> torch.Tensor:
    """x + RMSNorm(conv_point(value * SiLU(gate))), (value, gate) = the two channel halves of
    depthwise3x3(SiLU(conv_inverted(x)))."""
    h = silu(conv(x, sd, name + ".conv_inverted"))
    h = conv(h, sd, name + ".conv_depth", groups=h.shape[1])
    value, gate = h.chunk(2, dim=1)
    return x + rms_norm(conv(value * silu(gate), sd, name + ".conv_point"), sd, name + ".norm")


def efficient_vit_block(x: torch.Tensor, sd: dict, name: str, cfg: DcAeDecoderConfig) -> torch.Tensor:
    return glu_mb_conv(multiscale_linear_attention(x, sd, name + ".attn", cfg), sd, name + ".conv_out")


def up_block(x: torch.Tensor, sd: dict, name: str, cfg: DcAeDecoderConfig, out_channels: int) -> torch.Tensor:
    """2x upsampling Ci -> Co: conv3x3(nearest 2x(x)) ('interpolate') or pixel_shuffle(conv3x3(x)
    to 4 Co) ('pixel_shuffle'), plus the shortcut pixel_shuffle(repeat_channels(x, 4 Co / Ci))."""
    in_channels = x.shape[1]
    if cfg.upsample_block_type == "interpolate":
        y = conv(upsample_nearest2x(x), sd, name + ".conv")
    else:
        y = pixel_shuffle2x(conv(x, sd, name + ".conv"))
    return y + pixel_shuffle2x(repeat_channels(x, 4 * out_channels // in_channels))


def decode(z: torch.Tensor, sd: dict, cfg: DcAeDecoderConfig, scale: bool = True) -> torch.Tensor:
    """z (B, L, h, w) -> image (B, 3, upscale h, upscale w), about [-1, 1], unclamped. With
    `scale`, z is divided by the scaling factor first (what the released pipelines do)."""
    x = z / cfg.scaling_factor if scale else z
    widths = cfg.block_out_channels
    h = conv(x, sd, "decoder.conv_in")
    if cfg.in_shortcut:
        h = h + repeat_channels(x, widths[-1] // cfg.latent_channels)
    for i in reversed(range(len(widths))):
        first = 0
        if i + 1 < len(widths):
            h = up_block(h, sd, f"decoder.up_blocks.{i}.0", cfg, widths[i])
            first = 1
        for j in range(first, first + cfg.layers_per_block[i]):
            name = f"decoder.up_blocks.{i}.{j}"
            h = res_block(h, sd, name) if cfg.block_types[i] == RES_BLOCK else efficient_vit_block(h, sd, name, cfg)
    h = relu(rms_norm(h, sd, "decoder.norm_out"))
    return conv(h, sd, "decoder.conv_out")


def parameter_shapes(cfg: DcAeDecoderConfig) -> dict[str, tuple[int, ...]]:
    """Every decoder parameter's released name and shape for `cfg`."""
    shapes: dict[str, tuple[int, ...]] = {}

    def conv_(name: str, cout: int, cin_per_group: int, k: int, bias: bool = True) -> None:
        shapes[name + ".weight"] = (cout, cin_per_group, k, k)
        if bias:
            shapes[name + ".bias"] = (cout,)

    def norm_(name: str, c: int) -> None:
        shapes[name + ".weight"] = (c,)
        shapes[name + ".bias"] = (c,)

    widths, hd = cfg.block_out_channels, cfg.attention_head_dim
    conv_("decoder.conv_in", widths[-1], cfg.latent_channels, 3)
    for i, c in enumerate(widths):
        first = 0
        if i + 1 < len(widths):
            conv_(f"decoder.up_blocks.{i}.0.conv", c if cfg.upsample_block_type == "interpolate" else 4 * c,
                  widths[i + 1], 3)
            first = 1
        for j in range(first, first + cfg.layers_per_block[i]):
            name = f"decoder.up_blocks.{i}.{j}"
            if cfg.block_types[i] == RES_BLOCK:
                conv_(name + ".conv1", c, c, 3)
                conv_(name + ".conv2", c, c, 3, bias=False)
                norm_(name + ".norm", c)
                continue
            inner = (c // hd) * hd
            for r in "qkv":
                shapes[f"{name}.attn.to_{r}.weight"] = (inner, c)
            for s, k in enumerate(cfg.qkv_multiscales[i]):
                conv_(f"{name}.attn.to_qkv_multiscale.{s}.proj_in", 3 * inner, 1, k, bias=False)
                conv_(f"{name}.attn.to_qkv_multiscale.{s}.proj_out", 3 * inner, hd, 1, bias=False)
            shapes[f"{name}.attn.to_out.weight"] = (c, inner * (1 + len(cfg.qkv_multiscales[i])))
            norm_(f"{name}.attn.norm_out", c)
            conv_(f"{name}.conv_out.conv_inverted", 8 * c, c, 1)
            conv_(f"{name}.conv_out.conv_depth", 8 * c, 1, 3)
            conv_(f"{name}.conv_out.conv_point", c, 4 * c, 1, bias=False)
            norm_(f"{name}.conv_out.norm", c)
    norm_("decoder.norm_out", widths[0])
    conv_("decoder.conv_out", cfg.out_channels, widths[0], 3)
    return shapes


def count_indexed(sd: dict, pattern: str) -> int:
    found = {int(m.group(1)) for k in sd if (m := re.match(pattern, k))}
    return max(found) + 1 if found else 0


def infer_config(sd: dict, attention_head_dim: int = 32, in_shortcut: bool = True,
                 scaling_factor: float = SCALING_FACTOR) -> DcAeDecoderConfig:
    """The decoder config from the tensor names and shapes of `sd` (the released names), plus what
    they cannot tell. Stage i's blocks are decoder.up_blocks.{i}.{j}, j from 1 when the stage
    starts with its 2x upsampling (every stage but the deepest), else from 0."""
    stages = count_indexed(sd, r"decoder\.up_blocks\.(\d+)\.")
    widths, layers, types, scales = [], [], [], []
    upsample = "interpolate"
    for i in range(stages):
        first = 1 if i + 1 < stages else 0
        count = count_indexed(sd, rf"decoder\.up_blocks\.{i}\.(\d+)\.") - first
        name = f"decoder.up_blocks.{i}.{first}"
        if f"{name}.conv1.weight" in sd:
            types.append(RES_BLOCK)
            widths.append(sd[f"{name}.conv1.weight"].shape[0])
            scales.append(())
        else:
            types.append(VIT_BLOCK)
            widths.append(sd[f"{name}.attn.to_q.weight"].shape[1])
            s = count_indexed(sd, rf"{name}\.attn\.to_qkv_multiscale\.(\d+)\.")
            scales.append(tuple(sd[f"{name}.attn.to_qkv_multiscale.{k}.proj_in.weight"].shape[-1] for k in range(s)))
        layers.append(count)
        if first and sd[f"decoder.up_blocks.{i}.0.conv.weight"].shape[0] == 4 * widths[-1]:
            upsample = "pixel_shuffle"
    return DcAeDecoderConfig(latent_channels=sd["decoder.conv_in.weight"].shape[1], block_out_channels=tuple(widths),
                             layers_per_block=tuple(layers), block_types=tuple(types), qkv_multiscales=tuple(scales),
                             attention_head_dim=attention_head_dim, upsample_block_type=upsample,
                             in_shortcut=in_shortcut, scaling_factor=scaling_factor,
                             out_channels=sd["decoder.conv_out.weight"].shape[0])


def diffusers_model(cfg: DcAeDecoderConfig):
    """diffusers' AutoencoderDC with `cfg` as its decoder (the encoder mirrors it; unused here)."""
    from diffusers import AutoencoderDC
    n = len(cfg.block_out_channels)
    return AutoencoderDC(in_channels=cfg.out_channels, latent_channels=cfg.latent_channels,
                         attention_head_dim=cfg.attention_head_dim,
                         encoder_block_types=cfg.block_types, decoder_block_types=cfg.block_types,
                         encoder_block_out_channels=cfg.block_out_channels,
                         decoder_block_out_channels=cfg.block_out_channels,
                         encoder_layers_per_block=(1,) * n, decoder_layers_per_block=cfg.layers_per_block,
                         encoder_qkv_multiscales=cfg.qkv_multiscales, decoder_qkv_multiscales=cfg.qkv_multiscales,
                         upsample_block_type=cfg.upsample_block_type, downsample_block_type="Conv",
                         decoder_norm_types="rms_norm", decoder_act_fns="silu",
                         decoder_in_shortcut=cfg.in_shortcut, decoder_conv_act_fn="relu",
                         scaling_factor=cfg.scaling_factor)


def randomize_(state: dict[str, torch.Tensor]) -> None:
    """Random weights with O(1) activations: conv/linear N(0, 1/fan_in) (fan_in = the weight's
    numel / its first dimension), biases N(0, 0.1^2), norm gains 1 + N(0, 0.2^2), norm biases
    N(0, 0.2^2). Draws in sorted-name order."""
    for name in sorted(state):
        t = state[name]
        if name.endswith(("norm.weight", "norm_out.weight")):
            t.copy_(1.0 + 0.2 * torch.randn(t.shape))
        elif name.endswith(("norm.bias", "norm_out.bias")):
            t.copy_(0.2 * torch.randn(t.shape))
        elif name.endswith("bias"):
            t.copy_(0.1 * torch.randn(t.shape))
        else:
            t.copy_(torch.randn(t.shape) / math.sqrt(math.prod(t.shape[1:])))


class _TorchFloat32AsFloat64:
    """The torch module as seen by diffusers' RMSNorm and multi-scale attention during the check:
    they compute the RMS statistics and the linear attention in `torch.float32` even for a float64
    model (an upcast for half precision, a downcast here); this makes that dtype float64."""
    float32 = torch.float64

    def __getattr__(self, name: str):
        return getattr(torch, name)


@contextlib.contextmanager
def diffusers_in_float64():
    from diffusers.models import attention_processor, normalization
    modules = (attention_processor, normalization)
    saved = [m.torch for m in modules]
    try:
        for m in modules:
            m.torch = _TorchFloat32AsFloat64()
        yield
    finally:
        for m, t in zip(modules, saved):
            m.torch = t


def diffusers_decode(model, z: torch.Tensor, cfg: DcAeDecoderConfig, float64: bool = True) -> torch.Tensor:
    """AutoencoderDC.decode(z / scaling_factor).sample, with diffusers' float32 steps made float64
    unless `float64` is False (then as released: float32 RMS statistics and linear attention)."""
    with diffusers_in_float64() if float64 else contextlib.nullcontext(), torch.no_grad():
        return model.decode(z / cfg.scaling_factor).sample


CHECK_CONFIGS = [
    # (config, latent (h, w), batch, seed)
    (DcAeDecoderConfig(latent_channels=8, block_out_channels=(8, 16, 32, 32), layers_per_block=(2, 2, 2, 2),
                       block_types=(RES_BLOCK, RES_BLOCK, VIT_BLOCK, VIT_BLOCK),
                       qkv_multiscales=((), (), (5,), (5,)), attention_head_dim=8), (3, 5), 2, 21),
    (DcAeDecoderConfig(latent_channels=4, block_out_channels=(8, 16, 16), layers_per_block=(1, 2, 1),
                       block_types=(VIT_BLOCK, RES_BLOCK, VIT_BLOCK), qkv_multiscales=((3, 5), (), (3,)),
                       attention_head_dim=4, upsample_block_type="pixel_shuffle", in_shortcut=False), (2, 2), 2, 22),
    (DcAeDecoderConfig(latent_channels=16, block_out_channels=(4, 8, 16, 16, 16, 32), layers_per_block=(3,) * 6,
                       qkv_multiscales=((), (), (), (5,), (5,), ()), attention_head_dim=8), (1, 2), 1, 23),
    (DcAeDecoderConfig(latent_channels=8, block_out_channels=(12, 24), layers_per_block=(1, 1),
                       block_types=(VIT_BLOCK, VIT_BLOCK), qkv_multiscales=((5,), (5,)), attention_head_dim=8),
     (5, 4), 2, 24),
]


def check_diffusers() -> float:
    """Our decode against diffusers' AutoencoderDC.decode with the same random weights, float64."""
    torch.set_default_dtype(torch.float64)
    torch.set_num_threads(1)
    worst = 0.0
    for cfg, (h, w), batch, seed in CHECK_CONFIGS:
        torch.manual_seed(seed)
        model = diffusers_model(cfg).double().eval()
        with torch.no_grad():
            state = model.state_dict()
            randomize_(state)
            model.load_state_dict(state)
            sd = {k: v for k, v in state.items() if k.startswith("decoder.")}
            expected = parameter_shapes(cfg)
            if {k: tuple(v.shape) for k, v in sd.items()} != expected:
                raise SystemExit(f"parameter_shapes disagrees with diffusers: {sorted(set(sd) ^ set(expected))}")
            if infer_config(sd, cfg.attention_head_dim, cfg.in_shortcut, cfg.scaling_factor) != cfg:
                raise SystemExit(f"infer_config disagrees with {cfg}")
            z = torch.randn(batch, cfg.latent_channels, h, w)
            theirs = diffusers_decode(model, z, cfg)
            as_released = diffusers_decode(model, z, cfg, float64=False)
            ours = decode(z, sd, cfg)
        scale = theirs.abs().max()
        diff = ((ours - theirs).abs().max() / scale).item()
        released_diff = ((ours - as_released).abs().max() / scale).item()
        worst = max(worst, diff)
        print(f"widths {cfg.block_out_channels} layers {cfg.layers_per_block} "
              f"types {''.join('R' if t == RES_BLOCK else 'V' for t in cfg.block_types)} "
              f"scales {cfg.qkv_multiscales} hd {cfg.attention_head_dim} {cfg.upsample_block_type} "
              f"in_shortcut {cfg.in_shortcut} latent {batch}x{h}x{w}: out {tuple(theirs.shape)} "
              f"max|out| {scale.item():.3f} relative diff {diff:.2e} (diffusers' float32 steps kept: "
              f"{released_diff:.1e})")
    print(f"worst relative difference vs diffusers: {worst:.2e}")
    if worst > 1e-12:
        raise SystemExit("reference and diffusers disagree")
    return worst


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check-diffusers", action="store_true", help="compare with diffusers' AutoencoderDC")
    args = parser.parse_args()
    if args.check_diffusers:
        check_diffusers()
    else:
        parser.print_help()


if __name__ == "__main__":
    main()
