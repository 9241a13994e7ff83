"""The universality report: σ, sigma_excess and task accuracy on three kinds of tasks.

The paper (arXiv 2405.01053, v4) calls a representation universal when it is discriminative
(good on training tasks), generalises (good on fresh tasks of the same data) and transfers (good
on tasks of unseen classes); σ measures the gap to the optimal task-specific models
(``docs/reconstruction.md``). The optimal model of a task comes from a *provider*:

* ``trained`` — a copy of the model fine-tuned on the task's support views with the method's own
  loss until the mean support loss stops improving (evaluation only; reconstruction of "optimal
  task-specific model", the gap of that name in ``docs/reconstruction.md``);
* ``lookahead`` — a fixed number of SGD steps, what GeSSL's future updates approximate.
  (``bayes``, the closed form, exists only in the theory settings, see ``theory/``.)

The task classifier of a model is the N-way softmax of a critic (:mod:`gessl.tasks`; cosine at
``temperature`` by default, or ``"method"``: the method's own) between the embeddings of the
query views ``a`` and ``b`` (labels ``arange(N)``).

The floor: σ against a ``trained`` provider compares the model with a member of its own family
fine-tuned on each task, so the best task-specific member reaches σ = 0 by construction; what is
left is how far one shared model is from the per-task optima. (In the theory settings the optimum
is the Bayes posterior and floors are fitted, see :mod:`theory.floors`.)
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torch.func import vmap

from gessl.adapt import adapt_tasks
from gessl.losses import no_value_checks
from gessl.methods.base import Method, Params, resolve_critic
from gessl.sigma import sigma, sigma_excess
from gessl.tasks import Critic, TaskBatch

__all__ = ["PROVIDERS", "model_log_probs", "universality_report"]

PROVIDERS = ("trained", "lookahead")


def model_log_probs(
    method: Method, params: Params, a: Tensor, b: Tensor, critic: Critic, batched_params: bool
) -> Tensor:
    """``[M, N, N]`` log-probabilities of the task classifier on query views ``a`` vs ``b``
    (each task embedded on its own: batch statistics never mix tasks); ``params`` shared, or
    per task (leading dim M) with ``batched_params``."""

    def one(p: Params, xa: Tensor, xb: Tensor) -> Tensor:
        return critic.log_probs(method.embed(p, xa), method.embed(p, xb))

    with torch.no_grad(), no_value_checks():
        return vmap(one, in_dims=(0 if batched_params else None, 0, 0))(params, a, b)


def universality_report(
    method: Method,
    task_sets: dict[str, TaskBatch],
    provider: str = "trained",
    temperature: float = 0.1,
    critic: str | Critic = "cosine",
    provider_steps: int = 100,
    provider_lr: float = 0.05,
    patience: int = 10,
) -> dict[str, dict[str, Any]]:
    """σ (KL(π_model ‖ π_opt)) and sigma_excess (reverse) per query, and task accuracy of the
    model and of the optimal task models, for each named set of tasks.

    ``task_sets`` maps a name (e.g. ``"train"``, ``"fresh"``, ``"held_out"``) to a
    :class:`TaskBatch`; support views train the provider, query views are evaluated. ``critic``
    (a name of :data:`gessl.tasks.CRITICS` at ``temperature``, or ``"method"``) defines π.
    Each entry records ``floor_per_task`` = 0: the provider is a member of the model's family.
    The batches are moved to the method's device; everything runs there.
    """
    if provider not in PROVIDERS:
        raise ValueError(f"provider must be one of {PROVIDERS}, got {provider!r}")
    crit = resolve_critic(method, critic, temperature)
    phi = {k: v.detach() for k, v in method.online_params().items()}
    report: dict[str, dict[str, Any]] = {}
    device = next(iter(phi.values())).device
    for name, batch in task_sets.items():
        batch = batch.to(device)
        opt, taken = adapt_tasks(
            method,
            batch,
            provider_steps,
            provider_lr,
            patience=patience if provider == "trained" else None,
        )
        lp_model = model_log_probs(method, phi, batch.query_a, batch.query_b, crit, False)
        lp_opt = model_log_probs(method, opt, batch.query_a, batch.query_b, crit, True)
        # renormalise in float64 (the float32 rows sum to 1 only to ~1e-7)
        lp_model, lp_opt = lp_model.double().log_softmax(-1), lp_opt.double().log_softmax(-1)
        n = batch.n_samples
        labels = torch.arange(n, device=device)
        report[name] = {
            "sigma": float(sigma(lp_model, lp_opt)) / n,
            "sigma_excess": float(sigma_excess(lp_model, lp_opt)) / n,
            "accuracy": float((lp_model.argmax(-1) == labels).float().mean()),
            "accuracy_optimal": float((lp_opt.argmax(-1) == labels).float().mean()),
            "tasks": batch.n_tasks,
            "n": n,
            "provider": provider,
            "provider_steps": taken,
            "critic": str(crit),
            "floor_per_task": 0.0,  # the provider is a member of the family
            "kl_direction": "sigma = KL(π_model ‖ π_opt); sigma_excess = KL(π_opt ‖ π_model)",
        }
    return report
