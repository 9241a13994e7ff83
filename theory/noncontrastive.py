"""Setting §12 (docs/settings.md): linear BYOL/SimSiam learning dynamics without contrastive pairs.

Tian, Chen & Ganguli, "Understanding self-supervised Learning Dynamics without Contrastive
Pairs", ICML 2021 (arXiv 2102.06810), §2–3 and appendix A–B [S]. Online network ``W``
(``n₂ × n₁``), predictor ``W_p`` (``n₂ × n₂``), target ``W_a``; two views of ``x`` with
``X = E[x̄x̄ᵀ]`` (covariance of the view means) and ``X' = E[V[x'|x]]`` (augmentation covariance).
The loss ``J = ½E‖W_p W x₁ − StopGrad(W_a x₂)‖²`` and weight decay ``η`` give (Lemma 1)::

    Ẇ_p = α_p(−W_p W(X + X') + W_a X)Wᵀ − ηW_p
    Ẇ   = W_pᵀ(−W_p W(X + X') + W_a X) − ηW
    Ẇ_a = β(−W_a + W)            (EMA; SimSiam: W_a = W)

* Theorem 2: without the stop-gradient (``W_a = W``), ``Ẇ = −(W_pᵀW_p + I)WX' − W̃_pᵀW̃_pWX − ηW``
  (``W̃_p = W_p − I``), i.e. ``vec Ẇ = −H vec W`` with ``H ⪰ 0``; if ``λ_min(H) ≥ λ₀ > 0`` then
  ``‖W(t)‖ ≤ e^{−λ₀t}‖W(0)‖``. With ``X' = σ²I``: ``λ₀ ≥ σ² + η``.
* Appendix A, remark: with ``W_a = W`` and no predictor (``W_p = I``), ``Ẇ = −W(X' + ηI)`` (the
  paper prints ``−(X' + ηI)W``; ``W`` is ``n₂ × n₁``, so the factor acts on the right):
  ``W(t) = W(0)e^{−(X' + ηI)t} → 0``.
* Under isotropy (``X = I``, ``X' = σ²I``), ``W_a = τW`` and a symmetric predictor with the
  symmetrised flow (Assumptions 1–3), ``F = WXWᵀ`` and ``W_p`` obey eq. 7 and Theorem 3: the
  commutator ``L = [F, W_p]`` satisfies ``L̇ = −(KL + LK)`` with
  ``K = (1 + σ²)[α_pF/2 + W_p² − τW_p/(1 + σ²)] + (3/2)ηI``; hence (Grönwall, which gives the
  paper's bound when ``λ_min(K) ≥ λ₀``) ``‖L(t)‖_F ≤ exp(−2∫₀ᵗ λ_min(K)) ‖L(0)‖_F``.
* Once aligned, each common eigenmode ``(p_j, s_j)`` of ``(W_p, F)`` follows eqs. 11–12,
  ``ṗ = α_p s(τ − (1 + σ²)p) − ηp``, ``ṡ = 2ps(τ − (1 + σ²)p) − 2ηs``; with ``η > 0`` it tends
  to the parabola ``s = p²/α_p`` (eq. 14), on which the non-collapsed fixed points are
  ``p_± = (τ ± √(τ² − 4η(1 + σ²)))/(2(1 + σ²))`` (eq. 16; ``p₊`` stable) for
  ``η ≤ τ²/(4(1 + σ²))``.

:class:`ByolFlow` evaluates the right-hand sides (general ``X``, ``X'``); the claim integrates
them with Euler steps. Euler keeps the fixed points of the flow exactly, so it converges to the
same ``(p₊, p₊²/α_p)``; along the way it is first-order accurate.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "ByolFlow",
    "alignment_k",
    "decoupled_rhs",
    "fixed_points",
    "population_loss",
]


@dataclass(frozen=True)
class ByolFlow:
    """The gradient flow of linear BYOL/SimSiam (Lemma 1) and its ablations.

    Attributes:
        data_cov: ``X`` (``n₁ × n₁``, symmetric PSD).
        aug_cov: ``X'`` (``n₁ × n₁``, symmetric PSD).
        alpha_p: relative learning rate of the predictor.
        eta: weight decay ``η ≥ 0``.
        beta: EMA rate of the target (used when ``ema``).
        stop_gradient: the target branch is detached (BYOL/SimSiam); ``False``: the gradient also
            flows through ``W_a = W`` (Theorem 2).
        predictor: train ``W_p``; ``False``: no predictor (``W_p = I`` whatever the state holds).
        symmetric: symmetrise the ``W_p`` flow (Assumption 3).
        ema: ``W_a`` follows eq. 4; ``False``: ``W_a = W`` (SimSiam, ``τ = 1``).
    """

    data_cov: np.ndarray
    aug_cov: np.ndarray
    alpha_p: float = 1.0
    eta: float = 0.0
    beta: float = 0.0
    stop_gradient: bool = True
    predictor: bool = True
    symmetric: bool = True
    ema: bool = False

    def __post_init__(self) -> None:
        n = self.data_cov.shape[0]
        if self.data_cov.shape != (n, n) or self.aug_cov.shape != (n, n):
            raise ValueError("data_cov and aug_cov must be square matrices of the same size")
        if self.eta < 0 or self.alpha_p <= 0 or self.beta < 0:
            raise ValueError("need eta ≥ 0, alpha_p > 0 and beta ≥ 0")
        if self.ema and not self.stop_gradient:
            raise ValueError("the no-stop-gradient ablation is defined with W_a = W (ema=False)")

    def rhs(
        self, w: np.ndarray, wp: np.ndarray, wa: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
        """``(Ẇ, Ẇ_p, Ẇ_a)`` at the state; ``None`` for a matrix that does not evolve (``W_p``
        without predictor, ``W_a`` without EMA). ``wa`` is ignored unless ``ema``."""
        x, xp = self.data_cov, self.aug_cov
        if not self.predictor:
            wp = np.eye(w.shape[0])
        target = wa if self.ema else w
        resid = target @ x - wp @ w @ (x + xp)  # W_a X − W_p W(X + X')
        if self.stop_gradient:
            dw = wp.T @ resid - self.eta * w
        else:
            eye = np.eye(wp.shape[0])
            wt = wp - eye
            dw = -(wp.T @ wp + eye) @ w @ xp - wt.T @ wt @ w @ x - self.eta * w
        dwp = None
        if self.predictor:
            g = resid @ w.T
            if self.symmetric:
                g = (g + g.T) / 2
            dwp = self.alpha_p * g - self.eta * wp
        dwa = self.beta * (w - wa) if self.ema else None
        return dw, dwp, dwa

    def euler(
        self, w: np.ndarray, wp: np.ndarray, wa: np.ndarray, dt: float, steps: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """States ``W, W_p, W_a`` after each of ``steps`` Euler steps (index 0 the start):
        arrays ``[steps + 1, …]``."""
        ws, wps, was = [w], [wp], [wa]
        for _ in range(steps):
            dw, dwp, dwa = self.rhs(w, wp, wa)
            w = w + dt * dw
            if dwp is not None:
                wp = wp + dt * dwp
            if dwa is not None:
                wa = wa + dt * dwa
            ws.append(w)
            wps.append(wp)
            was.append(wa)
        return np.array(ws), np.array(wps), np.array(was)


def population_loss(w: Tensor, wp: Tensor, wa: Tensor, data_cov: Tensor, aug_cov: Tensor) -> Tensor:
    """``J = ½E‖W_p W x₁ − W_a x₂‖²`` for two independent views of ``x`` (eq. 1 without the
    stop-gradient: detach ``wa`` to apply it), in closed form::

        J = ½[tr(W_pᵀW_p W(X + X')Wᵀ) − 2 tr(W_p W X W_aᵀ) + tr(W_a(X + X')W_aᵀ)].
    """
    c = data_cov + aug_cov
    f1 = w @ c @ w.T
    return 0.5 * (
        torch.trace(wp.T @ wp @ f1)
        - 2 * torch.trace(wp @ w @ data_cov @ wa.T)
        + torch.trace(wa @ c @ wa.T)
    )


def alignment_k(
    f: np.ndarray, wp: np.ndarray, sigma2: float, alpha_p: float, eta: float, tau: float = 1.0
) -> np.ndarray:
    """Theorem 3's ``K = (1 + σ²)[α_pF/2 + W_p² − τW_p/(1 + σ²)] + (3/2)ηI``; ``f`` and ``wp``
    may be stacks ``[..., n, n]``."""
    c = 1 + sigma2
    return c * (alpha_p * f / 2 + wp @ wp) - tau * wp + 1.5 * eta * np.eye(f.shape[-1])


def decoupled_rhs(
    p: np.ndarray, s: np.ndarray, sigma2: float, alpha_p: float, eta: float, tau: float = 1.0
) -> tuple[np.ndarray, np.ndarray]:
    """Eqs. 11–12: ``(ṗ_j, ṡ_j)`` of the aligned eigenmodes."""
    gap = tau - (1 + sigma2) * p
    return alpha_p * s * gap - eta * p, 2 * p * s * gap - 2 * eta * s


def fixed_points(sigma2: float, eta: float, tau: float = 1.0) -> tuple[float, float] | None:
    """``(p₋, p₊)`` of eq. 16 on the invariant parabola, or ``None`` when
    ``η > τ²/(4(1 + σ²))`` (only the collapsed fixed point ``p = 0`` remains)."""
    disc = tau**2 - 4 * eta * (1 + sigma2)
    if disc < 0:
        return None
    root = math.sqrt(disc)
    return (tau - root) / (2 * (1 + sigma2)), (tau + root) / (2 * (1 + sigma2))
