"""Setting §16: multi-view redundancy and the contrastive embedding (docs/settings.md §16).

Tosh, Krishnamurthy & Hsu, "Contrastive learning, multi-view redundancy, and linear models" (ALT
2021, arXiv 2008.10150) [M]: if each view alone is nearly as predictive of the target as both
together — ``E[(μ_X − μ_XZ)²] ≤ ε`` and ``E[(μ_Z − μ_XZ)²] ≤ ε`` with ``μ_X = E[Y | X]``,
``μ_Z = E[Y | Z]``, ``μ_XZ = E[Y | X, Z]`` — then a linear function of the representation learned
by contrastive learning (whose population optimum is the density ratio
``ρ(x, z) = p(x, z)/(p(x)p(z))``) has squared-loss excess risk O(ε) over ``μ_XZ``.

The model [R]: latent ``h = (c, a, b) ~ N(0, I)`` (c shared, a seen only by X, b only by Z),
views ``X = L_x h + s_x ξ``, ``Z = L_z h + s_z ξ'`` (``L_x`` has no b-columns, ``L_z`` no
a-columns) and target ``Y = wᵀh + s_y ε``; all jointly Gaussian and centred, so every conditional
mean is linear: ``μ_X(x) = β_xᵀx`` with ``β_x = Σ_xx⁻¹Σ_xy``, likewise ``β_z`` and ``β_xz`` on
``v = (x, z)``. The excess risk of a linear predictor ``cᵀv`` over Bayes is
``(c − β_xz)ᵀΣ_vv(c − β_xz)`` and the redundancies are
``ε_X = β_xzᵀΣ_vvβ_xz − β_xᵀΣ_xxβ_x``, ``ε_Z`` likewise (orthogonality of μ_XZ − μ_X to X).

Derivations [R]:

* Landmark / conditional-mean predictor ``f(x) = E[μ_Z(Z) | X = x] = E_{Z~p(z)}[ρ(x, Z) μ_Z(Z)]``
  — a linear functional of the optimal critic's x-section. Since ``E[μ_XZ | X] = μ_X``,
  ``f − μ_X = E[μ_Z − μ_XZ | X]`` is a function of X orthogonal to ``μ_X − μ_XZ``, hence the
  identity ``E[(f − μ_XZ)²] = ε_X + E[(f − μ_X)²]`` and, by Jensen, ``E[(f − μ_X)²] ≤ ε_Z``:
  ``excess(f) ≤ ε_X + ε_Z ≤ 2ε``.
* Canonical correlations: with ``C = Σ_xx^{-1/2}Σ_xzΣ_zz^{-1/2} = U diag(ρ_i) Vᵀ``,
  ``u = UᵀΣ_xx^{-1/2}x`` and ``v = VᵀΣ_zz^{-1/2}z`` are independent bivariate pairs, so
  ``log ρ(x, z) = Σ_i [−½ log(1 − ρ_i²) − (ρ_i²u_i² − 2ρ_iu_iv_i + ρ_i²v_i²)/(2(1 − ρ_i²))]``:
  the optimal critic depends on x only through the r canonical variates with ``ρ_i > 0``
  (r = rank Σ_xz = dim c). The embedding ``φ(x) = U_rᵀΣ_xx^{-1/2}x`` spans f
  (``β_f = Σ_xx^{-1/2}U_r diag(ρ) V_rᵀΣ_zz^{1/2}β_z``), so the best linear predictor on φ obeys
  ``ε_X ≤ excess(φ) ≤ excess(f) ≤ ε_X + ε_Z``.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
from scipy.linalg import solve_triangular

__all__ = ["MultiViewGaussian", "gaussian_logpdf", "inv_sqrt", "random_instance"]


def inv_sqrt(s: np.ndarray) -> np.ndarray:
    """``S^{-1/2}`` of a symmetric positive-definite matrix."""
    vals, vecs = np.linalg.eigh(s)
    return (vecs / np.sqrt(vals)) @ vecs.T


def gaussian_logpdf(x: np.ndarray, cov: np.ndarray) -> np.ndarray:
    """Log-density of ``N(0, cov)`` at the rows of ``x``."""
    chol = np.linalg.cholesky(cov)
    sol = solve_triangular(chol, x.T, lower=True)
    logdet = 2 * np.sum(np.log(np.diag(chol)))
    return -0.5 * (np.sum(sol**2, axis=0) + logdet + cov.shape[0] * np.log(2 * np.pi))


@dataclass(frozen=True)
class MultiViewGaussian:
    """The two-view linear-Gaussian model of the module docstring."""

    lx: np.ndarray  # [dx, D]
    lz: np.ndarray  # [dz, D]
    w: np.ndarray  # [D]
    noise_x: float = 0.5
    noise_z: float = 0.5
    noise_y: float = 0.3

    def __post_init__(self) -> None:
        if self.lx.shape[1] != self.lz.shape[1] or self.w.shape != (self.lx.shape[1],):
            raise ValueError("L_x [dx, D], L_z [dz, D] and w [D] must share the latent dimension")
        if min(self.noise_x, self.noise_z) <= 0 or self.noise_y < 0:
            raise ValueError("view noise must be positive (target noise ≥ 0)")

    @property
    def dx(self) -> int:
        return self.lx.shape[0]

    @property
    def dz(self) -> int:
        return self.lz.shape[0]

    @cached_property
    def sigma_vv(self) -> np.ndarray:
        """Covariance of ``v = (x, z)``."""
        lv = np.vstack([self.lx, self.lz])
        noise = np.r_[np.full(self.dx, self.noise_x**2), np.full(self.dz, self.noise_z**2)]
        return lv @ lv.T + np.diag(noise)

    @cached_property
    def sigma_vy(self) -> np.ndarray:
        return np.vstack([self.lx, self.lz]) @ self.w

    @property
    def sigma_xx(self) -> np.ndarray:
        return self.sigma_vv[: self.dx, : self.dx]

    @property
    def sigma_zz(self) -> np.ndarray:
        return self.sigma_vv[self.dx :, self.dx :]

    @property
    def sigma_xz(self) -> np.ndarray:
        return self.sigma_vv[: self.dx, self.dx :]

    @property
    def var_y(self) -> float:
        return float(self.w @ self.w + self.noise_y**2)

    @cached_property
    def beta_xz(self) -> np.ndarray:
        """``μ_XZ(v) = β_xzᵀv``."""
        return np.linalg.solve(self.sigma_vv, self.sigma_vy)

    @cached_property
    def beta_x(self) -> np.ndarray:
        """``μ_X(x) = β_xᵀx``."""
        return np.linalg.solve(self.sigma_xx, self.sigma_vy[: self.dx])

    @cached_property
    def beta_z(self) -> np.ndarray:
        """``μ_Z(z) = β_zᵀz``."""
        return np.linalg.solve(self.sigma_zz, self.sigma_vy[self.dx :])

    def bayes_risk(self) -> float:
        """``E[(Y − μ_XZ)²]``."""
        return float(self.var_y - self.sigma_vy @ self.beta_xz)

    def excess(self, coef: np.ndarray) -> float:
        """Excess squared risk over ``μ_XZ`` of ``v ↦ coefᵀv`` (``coef`` on (x, z))."""
        d = coef - self.beta_xz
        return float(d @ self.sigma_vv @ d)

    def excess_x(self, coef_x: np.ndarray) -> float:
        """Excess squared risk over ``μ_XZ`` of ``x ↦ coef_xᵀx``."""
        return self.excess(np.r_[coef_x, np.zeros(self.dz)])

    def redundancy(self) -> tuple[float, float]:
        """``(ε_X, ε_Z) = (E[(μ_X − μ_XZ)²], E[(μ_Z − μ_XZ)²])``."""
        eps_x = self.excess(np.r_[self.beta_x, np.zeros(self.dz)])
        eps_z = self.excess(np.r_[np.zeros(self.dx), self.beta_z])
        return eps_x, eps_z

    def landmark_coef(self) -> np.ndarray:
        """``β_f = Σ_xx⁻¹Σ_xzβ_z``: ``f(x) = E[μ_Z(Z) | X = x] = β_fᵀx``."""
        return np.linalg.solve(self.sigma_xx, self.sigma_xz @ self.beta_z)

    @cached_property
    def _cca(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        wx, wz = inv_sqrt(self.sigma_xx), inv_sqrt(self.sigma_zz)
        u, rho, vt = np.linalg.svd(wx @ self.sigma_xz @ wz)
        r = len(rho)
        return rho, u[:, :r].T @ wx, vt[:r] @ wz

    def canonical(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Canonical correlations (descending) and the maps ``x ↦ u``, ``z ↦ v`` (as rows)."""
        return self._cca

    def cca_features(self, rank: int | None = None, tol: float = 1e-10) -> np.ndarray:
        """``φ`` as a ``[r, dx]`` matrix: the canonical variates of X with ``ρ_i > tol``, or the
        top ``rank`` of them."""
        rho, mx, _ = self.canonical()
        r = int(np.sum(rho > tol)) if rank is None else rank
        return mx[:r]

    def best_on_features(self, m: np.ndarray) -> np.ndarray:
        """Coefficient in x-space of the best linear predictor of Y on ``Mx``."""
        sxy = self.sigma_vy[: self.dx]
        return m.T @ np.linalg.solve(m @ self.sigma_xx @ m.T, m @ sxy)

    def log_density_ratio(self, x: np.ndarray, z: np.ndarray) -> np.ndarray:
        """``log p(x, z) − log p(x) − log p(z)`` from the three Gaussian densities."""
        joint = gaussian_logpdf(np.hstack([x, z]), self.sigma_vv)
        return joint - gaussian_logpdf(x, self.sigma_xx) - gaussian_logpdf(z, self.sigma_zz)

    def log_density_ratio_canonical(self, x: np.ndarray, z: np.ndarray) -> np.ndarray:
        """The same through the canonical variates (the docstring's sum over pairs)."""
        rho, mx, mz = self.canonical()
        u, v = x @ mx.T, z @ mz.T
        q = 1 - rho**2
        terms = -0.5 * np.log(q) - (rho**2 * (u**2 + v**2) - 2 * rho * u * v) / (2 * q)
        return terms.sum(axis=1)

    def critic_embeddings(
        self, x: np.ndarray, z: np.ndarray, tol: float = 1e-10
    ) -> tuple[np.ndarray, np.ndarray]:
        """Embeddings ``(e_x, e_z)`` with ``e_x(x)ᵀe_z(z) = log ρ(x, z) − (terms in x alone)``.

        ``e_x = (φ(x), 1)`` and ``e_z = (ρ_i v_i/(1 − ρ_i²), −Σ_i ρ_i²v_i²/(2(1 − ρ_i²)))``: the
        density ratio's critic (the InfoNCE optimum up to functions of the anchor, which cancel
        in its softmax over candidates) is a dot product of the canonical variates.
        """
        rho, mx, mz = self.canonical()
        r = int(np.sum(rho > tol))
        rho, q = rho[:r], 1 - rho[:r] ** 2
        u, v = x @ mx[:r].T, z @ mz[:r].T
        ex = np.hstack([u, np.ones((len(x), 1))])
        ez = np.hstack([v * (rho / q), -(v**2 * rho**2 / (2 * q)).sum(axis=1, keepdims=True)])
        return ex, ez

    def sample_parts(
        self, rng: np.random.Generator, n: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """``n`` draws of the latent h, the views X and Z, and the target noise ε (standard)."""
        h = rng.standard_normal((n, len(self.w)))
        x = h @ self.lx.T + self.noise_x * rng.standard_normal((n, self.dx))
        z = h @ self.lz.T + self.noise_z * rng.standard_normal((n, self.dz))
        return h, x, z, rng.standard_normal(n)

    def target(self, h: np.ndarray, eps: np.ndarray) -> np.ndarray:
        """``Y = wᵀh + s_y ε``."""
        return h @ self.w + self.noise_y * eps

    def sample(self, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``n`` draws of ``(X, Z, Y)`` as ``[n, dx]``, ``[n, dz]``, ``[n]``."""
        h, x, z, eps = self.sample_parts(rng, n)
        return x, z, self.target(h, eps)

    def sample_z(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """``n`` draws of the Z view alone (landmarks)."""
        h = rng.standard_normal((n, len(self.w)))
        return h @ self.lz.T + self.noise_z * rng.standard_normal((n, self.dz))


def random_instance(
    rng: np.random.Generator,
    gamma: float,
    shared: int = 2,
    own: int = 2,
    block: int = 3,
    strength: float = 3.0,
) -> MultiViewGaussian:
    """A block model seen through random rotations; ``gamma`` tunes the redundancy.

    Each view reads the shared latent c and its own latent (a for X, b for Z) through
    ``block``-dim blocks ``QG`` (Q with random orthonormal columns, G diagonal with entries
    uniform in ``strength·[0.5, 1.5]``), then is rotated by a
    random orthogonal matrix (isotropic noise keeps its form; the information is unchanged).
    The target is ``Y = w_cᵀc + γ(w_aᵀa + w_bᵀb) + s_y ε`` with fixed positive weights.
    Posterior covariances are block-diagonal in (c, a, b), so ``ε_X = w_cᵀΔ_c w_c +
    γ²w_bᵀ(I − Cov(b | Z))w_b`` and the excess of the best predictor on φ (a function of the
    c-reading only) both increase with γ [R]. The same ``rng`` state gives the same model up to
    ``gamma``.
    """
    if block < max(shared, own):
        raise ValueError("each block must be at least as wide as the latent it reads")

    def reading(k: int) -> np.ndarray:  # orthonormal columns, strengths in strength·[0.5, 1.5]
        gains = strength * rng.uniform(0.5, 1.5, k)
        return np.linalg.qr(rng.standard_normal((block, k)))[0] * gains

    d = shared + 2 * own
    lx = np.zeros((2 * block, d))
    lz = np.zeros((2 * block, d))
    lx[:block, :shared] = reading(shared)
    lx[block:, shared : shared + own] = reading(own)
    lz[:block, :shared] = reading(shared)
    lz[block:, shared + own :] = reading(own)
    qx = np.linalg.qr(rng.standard_normal((2 * block, 2 * block)))[0]
    qz = np.linalg.qr(rng.standard_normal((2 * block, 2 * block)))[0]
    base = np.abs(rng.standard_normal(d)) + 0.5
    scale = np.r_[np.ones(shared), np.full(2 * own, gamma)]
    return MultiViewGaussian(qx @ lx, qz @ lz, base * scale)
