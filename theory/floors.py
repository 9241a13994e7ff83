"""Floors of σ: how close the best member of a model family can come to the Bayes posterior.

σ of a trained model mixes two things: how far training left it from the best model its family
can express, and how far that best model is from the optimum (the *floor*). A σ is only
interpretable beside its floor, so every σ this suite reports of a model family comes with the
family's floor on the same tasks, in the same KL direction (``docs/reproduction.md``):

* ``shared`` — one set of parameters for all tasks: the floor of a task-agnostic model (the
  shared parameters φ);
* ``per_task`` — parameters fitted to each task separately: the floor of task-specific models
  (the model after adaptation). A family that contains every task's Bayes critic has per-task
  floor 0 (to optimiser tolerance); one that does not, e.g. a cosine critic, has a floor > 0.

* ``reachable`` (:func:`fit_reachable_floor`) — one set of parameters φ, each task then adapted
  by the same K SGD steps of size α on its support views that the measured models take: the floor
  of σ *after that adaptation*. It is what a σ after K steps can be compared with; the per-task
  floor is the floor of unlimited adaptation.

**Optimiser.** L-BFGS (SciPy's ``L-BFGS-B`` without bounds, Byrd et al. 1995, history 20) in
float64 on the σ of the chosen direction, summed over tasks (per-task fits are independent but
solved as one problem), its gradient from torch's autograd, started from the given parameters.
It runs until the largest absolute gradient entry is ≤ ``grad_tol`` (``1e-6``), or the value is
≤ ``value_tol`` per query (``1e-6``: the floor is 0 to optimiser tolerance), or ``max_iter``
iterations are spent (at most :data:`SHARED_LBFGS` for a shared or reachable fit), or an
iteration no longer lowers the value (relative change below 1e-15). A shared or
reachable fit that has not met the gradient test by then is polished by a trust-region Newton
method with the exact Hessian (SciPy's ``trust-exact``, Conn, Gould & Toint 2000, ch. 7; the
Hessian by ``torch.func.jacrev`` of the gradient, up to ``polish_iter`` iterations): these
families have nearly flat directions (symmetries of the critic) along which L-BFGS crawls.
**Convergence check:** ``converged`` is true when the gradient or the value test held; otherwise
the value is an upper estimate of the floor (the fit is non-convex in general and is always an
upper estimate of the family's true minimum).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np
import torch
from scipy.optimize import minimize
from torch import Tensor
from torch.func import vmap

from gessl.adapt import adapt_tasks
from gessl.methods.base import Method, Params
from gessl.sigma import DIRECTIONS, check_direction, kl_in_direction
from gessl.tasks import Critic, TaskBatch

#: L-BFGS iterations of a shared fit before the Newton polish takes over
SHARED_LBFGS = 150

__all__ = [
    "DIRECTIONS",
    "Floor",
    "fit_floor",
    "fit_reachable_floor",
    "linear_critic_floor",
    "minimize_tasks",
]


@dataclass
class Floor:
    """A fitted floor: σ per query of the best member found, and how the fit ended
    (``params``: the fitted parameters, not part of the record)."""

    value: float
    se: float | None
    direction: str
    kind: str
    tasks: int
    iterations: int
    grad_max: float
    converged: bool
    params: dict[str, Tensor] | None = field(default=None, repr=False)

    def to_dict(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "params"}
        return {
            k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in d.items()
        }

    def describe(self) -> str:
        tail = "" if self.converged else ", not converged: an upper estimate"
        return f"{self.kind} floor {self.value:.3g} ({self.direction}, {self.tasks} tasks{tail})"


def fit_floor(
    method: Method,
    critic: Critic,
    views: tuple[Tensor, Tensor],
    log_p_opt: Tensor,
    direction: str = "sigma",
    kind: str = "shared",
    init: Params | None = None,
    max_iter: int = 600,
    grad_tol: float = 1e-6,
    value_tol: float = 1e-6,
    polish_iter: int = 200,
) -> Floor:
    """Fit the family's best member against the optimal posterior and return its σ per query.

    Args:
        method: defines the family (``method.embed(params, x)``); its parameters are not changed.
        critic: the critic of π.
        views: query views ``(a, b)``, each ``[T, N, ...]``; π ranks ``b`` for each row of ``a``.
        log_p_opt: ``[T, N, N]`` log-probabilities of the optimal task model (e.g. Bayes).
        direction: one of :data:`DIRECTIONS`.
        kind: ``"shared"`` (one fit for all tasks) or ``"per_task"``.
        init: starting parameters (default: the method's current ones); for a per-task fit,
            shared parameters (e.g. a shared fit's) copied to every task.
        max_iter, grad_tol, value_tol, polish_iter: the stopping rules of the module docstring.
    """
    check_direction(direction, "direction")
    if kind not in ("shared", "per_task"):
        raise ValueError(f"kind must be 'shared' or 'per_task', got {kind!r}")
    a, b = (v.to(torch.float64) for v in views)
    lp = log_p_opt.to(torch.float64)
    t, n = a.shape[0], a.shape[1]
    # functional calls take the float64 parameters given; the module itself is not touched
    embed = vmap(method.embed, in_dims=(0 if kind == "per_task" else None, 0))

    def per_task_sigma(p: Params) -> Tensor:
        lf = critic.log_probs(embed(p, a), embed(p, b))
        return kl_in_direction(lf, lp, direction).sum(-1) / n  # [T]: σ per query of each task

    start = init if init is not None else method.online_params()
    fit = minimize_tasks(per_task_sigma, start, t, kind, max_iter, grad_tol, value_tol, polish_iter)
    return Floor(direction=direction, kind=kind, tasks=t, **fit)


def fit_reachable_floor(
    method: Method,
    critic: Critic,
    batch: TaskBatch,
    log_p_opt: Tensor,
    steps: int,
    lr: float,
    direction: str = "sigma",
    names: list[str] | None = None,
    init: Params | None = None,
    max_iter: int = 600,
    grad_tol: float = 1e-6,
    value_tol: float = 1e-6,
    polish_iter: int = 200,
) -> Floor:
    """The floor of σ after a K-step adaptation: ``min_φ mean_tasks σ(θ_K(φ))`` with
    ``θ_K(φ)`` the ``steps`` SGD steps of size ``lr`` on each task's support views
    (:func:`gessl.adapt.adapt_tasks`, the measured models' adaptation; only ``names`` move) and
    σ on its query views against ``log_p_opt``. Fitted through the inner steps with the
    optimiser of the module docstring, from ``init`` (default: the method's parameters).
    """
    check_direction(direction, "direction")
    qa, qb = batch.query_a.to(torch.float64), batch.query_b.to(torch.float64)
    batch = batch.to(torch.float64)
    lp = log_p_opt.to(torch.float64)
    t, n = qa.shape[0], qa.shape[1]
    embed = vmap(method.embed, in_dims=(0, 0))

    def per_task_sigma(phi: Params) -> Tensor:
        adapted, _ = adapt_tasks(
            method, batch, steps, lr, start=phi, names=names, differentiable=True
        )
        lf = critic.log_probs(embed(adapted, qa), embed(adapted, qb))
        return kl_in_direction(lf, lp, direction).sum(-1) / n

    start = init if init is not None else method.online_params()
    fit = minimize_tasks(
        per_task_sigma, start, t, "shared", max_iter, grad_tol, value_tol, polish_iter
    )
    return Floor(direction=direction, kind=f"reachable(K={steps}, α={lr:g})", tasks=t, **fit)


def minimize_tasks(
    per_task_value: Callable[[Params], Tensor],
    start: Params,
    tasks: int,
    kind: str,
    max_iter: int,
    grad_tol: float,
    value_tol: float,
    polish_iter: int,
) -> dict[str, Any]:
    """Minimise the mean over tasks of ``per_task_value(params)`` (``[T]``) over shared
    parameters (``kind="shared"``) or each task's own (``"per_task"``: leading dim T), from
    ``start``; the optimiser and stopping rules of the module docstring. Returns the fields of
    a :class:`Floor` but its direction, kind and task count."""
    t = tasks
    base = {k: v.detach().to(torch.float64) for k, v in start.items()}
    if kind == "per_task":
        base = {k: v.expand(t, *v.shape).clone() for k, v in base.items()}
    names = list(base)
    shapes = [base[k].shape for k in names]
    sizes = [base[k].numel() for k in names]
    scale = 1.0 if kind == "per_task" else 1.0 / t  # per-task fits: each task's own gradient
    per = t if kind == "per_task" else 1.0  # the objective over this: σ per query, mean over tasks

    def unflat(x: Tensor) -> Params:
        return {k: p.reshape(s) for k, p, s in zip(names, x.split(sizes), shapes)}

    def fun(x: np.ndarray) -> tuple[float, np.ndarray]:
        leaf = torch.from_numpy(x).requires_grad_(True)
        value = per_task_value(unflat(leaf)).sum() * scale
        (g,) = torch.autograd.grad(value, leaf)
        return float(value.detach()), g.numpy()

    def stop_at_zero(intermediate_result: Any) -> None:  # SciPy passes the result by this name
        if intermediate_result.fun / per <= value_tol:  # the floor is 0 to optimiser tolerance
            raise StopIteration

    x0 = torch.cat([base[k].flatten() for k in names]).numpy()
    res = minimize(
        fun,
        x0,
        jac=True,
        method="L-BFGS-B",
        callback=stop_at_zero,
        # a shared fit hands over to the Newton polish after 150 iterations (its flat
        # directions make L-BFGS crawl); a per-task fit has no polish and takes the budget
        options={
            "maxiter": min(max_iter, SHARED_LBFGS)
            if kind == "shared" and polish_iter
            else max_iter,
            "maxcor": 20,
            "gtol": grad_tol,
            "ftol": 1e-15,
        },
    )
    x, done = res.x, int(res.nit)
    _, g = fun(x)
    grad_max = float(np.abs(g).max())
    if kind == "shared" and grad_max > grad_tol and res.fun / per > value_tol and polish_iter > 0:
        x, extra = _polish(per_task_value, unflat, x, grad_tol, polish_iter)
        done += extra
        _, g = fun(x)
        grad_max = float(np.abs(g).max())
    with torch.no_grad():
        fitted = unflat(torch.from_numpy(x))
        final = per_task_value(fitted)
    mean = float(final.mean())
    se = float(final.std() / math.sqrt(t)) if kind == "per_task" and t > 1 else None
    return {
        "value": mean,
        "se": se,
        "iterations": done,
        "grad_max": grad_max,
        "converged": bool(grad_max <= grad_tol or mean <= value_tol),
        "params": {k: v.detach().clone() for k, v in fitted.items()},
    }


def _polish(
    per_task_value: Callable[[Params], Tensor],
    unflat: Callable[[Tensor], Params],
    x0: np.ndarray,
    grad_tol: float,
    max_iter: int,
) -> tuple[np.ndarray, int]:
    """Trust-region Newton iterations (SciPy's ``trust-exact``) on the shared parameters from
    ``x0``; the point reached (never above the start) and the iterations taken. The gradient and
    the exact Hessian of the mean come from ``torch.func``."""

    def mean(x: Tensor) -> Tensor:
        return per_task_value(unflat(x)).mean()

    def fun(x: np.ndarray) -> tuple[float, np.ndarray]:
        g, value = torch.func.grad_and_value(mean)(torch.from_numpy(x))
        return float(value), g.numpy()

    def hess(x: np.ndarray) -> np.ndarray:
        # reverse over reverse: torch's forward-mode decompositions load through the deprecated
        # torch.jit.script (a DeprecationWarning in torch 2.13)
        return torch.func.jacrev(torch.func.grad(mean))(torch.from_numpy(x)).numpy()

    res = minimize(
        fun,
        x0,
        jac=True,
        hess=hess,
        method="trust-exact",
        options={"gtol": grad_tol, "maxiter": max_iter},
    )
    before = fun(x0)[0]
    return (res.x if float(res.fun) <= before else x0), int(res.nit)


def linear_critic_floor(
    views: tuple[Tensor, Tensor],
    log_p_opt: Tensor,
    critic: str,
    temperature: float,
    direction: str = "sigma",
) -> Floor:
    """The shared floor of the family "linear map ``z = Wx + b`` (``W`` square), then the named
    critic at ``temperature``" on these views, fitted from the identity map (so the value is at
    most the σ of the raw views under that critic)."""
    from gessl.methods import build_method
    from gessl.models import Flatten

    dim = views[0].shape[-1]
    method = build_method(
        "infonce", Flatten(dim), proj_dims=(dim,), critic=critic, temperature=temperature
    )
    init = {
        "projector.0.weight": torch.eye(dim, dtype=torch.float64),
        "projector.0.bias": torch.zeros(dim, dtype=torch.float64),
    }
    return fit_floor(method, method.task_critic(), views, log_p_opt, direction, init=init)
