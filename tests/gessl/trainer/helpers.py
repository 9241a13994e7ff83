"""Small float64 trainers for the gradient tests."""

from __future__ import annotations

import torch

from gessl.data import GaussianLatentTasks
from gessl.methods import build_method
from gessl.models import MLP
from gessl.tasks import TaskBatch
from gessl.trainer import GeSSLConfig, Trainer


def make_trainer(
    method: str = "simclr",
    seed: int = 0,
    n_samples: int = 6,
    dim: int = 5,
    options: dict | None = None,
    fast_path: bool = True,
    **cfg,
) -> Trainer:
    torch.manual_seed(seed)
    # tanh everywhere: a smooth network, so finite differences are exact to O(h²)
    m = build_method(
        method,
        MLP(dim, width=8, activation="tanh"),
        proj_dims=(8, 4),
        head_activation="tanh",
        **(options or {}),
    ).double()
    cfg.setdefault("tasks_per_step", 3)
    return Trainer(
        m,
        GaussianLatentTasks(dim=dim),
        GeSSLConfig(seed=seed, **cfg),
        n_samples=n_samples,
        fast_path=fast_path,
    )


def mean_gradient(tr: Trainer, batch) -> dict[str, torch.Tensor]:
    sums, _ = tr.task_gradients(batch)
    return {k: v / batch.n_tasks for k, v in sums.items()}


def mean_objective(
    tr: Trainer,
    batch,
    params: dict[str, torch.Tensor],
    g_params: dict[str, torch.Tensor] | None = None,
) -> float:
    """The mean over tasks of the outer objective at ``params`` (names of online params)."""
    adapt = {k: params[k] for k in tr.adapt_names}
    fixed = {k: params[k] for k in tr.fixed_names}
    g = (
        g_params
        if g_params is not None
        else (dict(tr.threshold_net.named_parameters()) if tr.threshold_net else {})
    )
    targets = tr._targets(batch)
    objective = tr.outer_step.reference  # the nested objective, dense backend
    total = 0.0
    for i in range(batch.n_tasks):
        task = TaskBatch.of_views([v[i] for v in batch.views()])
        loss, _ = objective.nested(fixed, adapt, g, task, {k: v[i] for k, v in targets.items()})
        total += float(loss.detach())
    return total / batch.n_tasks
