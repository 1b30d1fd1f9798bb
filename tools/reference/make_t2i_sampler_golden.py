"""Write the float64 golden files for the C++ text-to-image sampler tests (tests/test_t2i_sampler.cpp).

One tiny text-conditioned TiM (tim_t2i_reference.py, every parameter seeded random as in
make_t2i_golden.py) is written to tests/data/sampler_golden_t2i/model.safetensors (parameters
only, loadable by tim::load_t2i and `tim sample`). Each case file <case>.safetensors holds the
initial noise, the caption features and the null caption, the final state after N steps for
each N and the time grids, sampled by sampler_reference.py with the caption condition (guided
steps: the B captions, then the null caption repeated B times). Layout: docs/sampling.md, section 8.
Usage: /work/venv/bin/python tools/reference/make_t2i_sampler_golden.py [--out DIR] [--check]
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
from make_golden import write_safetensors  # noqa: E402
from make_t2i_golden import init_parameters, small  # noqa: E402
from sampler_reference import TRANSPORTS, linspace_fma, sample, time_grid  # noqa: E402
from tim_t2i_reference import TiMT2I, load_released_state_dict, t2i_config_from_state_dict  # noqa: E402

GENERATOR = "tools/reference/make_t2i_sampler_golden.py"
REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_OUT = REPO_ROOT / "tests" / "data" / "sampler_golden_t2i"
MODEL_SEED = 3001
# Released-style features (qk-norm in both attentions, qkv_d, delta embedder) at toy size:
# D 16, 2 heads (hd 8), depth 2, L 8, C 4, p 2, caption features of width 8.
MODEL_CONFIG = small(caption_dim=8)
SIZE_BUDGET = 300 * 1024  # bytes, the whole folder


@dataclass
class Case:
    name: str
    seed: int                 # torch.manual_seed(seed) before drawing z, cap_feats, null_cap_feats
    transport: str
    steps: tuple[int, ...]
    latent: tuple[int, int]   # (H, W)
    batch: int
    caption_tokens: int       # M
    cfg_scale: float = 1.0
    guidance_low: float = 0.0
    guidance_high: float = 1.0
    stochasticity: float = 0.0
    mode: str = "transition"
    noise_seed: int = 0       # key of the stochastic-step generator
    first_sample_index: int = 0
    note: str = ""


CASES = [
    Case("plain", 3101, "ot-fm", (1, 4), (8, 8), 2, 5, note="no guidance: cap_feats only"),
    Case("cfg_window", 3102, "ot-fm", (1, 4), (8, 12), 2, 5, cfg_scale=2.5, guidance_low=0.0, guidance_high=0.6,
         note="cfg 2.5 on [0, 0.6] (4 steps: t = 0.5, 0.25 guided), non-square 4x6 tokens"),
    Case("cfg_stochastic", 3103, "ot-fm", (1, 4), (8, 8), 3, 4, cfg_scale=2.5, guidance_low=0.1, guidance_high=0.9,
         stochasticity=0.2, noise_seed=1234, first_sample_index=7,
         note="cfg 2.5 on [0.1, 0.9], stochasticity 0.2 with Philox noise, sample streams 7, 8, 9"),
]


def build_model() -> TiMT2I:
    torch.manual_seed(MODEL_SEED)
    model = TiMT2I(MODEL_CONFIG)
    init_parameters(model)
    return model


def model_metadata() -> dict[str, str]:
    return {"case": "model", "seed": str(MODEL_SEED), "generator": GENERATOR, "model_type": "t2i",
            "num_heads": str(MODEL_CONFIG.num_heads), "new_condition": MODEL_CONFIG.new_condition,
            "mlp_ratio": repr(float(MODEL_CONFIG.mlp_ratio))}


def case_metadata(case: Case) -> dict[str, str]:
    return {"case": case.name, "seed": str(case.seed), "generator": GENERATOR, "model": "model.safetensors",
            "transport": case.transport, "steps": ",".join(str(n) for n in case.steps), "schedule": "linspace",
            "cfg_scale": repr(case.cfg_scale), "guidance_low": repr(case.guidance_low),
            "guidance_high": repr(case.guidance_high), "stochasticity": repr(case.stochasticity),
            "mode": case.mode, "noise_seed": str(case.noise_seed),
            "first_sample_index": str(case.first_sample_index), "note": case.note}


def run_case(model: TiMT2I, case: Case, z: torch.Tensor, cap_feats: torch.Tensor,
             null_cap_feats: torch.Tensor) -> dict[str, torch.Tensor]:
    transport = TRANSPORTS[case.transport]
    out: dict[str, torch.Tensor] = {}
    indices = [case.first_sample_index + b for b in range(z.shape[0])]
    with torch.no_grad():
        for n in case.steps:
            trajectory = sample(model, transport, z, cap_feats, null_cap_feats, n, cfg_scale=case.cfg_scale,
                                guidance_low=case.guidance_low, guidance_high=case.guidance_high,
                                stochasticity=case.stochasticity, mode=case.mode, seed=case.noise_seed,
                                sample_indices=indices)
            out[f"output.x_{n}step"] = trajectory[-1]
            grid = time_grid(transport, n)
            if grid.tolist() != linspace_fma(transport.t_max, transport.t_min, n + 1):
                raise SystemExit(f"torch.linspace differs from the fma formula here ({case.name}, N={n})")
            out[f"output.times_{n}step"] = grid
    return out


def build_case(model: TiMT2I, case: Case) -> dict[str, torch.Tensor]:
    torch.manual_seed(case.seed)
    H, W = case.latent
    z = torch.randn(case.batch, MODEL_CONFIG.in_channels, H, W)
    cap_feats = torch.randn(case.batch, case.caption_tokens, MODEL_CONFIG.caption_dim)
    null_cap_feats = torch.randn(1, case.caption_tokens, MODEL_CONFIG.caption_dim)
    tensors = {"input.z": z, "input.cap_feats": cap_feats, "input.null_cap_feats": null_cap_feats}
    tensors.update(run_case(model, case, z, cap_feats, null_cap_feats))
    return {k: v.contiguous() for k, v in tensors.items()}


def load_model(path: Path) -> TiMT2I:
    params = load_file(str(path))
    with safe_open(str(path), "pt") as f:
        meta = f.metadata()
    cfg = t2i_config_from_state_dict(params, int(meta["num_heads"]), meta["new_condition"], float(meta["mlp_ratio"]))
    model = TiMT2I(cfg)
    load_released_state_dict(model, params)
    return model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output folder")
    parser.add_argument("--check", action="store_true",
                        help="only re-verify existing files (rebuild the model from model.safetensors, resample)")
    args = parser.parse_args()
    torch.set_default_dtype(torch.float64)
    args.out.mkdir(parents=True, exist_ok=True)
    model_path = args.out / "model.safetensors"
    if not args.check:
        model = build_model()
        write_safetensors(model_path, {k: v.detach().contiguous() for k, v in model.state_dict().items()},
                          model_metadata())
    model = load_model(model_path)
    total = model_path.stat().st_size
    print(f"model: {MODEL_CONFIG}  {model_path.stat().st_size / 1024:.1f} KiB")
    for case in CASES:
        path = args.out / f"{case.name}.safetensors"
        if not args.check:
            write_safetensors(path, build_case(model, case), case_metadata(case))
        stored = load_file(str(path))
        again = run_case(model, case, stored["input.z"], stored["input.cap_feats"], stored["input.null_cap_feats"])
        for name, value in again.items():
            if not torch.equal(value, stored[name]):
                raise SystemExit(f"{case.name}: {name} differs on recomputation by "
                                 f"{(value - stored[name]).abs().max().item()}")
        total += path.stat().st_size
        finals = ", ".join(f"N={n}: max|x| {stored[f'output.x_{n}step'].abs().max().item():.3g}" for n in case.steps)
        print(f"{case.name:15s} {case.transport:6s} {finals}  {path.stat().st_size / 1024:.1f} KiB  seed {case.seed}")
    print(f"total {total / 1024:.1f} KiB in {args.out}")
    if total >= SIZE_BUDGET:
        raise SystemExit(f"{total} bytes: over the {SIZE_BUDGET // 1024} KiB budget for these golden files")


if __name__ == "__main__":
    main()
