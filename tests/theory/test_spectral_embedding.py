"""Setting A13 (theory/spectral_embedding.py) and the claim spectral_embedding_optima."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gessl.losses import vicreg
from theory.claims.spectral_embedding import VIEWS, K, run_spectral_embedding
from theory.graphs import AugmentationGraph
from theory.spectral_embedding import (
    centred,
    laplacian_eigenmaps,
    laplacian_eigenmaps_top,
    largest_angle,
    minimise_vicreg,
    pair_list,
    unnormalised_laplacian_bottom,
    views_graph,
)


@pytest.fixture(scope="module")
def graph() -> AugmentationGraph:
    return views_graph(np.random.default_rng(3))


def _ring_graph(n: int = 12, views: int = 3) -> AugmentationGraph:
    """Each point's views: itself and its two ring neighbours — every degree equal."""
    P = np.zeros((n, n))
    for u in range(n):
        for v in (u - 1, u, u + 1):
            P[u, v % n] += 1 / views
    y = np.zeros(n, dtype=int)
    return AugmentationGraph(np.full(n, 1 / n), P, y, y.copy(), "ring")


def test_views_graph_is_connected_with_gap_and_unequal_degrees(graph):
    lam = graph.laplacian_eigenvalues
    c = 4
    assert lam[1] > 0.01 and lam[c] - lam[c - 1] >= 0.1
    assert graph.degrees.max() / graph.degrees.min() > 3
    assert np.allclose(graph.P * VIEWS, np.round(graph.P * VIEWS))


def test_views_graph_errors():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="clusters"):
        views_graph(rng, sizes=(5,))
    with pytest.raises(ValueError, match="cross"):
        views_graph(rng, cross=1.5)
    with pytest.raises(ValueError, match="eigengap"):
        views_graph(rng, min_gap=5.0, max_tries=2)


def test_pair_list_law_is_exactly_the_edge_weights(graph):
    a, b = pair_list(graph, VIEWS)
    n = graph.P.shape[1]
    assert len(a) == len(graph.p) * VIEWS**2
    law = np.zeros((n, n))
    np.add.at(law, (a, b), 1 / len(a))
    assert np.abs(law - graph.weights).max() < 1e-15


def test_pair_list_errors(graph):
    with pytest.raises(ValueError, match="multiples"):
        pair_list(graph, VIEWS + 1)
    p = np.full(len(graph.p), 1 / len(graph.p))
    p[0], p[1] = p[0] * 1.5, p[1] * 0.5
    skewed = AugmentationGraph(p, graph.P, graph.y_nat, graph.y_aug)
    with pytest.raises(ValueError, match="uniform"):
        pair_list(skewed, VIEWS)


def test_laplacian_eigenmaps_solve_the_generalised_problem(graph):
    y, lam = laplacian_eigenmaps(graph, K)
    d = graph.degrees
    lap = np.diag(d) - graph.weights
    assert np.abs(lap @ y - (d[:, None] * y) * lam).max() < 1e-12  # L y = λ D y
    assert np.allclose(y.T @ (d[:, None] * y), np.eye(K), atol=1e-12)  # D-orthonormal
    assert np.abs(d @ y).max() < 1e-12  # orthogonal to the constant solution
    assert np.all(np.diff(lam) >= 0) and lam[0] > 0
    top = laplacian_eigenmaps_top(graph, K)
    assert np.allclose(top.T @ (d[:, None] * y), 0, atol=1e-12)


def test_normalised_and_unnormalised_bottoms_differ_only_with_unequal_degrees(graph):
    assert (
        largest_angle(laplacian_eigenmaps(graph, K)[0], unnormalised_laplacian_bottom(graph, K))
        > 0.05
    )
    ring = _ring_graph()
    assert np.ptp(ring.degrees) < 1e-15
    # equal degrees: the same eigenproblem (k = 2 takes the whole first eigenvalue pair of the ring)
    assert (
        largest_angle(laplacian_eigenmaps(ring, 2)[0], unnormalised_laplacian_bottom(ring, 2))
        < 1e-8
    )


def test_library_vicreg_on_the_pair_list_is_the_population_loss(graph):
    """invariance = (2/k) tr(FᵀLF) and Cov = N/(N−1) · F̃ᵀDF̃ (hand values of the closed form)."""
    a, b = pair_list(graph, VIEWS)
    n, big_n = graph.P.shape[1], len(a)
    f = np.random.default_rng(4).standard_normal((n, K))
    ft = torch.from_numpy(f)
    out = vicreg(ft[a], ft[b], sim_weight=1.0, var_weight=0.0, cov_weight=1.0)
    d = graph.degrees
    lap = np.diag(d) - graph.weights
    assert float(out.terms["invariance"]) == pytest.approx(
        2 * np.trace(f.T @ lap @ f) / K, rel=1e-12
    )
    fc = centred(f, d)
    cov = big_n / (big_n - 1) * fc.T @ (d[:, None] * fc)
    off = (np.sum(cov**2) - np.sum(np.diag(cov) ** 2)) / K
    assert float(out.terms["covariance"]) == pytest.approx(2 * off, rel=1e-10)


def test_minimiser_is_certified_and_spans_laplacian_eigenmaps(graph):
    pairs = pair_list(graph, VIEWS)
    gamma = 1 / graph.laplacian_eigenvalues[1]
    opt = minimise_vicreg(
        graph, pairs, K, gamma, np.random.default_rng(5).standard_normal((len(graph.p), K))
    )
    assert opt.n_flat == K and opt.n_negative == 0 and opt.min_curvature > 0
    assert opt.newton_angle < 1e-5 and opt.grad_norm < 1e-3
    fc = centred(opt.f, graph.degrees)
    assert largest_angle(fc, laplacian_eigenmaps(graph, K)[0]) <= 10 * opt.newton_angle + 1e-9
    assert largest_angle(fc, unnormalised_laplacian_bottom(graph, K)) > 0.05


def test_claim_holds_on_tiny():
    r = run_spectral_embedding("tiny", 0)
    assert r.verdict == "holds", r.reason
    assert max(r.details["theta"]) < 1e-5


@pytest.mark.parametrize("wrong", [unnormalised_laplacian_bottom, laplacian_eigenmaps_top])
def test_claim_is_violated_against_a_wrong_subspace(wrong):
    """The negative test: the same optimisation judged against the unnormalised-Laplacian
    bottom, or the wrong end of the spectrum, must say violated."""
    r = run_spectral_embedding("tiny", 0, target=wrong)
    assert r.verdict == "violated"
    assert "θ(VICReg optimum, Laplacian eigenmaps)" in r.reason
