"""Running a per-task function over the M tasks of a batch: ``torch.func.vmap`` or a loop.

``in_dims`` follows ``vmap``: 0 for an argument whose leaves carry the tasks on their first dim
(a :class:`gessl.tasks.TaskBatch`, per-task parameters), ``None`` for one shared by all tasks.
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


def per_task(
    fn: Callable[..., Any], in_dims: tuple[int | None, ...], *args: Any, batching: str = "vmap"
) -> Any:
    """``fn`` over the tasks (dim 0 of the arguments whose ``in_dims`` is 0), outputs stacked."""
    if batching == "vmap":
        return vmap(fn, in_dims=in_dims)(*args)
    n = next(len(leaf) for a, d in zip(args, in_dims) if d == 0 for leaf in tree_leaves(a))
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
    """
    argnums = tuple(range(n_diff))
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
