"""Write the float64 golden files of the TiM training objective (SPEC 7 as released).

One tiny C2I network (1 block, qk-norm, qkv_d, a separate delta embedder, 2 channels, seeded
random weights as make_golden.py draws them, rounded to float32 so that a float program reads them
exactly) and five cases, each a batch x, z, y (the network's labels, after dropout), y_cond (the
labels before dropout, for the enhanced target's conditional EMA evaluation), t, r (diffusion rows
first), all float32-representable, and a released-format training YAML. For each case the
objective of tools/reference/train.py (Objective.loss_parts, the released transition.py and
transports.py semantics) runs in float64 with the network itself as the EMA network (as
`tim train-step` does), and PyTorch's autograd gives the gradient of the weighted loss for every
parameter. The C++ tests (tests/test_objective.cpp, tests/test_cli_train_step.cpp) compare.

Files in tests/data/objective_golden/: model.safetensors (F64 parameters), <case>.safetensors
(x, z, t, r F32; y, y_cond I64; loss, denoising_loss F64 scalars; per_sample, weight F64 [B];
grad.<name> F64), <case>.yaml.
Usage: python tools/reference/make_objective_golden.py [--out DIR] [--check]  (a Python with
tools/reference/requirements.txt installed). Seed 1701.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_golden import init_parameters, small, write_safetensors  # noqa: E402
from tim_reference import TiM  # noqa: E402
import train as T  # noqa: E402

GENERATOR = "tools/reference/make_objective_golden.py"
REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_OUT = REPO_ROOT / "tests" / "data" / "objective_golden"
SEED = 1701
NULL = 5
CONFIG = dict(in_channels=2, out_channels=2, hidden_size=16, depth=1, num_heads=2, patch_size=2, num_classes=NULL,
              adaln_hidden=8)

# Each case: transport (released class name and params), loss keys, latent, times, labels.
CASES = {
    # (a) the released C2I objective: OT-FM, sqrt weighting with the tangent map, 2 diffusion rows,
    # one consistency row (r = T_min); a non-square 4x6 latent; one dropped label.
    "plain": dict(
        transport=("OT_FM", dict(P_mean=-0.4, P_std=1.0, sigma_d=1.0, T_max=1.0, T_min=0.0)),
        loss=dict(diffusion_ratio=0.5, consistency_ratio=0.2, derivative_type="dde", differential_epsilon=0.005,
                  weight_time_type="sqrt", weight_time_tangent=True),
        ours=dict(use_dir_loss=False), latent=(4, 6),
        t=[0.7, 0.35, 0.9, 0.55, 0.8], r=[0.7, 0.35, 0.4, 0.1, 0.0], y=[1, NULL, 3, 0, 4], y_cond=[1, 2, 3, 0, 4]),
    # (b) the enhanced (guided) target as in the released *_mg configs, the directional loss,
    # Soft-Min-SNR; rows inside and outside the window [0.3, 0.8]; a dropped label whose EMA
    # conditional evaluation uses its original label.
    "enhanced": dict(
        transport=("OT_FM", dict(P_mean=-0.4, P_std=1.0, sigma_d=1.0, T_max=1.0, T_min=0.0, enhance_target=True,
                                 w_gt=0.9, w_cond=0.75, w_start=0.3, w_end=0.8)),
        loss=dict(diffusion_ratio=0.25, consistency_ratio=0.0, derivative_type="dde", differential_epsilon=0.005,
                  weight_time_type="Soft-Min-SNR", weight_time_tangent=True),
        ours=dict(use_dir_loss=True), latent=(4, 4),
        t=[0.5, 0.95, 0.6, 0.25], r=[0.5, 0.3, 0.2, 0.05], y=[2, 1, NULL, 4], y_cond=[2, 1, 0, 4]),
    # (c) TrigFlow on a tall 6x4 latent, reciprocal weighting with the sigmoid map, guided with
    # w_gt 1 (pure model guidance), the directional loss.
    "trigflow": dict(
        transport=("TrigFlow", dict(P_mean=-1.0, P_std=1.6, sigma_d=0.5, T_max=1.57, T_min=0.0, enhance_target=True,
                                    w_gt=1.0, w_cond=0.5, w_start=0.2, w_end=1.2)),
        loss=dict(diffusion_ratio=0.34, consistency_ratio=0.34, derivative_type="dde", differential_epsilon=0.005,
                  weight_time_type="reciprocal", weight_time_sigmoid=True),
        ours=dict(use_dir_loss=True), latent=(6, 4),
        t=[0.9, 0.6, 0.8], r=[0.9, 0.3, 0.0], y=[0, 3, 1], y_cond=[0, 3, 1]),
    # (d) EDM, square weighting on d = t (weight_t_and_r false), no adaptive weight.
    "edm": dict(
        transport=("EDM", dict(P_mean=-1.2, P_std=1.2, sigma_d=0.5, T_max=80.0, T_min=0.01)),
        loss=dict(diffusion_ratio=0.34, consistency_ratio=0.0, derivative_type="dde", differential_epsilon=0.005,
                  weight_time_type="square", weight_t_and_r=False),
        ours=dict(use_dir_loss=False, adaptive_weighting=False), latent=(4, 4),
        t=[1.5, 2.0, 0.7], r=[1.5, 0.5, 0.2], y=[4, 2, NULL], y_cond=[4, 2, 3]),
    # (e) VE (the EMA outputs enter the enhanced base negated), constant weighting, directional.
    "ve": dict(
        transport=("VE_SDE", dict(sigma_min=0.02, sigma_max=100.0, sigma_d=1.0, enhance_target=True, w_gt=0.8,
                                  w_cond=0.3, w_start=0.0, w_end=10.0)),
        loss=dict(diffusion_ratio=0.34, consistency_ratio=0.34, derivative_type="dde", differential_epsilon=0.005,
                  weight_time_type="constant"),
        ours=dict(use_dir_loss=True), latent=(4, 4),
        t=[3.0, 8.0, 20.0], r=[3.0, 1.0, 0.02], y=[1, 0, 2], y_cond=[1, 0, 2]),
}

WEIGHT_NAMES = {"constant": "constant", "reciprocal": "reciprocal", "sqrt": "sqrt", "square": "square",
                "Soft-Min-SNR": "soft-min-snr"}


def transport_of(name: str, params: dict) -> T.Transport:
    """train.py's transport with the case's constants (the released class names)."""
    if name == "OT_FM":
        tr = T.OTFM()
    elif name == "TrigFlow":
        tr = T.TrigFlow()
    elif name == "EDM":
        tr = T.EDM()
    elif name == "VE_SDE":
        tr = T.VESDE()
        tr.t_max, tr.t_min = params["sigma_max"], params["sigma_min"]
    else:
        raise ValueError(name)
    for key, attr in (("sigma_d", "sigma_d"), ("T_max", "t_max"), ("T_min", "t_min")):
        if key in params:
            setattr(tr, attr, params[key])
    return tr


def objective_of(case: dict) -> T.Objective:
    name, params = case["transport"]
    loss, ours = case["loss"], case["ours"]
    transform = "tangent" if loss.get("weight_time_tangent") else "sigmoid" if loss.get("weight_time_sigmoid") else "none"
    enhance = params.get("enhance_target", False)
    return T.Objective(
        transport_of(name, params), diffusion_ratio=loss["diffusion_ratio"], consistency_ratio=loss["consistency_ratio"],
        epsilon=loss["differential_epsilon"], weight_time=WEIGHT_NAMES[loss["weight_time_type"]],
        weight_transform=transform, weight_t_and_r=loss.get("weight_t_and_r", True),
        adaptive=ours.get("adaptive_weighting", True), directional=ours["use_dir_loss"],
        enhance_w_gt=params.get("w_gt", 1.0) if enhance else None, enhance_w_cond=params.get("w_cond", 0.0),
        enhance_low=params.get("w_start", 0.0), enhance_high=params.get("w_end", 1.0))


def yaml_text(case_name: str, case: dict) -> str:
    """The case's configuration as a released training YAML (plus our keys, marked)."""
    name, params = case["transport"]

    def value(v):
        return ("True" if v else "False") if isinstance(v, bool) else repr(v) if isinstance(v, float) else str(v)

    lines = [f"# objective golden case '{case_name}', written by {GENERATOR} (seed {SEED})", "model:", "  transport:",
             f"    target: tim.schedulers.transports.{name}", "    params:"]
    lines += [f"      {k}: {value(v)}" for k, v in params.items()]
    lines += ["  transition_loss:"]
    lines += [f"    {k}: {value(v)}" for k, v in case["loss"].items()]
    lines += ["    # tim's own keys (the released code hard-wires these):"]
    lines += [f"    {k}: {value(v)}" for k, v in case["ours"].items()]
    lines += ["  network:", "    target: tim.models.c2i.tim_model.TiM", "    params:",
              f"      num_classes: {NULL}", "      class_dropout_prob: 0.1", f"      num_heads: {CONFIG['num_heads']}",
              "      new_condition: t-r", ""]
    return "\n".join(lines)


def f32(v: torch.Tensor) -> torch.Tensor:
    """Rounded to the nearest float32, kept in float64."""
    return v.float().double()


def build_model() -> TiM:
    torch.manual_seed(SEED)
    model = TiM(small(**CONFIG))
    init_parameters(model)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(f32(p))
    return model


def run_case(model: TiM, case_name: str, case: dict) -> dict[str, torch.Tensor]:
    """Inputs (drawn from the case's own seed) and the objective's outputs and gradients."""
    gen = torch.Generator().manual_seed(SEED + sum(map(ord, case_name)))
    H, W = case["latent"]
    B = len(case["t"])
    x = f32(torch.randn(B, CONFIG["in_channels"], H, W, generator=gen, dtype=torch.float64))
    z = f32(torch.randn(B, CONFIG["in_channels"], H, W, generator=gen, dtype=torch.float64))
    t = f32(torch.tensor(case["t"], dtype=torch.float64))
    r = f32(torch.tensor(case["r"], dtype=torch.float64))
    y = torch.tensor(case["y"], dtype=torch.int64)
    y_cond = torch.tensor(case["y_cond"], dtype=torch.int64)
    nd = 0
    while nd < B and t[nd] == r[nd]:
        nd += 1
    objective = objective_of(case)
    model.zero_grad(set_to_none=True)
    out = objective.loss_parts(model, model, x, z, t, r, nd, y, y_cond, NULL)
    out["loss"].backward()
    result = {"x": x.float(), "z": z.float(), "t": t.float(), "r": r.float(), "y": y, "y_cond": y_cond,
              "loss": out["loss"].detach().reshape(()), "denoising_loss": out["per_sample"].mean().reshape(()),
              "per_sample": out["per_sample"], "weight": out["weight"].detach()}
    for name, prm in model.named_parameters():
        result["grad." + name] = prm.grad.detach().clone()
    return {k: v.contiguous() for k, v in result.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output folder")
    parser.add_argument("--check", action="store_true", help="only recompute and compare with the existing files")
    args = parser.parse_args()
    torch.set_default_dtype(torch.float64)
    model = build_model()
    cfg = small(**CONFIG)
    meta = {"seed": str(SEED), "generator": GENERATOR, "num_heads": str(cfg.num_heads),
            "new_condition": cfg.new_condition, "mlp_ratio": repr(float(cfg.mlp_ratio))}
    args.out.mkdir(parents=True, exist_ok=True)
    if not args.check:
        write_safetensors(args.out / "model.safetensors",
                          {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}, meta)
    for name, case in CASES.items():
        tensors = run_case(model, name, case)
        path = args.out / f"{name}.safetensors"
        if args.check:
            stored = load_file(str(path))
            diff = max((stored[k].double() - tensors[k].double()).abs().max().item() for k in tensors)
            if diff != 0.0:
                raise SystemExit(f"{path}: recomputed values differ by {diff}")
        else:
            write_safetensors(path, tensors, {**meta, "case": name})
            (args.out / f"{name}.yaml").write_text(yaml_text(name, case))
        grads = [k for k in tensors if k.startswith("grad.")]
        print(f"{path.name}: loss {tensors['loss'].item():.6g}, denoising {tensors['denoising_loss'].item():.6g}, "
              f"{len(grads)} gradients, max |g| {max(tensors[k].abs().max().item() for k in grads):.3g}, "
              f"{path.stat().st_size / 1024:.1f} KiB")


if __name__ == "__main__":
    main()
