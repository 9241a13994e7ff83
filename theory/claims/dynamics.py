"""Claim on learning dynamics: linearised Barlow Twins is stepwise (setting A6).

Simon et al. (ICML 2023, arXiv 2303.15438): gradient flow on ‖WΓWᵀ − I‖² from an aligned small
start keeps C = WΓWᵀ diagonal with logistic eigenvalues of rate 8γ_j (docs/settings.md §7). The
check integrates the library's Barlow Twins loss by Euler steps at dt and dt/2 and compares the
diagonal of C with the closed form read through :func:`logistic_trajectory` (max deviation ≤ 0.02,
about 4× the Euler error at dt/2 on the default profile), so a rate off by more than ≈ 1.5%
is detected (``details["resolution"]``). The declared alternatives — the rate halved to 4γ_j (the
product rule's second term dropped) and a rate 8√γ_j (half-times ∝ 1/√γ_j) — must be
*violated*.
"""

from __future__ import annotations

import numpy as np
import torch

from gessl.losses import barlow_twins
from theory.claims.base import Alternative, ClaimResult, Series, combine, judge_close, judge_le
from theory.claims.registry import claim
from theory.dynamics import design_with_correlation, half_time, logistic_trajectory

GAMMAS = np.array([1.0, 0.5, 0.25])
C0 = 1e-3
#: max |c_j(t) − closed form| allowed at dt/2 (the Euler error there is ≈ 0.005 on quick)
TRAJECTORY_TOL = 0.02


def _half_rate_trajectory(t: np.ndarray, gamma: float, c0: float) -> np.ndarray:
    """Alternative: the logistic with rate 4γ (ċ = 4γc(1 − c))."""
    e = np.exp(4 * gamma * t)
    return c0 * e / (1 - c0 + c0 * e)


def _sqrt_gamma_trajectory(t: np.ndarray, gamma: float, c0: float) -> np.ndarray:
    """Alternative: the logistic with rate 8√γ (half-times ∝ 1/√γ)."""
    e = np.exp(8 * np.sqrt(gamma) * t)
    return c0 * e / (1 - c0 + c0 * e)


def _rate_resolution(times: np.ndarray, error: float) -> float:
    """The relative change of the rates 8γ_j that moves some c_j(t) by TRAJECTORY_TOL + the
    measured error (first order: ∂c/∂ln r = r·t·c(1 − c) for the logistic)."""
    sens = max(
        float(np.max(8 * gm * times * c * (1 - c)))
        for gm in GAMMAS
        for c in [1 / (1 + (1 - C0) / C0 * np.exp(-8 * gm * times))]
    )
    return (TRAJECTORY_TOL + error) / sens


def _gradient_descent(
    x: torch.Tensor, w0: np.ndarray, dt: float, t_end: float
) -> tuple[np.ndarray, list[np.ndarray]]:
    """Euler steps of gradient flow on the library's Barlow Twins loss (λ = 1, no batch norm).

    Returns the times and, per time, the matrix ``C = WΓWᵀ`` (computed as ``ZᵀZ/N``).
    """
    w = torch.tensor(w0, dtype=torch.float64, requires_grad=True)
    steps = round(t_end / dt)
    times, cs = [], []
    for i in range(steps + 1):
        z = x @ w.T
        if i % max(1, steps // 200) == 0:
            times.append(i * dt)
            cs.append((z.T @ z / x.shape[0]).detach().numpy().copy())
        loss = barlow_twins(z, z, lambda_offdiag=1.0, batchnorm=False).loss
        (grad,) = torch.autograd.grad(loss, w)
        with torch.no_grad():
            w -= dt * grad
    return np.array(times), cs


@claim(
    "barlow_stepwise",
    "Gradient flow on the linearised Barlow Twins loss ‖WΓWᵀ − I‖² from an aligned small start "
    "follows c_j(t) = c₀e^{8γ_j t}/(1 − c₀ + c₀e^{8γ_j t}): eigendirections are learned one at a "
    "time, at half-times ∝ 1/γ_j; from a small random start the order of the steps is the same.",
    "Simon et al., ICML 2023 (arXiv 2303.15438) [S, blog]; closed form docs/settings.md §7 [R]",
    "[R]",
    "exact",
    setting="linearised Barlow Twins from small initialisation (docs/settings.md §7)",
    alternatives=(
        Alternative(
            "rate_half",
            "the step rate halved: c_j(t) logistic with rate 4γ_j (ċ = 4γc(1 − c), the product "
            "rule's second term dropped)",
            {"theory.claims.dynamics.logistic_trajectory": _half_rate_trajectory},
        ),
        Alternative(
            "rate_sqrt_gamma",
            "a wrong exponent: rates 8√γ_j, i.e. half-times ∝ 1/√γ_j",
            {"theory.claims.dynamics.logistic_trajectory": _sqrt_gamma_trajectory},
        ),
    ),
)
def barlow_stepwise(budget: str, seed: int) -> ClaimResult:
    rng = np.random.default_rng(seed + 31)
    u = np.linalg.qr(rng.standard_normal((3, 3)))[0]
    x, _ = design_with_correlation(GAMMAS, u)
    t_end = 1.4 * half_time(GAMMAS[-1], C0)
    dt = {"tiny": 8e-3, "quick": 4e-3, "full": 1e-3}[budget]
    w_aligned = np.diag(np.sqrt(C0 / GAMMAS)) @ u.T
    errors = []
    for step in (dt, dt / 2):
        times, cs = _gradient_descent(x, w_aligned, step, t_end)
        diag = np.array([np.diag(c) for c in cs])
        closed = np.stack([logistic_trajectory(times, gm, C0) for gm in GAMMAS], axis=1)
        errors.append(float(np.max(np.abs(diag - closed))))
    w_random = np.sqrt(C0) * rng.standard_normal((3, 3)) / np.sqrt(3)
    times_r, cs_r = _gradient_descent(x, w_random, dt, 1.6 * t_end)
    eig = np.array([np.sort(np.linalg.eigvalsh(c))[::-1] for c in cs_r])
    crossings = [
        float(times_r[np.argmax(eig[:, j] >= 0.5)]) if np.any(eig[:, j] >= 0.5) else float("inf")
        for j in range(3)
    ]
    order = 0.0 if crossings[0] < crossings[1] < crossings[2] < float("inf") else 1.0
    checks = [
        judge_le(f"max |c_j − closed form| at dt={dt / 2:g}", errors[1], TRAJECTORY_TOL),
        judge_close(
            "Euler error halves with dt (first order): ratio", errors[0] / errors[1], 2.0, atol=0.4
        ),
        judge_le("random start: steps in order of γ (violations)", order, 0.0),
        judge_close(
            "final C = I (random start)",
            float(np.max(np.abs(cs_r[-1] - np.eye(3)))),
            0.0,
            atol=0.05,
        ),
    ]
    c = combine(checks)
    predicted = [half_time(gm, C0) for gm in GAMMAS]
    return ClaimResult(
        c.verdict,
        c.reason,
        f"max trajectory error {errors[1]:.1e} (dt={dt / 2:g}), ratio {errors[0] / errors[1]:.2f};"
        f" random-start crossings {', '.join(f'{t:.2f}' for t in crossings)}",
        [
            Series(f"c_{j + 1}(t), γ={gm:g} (gradient descent)", times, diag[:, j])
            for j, gm in enumerate(GAMMAS)
        ],
        [Series(f"closed form, γ={gm:g}", times, closed[:, j]) for j, gm in enumerate(GAMMAS)],
        x_label="time t",
        y_label="C_jj",
        details={
            "half_times_predicted": predicted,
            "crossings_random_start": crossings,
            "errors": errors,
            "resolution": {
                "quantity": "rates 8γ_j of the aligned trajectories",
                "relative": _rate_resolution(times, errors[1]),
            },
        },
    )
