"""Setting §11 (docs/settings.md): dimensional collapse of a linear encoder trained with InfoNCE.

Jing, Vincent, LeCun & Tian, "Understanding Dimensional Collapse in Contrastive Self-supervised
Learning", ICLR 2022 (arXiv 2110.09348), §4 [S]. Inputs ``x ~ N(0, Σ_d)``, augmented views
``x' = x + ε`` with ``ε ~ N(0, Σ_a)``, a linear encoder ``z = Wx`` (``W`` is ``k × d``) and their
InfoNCE loss (eq. 2) with the distance critic ``−‖z_i − z_j‖²/2`` and **negatives taken from the
anchor's own branch**::

    ℓ_i = ‖z_i − z'_i‖²/2 + log( e^{−‖z_i − z'_i‖²/2} + Σ_{j≠i} e^{−‖z_i − z_j‖²/2} ).

Lemma 1–2: gradient flow is ``Ẇ = WX`` with ``X = Σ̂₀ − Σ̂₁``, the difference of a weighted
negative-pair covariance ``Σ̂₀ = Σ_i Σ_{j≠i} α_ji (x_i − x_j)(x_i − x_j)ᵀ`` and a weighted
positive-pair covariance ``Σ̂₁ = Σ_i (1 − α_ii)(x'_i − x_i)(x'_i − x_i)ᵀ`` (``α_i·`` the softmax
of anchor ``i``'s logits). Theorem 1: for fixed ``X`` with negative eigenvalues, ``W`` loses those
directions (``W(t) = W(0)e^{Xt}``); Corollary 1: the embedding covariance ``WΣ̂Wᵀ`` becomes
low-rank.

Here (docs/settings.md §11) the loss is the batch *mean* with logits ``−‖·‖²/τ``, so ``X`` carries
the factor ``2/(τN)``; :func:`lemma2_x` computes it for a batch and a ``W``. Two further results
are derived here [R] and checked numerically:

* **Uniform weights.** While ``W`` is small every softmax weight is ``1/N``, and in expectation
  ``X₀ = (2/τ)((N − 1)/N)(2Σ_d − (1 − f)Σ_a)``, where ``f = 1`` if the anchor is augmented too
  (``x + ε₁`` against ``x + ε₂``) and ``f = 0`` for the paper's clean anchor. So with the paper's
  views a direction collapses iff its augmentation variance exceeds **twice** its signal
  variance (the negative pairs ``x_i − x_j`` carry ``2Σ_d``); with two augmented views it never
  does. If ``Σ_d`` and ``Σ_a`` share eigenvectors and the coordinates are independent, the
  weights along a vanishing direction depend on the other coordinates only, so in expectation
  ``X`` there is ``(2/τ)·mean_i(1 − α_ii)·(2σ_d,m² − (1 − f)σ_a,m²)``: its sign stays that of
  ``X₀`` during training, and the collapsed set is ``{m : 2σ_d,m² < (1 − f)σ_a,m²}``.
* **Cross-view negatives.** The library's :func:`gessl.losses.infonce` scores each anchor against
  the *other* view's batch (``z'_j`` as negatives). The same algebra gives ``Ẇ = WX`` with
  ``X = (2/(τN))[Σ_i Σ_{j≠i} β_ij (x_i − x'_j)(x_i − x'_j)ᵀ − Σ_i (1 − β_ii)(x_i − x'_i)(·)ᵀ]``
  and, at uniform weights, ``X₀ = (2/τ)((N − 1)/N)·2 Cov(x, x') = (2/τ)((N − 1)/N)·2Σ_d ⪰ 0``:
  no direction collapses, however strong the additive augmentation.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.linalg
import torch
from torch import Tensor

from gessl.tasks import Critic

__all__ = [
    "NEGATIVES",
    "CollapseSetting",
    "lemma2_x",
    "max_principal_angle",
    "same_branch_infonce",
    "softmax_weights",
]

#: where the negatives of an anchor come from: its own branch (the paper's eq. 2) or the other
#: view (``gessl.losses.infonce``)
NEGATIVES = ("same", "cross")


@dataclass(frozen=True)
class CollapseSetting:
    """Gaussian inputs and additive Gaussian augmentation with a shared eigenbasis.

    Attributes:
        data_var: ``σ_d,m²`` — eigenvalues of the data covariance Σ_d (length d, > 0).
        aug_var: ``σ_a,m²`` — eigenvalues of the augmentation covariance Σ_a (length d, ≥ 0).
        basis: ``d × d`` orthogonal matrix whose columns ``u_m`` are the shared eigenvectors.
        anchor_augmented: ``False`` — the paper's views ``(x, x + ε)``; ``True`` — two augmented
            views ``(x + ε₁, x + ε₂)``.
    """

    data_var: np.ndarray
    aug_var: np.ndarray
    basis: np.ndarray
    anchor_augmented: bool = False

    def __post_init__(self) -> None:
        d = len(self.data_var)
        if len(self.aug_var) != d or self.basis.shape != (d, d):
            raise ValueError("data_var, aug_var and basis must have matching dimension d")
        if np.any(np.asarray(self.data_var) <= 0) or np.any(np.asarray(self.aug_var) < 0):
            raise ValueError("data variances must be > 0 and augmentation variances ≥ 0")
        if not np.allclose(self.basis.T @ self.basis, np.eye(d), atol=1e-10):
            raise ValueError("basis must be orthogonal")

    @property
    def dim(self) -> int:
        return len(self.data_var)

    def sigma_data(self) -> np.ndarray:
        return self.basis @ np.diag(self.data_var) @ self.basis.T

    def sigma_aug(self) -> np.ndarray:
        return self.basis @ np.diag(self.aug_var) @ self.basis.T

    def uniform_x(self, n: int, negatives: str = "same", temperature: float = 2.0) -> np.ndarray:
        """``E X`` at uniform softmax weights (``W → 0``), batch of ``n`` (module docstring)."""
        if negatives not in NEGATIVES:
            raise ValueError(f"negatives must be one of {NEGATIVES}, got {negatives!r}")
        if n < 2:
            raise ValueError("a batch needs n ≥ 2 samples")
        scale = (2 / temperature) * (n - 1) / n
        if negatives == "cross":
            return scale * 2 * self.sigma_data()
        f = 1.0 if self.anchor_augmented else 0.0
        return scale * (2 * self.sigma_data() - (1 - f) * self.sigma_aug())

    def predicted_collapsed(self, negatives: str = "same") -> np.ndarray:
        """Indices ``m`` of the basis directions where the uniform-weight ``X₀`` is negative."""
        lam = np.diag(self.basis.T @ self.uniform_x(2, negatives) @ self.basis)
        return np.flatnonzero(lam < 0)

    def sample(
        self, n: int, rng: np.random.Generator, exact_moments: bool = False
    ) -> tuple[np.ndarray, np.ndarray]:
        """``n`` anchors and their positives, ``[n, d]`` each (float64).

        ``exact_moments`` (paper's views only): the Gaussian draws are orthogonalised against
        each other and the constant vector, then scaled so that the signal has mean 0 and sample
        covariance ``Σ x_i x_iᵀ/(n − 1) = Σ_d`` and the noise ``Σ ε_i ε_iᵀ/n = Σ_a``, uncorrelated
        with the signal: the batch's ``X`` at uniform weights then equals :meth:`uniform_x`
        exactly (needs ``n > 2d``)."""
        d = self.dim
        if exact_moments:
            if self.anchor_augmented:
                raise ValueError("exact_moments is defined for the paper's views (x, x + ε)")
            if n <= 2 * d:
                raise ValueError(f"exact moments need n > {2 * d}, got {n}")
            q = np.linalg.qr(np.column_stack([np.ones(n), rng.standard_normal((n, 2 * d))]))[0]
            signal, noise = q[:, 1 : d + 1] * np.sqrt(n - 1), q[:, d + 1 :] * np.sqrt(n)
        else:
            signal, noise = rng.standard_normal((2, n, d))
        x = (signal * np.sqrt(self.data_var)) @ self.basis.T
        x_pos = x + (noise * np.sqrt(self.aug_var)) @ self.basis.T
        if not self.anchor_augmented:
            return x, x_pos
        return x + (rng.standard_normal((n, d)) * np.sqrt(self.aug_var)) @ self.basis.T, x_pos


def same_branch_infonce(z: Tensor, z_pos: Tensor, temperature: float = 2.0) -> Tensor:
    """The paper's eq. 2 as a batch mean: positive ``z'_i``, negatives ``z_j`` (``j ≠ i``) of the
    anchor's own branch, logits from the library's distance critic ``−‖·‖²/τ``. ``[N, D]``
    embeddings, or ``[R, N, D]`` for R independent batches (the mean over them, as
    :func:`gessl.losses.infonce`)."""
    critic = Critic("neg_sq_distance", temperature)
    pos = -((z - z_pos) ** 2).sum(dim=-1) / temperature
    logits = torch.diagonal_scatter(critic.logits(z, z), pos, dim1=-2, dim2=-1)
    return -torch.log_softmax(logits, dim=-1).diagonal(dim1=-2, dim2=-1).mean()


def softmax_weights(
    w: np.ndarray, x: np.ndarray, x_pos: np.ndarray, negatives: str, temperature: float = 2.0
) -> np.ndarray:
    """``[n, n]`` softmax weights of each anchor (row) over its candidates; column ``i`` of row
    ``i`` is the positive."""
    z, zp = x @ w.T, x_pos @ w.T
    cand = z if negatives == "same" else zp
    d2 = ((z[:, None, :] - cand[None, :, :]) ** 2).sum(-1)
    d2[np.diag_indices_from(d2)] = ((z - zp) ** 2).sum(-1)
    logits = -d2 / temperature
    logits -= logits.max(axis=1, keepdims=True)
    e = np.exp(logits)
    return e / e.sum(axis=1, keepdims=True)


def lemma2_x(
    w: np.ndarray,
    x: np.ndarray,
    x_pos: np.ndarray,
    negatives: str = "same",
    temperature: float = 2.0,
) -> np.ndarray:
    """The matrix ``X`` with ``−∂L/∂W = WX`` for the batch-mean loss (Lemma 2; module docstring).

    ``negatives="same"``: ``(2/(τN))[Σ_i Σ_{j≠i} α_ji (x_i − x_j)(x_i − x_j)ᵀ − Σ_i (1 − α_ii)
    (x'_i − x_i)(x'_i − x_i)ᵀ]``; ``"cross"``: the library's form with ``x_i − x'_j``.
    """
    if negatives not in NEGATIVES:
        raise ValueError(f"negatives must be one of {NEGATIVES}, got {negatives!r}")
    n = x.shape[0]
    a = softmax_weights(w, x, x_pos, negatives, temperature)
    off = a.copy()
    off[np.diag_indices(n)] = 0.0
    if negatives == "same":
        # Σ_{i≠j} α_ij (x_i − x_j)(x_i − x_j)ᵀ = Σ_{unordered pairs} (α_ij + α_ji)(·)(·)ᵀ
        sym = off + off.T
        neg = x.T @ (sym.sum(axis=1)[:, None] * x) - x.T @ sym @ x
    else:
        # Σ_i Σ_{j≠i} β_ij (x_i − x'_j)(x_i − x'_j)ᵀ
        row, col = off.sum(axis=1), off.sum(axis=0)
        cross = x.T @ off @ x_pos
        neg = x.T @ (row[:, None] * x) + x_pos.T @ (col[:, None] * x_pos) - cross - cross.T
    diff = x_pos - x
    pos = diff.T @ ((1 - np.diag(a))[:, None] * diff)
    return (2 / (temperature * n)) * (neg - pos)


def max_principal_angle(a: np.ndarray, b: np.ndarray) -> float:
    """Largest principal angle (radians) between the column spans of ``a`` and ``b``; ``π/2`` if
    their dimensions differ or either is empty."""
    if a.shape[1] != b.shape[1] or a.shape[1] == 0:
        return float(np.pi / 2)
    return float(np.max(scipy.linalg.subspace_angles(a, b)))
