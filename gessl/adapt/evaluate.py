"""Test-time adaptation: K SGD steps per task on its support views, for measuring.

The same step as training (:class:`gessl.adapt.sgd.Adapter`, dense backend), batched over tasks
with ``torch.func.vmap``: the evaluation's task-specific models (the ``trained`` provider of the
universality report), σ after K test-time steps in the fair test, the adaptation-budget curve
(σ after every step), and the floors reachable by a K-step adaptation (differentiable in the
starting parameters, :func:`theory.floors.fit_reachable_floor`).
"""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor
from torch.func import vmap

from gessl.adapt.sgd import Adapter
from gessl.losses import no_value_checks
from gessl.methods.base import Method, Params
from gessl.tasks import TaskBatch

__all__ = ["adapt_tasks", "support_loss_fn"]


def support_loss_fn(method: Method) -> Callable[[Params, TaskBatch, dict], Tensor]:
    """``loss(params, task, targets)``: the method's loss on one task's support views."""

    def loss(p: Params, task: TaskBatch, targets: dict[str, Tensor]) -> Tensor:
        return method.loss(p, task.support_a, task.support_b, targets or None).loss

    return loss


def adapt_tasks(
    method: Method,
    batch: TaskBatch,
    steps: int,
    lr: float | Tensor,
    *,
    start: Params | None = None,
    names: list[str] | None = None,
    patience: int | None = None,
    tol: float = 1e-4,
    check_every: int = 5,
    differentiable: bool = False,
    on_step: Callable[[int, Params], None] | None = None,
) -> tuple[Params, int]:
    """SGD on each task's support views from the method's parameters (or ``start``), tasks
    batched with vmap; only the parameters in ``names`` move (default: all; e.g. the head's
    names for projector-only adaptation), the others stay shared.

    Args:
        steps: at most this many steps (K).
        lr: α.
        patience: check the mean support loss every ``check_every`` steps and stop once it has
            not improved by ``tol`` for ``patience`` checks.
        differentiable: keep the graph through the steps (the result is differentiable in
            ``start``, e.g. for a floor fitted through the adaptation); else every step is
            detached.
        on_step: ``on_step(k, params)`` after step k (per-task parameters, leading dim M).

    Returns:
        per-task parameters (leading dim M; every name, the fixed ones repeated) and the number
        of steps taken (0 steps: φ itself, repeated per task).
    """
    source = method.online_params() if start is None else start
    phi = dict(source) if differentiable else {k: v.detach() for k, v in source.items()}
    m = batch.n_tasks
    moving = set(phi) if names is None else set(names)
    fixed = {k: v for k, v in phi.items() if k not in moving}
    dense = {k: v.expand(m, *v.shape) for k, v in phi.items() if k in moving}
    targets = method.targets(batch.support_a, batch.support_b, batched=True) or {}
    loss = support_loss_fn(method)
    adapter = Adapter(fixed)

    def step(d: Params, task: TaskBatch, tg: dict[str, Tensor]) -> Params:
        state, _ = adapter.step(
            Adapter.start(d), lambda p: loss(p, task, tg), lr, detach=not differentiable
        )
        return state["dense"]

    def value(d: Params, task: TaskBatch, tg: dict[str, Tensor]) -> Tensor:
        return loss({**fixed, **d}, task, tg)

    step_fn, value_fn = vmap(step), vmap(value)
    best, since, taken = float("inf"), 0, 0
    with no_value_checks():
        for taken in range(1, steps + 1):
            dense = step_fn(dense, batch, targets)
            if on_step is not None:
                on_step(taken, _every(phi, fixed, dense, m))
            if patience is not None and taken % check_every == 0:
                current = float(value_fn(dense, batch, targets).mean())
                if current < best - tol:
                    best, since = current, 0
                else:
                    since += 1
                    if since >= patience:
                        break
    return _every(phi, fixed, dense, m), taken


def _every(phi: Params, fixed: Params, dense: Params, m: int) -> Params:
    """Every parameter per task, in φ's order (the fixed ones repeated)."""
    return {k: dense[k] if k in dense else fixed[k].expand(m, *fixed[k].shape) for k in phi}
