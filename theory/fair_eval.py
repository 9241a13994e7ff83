"""Each model measured at its own best evaluation protocol: the controls a reviewer asks for.

A comparison of training methods must not measure every model at one method's own test-time
protocol (Chen et al. 2019, "A Closer Look at Few-shot Classification", arXiv 1904.04232;
Tian et al. 2020, "Rethinking Few-Shot Image Classification", arXiv 2003.11539). For every
trained model this module measures, against the exact Bayes posterior of fresh tasks:

* **σ of φ, raw and calibrated.** Raw: the model's own logits. Calibrated: the logits times one
  scalar β > 0 per model (a temperature), chosen on *validation tasks* — fresh tasks of the
  family, disjoint from the test tasks — by minimising the same σ, then measured on the test
  tasks; one β per KL direction. A log-likelihood comparison at each model's best scale removes
  what a scale that happens to suit the target would add (the standard control: temperature
  scaling, Guo et al. 2017, arXiv 1706.04599). With the two-headed critic β·logits is itself a
  member of the linear family, so the calibrated σ stays above the family's shared floor.
* **σ after adaptation: tuned, fixed, and the adaptation-budget curve.** Each model adapted with
  K SGD steps of size α on each task's support views, σ measured on query views of *new latents
  of the same task* (not other views of the samples adapted on). Tuned: each model's (K, α) from
  the grid :data:`GRID_STEPS` × :data:`GRID_LRS` with the lowest σ on the validation tasks, then
  measured on the test tasks. Fixed: given protocols (GeSSL's training (K, α)). The curve: σ after
  k = 1 … 10 steps, each model at its best α for each k (chosen on validation).
* the σ-term GeSSL optimises, KL(π_θK ‖ π_θK+λ), and σ at the fixed protocol measured on other
  views of the support's latents (the measure of earlier releases, labelled ``same_latents``).

Everything runs batched over models, step sizes and tasks: one ``vmap`` over (model, α, task)
triples per step (the adaptation engine's step, :class:`gessl.adapt.Adapter`), in float32, the
models' own precision (:data:`DTYPE`; a float64 pass costs 2–6× as much for differences far
above float32's rounding). σ is per
query in nats; ``sigma`` = KL(π_model ‖ π*), the paper's direction; ``excess`` = KL(π* ‖ π_model).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from scipy.optimize import minimize_scalar
from torch import Tensor
from torch.func import vmap

from gessl.adapt import Adapter
from gessl.losses import no_value_checks
from gessl.methods import Method
from gessl.methods.base import Params
from gessl.sigma import kl_in_direction
from gessl.tasks import Critic, TaskBatch

__all__ = [
    "BETA_RANGE",
    "GRID_LRS",
    "GRID_STEPS",
    "EvalSet",
    "Protocol",
    "calibrate",
    "measure",
    "task_sets",
]

#: the test-time grid of every model's tuned protocol: K steps …
GRID_STEPS = (1, 3, 10)
#: … of size α
GRID_LRS = (0.03, 0.1, 0.3, 1.0)
#: the range searched for a model's logit scale β (Brent's method on log β)
BETA_RANGE = (1e-3, 1e3)
#: the precision of every measurement: the models' own (they train in float32); the tasks and
#: their Bayes posteriors are drawn in float64 and rounded once (the floors fit in float64)
DTYPE = torch.float32


@dataclass(frozen=True)
class Protocol:
    """A test-time adaptation protocol: ``steps`` (K) SGD steps of size ``lr`` (α)."""

    steps: int
    lr: float

    @property
    def label(self) -> str:
        return f"K={self.steps},α={self.lr:g}"


@dataclass
class EvalSet:
    """Tasks of one seed for measuring (float64): support views and a query of new latents
    (``batch``), the tasks' parameters, two more views of the support's latents
    (``same_query``), and the Bayes log-probabilities on both queries."""

    batch: TaskBatch
    params: Tensor
    same_query: tuple[Tensor, Tensor]
    lp: Tensor
    lp_same: Tensor

    @classmethod
    def draw(
        cls, family: Any, gen: torch.Generator, tasks: int, n_samples: int, params: Any = None
    ) -> EvalSet:
        """``tasks`` fresh tasks of ``family`` — or, with ``params``, fresh samples of those
        tasks — drawn and their posteriors computed in float64 (kept as float64: :meth:`measured`
        rounds them for measuring)."""
        if params is None:
            params = family.sample_params(gen, tasks)
        batch, params, same = family.split_of(gen, params, n_samples)
        return cls(
            batch,
            params,
            same,
            family.bayes_log_probs(batch.query_a, batch.query_b, params),
            family.bayes_log_probs(*same, params),
        )

    def measured(self) -> EvalSet:
        """The set in the measuring precision :data:`DTYPE` (posteriors renormalised there)."""
        return EvalSet(
            self.batch.to(DTYPE),
            self.params,
            (self.same_query[0].to(DTYPE), self.same_query[1].to(DTYPE)),
            self.lp.to(DTYPE).log_softmax(-1),
            self.lp_same.to(DTYPE).log_softmax(-1),
        )

    @property
    def n_tasks(self) -> int:
        return self.batch.n_tasks


def task_sets(
    family: Any, seed: int, val: int, tasks: int, n_samples: int
) -> tuple[EvalSet, EvalSet]:
    """A seed's validation and test tasks (disjoint draws; the same for every model of that
    seed): ``val`` and ``tasks`` tasks of ``family`` with N = ``n_samples``."""
    v = EvalSet.draw(
        family, torch.Generator().manual_seed(1_000_003 * (seed + 1) + 11), val, n_samples
    )
    t = EvalSet.draw(
        family, torch.Generator().manual_seed(1_000_003 * (seed + 1) + 7), tasks, n_samples
    )
    return v, t


def _stack(trees: Sequence[Any]) -> Any:
    return torch.utils._pytree.tree_map(lambda *t: torch.stack(t), *trees)


def _per_query(kl: Tensor) -> Tensor:
    """σ per query of each task: ``[..., N, N]`` row KLs summed over rows, over N."""
    return kl.sum(-1) / kl.shape[-1]


def _kl(lp: Tensor, lq: Tensor) -> Tensor:
    """Row KL(p ‖ q) of finite log-probabilities (:func:`gessl.sigma.kl_rows` without its guard
    for zero probabilities against −∞, which finite rows never meet)."""
    return (lp.exp() * (lp - lq)).sum(-1)


def _measures(lp: Tensor, bayes: Tensor, which: Sequence[str]) -> dict[str, Tensor]:
    """The measures named in ``which`` — σ, excess, accuracy — per task (leading dims kept,
    the task's rows reduced)."""
    out = {}
    if "sigma" in which:
        out["sigma"] = _per_query(_kl(lp, bayes))
    if "excess" in which:
        out["excess"] = _per_query(_kl(bayes, lp))
    if "accuracy" in which:
        labels = torch.arange(lp.shape[-1], device=lp.device)
        out["accuracy"] = (lp.argmax(-1) == labels).to(lp.dtype).mean(-1)
    return out


# ----------------------------------------------------------------------------- calibration
def calibrate(
    logits_val: Tensor, lp_val: Tensor, logits_test: Tensor, lp_test: Tensor, direction: str
) -> tuple[float, float]:
    """The logit scale β minimising σ (``direction``) of ``softmax(β·logits)`` on the
    validation tasks (Brent's method on log β within :data:`BETA_RANGE`), and σ per query on
    the test tasks at that β: ``(β, σ_test)``."""

    def sigma_at(log_beta: float, logits: Tensor, lp: Tensor) -> float:
        scaled = torch.log_softmax(logits * math.exp(log_beta), dim=-1)
        return float(_per_query(kl_in_direction(scaled, lp, direction)).mean())

    lo, hi = (math.log(b) for b in BETA_RANGE)
    res = minimize_scalar(
        sigma_at,
        bounds=(lo, hi),
        args=(logits_val, lp_val),
        method="bounded",
        options={"xatol": 1e-4},
    )
    return math.exp(res.x), sigma_at(res.x, logits_test, lp_test)


# ----------------------------------------------------------------------------- trajectories
def _trajectories(
    method: Method,
    critic: Critic,
    params: Params,
    sets: list[EvalSet],
    lrs: Sequence[float],
    kmax: int,
    names: list[str] | None,
    term: tuple[int, int, str],
    full: set[int],
) -> dict[str, Tensor]:
    """Every model (leaves ``[P, ...]``, model p measured on ``sets[p]``) adapted at every
    step size of ``lrs`` for ``kmax`` steps: σ after each step k = 0 … kmax, and excess and
    accuracy after the steps in ``full`` (mean over the tasks, ``[A, P, kmax + 1]``, ``nan``
    where not measured); at k = K of ``term = (K, λ, direction)`` the σ-term
    KL(π_K ‖ π_K+λ) and σ on the same-latent query (``[A, P]``)."""
    a_n, p_n, t_n = len(lrs), len(sets), sets[0].n_tasks
    moving = set(params) if names is None else set(names)
    # one (α, model, task) triple per row: params and tasks repeated, α-major
    rows = a_n * p_n * t_n

    def per_row(t: Tensor) -> Tensor:  # [P, ...] → [A·P·T, ...]
        x = t.unsqueeze(0).unsqueeze(2).expand(a_n, p_n, t_n, *t.shape[1:])
        return x.reshape(rows, *t.shape[1:])

    def tasks_row(t: Tensor) -> Tensor:  # [P, T, ...] → [A·P·T, ...]
        return t.unsqueeze(0).expand(a_n, *t.shape).reshape(rows, *t.shape[2:])

    views = zip(*(s.batch.views() for s in sets))
    batch = TaskBatch.of_views([tasks_row(torch.stack(v)) for v in views])
    lp = tasks_row(torch.stack([s.lp for s in sets]))
    lp_same = tasks_row(torch.stack([s.lp_same for s in sets]))
    same_a = tasks_row(torch.stack([s.same_query[0] for s in sets]))
    same_b = tasks_row(torch.stack([s.same_query[1] for s in sets]))
    lr = torch.tensor(lrs, dtype=DTYPE).reshape(a_n, 1, 1).expand(a_n, p_n, t_n).reshape(rows)
    fixed = {k: per_row(v) for k, v in params.items() if k not in moving}
    dense = {k: per_row(v) for k, v in params.items() if k in moving}

    def step(f: Params, d: Params, task: TaskBatch, rate: Tensor) -> Params:
        ad = Adapter(f)

        def loss(p: Params) -> Tensor:
            return method.loss(p, task.support_a, task.support_b).loss

        return ad.step(Adapter.start(d), loss, rate, detach=True)[0]["dense"]

    def log_pi(f: Params, d: Params, a: Tensor, b: Tensor) -> Tensor:
        p = {**f, **d}
        return critic.log_probs(method.embed(p, a), method.embed(p, b))

    k_term, lam, direction = term
    out: dict[str, list[Tensor]] = {"sigma": [], "excess": [], "accuracy": []}
    held = None
    shape = (a_n, p_n, t_n)
    with torch.no_grad(), no_value_checks():
        lp_now = vmap(log_pi)(fixed, dense, batch.query_a, batch.query_b)
        for k in range(kmax + 1):
            if k:
                dense = vmap(step)(fixed, dense, batch, lr)
                lp_now = vmap(log_pi)(fixed, dense, batch.query_a, batch.query_b)
            which = ("sigma", "excess", "accuracy") if k in full else ("sigma",)
            got = _measures(lp_now, lp, which)
            for key in out:
                v = got.get(key)
                out[key].append(
                    v.reshape(shape).mean(-1) if v is not None else torch.full(shape[:2], math.nan)
                )
            if k == k_term:
                held = lp_now
                same = vmap(log_pi)(fixed, dense, same_a, same_b)
                same_sigma = _measures(same, lp_same, ("sigma",))["sigma"].reshape(shape).mean(-1)
            if k == k_term + lam:
                kl = _per_query(kl_in_direction(held, lp_now, direction))
                sigma_term = kl.reshape(shape).mean(-1)
    result = {key: torch.stack(v, -1) for key, v in out.items()}
    result["sigma_term"], result["same_latents"] = sigma_term, same_sigma
    return result


# ----------------------------------------------------------------------------- measure
def measure(
    method: Method,
    models: Sequence[Params],
    validation: Sequence[EvalSet],
    test: Sequence[EvalSet],
    *,
    fixed: Sequence[Protocol],
    lookahead: int,
    kl_direction: str = "sigma",
    names: list[str] | None = None,
    grid_steps: Sequence[int] = GRID_STEPS,
    grid_lrs: Sequence[float] = GRID_LRS,
    budget: int = 10,
    calibrated: bool = True,
) -> list[dict[str, Any]]:
    """Every measure of the module docstring for each model (its parameters ``models[p]``,
    measured on ``validation[p]`` and ``test[p]``, the sets of its seed).

    Args:
        method: defines the model family (its embeddings, loss and critic).
        fixed: the fixed protocols measured (e.g. GeSSL's training K and α); the first is the
            one of the σ-term (with ``lookahead`` λ, in ``kl_direction``) and of the
            same-latents measure.
        names: the parameters test-time adaptation moves (default: all; the head with
            ``adapt="projector"``).
        grid_steps, grid_lrs: the tuning grid; ``budget``: the curve's largest k.
        calibrated: also fit each model's logit scale (off: no ``beta_*`` and
            ``*_phi_calibrated`` entries).

    Returns one dictionary per model, JSON-ready (see ``docs/reproduction.md`` for the keys).
    """
    critic = method.task_critic()
    params = _stack([{k: v.detach().to(DTYPE) for k, v in m.items()} for m in models])
    validation = [s.measured() for s in validation]
    test = [s.measured() for s in test]
    lrs = sorted({*grid_lrs, *(p.lr for p in fixed)})
    first = fixed[0]
    kmax = max(budget, *grid_steps, *(p.steps for p in fixed), first.steps + lookahead)
    term = (first.steps, lookahead, kl_direction)
    ia = {lr: i for i, lr in enumerate(lrs)}
    full = {0, *grid_steps, *(p.steps for p in fixed)}
    val = _trajectories(method, critic, params, list(validation), lrs, kmax, names, term, full)
    tst = _trajectories(method, critic, params, list(test), lrs, kmax, names, term, full)
    out = []
    for p in range(len(models)):
        v_set, t_set = validation[p], test[p]
        # φ: k = 0 of any α; its raw logits for the calibration
        phi = {k: v[p] for k, v in params.items()}
        rec: dict[str, Any] = {
            "sigma_phi_raw": float(tst["sigma"][0, p, 0]),
            "excess_phi_raw": float(tst["excess"][0, p, 0]),
            "accuracy_phi": float(tst["accuracy"][0, p, 0]),
        }
        if calibrated:
            lv = _phi_logits(method, critic, phi, v_set)
            lt = _phi_logits(method, critic, phi, t_set)
            for d, key in (("sigma", "sigma"), ("sigma_excess", "excess")):
                beta, value = calibrate(lv, v_set.lp, lt, t_set.lp, d)
                rec[f"beta_{key}"], rec[f"{key}_phi_calibrated"] = beta, value
        rec["fixed"] = {
            fp.label: {
                "sigma_adapted": float(tst["sigma"][ia[fp.lr], p, fp.steps]),
                "excess_adapted": float(tst["excess"][ia[fp.lr], p, fp.steps]),
                "accuracy_adapted": float(tst["accuracy"][ia[fp.lr], p, fp.steps]),
            }
            for fp in fixed
        }
        rec["sigma_term"] = float(tst["sigma_term"][ia[first.lr], p])
        rec["sigma_adapted_same_latents"] = float(tst["same_latents"][ia[first.lr], p])
        grid = [(k, lr) for k in grid_steps for lr in grid_lrs]
        for key in ("sigma", "excess"):
            scores = [float(val[key][ia[lr], p, k]) for k, lr in grid]
            k, lr = grid[int(np.nanargmin(scores))] if np.isfinite(scores).any() else grid[0]
            rec[f"protocol_{key}"] = [k, lr]
            rec[f"{key}_adapted_tuned"] = float(tst[key][ia[lr], p, k])
        k, lr = rec["protocol_sigma"]
        rec["accuracy_adapted_tuned"] = float(tst["accuracy"][ia[lr], p, k])
        curve_alpha, curve = [], []
        for k in range(1, budget + 1):
            scores = [float(val["sigma"][ia[lr], p, k]) for lr in grid_lrs]
            best = grid_lrs[int(np.nanargmin(scores))] if np.isfinite(scores).any() else grid_lrs[0]
            curve_alpha.append(best)
            curve.append(float(tst["sigma"][ia[best], p, k]))
        rec["budget_alpha"], rec["budget_sigma"] = curve_alpha, curve
        out.append({k: _clean(v) for k, v in rec.items()})
    return out


def _phi_logits(method: Method, critic: Critic, phi: Params, s: EvalSet) -> Tensor:
    """The model's logits on the set's new-latent query views ``[T, N, N]``."""

    def one(a: Tensor, b: Tensor) -> Tensor:
        return critic.logits(method.embed(phi, a), method.embed(phi, b))

    with torch.no_grad(), no_value_checks():
        return vmap(one)(s.batch.query_a, s.batch.query_b)


def _clean(v: Any) -> Any:
    """Non-finite floats (a model that blew up) as ``None`` (JSON); containers recursively."""
    if isinstance(v, float):
        return v if math.isfinite(v) else None
    if isinstance(v, dict):
        return {k: _clean(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_clean(x) for x in v]
    return v
