"""Setting §15: reconstruction SSL under conditional independence (docs/settings.md §15).

Lee, Lei, Saunshi & Zhuo, "Predicting What You Already Know Helps: Provable Self-Supervised
Learning" (NeurIPS 2021, arXiv 2008.01064) [M]: if the input ``X₁`` and the pretext target ``X₂``
are independent given the label ``Y``, the pretext optimum ``ψ(x₁) = E[X₂ | X₁ = x₁]`` is a linear
function of ``E[Y | X₁ = x₁]``, so a linear probe on ψ represents the Bayes regressor and its
excess risk from n labelled samples is governed by the label dimension k, not by ``dim X₁``.

The model [R]: ``Y ~ N(0, I_k)``, ``X₁ = AY + s₁ξ₁ ∈ ℝ^{d₁}``, ``X₂ = BY + Cξ₁ + s₂ξ₂ ∈ ℝ^{d₂}``
and the downstream target ``t = θᵀY + s_t ε`` (ξ₁, ξ₂, ε standard normal). ``C = 0`` is
conditional independence; ``C ≠ 0`` leaks X₁'s noise into X₂ and breaks it. Everything is jointly
Gaussian and centred:

* ``Σ₁₁ = AAᵀ + s₁²I``, ``Σ₂₁ = BAᵀ + s₁C``, ``Σ₁t = Aθ``, ``Var t = ‖θ‖² + s_t²``;
* ``E[Y | X₁] = K x₁`` with ``K = AᵀΣ₁₁⁻¹`` and ``ψ(x₁) = Ψ x₁`` with ``Ψ = Σ₂₁Σ₁₁⁻¹``; under
  conditional independence ``Ψ = BK``, of rank k, so ``E[t | X₁] = θᵀKx₁ = θᵀB⁺ψ(x₁)`` when B
  has full column rank;
* Bayes risk ``R* = Var(t | X₁) = Var t − Σt₁Σ₁₁⁻¹Σ₁t``.

A linear probe on features ``f(x₁) = M x₁`` (``M ∈ ℝ^{p×d₁}``: raw input ``M = I``, the
coordinates of ψ in an orthonormal basis of its range, or a learned ψ̂) with weights w has the
population risk ``R(w) = Var t − 2wᵀMΣ₁t + wᵀMΣ₁₁Mᵀw``; the best weights give ``R_M``. Since
``(f(X₁), t)`` is Gaussian, ``t = w_Mᵀf + e`` with e independent of f and ``Var e = R_M``, and
least squares on n samples has the exact expected excess (Gaussian design, no intercept)

    E[R(ŵ)] − R_M = R_M · p / (n − p − 1)        (n > p + 1),

from ``E[(FᵀF)⁻¹] = (MΣ₁₁Mᵀ)⁻¹ / (n − p − 1)`` (inverse-Wishart mean). With ψ (p = k, R_M = R*)
the excess over Bayes is ``R*k/(n − k − 1)``; with the raw input (p = d₁, the same R*) it is
``R*d₁/(n − d₁ − 1)``.

Learned ψ̂: least squares of X₂ on X₁ from m unlabelled pairs gives ``Ψ̂``, of full rank; its
top-k principal directions ``V̂`` (of ``Ψ̂Σ̂₁₁Ψ̂ᵀ``) give the features ``M = V̂ᵀΨ̂``. Their
approximation error ``a_m = R_M − R*`` is computed exactly from the population covariances, and
the total excess over Bayes is ``a_m + R_M k/(n − k − 1)`` in expectation over the labelled draw.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

__all__ = [
    "ReconstructionModel",
    "batched_probe_excess",
    "nested_probe_excess",
    "ols_expected_excess",
    "random_instance",
]


def ols_expected_excess(noise_var: float, p: int, n: int) -> float:
    """``σ² p / (n − p − 1)``: expected excess risk of least squares with a Gaussian design."""
    if n <= p + 1:
        raise ValueError(f"the expectation is finite only for n > p + 1 (n={n}, p={p})")
    return noise_var * p / (n - p - 1)


@dataclass(frozen=True)
class ReconstructionModel:
    """The linear-Gaussian model of the module docstring (``leak`` is the matrix C)."""

    a: np.ndarray  # [d1, k]
    b: np.ndarray  # [d2, k]
    theta: np.ndarray  # [k]
    noise1: float = 1.0
    noise2: float = 0.5
    label_noise: float = 0.5
    leak: np.ndarray | None = field(default=None)  # [d2, d1]; None means conditional independence

    def __post_init__(self) -> None:
        d1, k = self.a.shape
        if self.b.ndim != 2 or self.b.shape[1] != k or self.theta.shape != (k,):
            raise ValueError("A is [d1, k], B is [d2, k] and θ is [k]")
        if self.leak is not None and self.leak.shape != (self.d2, d1):
            raise ValueError(f"leak must be [d2, d1] = [{self.d2}, {d1}]")
        if min(self.noise1, self.noise2) <= 0 or self.label_noise < 0:
            raise ValueError("noise levels must be positive (label noise ≥ 0)")

    @property
    def k(self) -> int:
        return self.a.shape[1]

    @property
    def d1(self) -> int:
        return self.a.shape[0]

    @property
    def d2(self) -> int:
        return self.b.shape[0]

    @cached_property
    def sigma11(self) -> np.ndarray:
        return self.a @ self.a.T + self.noise1**2 * np.eye(self.d1)

    @cached_property
    def sigma21(self) -> np.ndarray:
        c = self.b @ self.a.T
        return c if self.leak is None else c + self.noise1 * self.leak

    @cached_property
    def sigma1t(self) -> np.ndarray:
        return self.a @ self.theta

    @property
    def var_t(self) -> float:
        return float(self.theta @ self.theta + self.label_noise**2)

    def posterior_gain(self) -> np.ndarray:
        """``K = AᵀΣ₁₁⁻¹`` (``[k, d1]``): ``E[Y | X₁ = x] = Kx``."""
        return np.linalg.solve(self.sigma11, self.a).T

    def psi_matrix(self) -> np.ndarray:
        """``Ψ = Σ₂₁Σ₁₁⁻¹`` (``[d2, d1]``): the pretext optimum ``E[X₂ | X₁ = x] = Ψx``."""
        return np.linalg.solve(self.sigma11, self.sigma21.T).T

    def psi_features(self, tol: float = 1e-10) -> np.ndarray:
        """Coordinates of ψ in an orthonormal basis of its range: ``M = QᵀΨ`` (``[rank, d1]``).

        A linear probe on ψ ∈ ℝ^{d₂} and one on these coordinates span the same functions.
        """
        psi = self.psi_matrix()
        u, s, _ = np.linalg.svd(psi, full_matrices=False)
        rank = int(np.sum(s > tol * s[0]))
        return u[:, :rank].T @ psi

    def bayes_risk(self) -> float:
        """``R* = Var(t | X₁)``."""
        s1t = self.sigma1t
        return float(self.var_t - s1t @ np.linalg.solve(self.sigma11, s1t))

    def risk(self, m: np.ndarray, w: np.ndarray) -> float:
        """Population squared risk of ``x₁ ↦ wᵀMx₁``."""
        v = m.T @ w
        return float(self.var_t - 2 * v @ self.sigma1t + v @ self.sigma11 @ v)

    def best_probe(self, m: np.ndarray) -> tuple[np.ndarray, float]:
        """Best weights on the features ``Mx₁`` and their risk ``R_M``."""
        w = np.linalg.solve(m @ self.sigma11 @ m.T, m @ self.sigma1t)
        return w, self.risk(m, w)

    def sample(self, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``n`` draws of ``(X₁, X₂, t)`` as ``[n, d1]``, ``[n, d2]``, ``[n]``."""
        y = rng.standard_normal((n, self.k))
        xi1 = rng.standard_normal((n, self.d1))
        x1 = y @ self.a.T + self.noise1 * xi1
        x2 = y @ self.b.T + self.noise2 * rng.standard_normal((n, self.d2))
        if self.leak is not None:
            x2 += xi1 @ self.leak.T
        t = y @ self.theta + self.label_noise * rng.standard_normal(n)
        return x1, x2, t

    def sample_labelled(self, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
        """``n`` labelled draws ``(X₁, t)`` (no pretext target), as ``[n, d1]``, ``[n]``."""
        y = rng.standard_normal((n, self.k))
        x1 = y @ self.a.T + self.noise1 * rng.standard_normal((n, self.d1))
        return x1, y @ self.theta + self.label_noise * rng.standard_normal(n)

    def learned_psi_features(self, rng: np.random.Generator, m: int, rank: int) -> np.ndarray:
        """ψ̂ from ``m`` unlabelled pairs, truncated to its top-``rank`` principal directions.

        ``Ψ̂`` is the least-squares regression of X₂ on X₁; ``V̂`` the top eigenvectors of the
        empirical covariance of ψ̂(X₁); returns ``M = V̂ᵀΨ̂`` (``[rank, d1]``).
        """
        if m <= self.d1:
            raise ValueError(f"need more unlabelled pairs than d1 = {self.d1}, got {m}")
        x1, x2, _ = self.sample(rng, m)
        psi_hat = np.linalg.lstsq(x1, x2, rcond=None)[0].T
        feats = x1 @ psi_hat.T
        _, vecs = np.linalg.eigh(feats.T @ feats / m)
        return vecs[:, ::-1][:, :rank].T @ psi_hat


def random_instance(
    rng: np.random.Generator,
    k: int = 3,
    d1: int = 32,
    d2: int = 8,
    scale: float = 0.35,
    leak: float = 0.0,
) -> ReconstructionModel:
    """A, B with i.i.d. ``N(0, scale²)`` and ``N(0, 1)`` entries, a unit θ, and ``C = leak·G/√d₁``
    for a standard Gaussian G (``leak = 0``: conditional independence)."""
    a = scale * rng.standard_normal((d1, k))
    b = rng.standard_normal((d2, k))
    theta = rng.standard_normal(k)
    theta /= np.linalg.norm(theta)
    c = leak * rng.standard_normal((d2, d1)) / np.sqrt(d1) if leak else None
    return ReconstructionModel(a, b, theta, leak=c)


def nested_probe_excess(
    model: ReconstructionModel,
    m: np.ndarray,
    x1: np.ndarray,
    t: np.ndarray,
    ns: list[int],
) -> np.ndarray:
    """Excess over Bayes, ``R(ŵ_n) − R*``, of the probe on ``Mx₁`` fitted on the first n samples.

    The Gram matrices of the nested prefixes are accumulated block by block.
    """
    feats = x1 @ m.T
    bayes = model.bayes_risk()
    out = np.empty(len(ns))
    gram = np.zeros((m.shape[0], m.shape[0]))
    cross = np.zeros(m.shape[0])
    start = 0
    for j, n in enumerate(ns):
        if n < start:
            raise ValueError("sample sizes must increase")
        block = feats[start:n]
        gram += block.T @ block
        cross += block.T @ t[start:n]
        start = n
        w = np.linalg.solve(gram, cross)
        out[j] = model.risk(m, w) - bayes
    return out


def batched_probe_excess(
    model: ReconstructionModel,
    m: np.ndarray,
    x1: np.ndarray,
    t: np.ndarray,
    ns: list[int],
) -> np.ndarray:
    """:func:`nested_probe_excess` for many independent draws at once.

    ``x1`` is ``[R, n, d1]`` and ``t`` is ``[R, n]`` (R labelled draws of n samples each);
    returns ``[R, len(ns)]``, the excess over Bayes of the probe on ``Mx₁`` fitted on the first
    n samples of each draw (increasing ``ns``, each at most n).
    """
    if list(ns) != sorted(ns) or ns[-1] > x1.shape[1]:
        raise ValueError("sample sizes must increase and fit in the draws")
    feats = x1 @ m.T  # [R, n, p]
    bayes = model.bayes_risk()
    out = np.empty((x1.shape[0], len(ns)))
    for j, n in enumerate(ns):
        f = feats[:, :n]
        gram = np.einsum("rni,rnj->rij", f, f)
        cross = np.einsum("rni,rn->ri", f, t[:, :n])
        w = np.linalg.solve(gram, cross[..., None])[..., 0]
        v = w @ m  # [R, d1]: the probe as a linear map of x₁
        risk = model.var_t - 2 * v @ model.sigma1t + np.einsum("ri,ij,rj->r", v, model.sigma11, v)
        out[:, j] = risk - bayes
    return out
