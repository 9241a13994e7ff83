"""Paired t-tests over seeds and Holm's correction, against SciPy and hand computations."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from theory.paired import ALPHA, PairedTest, correct, holm, paired_test


def test_paired_test_matches_scipy():
    diffs = [-0.31, -0.12, -0.25, -0.4, -0.05]
    t = paired_test("x", diffs)
    ref = stats.ttest_1samp(diffs, 0.0)
    assert t.p == pytest.approx(ref.pvalue, rel=1e-12)
    assert t.mean == pytest.approx(np.mean(diffs)) and t.n == 5 and t.diverged == 0
    assert t.se == pytest.approx(np.std(diffs, ddof=1) / math.sqrt(5))
    lo, hi = stats.t.interval(0.95, 4, loc=np.mean(diffs), scale=t.se)
    assert t.ci == pytest.approx((lo, hi))
    assert t.significant and t.direction == "lower"
    assert paired_test("y", [-d for d in diffs]).direction == "higher"
    assert paired_test("z", [0.1, -0.1, 0.2, -0.15, 0.0]).direction == "n.s."


def test_diverged_seeds_are_counted_not_averaged_and_reported():
    t = paired_test("x", [-0.2, float("nan"), -0.3, -0.25, float("inf")])
    assert t.n == 3 and t.diverged == 2 and t.mean == pytest.approx(-0.25)
    assert "2 of 5 seeds diverged" in t.describe()
    d = t.to_dict()
    assert d["diffs"][1] is None and PairedTest.from_dict(d).diverged == 2
    assert paired_test("one", [0.3]).p == 1.0  # one finite seed: no test


def test_holm_by_hand_and_in_place():
    p = [0.01, 0.04, 0.03, 0.2]
    # sorted 0.01·4 = 0.04, 0.03·3 = 0.09, 0.04·2 = 0.08 → running max 0.09, 0.2·1 = 0.2
    assert holm(p) == pytest.approx([0.04, 0.09, 0.09, 0.2])
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])
    tests = [paired_test(f"t{i}", [-1 - 0.1 * i, -1.2, -0.9, -1.1]) for i in range(3)]
    raw = [t.p for t in tests]
    correct(tests)
    assert [t.p_holm for t in tests] == pytest.approx(holm(raw))
    assert all(t.p_holm >= t.p for t in tests)
    borderline = paired_test("b", [-0.1, -0.3, -0.05, -0.2, -0.1])
    assert borderline.p < ALPHA
    correct([borderline, *[paired_test(f"n{i}", [0.1, -0.1, 0.2, -0.2]) for i in range(5)]])
    assert not borderline.significant  # six tests read together: the correction bites
