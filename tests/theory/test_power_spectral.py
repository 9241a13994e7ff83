"""Power of the spectral, reconstruction and multi-view claims: the checks fixed so that a close
wrong statement is rejected, and a true one is not called violated by an optimiser's accident.

The fast alternatives are run on tiny by tests/theory/test_power.py; here: why they are rejected
(the sharp regime of the reconstruction constant), the raw-X embedding on the default profile,
and the VICReg check with starts stuck at rank-deficient stationary points.
"""

from __future__ import annotations

import numpy as np
import pytest

import theory.claims.multiview as mv
import theory.claims.reconstruction as rc
import theory.claims.spectral_embedding as se
from theory.claims import get_claim
from theory.multiview import random_instance as multiview_instance
from theory.reconstruction import batched_probe_excess, nested_probe_excess
from theory.reconstruction import random_instance as reconstruction_instance

# ----------------------------------------------------------------- reconstruction_ssl_rate


def test_batched_probe_excess_equals_the_nested_fits():
    model = reconstruction_instance(np.random.default_rng(0), k=3, d1=10, d2=5)
    x1, t = model.sample_labelled(np.random.default_rng(1), 3 * 30)
    x1, t = x1.reshape(3, 30, -1), t.reshape(3, 30)
    for m in (model.psi_features(), np.eye(model.d1)):
        got = batched_probe_excess(model, m, x1, t, [14, 30])
        for r in range(3):
            assert got[r] == pytest.approx(nested_probe_excess(model, m, x1[r], t[r], [14, 30]))
    with pytest.raises(ValueError, match="increase"):
        batched_probe_excess(model, np.eye(model.d1), x1, t, [30, 14])


def test_reconstruction_constant_is_resolved_in_the_sharp_regime():
    """p/(n − p) is 1/7 below p/(n − p − 1) at n = p + 7: the sharp-regime checks resolve it
    (on tiny already), the pooled large-n calibration alone does not."""
    c = get_claim("reconstruction_ssl_rate")
    true = c.check("tiny", 0)
    assert true.verdict == "holds", true.reason
    shift = 1 / (rc.SMALL_GAP + 1)
    assert true.details["resolution"]["relative"] < shift
    wrong = c.check("tiny", 0, alternative="no_minus_one")
    assert wrong.verdict == "violated"
    assert f"n = p + {1 + rc.SMALL_GAP}" in wrong.reason
    assert "pooled over n" not in wrong.reason  # the large-n grid cannot tell the two apart


# ----------------------------------------------------------------- multiview_redundancy


def test_critic_coupling_is_the_precision_cross_block():
    """log ρ(x, z) has the cross term −xᵀ(Σ_vv⁻¹)_{xz}z: the coupling read off the densities."""
    m = multiview_instance(np.random.default_rng(0), 0.4)
    prec = np.linalg.inv(m.sigma_vv)
    assert np.allclose(mv.critic_coupling(m), -prec[: m.dx, m.dx :], atol=1e-9)
    phi = mv.embedding(m)
    assert mv.span_distance(phi.T, mv.critic_coupling(m)) < 1e-9
    assert mv.span_distance(np.eye(m.dx), mv.critic_coupling(m)) == pytest.approx(1.0)


def test_raw_x_as_the_embedding_is_rejected_on_the_default_profile():
    """Raw X passes every excess inequality (its best predictor is μ_X); only the check that φ is
    the InfoNCE optimum's embedding rejects it."""
    c = get_claim("multiview_redundancy")
    assert c.check("quick", 0).verdict == "holds"
    wrong = c.check("quick", 0, alternative="raw_x")
    assert wrong.verdict == "violated"
    assert "InfoNCE optimum's x-embedding" in wrong.reason
    assert "≤ 2ε" not in wrong.reason and "excess(φ) ≤ excess(f)" not in wrong.reason


# ----------------------------------------------------------------- spectral_embedding_optima


def _stuck(total: int, count_stuck: int, zero_columns: slice):
    """``total`` starts of which the first ``count_stuck`` have zero columns: such a column keeps
    zero variance under its own gradient, so the start stops at a rank-deficient stationary
    point."""

    def starts(rng, n, k, count):
        out = [rng.standard_normal((n, k)) for _ in range(total)]
        for f in out[:count_stuck]:
            f[:, zero_columns] = 0.0
        return out

    return starts


def test_starts_stuck_at_rank_deficient_points_do_not_make_the_claim_fail(monkeypatch):
    """k = 4: two of three starts stop at covariance rank 2; the lowest-loss start has rank 4,
    is certified and spans Laplacian eigenmaps — the claim holds."""
    monkeypatch.setattr(se, "initial_points", _stuck(3, 2, slice(2, None)))
    r = se.run_spectral_embedding("tiny", 0, k=4)
    assert r.verdict == "holds", r.reason
    assert r.details["covariance_ranks"] == [[2, 2, 4]]
    assert r.details["starts_rank_deficient"] == 2
    losses = r.details["losses"][0]
    assert losses[2] < min(losses[:2])
    assert max(r.details["theta"]) < 1e-5


def test_a_rank_deficient_lowest_loss_start_is_inconclusive_not_violated(monkeypatch):
    monkeypatch.setattr(se, "initial_points", _stuck(1, 1, slice(2, None)))  # only a stuck start
    r = se.run_spectral_embedding("tiny", 0)
    assert r.verdict == "inconclusive", r.reason
    assert "no rank-k minimum found" in r.reason
