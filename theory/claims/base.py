"""Claims as objects: what is asserted, where it comes from, and how its check is judged.

Three kinds:

* ``exact`` — an identity or an inequality with explicit constants. Asserted within a float
  tolerance, or for Monte-Carlo values within ``N_SE`` standard errors (reported).
* ``rate`` — a bound with hidden constants. Only log-log slopes and orderings are judged: a
  fitted slope *holds* when its ±2 SE interval lies inside ``expected ± tolerance``, is
  *violated* when that interval lies wholly outside, and is *inconclusive* otherwise.
* ``reproduction`` — an empirical claim of a paper, judged on paired seeds with 95% intervals
  and Holm-corrected p-values (:mod:`theory.paired`) by rules fixed in advance: *reproduced*,
  *not reproduced*, *mixed* (the other KL direction adverse), *no practical difference*
  (significant but below the minimum effect) or *inconclusive*
  (:mod:`theory.claims.reproduction`).

``exact`` and ``rate`` claims are the *theorem* claims: they decide the exit status of
``python -m experiments.bounds``; reproduction claims do so only when asked (``strict``).
"""

from __future__ import annotations

import importlib
import math
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any
from unittest import mock

import numpy as np
from scipy import stats

__all__ = [
    "BUDGETS",
    "KINDS",
    "N_SE",
    "REPRODUCTION_VERDICTS",
    "THEOREM_KINDS",
    "THEOREM_VERDICTS",
    "VERDICTS",
    "Alternative",
    "Check",
    "Claim",
    "ClaimResult",
    "Series",
    "combine",
    "fit_slope",
    "judge_close",
    "judge_le",
    "judge_slope",
    "judge_slope_at_most",
]

THEOREM_KINDS = ("exact", "rate")
KINDS = (*THEOREM_KINDS, "reproduction")
THEOREM_VERDICTS = ("holds", "violated", "inconclusive")
REPRODUCTION_VERDICTS = (
    "reproduced",
    "not reproduced",
    "mixed",
    "no practical difference",
    "inconclusive",
)
VERDICTS = (
    "holds",
    "violated",
    "reproduced",
    "not reproduced",
    "mixed",
    "no practical difference",
    "inconclusive",
)
BUDGETS = ("tiny", "quick", "full")
#: Monte-Carlo tolerance of every ``exact`` comparison, in standard errors
N_SE = 4.0


@dataclass
class Series:
    """One curve of a claim's figure: ``y`` (± ``se``) against ``x``."""

    label: str
    x: list[float]
    y: list[float]
    se: list[float] | None = None

    def __post_init__(self) -> None:
        self.x = [float(v) for v in self.x]
        self.y = [float(v) for v in self.y]
        if self.se is not None:
            self.se = [float(v) for v in self.se]
        if len(self.x) != len(self.y) or (self.se is not None and len(self.se) != len(self.y)):
            raise ValueError(f"series {self.label!r}: x, y and se lengths differ")


@dataclass
class Check:
    """One judged comparison inside a claim: its verdict and a one-line reason."""

    verdict: str
    reason: str


def combine(checks: Sequence[Check]) -> Check:
    """Violated if any is violated, else inconclusive if any is, else holds."""
    for v in ("violated", "inconclusive"):
        bad = [c.reason for c in checks if c.verdict == v]
        if bad:
            return Check(v, "; ".join(bad))
    return Check("holds", "; ".join(c.reason for c in checks))


def judge_close(
    name: str, measured: float, target: float, se: float = 0.0, atol: float = 0.0, rtol: float = 0.0
) -> Check:
    """``|measured − target| ≤ N_SE·se + atol + rtol·|target|``."""
    tol = N_SE * se + atol + rtol * abs(target)
    diff = abs(measured - target)
    if not math.isfinite(measured):
        return Check("inconclusive", f"{name}: measured value is not finite")
    if diff <= tol:
        return Check("holds", f"{name}: |{measured:.6g} − {target:.6g}| = {diff:.2g} ≤ {tol:.2g}")
    return Check("violated", f"{name}: |{measured:.6g} − {target:.6g}| = {diff:.2g} > {tol:.2g}")


def judge_le(name: str, measured: float, bound: float, se: float = 0.0, atol: float = 0.0) -> Check:
    """``measured ≤ bound + N_SE·se + atol`` (an upper bound that must hold)."""
    if not math.isfinite(measured):
        return Check("inconclusive", f"{name}: measured value is not finite")
    slack = N_SE * se + atol
    if measured <= bound + slack:
        return Check("holds", f"{name}: {measured:.6g} ≤ {bound:.6g} (+{slack:.2g})")
    return Check("violated", f"{name}: {measured:.6g} > {bound:.6g} + {slack:.2g}")


def fit_slope(x: Sequence[float], replicates: np.ndarray) -> tuple[float, float]:
    """Log-log slope of the mean curve and its standard error.

    ``replicates`` is ``[R, len(x)]`` (independent repetitions). The slope is the least-squares
    slope of ``log mean_r y`` on ``log x``; its SE is the delete-one jackknife over replicates
    (``R ≥ 3``), else the least-squares SE of the single curve.
    """
    lx = np.log(np.asarray(x, dtype=float))
    reps = np.atleast_2d(np.asarray(replicates, dtype=float))

    def slope(y: np.ndarray) -> float:
        return float(np.polyfit(lx, np.log(y), 1)[0])

    s = slope(reps.mean(axis=0))
    r = reps.shape[0]
    if r >= 3:
        jack = np.array([slope(np.delete(reps, i, axis=0).mean(axis=0)) for i in range(r)])
        se = float(np.sqrt((r - 1) / r * np.sum((jack - jack.mean()) ** 2)))
    else:
        y = np.log(reps.mean(axis=0))
        resid = y - np.polyval(np.polyfit(lx, y, 1), lx)
        dof = max(len(lx) - 2, 1)
        se = float(np.sqrt(np.sum(resid**2) / dof / np.sum((lx - lx.mean()) ** 2)))
    return s, se


def judge_slope_at_most(
    name: str, slope: float, se: float, bound: float, df: int | None = None
) -> Check:
    """A decay at least as fast as ``x^bound``: *holds* when the interval of the fitted slope
    lies at or below ``bound``, *violated* when it lies wholly above, else inconclusive. The
    interval is ±2 SE, or with ``df`` (a jackknife over ``df + 1`` replicates) the two-sided 95%
    Student-t interval on ``df`` degrees of freedom."""
    if not (math.isfinite(slope) and math.isfinite(se)):
        return Check("inconclusive", f"{name}: slope not estimable")
    q, what = (2.0, "±2 SE") if df is None else (float(stats.t.ppf(0.975, df)), f"95% t({df})")
    lo, hi = slope - q * se, slope + q * se
    txt = f"{name}: slope {slope:.3f}, {what} interval [{lo:.3f}, {hi:.3f}] vs ≤ {bound:g}"
    if hi <= bound:
        return Check("holds", txt)
    if lo > bound:
        return Check("violated", txt)
    return Check("inconclusive", txt + " (interval straddles the bound)")


def judge_slope(name: str, slope: float, se: float, expected: float, tolerance: float) -> Check:
    """Rate verdict from the ±2 SE interval of a fitted slope against ``expected ± tolerance``."""
    lo, hi = slope - 2 * se, slope + 2 * se
    a, b = expected - tolerance, expected + tolerance
    txt = (
        f"{name}: slope {slope:.3f}, ±2 SE interval [{lo:.3f}, {hi:.3f}] vs "
        f"{expected:g} ± {tolerance:g}"
    )
    if a <= lo and hi <= b:
        return Check("holds", txt)
    if hi < a or lo > b:
        return Check("violated", txt)
    return Check("inconclusive", txt + " (interval straddles the tolerance)")


@dataclass
class ClaimResult:
    """What a claim's check measured, the bound it is compared with, and the verdict."""

    verdict: str
    reason: str
    summary: str
    measured: list[Series]
    bounds: list[Series] = field(default_factory=list)
    x_label: str = "x"
    y_label: str = "value"
    log_x: bool = False
    log_y: bool = False
    slope: float | None = None
    slope_se: float | None = None
    expected_slope: float | None = None
    se: float | None = None
    details: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    budget: str = "quick"
    seed: int = 0
    #: filled by :meth:`Claim.check` from the registered claim; a check function need not set them
    claim_id: str = ""
    kind: str = ""

    def __post_init__(self) -> None:
        if self.kind:
            self.validate()

    def validate(self) -> None:
        """The kind is known and the verdict is one that kind allows."""
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {self.kind!r}")
        allowed = REPRODUCTION_VERDICTS if self.kind == "reproduction" else THEOREM_VERDICTS
        if self.verdict not in allowed:
            raise ValueError(
                f"verdict of a {self.kind} claim must be one of {allowed}, got {self.verdict!r}"
            )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable record (the form saved in run records)."""
        return _plain(asdict(self))


def _plain(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    if isinstance(x, np.ndarray):
        return _plain(x.tolist())
    if isinstance(x, (np.floating, float)):
        v = float(x)
        return v if math.isfinite(v) else str(v)  # JSON has no inf/nan
    if isinstance(x, (np.integer,)):
        return int(x)
    return x


CheckFn = Callable[[str, int], ClaimResult]


def clear_claim_caches() -> None:
    """Empty every ``functools`` cache of the claim and theory modules (a check run under an
    :class:`Alternative` must neither read nor leave results computed under another
    statement)."""
    for name, module in list(sys.modules.items()):
        if module is None or not name.startswith(("theory.", "gessl.")):
            continue
        for value in list(vars(module).values()):
            clear = getattr(value, "cache_clear", None)
            if callable(clear) and getattr(value, "__module__", None) == name:
                clear()


@dataclass(frozen=True)
class Alternative:
    """A wrong variant of a claim's statement or setting that its check must call *violated*
    (the claim's power: what a careless derivation or a bug would produce).

    Attributes:
        name: a short identifier, unique within the claim.
        description: what is wrong, in words (a constant off by a factor, a dropped term, a
            threshold moved, an untrained model, a wrong embedding).
        overrides: ``"package.module.name"`` → the value the check sees instead while the
            alternative is applied (a constant, a bound function, a training budget): a
            parameter override, never a text patch of the code.
        fast: cheap enough for the test suite's ``tiny`` power check.
        rejects_on: the profiles on which the check is built to reject it (the default profile
            ``quick`` at least).
        rejected_when: the verdicts that count as rejecting it: ``("violated",)`` for a theorem
            claim; for a reproduction claim (whose alternatives make the paper's claim false by
            construction, e.g. identical arms) the verdicts other than ``reproduced`` that the
            rules must reach.
    """

    name: str
    description: str
    overrides: Mapping[str, Any]
    fast: bool = True
    rejects_on: tuple[str, ...] = ("tiny", "quick", "full")
    rejected_when: tuple[str, ...] = ("violated",)

    def __post_init__(self) -> None:
        if not self.overrides:
            raise ValueError(f"alternative {self.name!r}: no override (it would change nothing)")
        for target in self.overrides:
            module, _, attr = target.rpartition(".")
            if not module or not attr:
                raise ValueError(f"alternative {self.name!r}: {target!r} is not module.name")
        if (
            not self.rejected_when
            or "holds" in self.rejected_when
            or ("reproduced" in self.rejected_when)
        ):
            raise ValueError(
                f"alternative {self.name!r}: rejected_when must name verdicts that deny the "
                "statement (not 'holds' or 'reproduced')"
            )
        bad = set(self.rejects_on) - set(BUDGETS)
        if bad or "quick" not in self.rejects_on:
            raise ValueError(
                f"alternative {self.name!r}: rejects_on must name profiles of {BUDGETS} and "
                "include the default 'quick'"
            )

    @contextmanager
    def applied(self) -> Iterator[None]:
        """The overrides in place (and the claim caches empty) inside the block."""
        with ExitStack() as stack:
            for target, value in self.overrides.items():
                module, _, attr = target.rpartition(".")
                owner = importlib.import_module(module)
                if not hasattr(owner, attr):
                    raise AttributeError(f"alternative {self.name!r}: {target} does not exist")
                stack.enter_context(mock.patch.object(owner, attr, value))
            clear_claim_caches()
            stack.callback(clear_claim_caches)
            yield


@dataclass(frozen=True)
class Claim:
    """A registered claim.

    Attributes:
        id: short identifier (ours).
        statement: what is asserted, in words.
        source: paper and theorem/equation it comes from.
        provenance: tag — ``[S]`` primary source read, ``[S2]`` secondary
            restatement, ``[M]`` from memory of the primary, ``[R]`` derived here and checked
            numerically, ``RECON`` our reconstruction of the GeSSL paper.
        kind: ``"exact"``, ``"rate"`` or ``"reproduction"``.
        run: ``run(budget, seed) -> ClaimResult``.
        group: claims of one group run in the same worker process, one after the other (they
            share cached computations); default: the claim alone.
        cost: rough seconds of the ``quick`` check on one core; the runner starts costly
            groups first so the workers finish together.
        setting: the closed-form setting the check runs in (a section of
            ``docs/settings.md`` and its module), shown in ``docs/claims.md``.
        alternatives: wrong variants of the statement or setting the check must reject
            (:class:`Alternative`; ``python -m experiments.bounds with power=True``).
    """

    id: str
    statement: str
    source: str
    provenance: str
    kind: str
    run: CheckFn
    group: str | None = None
    cost: float = 1.0
    setting: str = ""
    alternatives: tuple[Alternative, ...] = ()

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"claim {self.id!r}: kind must be one of {KINDS}")
        names = [a.name for a in self.alternatives]
        if len(set(names)) != len(names):
            raise ValueError(f"claim {self.id!r}: alternative names repeat: {names}")
        allowed = REPRODUCTION_VERDICTS if self.kind == "reproduction" else THEOREM_VERDICTS
        for a in self.alternatives:
            if not set(a.rejected_when) <= set(allowed):
                raise ValueError(
                    f"claim {self.id!r}: alternative {a.name!r} is rejected by "
                    f"{a.rejected_when}, not verdicts of a {self.kind} claim {allowed}"
                )

    def alternative(self, name: str) -> Alternative:
        """The declared alternative ``name``."""
        for a in self.alternatives:
            if a.name == name:
                return a
        known = ", ".join(a.name for a in self.alternatives) or "none"
        raise ValueError(f"claim {self.id!r} has no alternative {name!r} (declared: {known})")

    def check(
        self,
        budget: str = "quick",
        seed: int = 0,
        device: str | None = None,
        alternative: str | None = None,
    ) -> ClaimResult:
        """Run the check; the result carries budget, seed and wall-clock seconds. Claims that
        train a model (the GeSSL reproductions) train on ``device`` (``None``/``"auto"``: CUDA
        when available, else the CPU); closed forms and evaluations run on the CPU. With
        ``alternative`` (a declared :class:`Alternative`'s name) the check runs against that
        wrong variant (its verdict should be ``violated``)."""
        if budget not in BUDGETS:
            raise ValueError(f"budget must be one of {BUDGETS}, got {budget!r}")
        from theory.fair_test import training_device  # (fair_test imports this package)

        wrong = ExitStack()
        if alternative is not None:
            wrong.enter_context(self.alternative(alternative).applied())
        start = time.perf_counter()
        with wrong, training_device(device):
            result = self.run(budget, seed)
        result.seconds = time.perf_counter() - start
        result.budget, result.seed = budget, seed
        if result.claim_id not in ("", self.id) or result.kind not in ("", self.kind):
            raise RuntimeError(
                f"claim {self.id!r} ({self.kind}) returned a result for "
                f"{result.claim_id!r} ({result.kind})"
            )
        result.claim_id, result.kind = self.id, self.kind
        result.validate()
        return result
