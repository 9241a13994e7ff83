"""Setting A2: linear-Gaussian joint embedding, spectral and VICReg optima in closed form [R].

Natural data ``x̄ ~ N(0, Σ)``; views ``x = x̄ + ξ``, ``x⁺ = x̄ + ξ'`` with ``ξ, ξ' ~ N(0, Σ_ξ)``;
``S = Σ + Σ_ξ``; linear encoder ``f(x) = W x`` with ``W ∈ R^{k×d}`` (docs/settings.md §4).

* Spectral contrastive population loss: ``L(W) = −2 tr(WΣWᵀ) + tr((WSWᵀ)²)``. With
  ``V = W S^{1/2}`` and ``K = S^{-1/2} Σ S^{-1/2}``, ``L = ‖VᵀV − K‖² − ‖K‖²``, so
  ``min L = −Σ_{i≤k} κ_i²`` at ``W* = diag(√κ) U_kᵀ S^{-1/2}`` (Eckart–Young).
* VICReg in the hard-constraint limit: ``min E‖Wx − Wx⁺‖²`` s.t. ``WSWᵀ = I`` gives
  ``W = U_kᵀ S^{-1/2}`` — the **same** row space: the top-k generalised eigenvectors of
  ``Σ v = κ S v``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.linalg import eigh, sqrtm

__all__ = ["LinearGaussianViews", "random_instance", "subspace_sin2"]


def subspace_sin2(a: np.ndarray, b: np.ndarray) -> float:
    """``sin²θ_max`` between the row spaces of ``a`` and ``b`` (``‖(I − P_b) Q_a‖²₂``)."""
    qa = np.linalg.qr(a.T)[0]
    qb = np.linalg.qr(b.T)[0]
    resid = qa - qb @ (qb.T @ qa)
    return float(np.linalg.norm(resid, 2) ** 2)


@dataclass
class LinearGaussianViews:
    """The linear-Gaussian two-view model with signal ``sigma`` and view noise ``sigma_xi``."""

    sigma: np.ndarray
    sigma_xi: np.ndarray

    @property
    def d(self) -> int:
        return self.sigma.shape[0]

    @property
    def S(self) -> np.ndarray:
        return self.sigma + self.sigma_xi

    def kappas(self) -> np.ndarray:
        """Generalised eigenvalues ``Σ v = κ S v``, descending (all in (0, 1))."""
        return eigh(self.sigma, self.S, eigvals_only=True)[::-1]

    def generalized_eigvecs(self, k: int) -> np.ndarray:
        """``[k, d]`` top-k generalised eigenvectors, as rows."""
        _, v = eigh(self.sigma, self.S)
        return v[:, ::-1][:, :k].T

    def spectral_optimum(self, k: int) -> np.ndarray:
        """``W* = diag(√κ) U_kᵀ S^{-1/2}``."""
        s_inv_half = np.linalg.inv(np.real(sqrtm(self.S)))
        kmat = s_inv_half @ self.sigma @ s_inv_half
        vals, vecs = np.linalg.eigh(kmat)
        vals, vecs = vals[::-1][:k], vecs[:, ::-1][:, :k]
        return np.sqrt(vals)[:, None] * vecs.T @ s_inv_half

    def vicreg_hard_optimum(self, k: int) -> np.ndarray:
        """``W = U_kᵀ S^{-1/2}``, the minimiser of ``E‖W(x − x⁺)‖²`` subject to ``WSWᵀ = I``."""
        w = self.spectral_optimum(k)
        return w / np.sqrt(self.kappas()[:k])[:, None]

    def spectral_population_loss(self, w: np.ndarray) -> float:
        """``−2 tr(WΣWᵀ) + tr((WSWᵀ)²)``."""
        c = w @ self.S @ w.T
        return float(-2 * np.trace(w @ self.sigma @ w.T) + np.sum(c * c))

    def sample(self, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
        """``n`` positive pairs ``(x, x⁺)`` as two ``[n, d]`` arrays."""
        lc = np.linalg.cholesky(self.sigma)
        ln = np.linalg.cholesky(self.sigma_xi)
        xbar = rng.standard_normal((n, self.d)) @ lc.T
        return (
            xbar + rng.standard_normal((n, self.d)) @ ln.T,
            xbar + rng.standard_normal((n, self.d)) @ ln.T,
        )

    def plugin_subspace(self, x1: np.ndarray, x2: np.ndarray, k: int) -> np.ndarray:
        """Top-k generalised eigenvectors of the empirical (cross-view, joint) covariances."""
        n = x1.shape[0]
        cross = (x1.T @ x2 + x2.T @ x1) / (2 * n)
        joint = (x1.T @ x1 + x2.T @ x2) / (2 * n)
        _, v = eigh(cross, joint)
        return v[:, ::-1][:, :k].T


def random_instance(rng: np.random.Generator, d: int = 6, gap: float = 0.15) -> LinearGaussianViews:
    """An instance with *anisotropic* view noise (so the optimum is not PCA by accident) and a
    generalised eigengap ``κ_k − κ_{k+1} ≥ gap`` after k = 2 (≥ 0.1 keeps the
    optimal subspace well defined)."""
    for _ in range(1000):
        a = rng.standard_normal((d, d))
        sigma = a @ a.T / d + np.diag(np.linspace(2.0, 0.2, d))
        b = rng.standard_normal((d, d))
        sigma_xi = b @ b.T / d + 0.1 * np.eye(d)
        inst = LinearGaussianViews(sigma, sigma_xi)
        kap = inst.kappas()
        if kap[1] - kap[2] >= gap:
            return inst
    raise RuntimeError("no instance with the requested eigengap")
