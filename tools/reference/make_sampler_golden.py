"""Write the float64 golden files for the C++ sampler tests (tests/test_sampler_golden.cpp).

One tiny TiM (tim_reference.py, every parameter seeded random as in make_golden.py) is written to
tests/data/sampler_golden/model.safetensors (parameters only, loadable by tim::load_c2i and by
examples/custom_schedule). Each case file <case>.safetensors holds the inputs, the final state
after N steps for each N, and the time grids, sampled by sampler_reference.py. Layout and
settings: docs/sampling.md, section 8.
Usage: /work/venv/bin/python tools/reference/make_sampler_golden.py [--out DIR] [--check]
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_golden import init_parameters, small, write_safetensors  # noqa: E402
from sampler_reference import TRANSPORTS, linspace_fma, sample, time_grid  # noqa: E402
from tim_reference import TiM, config_from_state_dict, load_released_state_dict  # noqa: E402

GENERATOR = "tools/reference/make_sampler_golden.py"
REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_OUT = REPO_ROOT / "tests" / "data" / "sampler_golden"
MODEL_SEED = 2001
MODEL_CONFIG = small(in_channels=4, hidden_size=16, depth=2, num_heads=2, patch_size=2, num_classes=5,
                     adaln_hidden=8)
LATENT = (8, 8)


@dataclass
class Case:
    name: str
    seed: int                   # torch.manual_seed(seed) before drawing z and y
    transport: str
    steps: tuple[int, ...]
    cfg_scale: float = 1.0
    guidance_low: float = 0.0
    guidance_high: float = 1.0
    stochasticity: float = 0.0
    mode: str = "transition"    # as written to the metadata; "ddiffusion" is the released spelling
    noise_seed: int = 0         # key of the stochastic-step generator
    first_sample_index: int = 0
    noise_scale: float = 1.0    # z = noise_scale * N(0, 1): VE starts from t_max * N(0, 1)
    batch: int = 3
    note: str = ""
    labels: list[int] = field(default_factory=lambda: [1, 4, 5])  # 5 = null class (unconditional)


CASES = [
    Case("otfm_cfg", 2101, "ot-fm", (1, 4, 16), cfg_scale=2.5, guidance_low=0.0, guidance_high=0.6,
         note="released setting: OT-FM, cfg 2.5 on [0, 0.6], deterministic"),
    Case("otfm_stochastic", 2102, "ot-fm", (1, 4, 16), cfg_scale=2.5, guidance_low=0.0, guidance_high=0.6,
         stochasticity=0.2, noise_seed=1234, first_sample_index=7,
         note="stochasticity 0.2 with Philox noise, sample streams 7, 8, 9"),
    Case("trigflow_cfg", 2103, "trigflow", (1, 4, 16), cfg_scale=2.5, guidance_low=0.0, guidance_high=0.6),
    Case("edm_diffusion", 2104, "edm", (1, 4, 16), cfg_scale=2.5, guidance_low=0.0, guidance_high=0.6,
         mode="ddiffusion", note="diffusion mode (released spelling): c_noise(t) twice"),
    Case("otfm_diffusion_stochastic", 2107, "ot-fm", (1, 4, 16), cfg_scale=2.5, guidance_low=0.0, guidance_high=0.6,
         stochasticity=0.2, noise_seed=99, mode="diffusion",
         note="diffusion mode with stochasticity 0.2: stochastic on every step after the first, the last included"),
    Case("vp", 2105, "vp", (1, 4, 16), note="no guidance"),
    Case("ve_window", 2106, "ve", (1, 4, 16), cfg_scale=2.5, guidance_low=0.1, guidance_high=0.9,
         noise_scale=100.0, note="guidance window [0.1, 0.9]; z ~ N(0, 100^2)"),
]


def build_model() -> TiM:
    torch.manual_seed(MODEL_SEED)
    model = TiM(MODEL_CONFIG)
    init_parameters(model)
    return model


def model_metadata() -> dict[str, str]:
    return {"case": "model", "seed": str(MODEL_SEED), "generator": GENERATOR,
            "num_heads": str(MODEL_CONFIG.num_heads), "new_condition": MODEL_CONFIG.new_condition,
            "mlp_ratio": repr(float(MODEL_CONFIG.mlp_ratio))}


def case_metadata(case: Case) -> dict[str, str]:
    return {"case": case.name, "seed": str(case.seed), "generator": GENERATOR, "model": "model.safetensors",
            "transport": case.transport, "steps": ",".join(str(n) for n in case.steps), "schedule": "linspace",
            "cfg_scale": repr(case.cfg_scale), "guidance_low": repr(case.guidance_low),
            "guidance_high": repr(case.guidance_high), "stochasticity": repr(case.stochasticity),
            "mode": case.mode, "noise_seed": str(case.noise_seed),
            "first_sample_index": str(case.first_sample_index), "null_label": str(MODEL_CONFIG.num_classes),
            "note": case.note}


def run_case(model: TiM, case: Case, z: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
    transport = TRANSPORTS[case.transport]
    out: dict[str, torch.Tensor] = {}
    indices = [case.first_sample_index + b for b in range(z.shape[0])]
    with torch.no_grad():
        for n in case.steps:
            trajectory = sample(model, transport, z, y, MODEL_CONFIG.num_classes, n, cfg_scale=case.cfg_scale,
                                guidance_low=case.guidance_low, guidance_high=case.guidance_high,
                                stochasticity=case.stochasticity, mode=case.mode, seed=case.noise_seed,
                                sample_indices=indices)
            out[f"output.x_{n}step"] = trajectory[-1]
            grid = time_grid(transport, n)
            # tim::linspace reproduces torch.linspace's fused multiply-adds bit for bit; a machine
            # without FMA would write grids the C++ test (exact comparison) rejects.
            if grid.tolist() != linspace_fma(transport.t_max, transport.t_min, n + 1):
                raise SystemExit(f"torch.linspace differs from the fma formula here ({case.name}, N={n})")
            out[f"output.times_{n}step"] = grid
    return out


def build_case(model: TiM, case: Case) -> dict[str, torch.Tensor]:
    torch.manual_seed(case.seed)
    H, W = LATENT
    z = case.noise_scale * torch.randn(case.batch, MODEL_CONFIG.in_channels, H, W)
    y = torch.tensor(case.labels[: case.batch], dtype=torch.int64)
    tensors = {"input.z": z, "input.y": y}
    tensors.update(run_case(model, case, z, y))
    return {k: v.contiguous() for k, v in tensors.items()}


def load_model(path: Path) -> TiM:
    params = load_file(str(path))
    with safe_open(str(path), "pt") as f:
        meta = f.metadata()
    cfg = config_from_state_dict(params, int(meta["num_heads"]), meta["new_condition"], float(meta["mlp_ratio"]))
    model = TiM(cfg)
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
    print(f"model: {MODEL_CONFIG}  {model_path.stat().st_size / 1024:.1f} KiB")
    for case in CASES:
        path = args.out / f"{case.name}.safetensors"
        if not args.check:
            write_safetensors(path, build_case(model, case), case_metadata(case))
        stored = load_file(str(path))
        again = run_case(model, case, stored["input.z"], stored["input.y"])
        for name, value in again.items():
            if not torch.equal(value, stored[name]):
                raise SystemExit(f"{case.name}: {name} differs on recomputation by "
                                 f"{(value - stored[name]).abs().max().item()}")
        finals = ", ".join(f"N={n}: max|x| {stored[f'output.x_{n}step'].abs().max().item():.3g}" for n in case.steps)
        print(f"{case.name:16s} {case.transport:9s} {finals}  {path.stat().st_size / 1024:.1f} KiB")


if __name__ == "__main__":
    main()
