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

**Optimiser.** L-BFGS (``torch.optim.LBFGS``, strong-Wolfe line search, history 20) in float64
on the σ of the chosen direction, summed over tasks (per-task fits are independent but solved as
one problem), started from the given parameters. It runs in rounds of up to 100 iterations until
the largest absolute gradient entry is ≤ ``grad_tol`` (``1e-6``), or the value is ≤
``value_tol`` per query (``1e-6``: the floor is 0 to optimiser tolerance), or ``max_iter``
iterations are spent, or a round improves the value by less than 1e-12 relative. **Convergence
check:** ``converged`` is true when one of the first two held; otherwise the value is an upper
estimate of the floor (the fit is non-convex in general and is always an upper estimate of the
family's true minimum).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import Any

import torch
from torch import Tensor
from torch.func import vmap

from gessl.methods.base import Method, Params
from gessl.sigma import kl_rows
from gessl.tasks import Critic

__all__ = ["DIRECTIONS", "Floor", "fit_floor", "linear_critic_floor"]

#: ``"sigma"`` = KL(π_model ‖ π*) (the paper's direction), ``"sigma_excess"`` = KL(π* ‖ π_model)
DIRECTIONS = ("sigma", "sigma_excess")


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
        max_iter, grad_tol, value_tol: the stopping rules of the module docstring.
    """
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {DIRECTIONS}, got {direction!r}")
    if kind not in ("shared", "per_task"):
        raise ValueError(f"kind must be 'shared' or 'per_task', got {kind!r}")
    a, b = (v.to(torch.float64) for v in views)
    lp = log_p_opt.to(torch.float64)
    t, n = a.shape[0], a.shape[1]
    start = init if init is not None else method.online_params()
    base = {k: v.detach().to(torch.float64) for k, v in start.items()}
    if kind == "per_task":
        base = {k: v.expand(t, *v.shape).clone() for k, v in base.items()}
    names = list(base)
    leaves = [base[k].clone().requires_grad_(True) for k in names]
    # functional calls take the float64 parameters given; the module itself is not touched
    embed = vmap(method.embed, in_dims=(0 if kind == "per_task" else None, 0))

    def per_task_sigma() -> Tensor:
        p = dict(zip(names, leaves))
        lf = critic.log_probs(embed(p, a), embed(p, b))
        kl = kl_rows(lf, lp) if direction == "sigma" else kl_rows(lp, lf)
        return kl.sum(-1) / n  # [T]: σ per query of each task

    opt = torch.optim.LBFGS(
        leaves,
        lr=1.0,
        max_iter=100,
        history_size=20,
        tolerance_grad=grad_tol,
        tolerance_change=1e-15,
        line_search_fn="strong_wolfe",
    )
    scale = 1.0 if kind == "per_task" else 1.0 / t  # per-task fits: each task's own gradient

    def closure() -> Tensor:
        opt.zero_grad()
        loss = per_task_sigma().sum() * scale
        loss.backward()
        return loss

    done, previous = 0, math.inf
    while done < max_iter:
        opt.step(closure)
        done = int(opt.state[leaves[0]].get("n_iter", done + 1))
        value = float(closure().detach())
        grad_max = max(float(x.grad.abs().max()) for x in leaves)
        mean_now = value / (t if kind == "per_task" else 1.0)  # σ per query, mean over tasks
        if grad_max <= grad_tol or mean_now <= value_tol:
            break
        if previous - value <= 1e-12 * max(abs(value), 1e-300):
            break
        previous = value
    with torch.no_grad():
        final = per_task_sigma()
    closure()
    grad_max = max(float(x.grad.abs().max()) for x in leaves)
    mean = float(final.mean())
    se = float(final.std() / math.sqrt(t)) if kind == "per_task" and t > 1 else None
    converged = grad_max <= grad_tol or mean <= value_tol
    fitted = {k: v.detach() for k, v in zip(names, leaves)}
    return Floor(mean, se, direction, kind, t, done, grad_max, bool(converged), fitted)


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
