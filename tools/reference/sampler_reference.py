"""Independent PyTorch float64 reference of the TiM sampler (SPEC.md sections 2 and 6).

Written from the SPEC, deliberately plain: the five transports' c_noise and transition updates,
the linspace time grid in float64, the guidance window (strict), OT-FM stochasticity with noise
from philox.py (the counter-based stream of include/tim/core/random.hpp), and the `transition` /
`diffusion` modes. The network is tim_reference.TiM (labels) or tim_t2i_reference.TiMT2I
(caption features); make_sampler_golden.py and make_t2i_sampler_golden.py turn it into golden
files. Run `python sampler_reference.py --self-test`.

Shape legend: B batch, C channels, H x W latent, M caption tokens, Dc caption width; the guided
batch is 2B rows, conditional first.
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass
from typing import Callable, Optional, Union

import torch

import philox

SD_EDM = 0.5


@dataclass(frozen=True)
class Transport:
    """One transport of SPEC 2: the default time range, c_noise and the transition update."""
    name: str
    t_max: float
    t_min: float
    c_noise: Callable[[float], float]
    coefficients: Callable[[float, float], tuple[float, float]]  # (a, b): x_r = a x_t + b F
    stochastic: bool = False


def _vp_b(t: float) -> float:
    return math.sqrt(math.exp(0.5 * 19.9 * t * t + 0.1 * t) - 1.0)


def _edm_coefficients(t: float, r: float) -> tuple[float, float]:
    sd = SD_EDM
    q = math.sqrt(t * t + sd * sd) / math.sqrt(r * r + sd * sd) / (sd ** 3 + t * t)
    return (sd ** 3 + t * r) * q, sd * sd * (t - r) * q


def _vp_coefficients(t: float, r: float) -> tuple[float, float]:
    bt, br = _vp_b(t), _vp_b(r)
    root_r = math.sqrt(br * br + 1.0)
    return math.sqrt(bt * bt + 1.0) / root_r, (br - bt) / root_r


TRANSPORTS = {
    "ot-fm": Transport("ot-fm", 1.0, 0.0, lambda t: t, lambda t, r: (1.0, -(t - r)), stochastic=True),
    "trigflow": Transport("trigflow", 1.57, 0.0, lambda t: t,
                          lambda t, r: (math.cos(t - r), -math.sin(t - r))),
    "edm": Transport("edm", 80.0, 0.01, lambda t: math.log(t) / 4.0, _edm_coefficients),
    "vp": Transport("vp", 1.0, 1e-5, lambda t: 999.0 * t, _vp_coefficients),
    "ve": Transport("ve", 100.0, 0.02, lambda t: math.log(0.5 * t), lambda t, r: (1.0, t - r)),
}


def time_grid(transport: Transport, steps: int) -> torch.Tensor:
    """N + 1 times from t_max to t_min, torch.linspace in float64 (SPEC 6)."""
    return torch.linspace(transport.t_max, transport.t_min, steps + 1, dtype=torch.float64)


def linspace_fma(start: float, end: float, points: int) -> list[float]:
    """What torch.linspace computes on FMA machines (and tim::linspace everywhere): the first
    half fma(step, i, start), the second fma(-step, points - 1 - i, end). Exact rational
    arithmetic stands in for fma."""
    from fractions import Fraction

    step = (end - start) / (points - 1)
    out = []
    for i in range(points):
        if i < points // 2:
            out.append(float(Fraction(step) * i + Fraction(start)))
        else:
            out.append(float(Fraction(-step) * (points - 1 - i) + Fraction(end)))
    return out


def guided_condition(y: torch.Tensor, null: Union[int, torch.Tensor]) -> torch.Tensor:
    """The condition of a guided step's 2B rows: the B conditional rows, then the null condition
    for every sample. Labels y (B,) with a null label, or caption features y (B, M, Dc) with the
    null caption (1, M, Dc) repeated B times."""
    if isinstance(null, torch.Tensor):
        if null.dim() != y.dim() or null.shape[0] != 1 or null.shape[1:] != y.shape[1:]:
            raise ValueError(f"null condition {tuple(null.shape)} does not fit the condition {tuple(y.shape)}")
        return torch.cat([y, null.expand(y.shape[0], *null.shape[1:])], dim=0)
    return torch.cat([y, torch.full_like(y, null)], dim=0)


def sample(model: Callable, transport: Transport, z: torch.Tensor, y: torch.Tensor, null: Union[int, torch.Tensor],
           steps: int, cfg_scale: float = 1.0, guidance_low: float = 0.0, guidance_high: float = 1.0,
           stochasticity: float = 0.0, mode: str = "transition", seed: int = 0,
           sample_indices: Optional[list[int]] = None, grid: Optional[torch.Tensor] = None) -> list[torch.Tensor]:
    """SPEC 6. model(x, t_in, r_in, y) -> F with t_in, r_in the (B,) network time inputs and y
    the condition rows: labels (B,) with `null` the null label, or caption features (B, M, Dc)
    with `null` the null caption (1, M, Dc). Returns the trajectory [z, x_1, ..., x_N] (float64)."""
    if mode == "ddiffusion":
        mode = "diffusion"
    assert mode in ("transition", "diffusion")
    times = time_grid(transport, steps) if grid is None else grid
    B = z.shape[0]
    indices = list(range(B)) if sample_indices is None else sample_indices
    x = z.clone()
    trajectory = [x.clone()]
    for i in range(len(times) - 1):
        t, r = float(times[i]), float(times[i + 1])
        model_r = t if mode == "diffusion" else r
        t_in, r_in = transport.c_noise(t), transport.c_noise(model_r)
        guided = cfg_scale > 1.0 and guidance_low * transport.t_max < t < guidance_high * transport.t_max
        if guided:
            rows = 2 * B
            x_in = torch.cat([x, x], dim=0)
            y_in = guided_condition(y, null)
        else:
            rows, x_in, y_in = B, x, y
        F = model(x_in, torch.full((rows,), t_in, dtype=torch.float64),
                  torch.full((rows,), r_in, dtype=torch.float64), y_in)
        if guided:
            F_cond, F_null = F[:B], F[B:]
            F = F_null + cfg_scale * (F_cond - F_null)
        # SPEC 6 as released: the second condition is on the network's second time (t in
        # diffusion mode), so diffusion mode is stochastic on its last step too.
        stochastic = stochasticity > 0 and t < transport.t_max and model_r > transport.t_min
        if stochastic:
            assert transport.stochastic, f"{transport.name} has no stochastic transition"
            per_sample = x[0].numel()
            eps = torch.stack([torch.from_numpy(philox.normal_array(seed, indices[b], i, per_sample)).reshape(x.shape[1:])
                               for b in range(B)])
            s, d = stochasticity, t - r
            z_hat = x + (1.0 - t) * F
            x = x - d * F - s * z_hat * d + math.sqrt(2.0 * s * t * d) * eps
        else:
            a, b = transport.coefficients(t, r)
            x = a * x + b * F
        trajectory.append(x.clone())
    return trajectory


def self_test() -> None:
    torch.set_default_dtype(torch.float64)
    print("philox known answers")
    philox.self_test()
    print("linspace: torch == fma formula (holds on FMA machines)")
    for tr in TRANSPORTS.values():
        for n in (1, 2, 4, 7, 16, 100, 250):
            got = time_grid(tr, n).tolist()
            want = linspace_fma(tr.t_max, tr.t_min, n + 1)
            if got != want:
                print(f"  note: torch.linspace differs from the fma formula for {tr.name} N={n} (no FMA here?)")
                break
    print("transition coefficients: a(t, t) = 1, b(t, t) = 0")
    for tr in TRANSPORTS.values():
        for t in (tr.t_min + 0.3 * (tr.t_max - tr.t_min), tr.t_max):
            a, b = tr.coefficients(t, t)
            assert abs(a - 1) < 1e-15 and abs(b) < 1e-15, (tr.name, t, a, b)
    print("Gaussian oracle (SPEC 9) through this sampler: OT-FM, 1-D data N(0.3, 0.5^2)")
    mu, s = 0.3, 0.5
    tr = TRANSPORTS["ot-fm"]

    def std(t: float) -> float:
        return math.sqrt((1 - t) ** 2 * s * s + t * t)

    def exact(x: torch.Tensor, t_in: torch.Tensor, r_in: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        t, r = float(t_in[0]), float(r_in[0])
        x_r = (1 - r) * mu + std(r) / std(t) * (x - (1 - t) * mu)
        a, b = tr.coefficients(t, r)
        return (x_r - a * x) / b

    z = torch.linspace(-2, 2, 9).reshape(9, 1)
    y = torch.zeros(9, dtype=torch.int64)
    for n in (1, 2, 7, 100):
        x = sample(exact, tr, z, y, 1, n)[-1]
        want = mu + s * z
        err = ((x - want).abs().max() / want.abs().max()).item()
        print(f"  N={n:3d} rel err {err:.2e}")
        assert err < 1e-12


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--self-test", action="store_true")
    if parser.parse_args().self_test:
        self_test()
