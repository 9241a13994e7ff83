"""Setting A13: VICReg's population optimum on an augmentation graph is Laplacian eigenmaps.

Balestriero & LeCun, "Contrastive and Non-Contrastive Self-Supervised Learning Recover Global
and Local Spectral Embedding Methods", NeurIPS 2022 (arXiv 2205.11508), identify VICReg with
Laplacian eigenmaps of the graph of positive pairs (a *local* spectral method) and SimCLR-type
losses with *global* ones (their abstract; their theorem statements were not read). What is
checked here is derived here [R] (docs/settings.md §13):

On a finite augmentation graph (:mod:`theory.graphs`: edge weights ``w``, degrees ``d``,
``D = diag(d)``, ``L = D − w``, ``Ā = D^{-1/2} w D^{-1/2}``) an embedding is a matrix
``F ∈ ℝ^{n×k}`` (row ``x`` is ``f(x)``: the unrestricted / linear-in-one-hot regime). Under the
population pair law the invariance term is ``E‖f(x) − f(x⁺)‖² = 2 tr(FᵀLF)`` and the covariance
is ``Cov f(x) = F̃ᵀDF̃`` with ``F̃ = F − 1dᵀF`` (``x`` has law ``d``). With ``G = D^{1/2}F̃``
(so ``Gᵀ√d = 0``) the invariance is ``2 tr(Gᵀ(I − Ā)G)`` and the covariance ``GᵀG``. For any
fixed covariance ``C`` of rank ``k``, ``tr(Gᵀ(I − Ā)G)`` over ``GᵀG = C, G ⊥ √d`` is smallest
when ``span G`` is the span of the eigenvectors ``v₂ … v_{k+1}`` of ``Ā`` (Ky Fan / von
Neumann), and VICReg's variance and covariance terms depend on ``G`` only through ``C``. Hence
every VICReg optimum of rank ``k`` has

    ``span F̃ = span D^{-1/2}[v₂ … v_{k+1}]``,

the bottom non-trivial solutions of ``L y = λ D y`` — Belkin–Niyogi Laplacian eigenmaps with
the degree-normalised constraint (equivalently the random-walk Laplacian ``I − D^{-1}w``), not
the bottom eigenvectors of the unnormalised ``L`` (the two differ when degrees differ). The
spectral contrastive loss (HaoChen et al. 2021), a global low-rank fit of the kernel ``Ā``, is
minimised by ``D^{-1/2}[v₁ … v_k]`` (:meth:`theory.graphs.AugmentationGraph.optimal_features`);
as ``D^{-1/2}v₁ ∝ 1``, its optimum with ``k + 1`` features spans VICReg's ``k`` plus constants.

Exact population weights with the library's batch loss: with uniform ``p`` and every natural
point ``x̄`` having ``V`` equally likely augmentations (repeats allowed), the ``n̄V²`` ordered
pairs ``(x̄; i, j)`` are an exhaustive list whose empirical law is exactly ``w``, so
``gessl.losses.vicreg`` on that list is the population loss (its ``N/(N−1)`` variance factor
is a constant rescaling of ``C``, which leaves the argument unchanged). With VICReg's
weights (λ, μ) = (25, 25) and the variance hinge active, a column along ``D^{-1/2}v_j`` of
standard deviation ``s`` costs ``(50λ_j s² − 50 s)/k`` plus constants, so ``s = 1/(2λ_j)``; we
set ``γ = 1/λ₂`` so that every optimal ``s ≤ γ/2`` stays inside the hinge, where the loss is
smooth and a Hessian certificate is meaningful.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.linalg
import torch
from scipy.optimize import minimize
from torch.autograd.functional import hessian

from gessl.losses import vicreg
from theory.graphs import AugmentationGraph

__all__ = [
    "VicregOptimum",
    "centred",
    "laplacian_eigenmaps",
    "laplacian_eigenmaps_top",
    "largest_angle",
    "minimise_vicreg",
    "pair_list",
    "unnormalised_laplacian_bottom",
    "views_graph",
]


def views_graph(
    rng: np.random.Generator,
    sizes: tuple[int, ...] = (6, 8, 12, 14),
    views: int = 4,
    cross: float = 0.1,
    min_gap: float = 0.1,
    max_tries: int = 200,
) -> AugmentationGraph:
    """A clustered augmentation graph with ``V = views`` equally likely augmentations per point.

    Natural and augmented points coincide (``n = Σ sizes``, clusters of the given sizes, uniform
    ``p``). Point ``u`` keeps itself as one view (so every point has positive degree) and draws
    ``V − 1`` more with replacement, each from its own cluster with probability ``1 − cross``
    and from all points otherwise, in proportion to log-normal popularities, so degrees vary by
    an order of magnitude. Redrawn until connected (``λ₂ > 0.01``) with an eigengap
    ``λ_{c+1} − λ_c ≥ min_gap`` after the ``c − 1`` cluster directions (``c = len(sizes)``).

    Raises:
        ValueError: on bad arguments, or if no draw in ``max_tries`` meets the conditions.
    """
    if len(sizes) < 2 or min(sizes) < 2 or views < 2 or not 0 <= cross <= 1:
        raise ValueError("need ≥ 2 clusters of ≥ 2 points, views ≥ 2 and 0 ≤ cross ≤ 1")
    c, n = len(sizes), sum(sizes)
    y = np.repeat(np.arange(c), sizes)
    for _ in range(max_tries):
        pop = np.exp(rng.standard_normal(n))
        P = np.zeros((n, n))
        for u in range(n):
            P[u, u] += 1 / views
            for _ in range(views - 1):
                pool = np.arange(n) if rng.random() < cross else np.flatnonzero(y == y[u])
                P[u, rng.choice(pool, p=pop[pool] / pop[pool].sum())] += 1 / views
        g = AugmentationGraph(np.full(n, 1 / n), P, y, y.copy(), "views")
        lam = g.laplacian_eigenvalues
        if lam[1] > 0.01 and lam[c] - lam[c - 1] >= min_gap:
            return g
    raise ValueError(f"no connected graph with eigengap ≥ {min_gap} in {max_tries} draws")


def pair_list(graph: AugmentationGraph, views: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``n̄V²`` ordered pairs ``(i, j)`` of augmentations of each natural point.

    Their empirical law equals ``graph.weights`` exactly.

    Raises:
        ValueError: if ``p`` is not uniform or a row of ``P`` is not a multiple of ``1/V``.
    """
    if not np.allclose(graph.p, graph.p[0], rtol=0, atol=1e-15):
        raise ValueError("pair_list needs uniform natural-point probabilities p")
    counts = graph.P * views
    if not np.allclose(counts, np.round(counts), rtol=0, atol=1e-9):
        raise ValueError(f"rows of P are not multiples of 1/{views}")
    counts = np.round(counts).astype(int)
    a, b = [], []
    for row in counts:
        slots = np.repeat(np.arange(len(row)), row)
        a.append(np.repeat(slots, views))
        b.append(np.tile(slots, views))
    return np.concatenate(a), np.concatenate(b)


def _eig_nat(graph: AugmentationGraph) -> tuple[np.ndarray, np.ndarray]:
    """Eigenvalues of ``I − Ā`` ascending and the matching ``D^{-1/2}``-mapped eigenvectors."""
    gam, vecs = np.linalg.eigh(graph.normalized_adjacency)  # γ ascending = λ descending
    return 1 - gam[::-1], vecs[:, ::-1] / np.sqrt(graph.degrees)[:, None]


def laplacian_eigenmaps(graph: AugmentationGraph, k: int) -> tuple[np.ndarray, np.ndarray]:
    """``([n, k] D^{-1/2}[v₂ … v_{k+1}], λ₂ … λ_{k+1})``: the bottom non-trivial solutions of
    ``L y = λ D y`` (Laplacian eigenmaps)."""
    lam, vecs = _eig_nat(graph)
    return vecs[:, 1 : k + 1], lam[1 : k + 1]


def laplacian_eigenmaps_top(graph: AugmentationGraph, k: int) -> np.ndarray:
    """The other end of the same spectrum: the ``k`` solutions of ``L y = λ D y`` with the
    largest λ (a control that must not match)."""
    return _eig_nat(graph)[1][:, -k:]


def unnormalised_laplacian_bottom(graph: AugmentationGraph, k: int) -> np.ndarray:
    """Eigenvectors 2 … k+1 of the unnormalised ``L = D − w`` (a control that must not match
    when degrees differ)."""
    lap = np.diag(graph.degrees) - graph.weights
    return np.linalg.eigh(lap)[1][:, 1 : k + 1]


def centred(f: np.ndarray, d: np.ndarray) -> np.ndarray:
    """``F − 1dᵀF``: columns with zero mean under the degree law ``d``."""
    return f - d @ f


def largest_angle(a: np.ndarray, b: np.ndarray) -> float:
    """Largest principal angle (radians) between the column spans of ``a`` and ``b``."""
    return float(np.max(scipy.linalg.subspace_angles(a, b)))


@dataclass
class VicregOptimum:
    """A numerical minimiser of the population VICReg loss and its convergence certificate.

    Attributes:
        f: ``[n, k]`` the minimiser.
        loss: its loss; ``grad_norm``: max-abs gradient entry there.
        newton_angle: largest principal angle between ``span F̃`` and the span after one Newton
            step (Hessian pseudo-inverse on the non-flat directions): the estimated distance of
            ``span F̃`` from the exact optimum's span (quadratic convergence makes it sharp).
        n_flat: Hessian eigenvalues ≤ 1e-9·max (VICReg is invariant to adding a constant to
            each column, so ``k`` are expected); ``n_negative``: eigenvalues < −1e-9·max
            (none at a local minimum); ``min_curvature``: smallest non-flat eigenvalue.
        iterations: L-BFGS iterations.
    """

    f: np.ndarray
    loss: float
    grad_norm: float
    newton_angle: float
    n_flat: int
    n_negative: int
    min_curvature: float
    iterations: int


def minimise_vicreg(
    graph: AugmentationGraph,
    pairs: tuple[np.ndarray, np.ndarray],
    k: int,
    gamma: float,
    f0: np.ndarray,
) -> VicregOptimum:
    """Minimise ``gessl.losses.vicreg(F[a], F[b], gamma=γ)`` (paper weights 25/25/1) over
    ``F ∈ ℝ^{n×k}`` from ``f0`` by L-BFGS (exact autograd gradients, float64), then certify the
    point with the exact Hessian (see :class:`VicregOptimum`)."""
    n = graph.P.shape[1]
    eye = torch.eye(n, dtype=torch.float64)
    sel_a, sel_b = (eye[torch.from_numpy(x)] for x in pairs)  # one-hot rows: F[a] = sel_a @ F

    def loss_of(v: torch.Tensor) -> torch.Tensor:
        f = v.reshape(n, k)
        return vicreg(sel_a @ f, sel_b @ f, gamma=gamma).loss

    def value_and_grad(v: np.ndarray) -> tuple[float, np.ndarray]:
        t = torch.tensor(v, requires_grad=True)
        val = loss_of(t)
        (grad,) = torch.autograd.grad(val, t)
        return float(val.detach()), grad.numpy()

    res = minimize(
        value_and_grad,
        f0.ravel(),
        jac=True,
        method="L-BFGS-B",
        options={"maxiter": 5000, "maxcor": 30, "gtol": 1e-12, "ftol": 1e-16},
    )
    val, grad = value_and_grad(res.x)
    hess = hessian(loss_of, torch.from_numpy(res.x)).numpy()
    w, q = np.linalg.eigh((hess + hess.T) / 2)
    scale = float(np.max(np.abs(w)))
    keep = w > 1e-9 * scale
    step = q[:, keep] @ ((q[:, keep].T @ grad) / w[keep])
    d = graph.degrees
    f = res.x.reshape(n, k)
    return VicregOptimum(
        f=f,
        loss=val,
        grad_norm=float(np.max(np.abs(grad))),
        newton_angle=largest_angle(centred(f, d), centred(f - step.reshape(n, k), d)),
        n_flat=int(np.sum(np.abs(w) <= 1e-9 * scale)),
        n_negative=int(np.sum(w < -1e-9 * scale)),
        min_curvature=float(w[keep].min()),
        iterations=int(res.nit),
    )
