"""Setting A1: finite augmentation graphs and the spectral contrastive loss in closed form.

HaoChen, Wei, Gaidon & Ma, "Provable Guarantees for Self-Supervised Deep Learning with Spectral
Contrastive Loss", NeurIPS 2021 (arXiv 2106.04156). Natural points ``x̄`` with probabilities
``p``, an augmentation kernel ``A(x | x̄)`` (rows of ``P``), edge weights ``w = Pᵀ diag(p) P``
(§3.1), degrees ``w_x``, normalised adjacency ``Ā = D^{-1/2} w D^{-1/2}`` with eigenvalues
``γ_1 = 1 ≥ γ_2 ≥ …``. Closed forms (docs/settings.md §3):

* Lemma 3.2: with rows ``u_x = √w_x f(x)``, ``‖Ā − FFᵀ‖²_F = L(f) + ‖Ā‖²_F``;
* Eckart–Young: ``f*(x) = w_x^{-1/2} [V_k diag(√γ_1..√γ_k)]_x`` and ``min L = −Σ_{i≤k} γ_i²``;
* the eigenvalue form of the probe-error bound, ``E(f*) ≤ 4δ/λ_{k+1} + 8δ`` (Zhang et al. 2025,
  arXiv 2501.01317, restating HaoChen's analysis; tag [S2]).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

__all__ = ["AugmentationGraph", "block_graph", "clump_grid_graph", "random_graph"]


@dataclass
class AugmentationGraph:
    """A finite augmentation graph.

    Attributes:
        p: ``[n̄]`` natural-point probabilities (sum 1).
        P: ``[n̄, n]`` augmentation kernel, rows sum to 1.
        y_nat: ``[n̄]`` class of each natural point.
        y_aug: ``[n]`` class of each augmented point (Assumption 3.5's ``g``; defines δ).
    """

    p: np.ndarray
    P: np.ndarray
    y_nat: np.ndarray
    y_aug: np.ndarray
    name: str = "graph"

    def __post_init__(self) -> None:
        if not np.isclose(self.p.sum(), 1.0) or np.any(self.p < 0):
            raise ValueError("p must be a probability vector")
        if not np.allclose(self.P.sum(axis=1), 1.0) or np.any(self.P < 0):
            raise ValueError("rows of P must be probability vectors")

    # ------------------------------------------------------------------ spectrum
    @cached_property
    def weights(self) -> np.ndarray:
        """Edge weights ``w_{xx'} = Σ_x̄ p(x̄) A(x|x̄) A(x'|x̄)`` (sum to 1, PSD)."""
        return self.P.T @ (self.p[:, None] * self.P)

    @cached_property
    def degrees(self) -> np.ndarray:
        return self.weights.sum(axis=1)

    @cached_property
    def normalized_adjacency(self) -> np.ndarray:
        s = 1.0 / np.sqrt(self.degrees)
        return s[:, None] * self.weights * s[None, :]

    @cached_property
    def _eig(self) -> tuple[np.ndarray, np.ndarray]:
        vals, vecs = np.linalg.eigh(self.normalized_adjacency)  # ascending
        return vals[::-1].copy(), vecs[:, ::-1].copy()

    @property
    def gammas(self) -> np.ndarray:
        """Eigenvalues of Ā, descending (γ_1 = 1)."""
        return self._eig[0]

    @property
    def laplacian_eigenvalues(self) -> np.ndarray:
        """``λ_i = 1 − γ_i``, ascending (λ_1 = 0)."""
        return 1.0 - self.gammas

    def optimal_features(self, k: int) -> np.ndarray:
        """``[n, k]`` population-optimal features ``f*`` of the spectral loss."""
        vals, vecs = self._eig
        return vecs[:, :k] * np.sqrt(np.clip(vals[:k], 0, None)) / np.sqrt(self.degrees)[:, None]

    # ------------------------------------------------------------------ losses
    def population_loss(self, f: np.ndarray) -> float:
        """``L(f) = −2 E_{x,x⁺}[f(x)ᵀf(x⁺)] + E_{x,x'}[(f(x)ᵀf(x'))²]`` (eq. 6)."""
        gram = f @ f.T
        w = self.degrees
        return float(-2 * np.sum(self.weights * gram) + w @ (gram**2) @ w)

    def mf_loss(self, f: np.ndarray) -> float:
        """``‖Ā − FFᵀ‖²_F`` with rows ``u_x = √w_x f(x)`` (Lemma 3.2)."""
        u = np.sqrt(self.degrees)[:, None] * f
        return float(np.sum((self.normalized_adjacency - u @ u.T) ** 2))

    # ------------------------------------------------------------------ labels
    @cached_property
    def delta(self) -> float:
        """Label-recovery error ``δ = Σ p(x̄) A(x|x̄) 1[y_aug(x) ≠ y_nat(x̄)]``."""
        wrong = self.y_aug[None, :] != self.y_nat[:, None]
        return float(np.sum(self.p[:, None] * self.P * wrong))

    def eigenvalue_bound(self, k: int) -> float:
        """``4δ/λ_{k+1} + 8δ``; ``+inf`` when ``λ_{k+1} < 1e-10`` (vacuous: disconnected)."""
        lam = self.laplacian_eigenvalues[k] if k < len(self.gammas) else 1.0
        return float("inf") if lam < 1e-10 else 4 * self.delta / lam + 8 * self.delta

    def probe_error(self, f: np.ndarray) -> float:
        """Error of the least-squares linear probe on ``f`` with majority vote over augmentations.

        The head is fitted by least squares of one-hot ``y_nat(x̄)`` on ``[f(x), 1]`` under the
        joint law ``p(x̄) A(x|x̄)``; ``ḡ(x̄) = argmax_i Pr_{x~A(·|x̄)}[argmax head(f(x)) = i]``.
        Any fixed head upper-bounds the best-probe error ``E(f)`` of the theorems.
        """
        classes = np.unique(self.y_nat)
        onehot = (self.y_nat[:, None] == classes[None, :]).astype(float)
        joint = self.p[:, None] * self.P  # [n̄, n]
        feats = np.hstack([f, np.ones((f.shape[0], 1))])
        gram = feats.T @ (joint.sum(axis=0)[:, None] * feats)
        rhs = feats.T @ (joint.T @ onehot)
        head = np.linalg.lstsq(gram, rhs, rcond=None)[0]
        pred = np.argmax(feats @ head, axis=1)  # class index per augmented point
        votes = self.P @ (pred[:, None] == np.arange(len(classes))[None, :]).astype(float)
        vote = classes[np.argmax(votes, axis=1)]
        return float(np.sum(self.p * (vote != self.y_nat)))

    # ------------------------------------------------------------------ sampling
    def sample_pairs(self, rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
        """Indices of ``size`` positive pairs: ``x̄ ~ p``, then ``x, x⁺ ~ A(·|x̄)`` independently."""
        nat = rng.choice(len(self.p), size=size, p=self.p)
        cum = np.cumsum(self.P[nat], axis=1)
        cum[:, -1] = 1.0
        a = (rng.random((size, 1)) > cum).sum(axis=1)
        b = (rng.random((size, 1)) > cum).sum(axis=1)
        return a, b


def random_graph(rng: np.random.Generator, n_nat: int = 30, n_aug: int = 60) -> AugmentationGraph:
    """A random augmentation graph (Dirichlet ``p`` and kernel rows), two random classes."""
    p = rng.dirichlet(np.ones(n_nat))
    P = rng.dirichlet(np.full(n_aug, 0.3), size=n_nat)
    return AugmentationGraph(p, P, rng.integers(0, 2, n_nat), rng.integers(0, 2, n_aug), "random")


def block_graph(
    n_per_class: int = 20, classes: int = 3, stay: float = 0.5, cross: float = 0.01
) -> AugmentationGraph:
    """Block (SBM-like) augmentation graph after Zhang et al. (arXiv 2501.01317) [S2].

    Natural and augmented points coincide; a point stays itself w.p. ``stay``, moves to another
    point of another class w.p. ``cross`` in total, else to a uniformly chosen point of its own
    class. Uniform ``p``. ``δ = cross``.
    """
    n = n_per_class * classes
    y = np.repeat(np.arange(classes), n_per_class)
    same = y[:, None] == y[None, :]
    P = np.where(same, (1 - stay - cross) / (n_per_class - 1), cross / (n - n_per_class))
    np.fill_diagonal(P, stay)
    return AugmentationGraph(np.full(n, 1 / n), P, y, y.copy(), "block")


def clump_grid_graph(h: float = 0.06, spacing: float = 0.01) -> AugmentationGraph:
    """The 1-D two-class, four-clump grid of docs/settings.md §3 [R].

    Natural points on a grid of [0, 2] restricted to class 0 = [0, 0.4] ∪ [0.65, 1.0] and
    class 1 = [1.0, 1.35] ∪ [1.6, 2.0] (gaps of 0.25 inside each class); augmentation
    ``A(x|x̄) ∝ exp(−(x − x̄)²/(2h²))`` over the same grid; uniform ``p``.
    """
    grid = np.round(np.arange(0.0, 2.0 + spacing / 2, spacing), 10)
    keep = (
        (grid <= 0.4)
        | ((grid >= 0.65) & (grid <= 1.0))
        | ((grid > 1.0) & (grid <= 1.35))
        | (grid >= 1.6)
    )
    x = grid[keep]
    y = (x > 1.0).astype(int)
    k = np.exp(-((x[None, :] - x[:, None]) ** 2) / (2 * h**2))
    P = k / k.sum(axis=1, keepdims=True)
    return AugmentationGraph(np.full(len(x), 1 / len(x)), P, y, y.copy(), "clump_grid")
