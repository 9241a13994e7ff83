"""Running a per-task function over the tasks of a batch: ``torch.func.vmap`` or a loop.

``in_dims`` follows ``vmap``: 0 for an argument whose leaves carry the tasks on their first dim
(a :class:`gessl.tasks.TaskBatch`, per-task parameters), ``None`` for one shared by all tasks.

**Populations** (``seeds=S``): the batch holds the M tasks of each of S independent models, as
S·M tasks (seed-major), and every ``None`` argument holds one value per model (leaves ``[S,
...]``). Each model's value is expanded to its M tasks and one ``vmap`` runs over all S·M
(seed, task) pairs — one level of batching instead of a ``vmap`` over seeds around a ``vmap``
over tasks, which costs a second layer of dispatch on every operation; the gradients of the
per-model arguments are each model's own (the expansion's backward sums its M tasks).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor
from torch.func import grad, vmap
from torch.utils._pytree import tree_leaves, tree_map

__all__ = ["BATCHINGS", "per_task", "summed_grad"]

#: ``"vmap"``: tasks batched with ``torch.func.vmap``; ``"loop"``: a Python loop over tasks
BATCHINGS = ("vmap", "loop")


def _tasks(args: tuple, in_dims: tuple[int | None, ...]) -> int:
    return next(len(leaf) for a, d in zip(args, in_dims) if d == 0 for leaf in tree_leaves(a))


def _fed(args: tuple, in_dims: tuple[int | None, ...], seeds: int) -> list[Any]:
    """A population's arguments for one ``vmap`` over its S·M tasks: each per-model argument
    expanded to its model's M tasks."""
    m = _tasks(args, in_dims) // seeds

    def expand(t: Tensor) -> Tensor:
        return t.unsqueeze(1).expand(seeds, m, *t.shape[1:]).reshape(seeds * m, *t.shape[1:])

    return [
        tree_map(expand, a) if d is None and a is not None else a for a, d in zip(args, in_dims)
    ]


def _dims(fed: list[Any]) -> tuple[int | None, ...]:
    """``vmap``'s in_dims for a population's fed arguments (an absent argument: ``None``)."""
    return tuple(None if a is None else 0 for a in fed)


def _per_model(tree: Any, seeds: int) -> Any:
    """Per-task values ``[S·M, ...]`` as ``[S, M, ...]``."""
    return tree_map(lambda t: t.reshape(seeds, -1, *t.shape[1:]), tree)


def per_task(
    fn: Callable[..., Any],
    in_dims: tuple[int | None, ...],
    *args: Any,
    batching: str = "vmap",
    seeds: int | None = None,
) -> Any:
    """``fn`` over the tasks (dim 0 of the arguments whose ``in_dims`` is 0), outputs stacked
    (for a population: over its S·M tasks, outputs ``[S·M, ...]``)."""
    if seeds is not None:
        fed = _fed(args, in_dims, seeds)
        return vmap(fn, in_dims=_dims(fed))(*fed)
    if batching == "vmap":
        return vmap(fn, in_dims=in_dims)(*args)
    n = _tasks(args, in_dims)
    outs = [
        fn(*[a if d is None else tree_map(lambda t, i=i: t[i], a) for a, d in zip(args, in_dims)])
        for i in range(n)
    ]
    return tree_map(lambda *xs: torch.stack(xs), *outs)


def summed_grad(
    fn: Callable[..., tuple[Tensor, Any]],
    n_diff: int,
    in_dims: tuple[int | None, ...],
    *args: Any,
    nested: bool,
    batching: str = "vmap",
    seeds: int | None = None,
) -> tuple[tuple[dict[str, Tensor], ...], Any]:
    """Gradient of ``Σ_tasks fn(...)[0]`` with respect to the first ``n_diff`` arguments
    (summed over tasks, also for per-task arguments), and ``fn``'s aux stacked over tasks.

    With ``vmap`` and a function without inner gradients (``nested=False``: a plain loss, the
    split first-order outer objective) the gradient of the *sum* is taken, so a shared parameter
    gets one accumulated gradient (one matrix product) instead of M per-task gradients summed
    afterwards; a function with inner gradients (``nested=True``) keeps ``vmap(grad(·))``, the
    composition ``torch.func`` differentiates correctly through nested inner steps (in torch
    2.13 the gradient of the task sum through nested ``grad`` inside ``vmap`` is wrong for batch
    normalisation with adapted affine parameters; per-task gradients are right).

    For a population (``seeds=S``): the same per model — gradients ``[S, ...]`` (the sum over
    each model's M tasks) and aux ``[S, M]``.
    """
    argnums = tuple(range(n_diff))
    if seeds is not None:
        return _summed_grad_population(fn, argnums, in_dims, args, nested, seeds)
    if batching == "vmap" and not nested:

        def total(*diff: Any) -> tuple[Tensor, Any]:
            losses, aux = vmap(fn, in_dims=in_dims)(*diff, *args[n_diff:])
            return losses.sum(), aux

        grads, aux = grad(total, argnums=argnums, has_aux=True)(*args[:n_diff])
        grads = tuple(
            tree_map(lambda t: t.sum(0), g) if d == 0 else g for g, d in zip(grads, in_dims)
        )
        return grads, aux
    one = grad(fn, argnums=argnums, has_aux=True)
    grads, aux = per_task(one, in_dims, *args, batching=batching)
    return tuple(tree_map(lambda t: t.sum(0), g) for g in grads), aux


def _summed_grad_population(
    fn: Callable[..., tuple[Tensor, Any]],
    argnums: tuple[int, ...],
    in_dims: tuple[int | None, ...],
    args: tuple,
    nested: bool,
    seeds: int,
) -> tuple[tuple[dict[str, Tensor], ...], Any]:
    n_diff = len(argnums)

    def per_model_sum(g: Any) -> Any:
        return tree_map(lambda t: t.sum(1), _per_model(g, seeds))

    if not nested:

        def total(*diff: Any) -> tuple[Tensor, Any]:
            fed = _fed((*diff, *args[n_diff:]), in_dims, seeds)
            losses, aux = vmap(fn, in_dims=_dims(fed))(*fed)
            return losses.sum(), aux

        grads, aux = grad(total, argnums=argnums, has_aux=True)(*args[:n_diff])
        grads = tuple(per_model_sum(g) if d == 0 else g for g, d in zip(grads, in_dims))
        return grads, _per_model(aux, seeds)
    one = grad(fn, argnums=argnums, has_aux=True)
    fed = _fed(args, in_dims, seeds)
    grads, aux = vmap(one, in_dims=_dims(fed))(*fed)
    return tuple(per_model_sum(g) for g in grads), _per_model(aux, seeds)
