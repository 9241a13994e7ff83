"""theory.claims.base: verdict boundaries, reported reasons, slope fits and records.

Boundaries use dyadic numbers so that ``measured == bound + slack`` holds exactly in floating
point; a change of ``<=`` to ``<``, of ``N_SE`` or of a factor ``2`` moves the verdict or the
reported numbers (``docs/testing.md``).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import linregress

from theory.claims.base import (
    N_SE,
    Check,
    Claim,
    ClaimResult,
    Series,
    combine,
    fit_slope,
    judge_close,
    judge_le,
    judge_slope,
    judge_slope_at_most,
)


def test_n_se_is_four():
    assert N_SE == 4.0


def test_judge_close_boundary_and_reason():
    # tol = 4·0.125 = 0.5 = diff: holds at equality
    assert judge_close("c", 1.0, 1.5, se=0.125) == Check("holds", "c: |1 − 1.5| = 0.5 ≤ 0.5")
    # tol from atol and rtol·|target| (target negative): 0.25 + 0.125·2 = 0.5
    assert judge_close("c", -1.5, -2.0, atol=0.25, rtol=0.125) == Check(
        "holds", "c: |-1.5 − -2| = 0.5 ≤ 0.5"
    )
    assert judge_close("c", -1.5, -2.0, atol=0.25, rtol=0.0625) == Check(
        "violated", "c: |-1.5 − -2| = 0.5 > 0.38"
    )
    assert judge_close("c", 2.0, 1.0, se=0.1) == Check("violated", "c: |2 − 1| = 1 > 0.4")
    for bad in (float("nan"), float("inf")):
        assert judge_close("c", bad, 1.0, atol=1e9) == Check(
            "inconclusive", "c: measured value is not finite"
        )


def test_judge_le_boundary_and_reason():
    # slack = 4·0.0625 + 0.25 = 0.5
    assert judge_le("b", 1.5, 1.0, se=0.0625, atol=0.25) == Check("holds", "b: 1.5 ≤ 1 (+0.5)")
    assert judge_le("b", 1.5 + 2**-20, 1.0, se=0.0625, atol=0.25) == Check(
        "violated", "b: 1.5 > 1 + 0.5"
    )
    assert judge_le("b", 2.0, 1.0, se=0.1, atol=0.1) == Check("violated", "b: 2 > 1 + 0.5")
    assert judge_le("b", 1.0, 1.0) == Check("holds", "b: 1 ≤ 1 (+0)")
    assert judge_le("b", float("-inf"), 1.0) == Check(
        "inconclusive", "b: measured value is not finite"
    )


def test_judge_slope_at_most_boundaries_and_reasons():
    # hi = -1 + 2·0.25 = -0.5 = bound: holds
    assert judge_slope_at_most("s", -1.0, 0.25, -0.5) == Check(
        "holds", "s: slope -1.000, ±2 SE interval [-1.500, -0.500] vs ≤ -0.5"
    )
    # lo = 0 − 0.5 = -0.5 = bound: not wholly above, inconclusive
    assert judge_slope_at_most("s", 0.0, 0.25, -0.5) == Check(
        "inconclusive",
        "s: slope 0.000, ±2 SE interval [-0.500, 0.500] vs ≤ -0.5 (interval straddles the bound)",
    )
    assert judge_slope_at_most("s", 0.5, 0.25, -0.5) == Check(
        "violated", "s: slope 0.500, ±2 SE interval [0.000, 1.000] vs ≤ -0.5"
    )
    for slope, se in ((float("nan"), 0.1), (-1.0, float("inf")), (float("-inf"), 0.1)):
        assert judge_slope_at_most("s", slope, se, -0.5) == Check(
            "inconclusive", "s: slope not estimable"
        )


def test_judge_slope_boundaries_and_reasons():
    # [a, b] = [-1.5, -0.5]; lo = -1.5, hi = -0.5: holds at both edges
    assert judge_slope("s", -1.0, 0.25, -1.0, 0.5) == Check(
        "holds", "s: slope -1.000, ±2 SE interval [-1.500, -0.500] vs -1 ± 0.5"
    )
    # hi = -1.5 = a: touches, inconclusive; hi = -2 < a: violated
    straddle = " (interval straddles the tolerance)"
    assert judge_slope("s", -2.0, 0.25, -1.0, 0.5) == Check(
        "inconclusive", "s: slope -2.000, ±2 SE interval [-2.500, -1.500] vs -1 ± 0.5" + straddle
    )
    assert judge_slope("s", -2.5, 0.25, -1.0, 0.5).verdict == "violated"
    # lo = -0.5 = b: inconclusive; lo = 0 > b: violated
    assert judge_slope("s", 0.0, 0.25, -1.0, 0.5).verdict == "inconclusive"
    assert judge_slope("s", 0.5, 0.25, -1.0, 0.5) == Check(
        "violated", "s: slope 0.500, ±2 SE interval [0.000, 1.000] vs -1 ± 0.5"
    )
    # one edge inside, one outside
    assert judge_slope("s", -1.25, 0.25, -1.0, 0.5).verdict == "inconclusive"
    assert judge_slope("s", -0.75, 0.25, -1.0, 0.5).verdict == "inconclusive"


def _reps() -> tuple[list[float], np.ndarray]:
    x = [1.0, 2.0, 4.0, 8.0, 16.0]
    g = np.random.default_rng(0)
    reps = np.array(
        [[3.0 * v**-0.5 * math.exp(0.1 * g.standard_normal()) for v in x] for _ in range(4)]
    )
    return x, reps


def test_fit_slope_jackknife_matches_a_reference():
    x, reps = _reps()  # R = 4 replicates
    lx = np.log(x)
    slope, se = fit_slope(x, reps)
    assert slope == pytest.approx(linregress(lx, np.log(reps.mean(0))).slope, rel=1e-10)
    r = len(reps)
    jack = [linregress(lx, np.log(np.delete(reps, i, 0).mean(0))).slope for i in range(r)]
    ref_se = math.sqrt((r - 1) / r * sum((j - np.mean(jack)) ** 2 for j in jack))
    assert se == pytest.approx(ref_se, rel=1e-8)
    # R = 3 is still the jackknife
    _, se3 = fit_slope(x, reps[:3])
    jack3 = [linregress(lx, np.log(np.delete(reps[:3], i, 0).mean(0))).slope for i in range(3)]
    assert se3 == pytest.approx(
        math.sqrt(2 / 3 * sum((j - np.mean(jack3)) ** 2 for j in jack3)), rel=1e-8
    )


def test_fit_slope_least_squares_se_for_fewer_than_three_replicates():
    x, reps = _reps()
    lx = np.log(x)
    for rows in (reps[:2], reps[0], reps[:1]):
        slope, se = fit_slope(x, rows)
        ref = linregress(lx, np.log(np.atleast_2d(rows).mean(0)))
        assert slope == pytest.approx(ref.slope, rel=1e-10)
        assert se == pytest.approx(ref.stderr, rel=1e-8)
    # three points: dof = 1
    slope, se = fit_slope(x[:3], reps[:2, :3])
    ref = linregress(lx[:3], np.log(reps[:2, :3].mean(0)))
    assert se == pytest.approx(ref.stderr, rel=1e-8)
    # an exact power law: slope exact, se 0
    s, e = fit_slope([1.0, 2.0, 4.0], np.array([[4.0, 2.0, 1.0]]))
    assert s == pytest.approx(-1.0, abs=1e-12) and e == pytest.approx(0.0, abs=1e-12)


def test_combine_orders_violated_before_inconclusive_and_joins_reasons():
    h1, h2 = Check("holds", "h1"), Check("holds", "h2")
    i1, v1, v2 = Check("inconclusive", "i1"), Check("violated", "v1"), Check("violated", "v2")
    assert combine([h1, i1, v1, h2, v2]) == Check("violated", "v1; v2")
    assert combine([i1, h1, Check("inconclusive", "i2")]) == Check("inconclusive", "i1; i2")
    assert combine([h1, h2]) == Check("holds", "h1; h2")
    assert combine([]) == Check("holds", "")


def test_series_converts_and_checks_lengths():
    s = Series("a", np.array([1, 2]), [np.float32(0.5), 3], se=(1, 2))
    assert s.x == [1.0, 2.0] and s.y == [0.5, 3.0] and s.se == [1.0, 2.0]
    assert all(type(v) is float for v in (*s.x, *s.y, *s.se))
    assert Series("b", [1], [2]).se is None
    for kw in ({"x": [1, 2], "y": [1]}, {"x": [1], "y": [1], "se": [1, 2]}):
        with pytest.raises(ValueError, match=r"^series 'a': x, y and se lengths differ$"):
            Series("a", **kw)


def test_claim_result_validation_messages():
    ok = ClaimResult("not reproduced", "", "", [], claim_id="x", kind="reproduction")
    assert ok.verdict == "not reproduced"
    with pytest.raises(
        ValueError,
        match=r"^kind must be one of \('exact', 'rate', 'reproduction'\), got 'proof'$",
    ):
        ClaimResult("holds", "", "", [], claim_id="x", kind="proof")
    with pytest.raises(
        ValueError,
        match=r"^verdict of a rate claim must be one of \('holds', 'violated', 'inconclusive'\), "
        r"got 'reproduced'$",
    ):
        ClaimResult("reproduced", "", "", [], claim_id="x", kind="rate")


def test_to_dict_is_plain_json():
    r = ClaimResult(
        "holds",
        "why",
        "sum",
        [Series("m", [1], [float("inf")])],
        details={
            1: (np.float32(0.25), np.int64(3), float("nan")),
            "arr": np.array([[1.5, -np.inf]]),
            "s": "t",
            "b": True,
        },
        seed=2,
        claim_id="x",
        kind="exact",
    )
    d = r.to_dict()
    assert d["measured"] == [{"label": "m", "x": [1.0], "y": ["inf"], "se": None}]
    assert d["details"] == {"1": [0.25, 3, "nan"], "arr": [[1.5, "-inf"]], "s": "t", "b": True}
    assert type(d["details"]["1"][1]) is int and type(d["details"]["1"][0]) is float
    assert d["seed"] == 2 and d["budget"] == "quick" and d["seconds"] == 0.0
    assert d["x_label"] == "x" and d["y_label"] == "value"
    assert d["log_x"] is False and d["log_y"] is False and d["bounds"] == []
    assert d["slope"] is None and d["claim_id"] == "x" and d["kind"] == "exact"


def _claim(kind: str = "exact", rid: str = "", rkind: str = "", verdict: str = "holds") -> Claim:
    def run(budget: str, seed: int) -> ClaimResult:
        return ClaimResult(verdict, f"{budget}/{seed}", "", [], claim_id=rid, kind=rkind)

    return Claim("c", "stmt", "src", "[R]", kind, run)


def test_claim_check_records_budget_seed_and_time():
    c = _claim()
    assert c.group is None and c.cost == 1.0 and c.setting == ""
    r = c.check("tiny", 3)
    assert (r.budget, r.seed, r.reason) == ("tiny", 3, "tiny/3")
    assert 0.0 <= r.seconds < 5.0
    r = c.check()
    assert (r.budget, r.seed, r.reason) == ("quick", 0, "quick/0")
    assert c.check("full", 1).budget == "full"
    with pytest.raises(
        ValueError, match=r"^budget must be one of \('tiny', 'quick', 'full'\), got 'huge'$"
    ):
        c.check("huge", 0)


def test_claim_fills_the_id_and_kind_of_its_result():
    r = _claim(kind="rate").check("tiny", 0)
    assert (r.claim_id, r.kind) == ("c", "rate")
    assert r.to_dict()["claim_id"] == "c" and r.to_dict()["kind"] == "rate"
    r = _claim(rid="c", rkind="exact").check("tiny", 0)  # naming itself is allowed
    assert (r.claim_id, r.kind) == ("c", "exact")
    with pytest.raises(
        ValueError,
        match=r"^verdict of a reproduction claim must be one of "
        r"\('reproduced', 'not reproduced', 'mixed', 'no practical difference', 'inconclusive'\), "
        r"got 'holds'$",
    ):
        _claim(kind="reproduction").check("tiny", 0)  # validated once the kind is known
    assert _claim(kind="reproduction", verdict="reproduced").check("tiny", 0).verdict == (
        "reproduced"
    )


def test_claim_refuses_a_result_of_another_claim_or_kind():
    with pytest.raises(RuntimeError, match=r"^claim 'c' \(exact\) returned a result for 'd' \(\)$"):
        _claim(rid="d").check("tiny", 0)
    with pytest.raises(
        RuntimeError, match=r"^claim 'c' \(exact\) returned a result for '' \(rate\)$"
    ):
        _claim(kind="exact", rkind="rate").check("tiny", 0)
    with pytest.raises(
        ValueError, match=r"^claim 'c': kind must be one of \('exact', 'rate', 'reproduction'\)$"
    ):
        _claim(kind="theorem")


def test_fit_slope_computes_in_float64_whatever_the_input_dtype():
    x, reps = _reps()
    s32, e32 = fit_slope(np.asarray(x, np.float32), reps.astype(np.float32))
    r32 = reps.astype(np.float32).astype(np.float64)
    s_ref, e_ref = fit_slope(x, r32)  # the same float32 values, computed in float64
    assert s32 == pytest.approx(s_ref, rel=1e-12, abs=1e-15)
    assert e32 == pytest.approx(e_ref, rel=1e-9)
    s1, e1 = fit_slope(np.asarray(x, np.float32), reps[:2].astype(np.float32))
    s1_ref, e1_ref = fit_slope(x, reps[:2].astype(np.float32).astype(np.float64))
    assert s1 == pytest.approx(s1_ref, rel=1e-12) and e1 == pytest.approx(e1_ref, rel=1e-9)
    # integer inputs and numeric strings are read as floats
    assert fit_slope(["1", "2", "4"], [[4, 2, 1]])[0] == pytest.approx(-1.0, abs=1e-12)
