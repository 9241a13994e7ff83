"""The paper's empirical claim under a reviewer's controls: does GeSSL bring a model closer to
the optimal task-specific models than the plain base method?

GeSSL (Qiang et al., arXiv 2405.01053) is reported to be "closer to task-optimal performance
according to σ" (a summary of the paper; docs/reconstruction.md). Here the optimal task model
is the exact Bayes posterior of each unseen task of a Gaussian task family
(:mod:`theory.task_families`), the model family can represent it (InfoNCE with the two-headed
critic on a linear encoder: per-task floor 0), and three trainers see the same tasks from the
same initialisation (:mod:`theory.fair_test`): plain, first-order meta-learning without the
σ-term, and GeSSL. Every model is then measured at its *own* best evaluation protocol
(:mod:`theory.fair_eval`): its logit scale β and its test-time (K, α), both chosen on
validation tasks disjoint from the test tasks, with σ after adaptation measured on new samples
of each task. One ``reproduction`` claim per family — the homogeneous control and the two
heterogeneous families — judged by the rules of :mod:`theory.claims.reproduction` (primary:
calibrated σ of φ and tuned σ after adaptation, Holm over the three families' primary tests).
The GeSSL algorithm is our reconstruction.
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np
import torch

from theory import fair_test
from theory.claims.base import Alternative, ClaimResult, Series
from theory.claims.registry import claim
from theory.claims.reproduction import MIN_EFFECT, Judged, judge
from theory.fair_eval import GRID_LRS, GRID_STEPS, EvalSet, Protocol, measure, task_sets
from theory.fair_test import MODES, FairTest, train_arms
from theory.floors import fit_floor, fit_reachable_floor
from theory.paired import PairedTest, correct, paired_test

__all__ = ["BUDGET", "TESTS", "compare_modes", "reproduction_result"]

#: sizes of the comparison per budget (quick: the default of ``python -m experiments.bounds``)
#: ``reach_iter``: L-BFGS iterations of a reachable-floor fit per inner step it unrolls (a fit
#: through K steps gets ``reach_iter / K``, at least 20), then up to ``reach_polish`` Newton
#: iterations for K ≤ 3 (an exact Hessian through 10 unrolled steps costs about forty gradients);
#: a fit that has not converged by then is reported as an upper estimate. ``tuned``: the
#: directions whose tuned reachable floors are fitted (through up to 10 unrolled steps, a few
#: seconds each); without one the per-task floor — unlimited adaptation — bounds that tuned σ
BUDGET: dict[str, dict[str, Any]] = {
    "tiny": {
        "steps": 12,
        "seeds": 3,
        "val_tasks": 8,
        "eval_tasks": 12,
        "floor_tasks": 2,
        "reach_iter": 40,
        "reach_polish": 2,
        "tuned": ("sigma",),
    },
    "quick": {
        "steps": 60,
        "seeds": 10,
        "val_tasks": 24,
        "eval_tasks": 48,
        "floor_tasks": 2,
        "reach_iter": 200,
        "reach_polish": 5,
        "tuned": (),
    },
    "full": {
        "steps": 300,
        "seeds": 10,
        "val_tasks": 100,
        "eval_tasks": 200,
        "floor_tasks": 20,
        "reach_iter": 1200,
        "reach_polish": 30,
        "tuned": ("sigma", "sigma_excess"),
        "outer_lr": 1e-2,
    },
}

#: (key, measure, arm a, arm b, primary, what a − b isolates); measures name a model's record
#: of :func:`theory.fair_eval.measure` (``fixed:<key>`` at the fixed protocol)
TESTS = (
    ("sigma_phi_calibrated", "sigma_phi_calibrated", "gessl", "plain", True,
     "σ of φ, calibrated (each model's logit scale β chosen on validation tasks): GeSSL − plain"),
    ("sigma_adapted_tuned", "sigma_adapted_tuned", "gessl", "plain", True,
     "σ after adaptation, tuned (each model's (K, α) chosen on validation tasks): GeSSL − plain"),
    ("sigma_phi_raw", "sigma_phi_raw", "gessl", "plain", False,
     "σ of φ at the models' raw logit scale: GeSSL − plain"),
    ("sigma_adapted_fixed", "fixed:sigma_adapted", "gessl", "plain", False,
     "σ after adaptation at GeSSL's training (K, α): GeSSL − plain"),
    ("excess_phi_calibrated", "excess_phi_calibrated", "gessl", "plain", False,
     "reverse direction, sigma_excess of φ, calibrated: GeSSL − plain"),
    ("excess_adapted_tuned", "excess_adapted_tuned", "gessl", "plain", False,
     "reverse direction, sigma_excess after adaptation, tuned: GeSSL − plain"),
    ("excess_phi_raw", "excess_phi_raw", "gessl", "plain", False,
     "reverse direction, sigma_excess of φ, raw: GeSSL − plain"),
    ("excess_adapted_fixed", "fixed:excess_adapted", "gessl", "plain", False,
     "reverse direction, sigma_excess after adaptation, fixed protocol: GeSSL − plain"),
    ("meta_vs_plain", "sigma_adapted_tuned", "meta", "plain", False,
     "attribution, meta-learning without σ-term − plain (σ after adaptation, tuned)"),
    ("gessl_vs_meta", "sigma_adapted_tuned", "gessl", "meta", False,
     "attribution, GeSSL − meta-learning without σ-term (σ after adaptation, tuned)"),
    ("own_sigma_term", "sigma_term", "gessl", "plain", False,
     "σ-term KL(π_θK ‖ π_θK+λ) at the fixed protocol: GeSSL − plain"),
    ("accuracy_phi", "accuracy_phi", "gessl", "plain", False,
     "task accuracy of φ: GeSSL − plain"),
    ("accuracy_adapted_tuned", "accuracy_adapted_tuned", "gessl", "plain", False,
     "task accuracy after adaptation, tuned: GeSSL − plain"),
    ("sigma_adapted_same_latents", "sigma_adapted_same_latents", "gessl", "plain", False,
     "σ after adaptation, fixed protocol, measured on other views of the support's samples "
     "(the measure of earlier releases): GeSSL − plain"),
)  # fmt: skip
#: each primary test's reverse-direction counterpart (an adverse one makes a verdict "mixed")
REVERSE = {"sigma_phi_calibrated": "excess_phi_calibrated",
           "sigma_adapted_tuned": "excess_adapted_tuned"}  # fmt: skip

KL_NOTE = "σ = KL(π_model ‖ π*) (the paper's direction); sigma_excess = KL(π* ‖ π_model)"


def _value(rec: dict[str, Any] | None, measure_key: str, fixed_label: str) -> float:
    if rec is None:
        return math.nan
    if measure_key.startswith("fixed:"):
        v = rec["fixed"][fixed_label][measure_key.split(":", 1)[1]]
    else:
        v = rec[measure_key]
    return math.nan if v is None else float(v)


def compare_modes(test: FairTest, seeds: list[int], b: dict[str, Any]) -> dict[str, Any]:
    """Train every arm of :data:`theory.fair_test.MODES` for each seed (a population per arm),
    measure each model at its own protocols on its seed's tasks, and fit the floors."""
    start = time.perf_counter()
    trained = train_arms(test, MODES, seeds)  # plain; meta and GeSSL in one population
    train_s = time.perf_counter() - start
    fam, n = test.task_family, test.n_samples
    sets = [task_sets(fam, s, b["val_tasks"], b["eval_tasks"], n) for s in seeds]
    g = test.gessl_config
    fixed = Protocol(g.inner_steps, g.inner_lr)
    names = None
    models, val, tst, where = [], [], [], []
    for mode in MODES:
        for i, run in enumerate(trained[mode]):
            if run.diverged:
                continue
            if g.adapt == "projector":
                names = run.method.head_names()
            models.append(dict(run.method.online_params()))
            val.append(sets[i][0])
            tst.append(sets[i][1])
            where.append((mode, i))
    method = trained["plain"][0].method
    records = (
        measure(
            method,
            models,
            val,
            tst,
            fixed=[fixed],
            lookahead=g.lookahead_steps,
            kl_direction=g.kl_direction,
            names=names,
        )
        if models
        else []
    )
    per_seed: dict[str, list[dict[str, Any] | None]] = {m: [None] * len(seeds) for m in MODES}
    for (mode, i), rec in zip(where, records):
        per_seed[mode][i] = rec
    measure_s = time.perf_counter() - start - train_s
    floors = _floors(test, sets, b, method, models, records, fixed, names)
    return {
        "per_seed": per_seed,
        "fixed": fixed,
        "diverged": {m: [s for s, r in zip(seeds, trained[m]) if r.diverged] for m in MODES},
        "diverged_reasons": {
            m: {str(s): r.diverged for s, r in zip(seeds, trained[m]) if r.diverged} for m in MODES
        },
        "paths": {m: trained[m][0].path for m in MODES},
        "floors": floors,
        "seconds": {
            "train": train_s,
            "measure": measure_s,
            "floors": time.perf_counter() - start - train_s - measure_s,
        },
    }


def _floors(
    test: FairTest,
    sets: list[tuple[EvalSet, EvalSet]],
    b: dict[str, Any],
    method: Any,
    models: list[dict],
    records: list[dict],
    fixed: Protocol,
    names: list[str] | None,
) -> dict[str, Any]:
    """The floors beside each σ, on the test tasks (float64), both KL directions:

    * ``shared_<dir>`` — one φ for every task (bounds σ of φ, raw or calibrated), on all the
      seeds' test tasks;
    * ``per_task_<dir>`` — parameters per task: the floor of unlimited adaptation (bounds every
      σ after adaptation), on the first ``n_floor`` test tasks of each seed;
    * ``reachable_fixed_<dir>`` — min over φ of σ after the fixed protocol's K steps of size α
      (bounds σ after that adaptation), on those tasks, started from the best measured model;
    * ``reachable_tuned_<dir>`` — the least reachable floor over the protocols the models chose
      (bounds every tuned σ), each fit started from the best model measured at that protocol.
    """
    if not models:
        return {}
    critic = method.task_critic()
    n_floor = b["floor_tasks"]

    def reachable(k: int, lr: float, direction: str, start: dict) -> dict[str, Any]:
        return fit_reachable_floor(
            method,
            critic,
            few,
            lp_few,
            k,
            lr,
            direction,
            names,
            init=start,
            max_iter=max(20, b["reach_iter"] // k),
            polish_iter=b["reach_polish"] if k <= 3 else 0,
        ).to_dict()

    def union(part: slice) -> tuple[Any, torch.Tensor]:
        from gessl.tasks import TaskBatch

        views = [torch.cat([t.batch.views()[i][part] for _, t in sets]) for i in range(4)]
        lp = torch.cat([t.lp[part] for _, t in sets])
        return TaskBatch(*views), lp

    everything, lp_all = union(slice(None))
    few, lp_few = union(slice(0, n_floor))
    out: dict[str, Any] = {}
    for direction, key in (("sigma", "sigma"), ("sigma_excess", "excess")):
        best = int(np.nanargmin([r.get(f"{key}_phi_calibrated") or np.inf for r in records]))
        shared = fit_floor(
            method,
            critic,
            (everything.query_a, everything.query_b),
            lp_all,
            direction,
            init=models[best],
        )
        out[f"shared_{direction}"] = shared.to_dict()
        out[f"per_task_{direction}"] = fit_floor(
            method,
            critic,
            (few.query_a, few.query_b),
            lp_few,
            direction,
            "per_task",
            init=shared.params,
        ).to_dict()
        scores = [_value(r, f"fixed:{key}_adapted", fixed.label) for r in records]
        start = models[int(np.nanargmin(scores))]
        out[f"reachable_fixed_{direction}"] = reachable(fixed.steps, fixed.lr, direction, start)
        if direction not in b["tuned"]:
            continue  # bounded by the per-task floor on this profile
        used = sorted({tuple(r[f"protocol_{key}"]) for r in records})
        tuned = []
        for k, lr in used:
            chosen = [i for i, r in enumerate(records) if tuple(r[f"protocol_{key}"]) == (k, lr)]
            start = models[min(chosen, key=lambda i: records[i][f"{key}_adapted_tuned"] or np.inf)]
            f = reachable(int(k), float(lr), direction, start)
            tuned.append({**f, "protocol": [int(k), float(lr)]})
        lowest = min(tuned, key=lambda f: f["value"])
        out[f"reachable_tuned_{direction}"] = {**lowest, "protocols": tuned}
    return out


def paired_tests(
    per_seed: dict[str, list[dict[str, Any] | None]], fixed_label: str
) -> tuple[list[PairedTest], list[bool], list[str]]:
    """The tests of :data:`TESTS`: primary ones uncorrected (Holm over the fixed family is the
    run's, :func:`theory.claims.reproduction.correct_across`), secondary ones Holm-corrected
    among themselves."""
    tests, primary, keys = [], [], []
    for key, measure_key, a, b, prim, label in TESTS:
        diffs = [
            _value(ra, measure_key, fixed_label) - _value(rb, measure_key, fixed_label)
            for ra, rb in zip(per_seed[a], per_seed[b])
        ]
        tests.append(paired_test(label, diffs))
        primary.append(prim)
        keys.append(key)
    correct([t for t, p in zip(tests, primary) if p])  # provisional: within the claim
    correct([t for t, p in zip(tests, primary) if not p])
    return tests, primary, keys


def _mean(per_seed: list[dict | None], measure_key: str, fixed_label: str) -> float:
    vals = [_value(r, measure_key, fixed_label) for r in per_seed]
    vals = [v for v in vals if math.isfinite(v)]
    return float(np.mean(vals)) if vals else math.nan


def reproduction_result(test: FairTest, budget: str, seed: int, label: str) -> ClaimResult:
    """Run the comparison of one family and judge it (provisionally: the verdict is final once
    ``experiments.bounds`` has corrected the fixed family's primary tests together)."""
    b = BUDGET[budget]
    options = {"steps": b["steps"]}
    if "outer_lr" in b:
        options["outer_lr"] = b["outer_lr"]
    test = test.with_options(**options)
    seeds = list(range(seed, seed + b["seeds"]))
    start = time.perf_counter()
    run = compare_modes(test, seeds, b)
    fixed_label = run["fixed"].label
    per_seed = run["per_seed"]
    tests, primary, keys = paired_tests(per_seed, fixed_label)
    floors = run["floors"]
    levels = {
        m: {spec[1]: _mean(per_seed[m], spec[1], fixed_label) for spec in TESTS} for m in MODES
    }

    def floor(name: str) -> float:
        v = floors.get(name, {}).get("value")
        return math.nan if v is None else float(v)

    plain = levels["plain"]
    tuned_floor = "reachable_tuned_sigma" if "reachable_tuned_sigma" in floors else "per_task_sigma"
    min_effect = {
        "sigma_phi_calibrated": MIN_EFFECT
        * (plain["sigma_phi_calibrated"] - floor("shared_sigma")),
        "sigma_adapted_tuned": MIN_EFFECT * (plain["sigma_adapted_tuned"] - floor(tuned_floor)),
    }
    min_effect = {k: (v if math.isfinite(v) else 0.0) for k, v in min_effect.items()}
    diverged = {m: len(v) for m, v in run["diverged"].items()}
    rules = Judged(min_effect, REVERSE, diverged, len(seeds))
    c = judge(tests, primary, keys, rules)

    def closed(measure_key: str, floor_name: str) -> dict[str, float]:
        gap = plain[measure_key] - floor(floor_name)
        return {
            m: (plain[measure_key] - levels[m][measure_key]) / gap if gap > 0 else math.nan
            for m in ("meta", "gessl")
        }

    gap_closed = {
        "adapted_fixed": closed("fixed:sigma_adapted", "reachable_fixed_sigma"),
        "adapted_tuned": closed("sigma_adapted_tuned", tuned_floor),
        "phi_calibrated": closed("sigma_phi_calibrated", "shared_sigma"),
    }
    by = dict(zip(keys, tests))
    d_cal, d_tuned = by["sigma_phi_calibrated"].mean, by["sigma_adapted_tuned"].mean
    summary = (
        f"{label}: calibrated σ/query φ plain {plain['sigma_phi_calibrated']:.3f} → GeSSL "
        f"{levels['gessl']['sigma_phi_calibrated']:.3f} (Δ {d_cal:+.3f}; shared floor "
        f"{floor('shared_sigma'):.3f}); tuned adapted {plain['sigma_adapted_tuned']:.3f} → "
        f"{levels['gessl']['sigma_adapted_tuned']:.3f} (Δ {d_tuned:+.3f}; "
        f"{'reachable' if tuned_floor.startswith('reachable') else 'per-task'} floor "
        f"{floor(tuned_floor):.3f}); raw φ Δ {by['sigma_phi_raw'].mean:+.3f}, "
        f"fixed K={run['fixed'].steps} Δ {by['sigma_adapted_fixed'].mean:+.3f} (reachable "
        f"floor {floor('reachable_fixed_sigma'):.3f}); {len(seeds)} seeds"
    )
    measured = [
        Series(t.name, seeds, [v if np.isfinite(v) else float("nan") for v in t.diffs])
        for t in tests
    ]
    curve = {m: _curve(per_seed[m]) for m in MODES}
    chosen = {
        m: [
            None
            if r is None
            else {
                "beta_sigma": r["beta_sigma"],
                "beta_excess": r["beta_excess"],
                "protocol_sigma": r["protocol_sigma"],
                "protocol_excess": r["protocol_excess"],
            }
            for r in per_seed[m]
        ]
        for m in MODES
    }
    return ClaimResult(
        c.verdict,
        c.reason,
        summary,
        measured,
        [],
        x_label="seed (same initialisation, tasks and evaluation tasks for every arm)",
        y_label="paired difference per query (nats)",
        se=by["sigma_adapted_tuned"].se,
        details={
            "tests": [
                t.to_dict() | {"primary": p, "key": k} for t, p, k in zip(tests, primary, keys)
            ],
            "rules": {
                "min_effect": min_effect,
                "min_effect_fraction": MIN_EFFECT,
                "reverse": REVERSE,
                "diverged": diverged,
                "seeds": len(seeds),
            },
            "holm": {"provisional": True},
            # the smallest paired difference the primary tests detect (the 95% interval's
            # half-width, before Holm), as a fraction of plain's distance to the floor
            "resolution": {
                "quantity": "Δσ (GeSSL − plain) relative to plain's distance to its floor",
                "relative": max(
                    (by[k].ci[1] - by[k].ci[0]) / 2 / (plain[k] - floor(f))
                    for k, f in (
                        ("sigma_phi_calibrated", "shared_sigma"),
                        ("sigma_adapted_tuned", tuned_floor),
                    )
                ),
            },
            "levels": levels,
            "per_seed": per_seed,
            "chosen": chosen,
            "floors": floors,
            "gap_closed": gap_closed,
            "tuned_floor": tuned_floor,
            "budget_curve": curve,
            "protocols": {
                "fixed": {"steps": run["fixed"].steps, "lr": run["fixed"].lr},
                "grid": {"steps": list(GRID_STEPS), "lr": list(GRID_LRS)},
            },
            "extra_panel": {
                "title": "adaptation budget: σ after k steps, each model at its best α",
                "x_label": "test-time steps k",
                "y_label": "σ per query on new samples (nats)",
                "marker": {"x": run["fixed"].steps, "label": "GeSSL's training K"},
                "series": [
                    {
                        "label": m,
                        "x": list(range(1, len(curve[m]["mean"]) + 1)),
                        "y": curve[m]["mean"],
                        "se": curve[m]["se"],
                    }
                    for m in MODES
                ],
            },
            "seconds": run["seconds"],
            "gradient_paths": run["paths"],
            "diverged": run["diverged"],
            "diverged_reasons": run["diverged_reasons"],
            "setup": test.to_dict(),
            "sizes": {k: b[k] for k in ("val_tasks", "eval_tasks", "floor_tasks")},
            "seeds": seeds,
            "kl_directions": KL_NOTE,
            "wall_seconds": time.perf_counter() - start,
        },
    )


def _curve(records: list[dict | None]) -> dict[str, list[float]]:
    """The mean adaptation-budget curve over seeds (and its standard error)."""
    rows = [r["budget_sigma"] for r in records if r is not None]
    if not rows:
        return {"mean": [], "se": []}
    arr = np.array([[math.nan if v is None else v for v in row] for row in rows], dtype=float)
    n = np.sum(np.isfinite(arr), 0)
    mean = np.nanmean(arr, 0)
    se = np.nanstd(arr, 0, ddof=1) / np.sqrt(n) if len(rows) > 1 else np.full_like(mean, np.nan)
    return {"mean": mean.tolist(), "se": se.tolist()}


_SOURCE = (
    "Qiang et al., arXiv 2405.01053 (σ-based analysis: GeSSL closer to the task-optimal models) "
    "[secondary: a summary of the paper]; GeSSL reconstructed (docs/reconstruction.md); "
    "setting docs/reproduction.md"
)
_SETUP = (
    "InfoNCE (τ = 1) with the two-headed critic on a linear encoder (one affine layer d → 2d, 40 "
    "parameters at d = 4; its family contains every task's Bayes critic), N = 16 samples and "
    "M = 16 tasks per step; plain vs first-order meta-learning without σ-term vs GeSSL (K = 1, "
    "α = 0.1, λ = 1, γ = 1) from the same initialisation on the same tasks; every model measured "
    "at its own logit scale and test-time (K, α), chosen on validation tasks"
)

#: the family of each claim and what makes its tasks' optima (not) differ
FAMILY_CLAIMS = {
    "homogeneous": "Control (every task has the same Bayes critic, so nothing is task-specific)",
    "subspace": "On tasks whose signal lies in a per-task random subspace (optima differ by task)",
    "noise_level": "On tasks with a per-task noise level (the optimal critic's scale differs)",
}


def _register(family: str, setting: str) -> None:
    claim_id = f"gessl_sigma_{family}"

    def run(budget: str, seed: int) -> ClaimResult:
        test = FairTest(family=family)
        return reproduction_result(test, budget, seed, family.replace("_", " "))

    run.__name__ = claim_id
    claim(
        claim_id,
        f"{setting}: GeSSL lowers σ = KL(π_model ‖ π*) on unseen tasks relative to the plain "
        "base method, for the shared model φ at each model's calibrated logit scale and after "
        "each model's tuned test-time adaptation on each task's support views (σ on new "
        f"samples of the task). {_SETUP}.",
        _SOURCE,
        "RECON",
        "reproduction",
        cost=9.0,
        alternatives=REPRODUCTION_ALTERNATIVES,
        setting=(
            f"the {family.replace('_', '-')} Gaussian task family (docs/settings.md §1) at "
            f"{_family_text(family)}; the fair test of docs/reproduction.md"
        ),
    )(run)


def _gessl_is_plain(test: FairTest, modes: Any, seeds: Any) -> dict[str, list[Any]]:
    """Alternative: the GeSSL arm is the plain model itself (identical arms), so that "GeSSL
    lowers σ" is false by construction."""
    trained = fair_test.train_arms(test, modes, seeds)
    return {**trained, "gessl": trained["plain"]}


def _gessl_one_step(test: FairTest, modes: Any, seeds: Any) -> dict[str, list[Any]]:
    """Alternative: the GeSSL arm trained one outer step (a run cut short), the other arms as
    usual — a GeSSL that cannot lower σ."""
    trained = fair_test.train_arms(test, [m for m in modes if m != "gessl"], seeds)
    short = fair_test.train_arms(test.with_options(steps=1), ["gessl"], seeds)
    return {**trained, "gessl": short["gessl"]}


#: the wrong alternatives of every gessl_sigma_* claim: the paper's claim made false by
#: construction, which the fixed verdict rules must not call reproduced
REPRODUCTION_ALTERNATIVES = (
    Alternative(
        "identical_arms",
        "GeSSL's model is the plain model (no effect): its σ must not read as lower",
        {"theory.claims.gessl_claims.train_arms": _gessl_is_plain},
        fast=False,
        rejects_on=("tiny", "quick", "full"),
        rejected_when=("no practical difference", "inconclusive", "not reproduced"),
    ),
    Alternative(
        "gessl_one_step",
        "GeSSL trained one outer step against fully trained plain and meta arms",
        {"theory.claims.gessl_claims.train_arms": _gessl_one_step},
        fast=False,
        rejects_on=("quick", "full"),
        rejected_when=("not reproduced",),
    ),
)


def _family_text(family: str) -> str:
    fam = FairTest(family=family).task_family.describe()
    return ", ".join(f"{k} = {v}" for k, v in fam.items() if k != "family")


for _family, _setting in FAMILY_CLAIMS.items():
    _register(_family, _setting)
