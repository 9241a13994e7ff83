"""Power of ``nwj_variance`` (theory/claims/mi_bounds.py): the variance formula is judged against
quadrature at I up to 5, so a wrong exponent e^{2I(1+ρ²)} is violated on the default profile;
the growth slope comes from the quadrature, not from the formula under test; the quadrature
agrees with SciPy's adaptive integration. (The declared fast alternatives of every claim are run
on tiny by tests/theory/test_power.py.)"""

from __future__ import annotations

import math

import pytest
from scipy import integrate

from theory.claims import get_claim
from theory.claims import mi_bounds as mi_claim
from theory.mi_bounds import GaussianViews


def test_nwj_variance_rejects_the_exponent_1_plus_rho2_on_quick():
    claim = get_claim("nwj_variance")
    true = claim.check("quick", 0)
    assert true.verdict == "holds", true.reason
    wrong = claim.check("quick", 0, alternative="exponent_1_plus_rho2")
    assert wrong.verdict == "violated", wrong.reason
    # rejected by the quadrature at every I, the large-I end (14× at I = 5) included
    for info in (0.25, 2, 5):
        assert f"I={info:g}: formula = quadrature variance" in wrong.reason
    # the growth slope and the "exact" values are measured, not read from the formula
    assert wrong.details["log_slope_2_to_5"] == pytest.approx(true.details["log_slope_2_to_5"])
    assert 1.9 < true.details["log_slope_2_to_5"] < 2.1
    assert wrong.details["exact"] == pytest.approx(true.details["exact"])
    assert wrong.details["formula"][-1] > 10 * wrong.details["exact"][-1]


def test_nwj_variance_judges_the_monte_carlo_shortfall():
    result = get_claim("nwj_variance").check("quick", 0)
    assert result.details["fourth_moment_infinite_at_I"] == [2.0, 3.0, 4.0, 5.0]
    for info, row in result.details["shortfall"].items():
        assert f"I={info}: Monte Carlo falls short" in result.reason
        assert row["below"] >= 60 and row["median_ratio"] < 1
    assert result.details["resolution"]["relative"] == mi_claim.QUAD_RTOL


def test_the_sign_test_calls_a_median_above_violated():
    assert mi_claim._sign_test("x", 70, 100).verdict == "holds"
    assert mi_claim._sign_test("x", 50, 100).verdict == "inconclusive"
    assert mi_claim._sign_test("x", 30, 100).verdict == "violated"


def test_quadrature_agrees_with_adaptive_integration_at_i_5():
    """The Gauss–Legendre moments against scipy.integrate.dblquad of the same densities."""
    rho = GaussianViews.with_information(32, 5.0).rho
    a = 1 - rho**2

    def log_joint(v, u):
        return (
            -math.log(2 * math.pi) - 0.5 * math.log(a) - (u * u - 2 * rho * u * v + v * v) / (2 * a)
        )

    def log_product(v, u):
        return -math.log(2 * math.pi) - 0.5 * (u * u + v * v)

    def integral(f):
        return integrate.dblquad(f, -16, 16, -16, 16, epsabs=0, epsrel=1e-11)[0]

    m1 = integral(lambda v, u: math.exp(log_joint(v, u)) * (log_joint(v, u) - log_product(v, u)))
    m2 = integral(
        lambda v, u: math.exp(log_joint(v, u)) * (log_joint(v, u) - log_product(v, u)) ** 2
    )
    r2 = integral(lambda v, u: math.exp(2 * log_joint(v, u) - log_product(v, u)))
    mean, var, r_squared = mi_claim.quadrature_nwj_moments(rho)
    assert mean == pytest.approx(m1, rel=1e-10)
    assert var == pytest.approx(m2 - m1**2, rel=1e-10)
    assert r_squared == pytest.approx(r2, rel=1e-12)
    # and the d = 32 variance is the formula's, e^{2I(1+ρ²)} is not
    views = GaussianViews.with_information(32, 5.0)
    var32, info = mi_claim.quadrature_nwj_variance(views)
    assert info == pytest.approx(5.0, rel=1e-10)
    assert var32 == pytest.approx(32 * rho**2 + math.expm1(10.0), rel=1e-9)
    assert mi_claim._variance_exponent_1_plus_rho2(views) > 10 * var32
