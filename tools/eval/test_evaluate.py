"""Checks of evaluate.py's metric code against closed forms. Run by hand with the venv python:
`python tools/eval/test_evaluate.py` (a second; no data or model needed)."""

from __future__ import annotations

import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import evaluate as E  # noqa: E402

FAILURES: list[str] = []


def check(name: str, ok: bool, detail: str = "") -> None:
    print(f"  {'ok  ' if ok else 'FAIL'} {name}{': ' + detail if detail else ''}")
    if not ok:
        FAILURES.append(name)


def random_spd(rng: np.random.Generator, n: int) -> np.ndarray:
    a = rng.standard_normal((n, n))
    return a @ a.T / n + 0.1 * np.eye(n)


def main() -> None:
    rng = np.random.default_rng(0)
    # 1-D: (m1 - m2)^2 + (s1 - s2)^2.
    fd = E.frechet_distance(np.array([1.5]), np.array([[4.0]]), np.array([-0.5]), np.array([[9.0]]))
    check("1-D closed form", abs(fd - (4.0 + 1.0)) < 1e-12, f"{fd!r} vs 5")
    # Diagonal covariances: |mu1 - mu2|^2 + sum (sqrt(a) - sqrt(b))^2.
    a, b = rng.uniform(0.1, 3, 64), rng.uniform(0.1, 3, 64)
    m1, m2 = rng.standard_normal(64), rng.standard_normal(64)
    want = ((m1 - m2) ** 2).sum() + ((np.sqrt(a) - np.sqrt(b)) ** 2).sum()
    fd = E.frechet_distance(m1, np.diag(a), m2, np.diag(b))
    check("diagonal closed form", abs(fd - want) < 1e-10 * want, f"{fd!r} vs {want!r}")
    # Full, non-commuting covariances: tr((S1 S2)^(1/2)) from the eigenvalues of the general
    # matrix S1 S2 (real and positive), an independent route.
    s1, s2 = random_spd(rng, 128), random_spd(rng, 128)
    eig = np.linalg.eigvals(s1 @ s2)
    want = np.trace(s1) + np.trace(s2) - 2 * np.sqrt(eig.real).sum()
    fd = E.frechet_distance(np.zeros(128), s1, np.zeros(128), s2)
    check("non-commuting covariances", abs(fd - want) < 1e-8 * abs(want), f"{fd!r} vs {want!r}")
    check("symmetric", abs(fd - E.frechet_distance(np.zeros(128), s2, np.zeros(128), s1)) < 1e-8 * abs(fd))
    check("zero for identical Gaussians", abs(E.frechet_distance(m1[:8], s1[:8, :8], m1[:8], s1[:8, :8])) < 1e-10)
    # Statistics of samples: the mean and the unbiased covariance.
    x = torch.tensor(rng.standard_normal((500, 3)))
    mu, cov = E.gaussian(x)
    check("gaussian()", np.allclose(mu, x.numpy().mean(0)) and
          np.allclose(cov, (x.numpy() - mu).T @ (x.numpy() - mu) / 499))
    # Quantisation as the PNG writer: -1 -> 0 -> -1, 1 -> 255 -> 1, out of range clamped,
    # 0 -> 127.5 truncated to 127, NaN -> 0.
    q = E.quantise(torch.tensor([-1.0, 1.0, 3.0, -7.0, 0.0, float("nan")]))
    want = torch.tensor([-1.0, 1.0, 1.0, -1.0, 127 / 127.5 - 1, -1.0])
    check("quantise", torch.allclose(q, want), str(q.tolist()))
    check("balanced labels", E.balanced_labels(20) == list(range(10)) * 2)
    print("all checks passed" if not FAILURES else f"FAILED: {FAILURES}")
    sys.exit(1 if FAILURES else 0)


if __name__ == "__main__":
    main()
