"""Paired comparisons across seeds: t-intervals, p-values and Holm's correction.

Two methods trained from the same initialisation on the same task stream, and measured on the
same fresh tasks, differ per seed by ``d_s``; the comparison is the one-sample t-test of the
``d_s`` (Student 1908): mean, standard error, two-sided p-value and the 95% t-interval. When
several comparisons are read together, Holm's step-down procedure (Holm 1979, *Scand. J.
Statist.* 6:65–70) controls the family-wise error rate: sort the m p-values, multiply the i-th
smallest by ``m − i + 1`` and take running maxima (capped at 1). A difference is *significant*
when its Holm-adjusted p-value is below ``ALPHA``.

NumPy and SciPy only (no torch): :mod:`paper_figures` uses it to assemble maps from records.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy import stats

__all__ = ["ALPHA", "PairedTest", "correct", "holm", "paired_test"]

#: the family-wise error rate of every Holm-corrected comparison
ALPHA = 0.05


@dataclass
class PairedTest:
    """One paired comparison ``a − b`` over seeds.

    Attributes:
        name: what is compared, e.g. ``"σ after adaptation: GeSSL − plain"``.
        diffs: per-seed differences (``nan`` where a seed diverged).
        mean, se: mean and standard error of the finite differences.
        ci: the 95% t-interval of the mean (unadjusted).
        p: two-sided p-value of the t-test (1 when fewer than 2 finite seeds, or no spread).
        p_holm: Holm-adjusted p-value within the set it was corrected with (``p`` until then).
        n: finite seeds; ``diverged``: seeds whose difference is not finite.
    """

    name: str
    diffs: list[float]
    mean: float
    se: float
    ci: tuple[float, float]
    p: float
    p_holm: float
    n: int
    diverged: int

    @property
    def significant(self) -> bool:
        """Holm-adjusted p-value below :data:`ALPHA`."""
        return self.p_holm < ALPHA

    @property
    def direction(self) -> str:
        """``"lower"`` or ``"higher"`` (a < b or a > b, significant), else ``"n.s."``."""
        if not self.significant:
            return "n.s."
        return "lower" if self.mean < 0 else "higher"

    def describe(self, fmt: str = "+.4f") -> str:
        """One line: mean, 95% CI, p and Holm-adjusted p, divergences."""
        if self.n == 0:
            return f"{self.name}: no seed finished (all {self.diverged} diverged)"
        lo, hi = self.ci
        txt = (
            f"{self.name}: {self.mean:{fmt}}, 95% CI [{lo:{fmt}}, {hi:{fmt}}], "
            f"p = {self.p:.2g}, p_Holm = {self.p_holm:.2g} ({self.direction})"
        )
        if self.diverged:
            txt += f"; {self.diverged} of {self.n + self.diverged} seeds diverged"
        return txt

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready record: non-finite numbers (no finite seed) become ``None``."""
        d = asdict(self)
        d["ci"] = [_json(v) for v in self.ci]
        d["diffs"] = [_json(v) for v in self.diffs]
        d["mean"], d["se"] = _json(self.mean), _json(self.se)
        d.update(significant=self.significant, direction=self.direction)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PairedTest:
        keys = {f for f in cls.__dataclass_fields__}  # type: ignore[attr-defined]
        kw = {k: v for k, v in d.items() if k in keys}
        kw["ci"] = tuple(_num(v) for v in kw["ci"])
        kw["diffs"] = [_num(v) for v in kw["diffs"]]
        kw["mean"], kw["se"] = _num(kw["mean"]), _num(kw["se"])
        return cls(**kw)


def _json(v: float) -> float | None:
    return float(v) if math.isfinite(v) else None


def _num(v: float | None) -> float:
    return float("nan") if v is None else float(v)


def paired_test(name: str, diffs: Sequence[float]) -> PairedTest:
    """The t-test of the per-seed differences ``diffs`` (non-finite entries are diverged seeds:
    counted, reported, and left out of the mean)."""
    arr = np.asarray(diffs, dtype=float)
    finite = arr[np.isfinite(arr)]
    n = int(finite.size)
    mean = float(finite.mean()) if n else float("nan")
    if n >= 2:
        se = float(finite.std(ddof=1) / math.sqrt(n))
        half = float(stats.t.ppf(0.975, n - 1)) * se
        p = float(2 * stats.t.sf(abs(mean) / se, n - 1)) if se > 0 else (0.0 if mean else 1.0)
    else:
        se, half, p = float("nan"), float("nan"), 1.0
    return PairedTest(
        name=name,
        diffs=[float(v) for v in arr],
        mean=mean,
        se=se,
        ci=(mean - half, mean + half),
        p=p,
        p_holm=p,
        n=n,
        diverged=int(arr.size - n),
    )


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm-adjusted p-values, in the input order."""
    p = np.asarray(pvalues, dtype=float)
    m = p.size
    order = np.argsort(p, kind="stable")
    adjusted = np.empty(m)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))
        adjusted[i] = running
    return adjusted.tolist()


def correct(tests: Sequence[PairedTest]) -> None:
    """Set ``p_holm`` of every test in place: Holm's correction across ``tests``."""
    for t, adj in zip(tests, holm([t.p for t in tests])):
        t.p_holm = adj
