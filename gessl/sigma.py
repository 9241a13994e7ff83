"""The σ-measurement: how far a model's task classifier is from the optimal task-specific one.

Two directions, never mixed (``docs/settings.md``):

* :func:`sigma` — the paper's definition as reported for v4 (Definition 3.2, via a third-party
  review of the paper; ``docs/reconstruction.md``):
  ``σ(f) = E_tasks Σ_{x ∈ task} KL(π_f(x) ‖ π_{f*}(x))``, π the softmax over the task's N classes.
* :func:`sigma_excess` — the reverse direction ``E_tasks Σ_x KL(π_{f*}(x) ‖ π_f(x))``. When
  ``f*`` is the Bayes posterior this equals ``n_query × (E InfoNCE(f) − E InfoNCE(f*))``
  (the excess task loss), which is why it carries that name.

Both take *log-probabilities* ``[tasks, queries, N]`` (or ``[queries, N]`` for one task), sum the
per-query KL over queries and average over tasks. Nothing is computed as ``log(softmax)``: KL is
``Σ exp(lp)·(lp − lq)`` from log-probabilities, with ``0·log 0 = 0``.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = [
    "DIRECTIONS",
    "check_direction",
    "kl_in_direction",
    "kl_rows",
    "sigma",
    "sigma_excess",
    "sigma_from_logits",
    "upgrade_direction",
]

#: the two KL directions, named after the two measures (one vocabulary everywhere: GeSSL's
#: σ-term, the fair test, the floors, the records): ``"sigma"`` = KL(π_model ‖ π_target), the
#: paper's direction; ``"sigma_excess"`` = KL(π_target ‖ π_model)
DIRECTIONS = ("sigma", "sigma_excess")
#: names this project used before, refused with the new name
_OLD_DIRECTIONS = {"model_target": "sigma", "target_model": "sigma_excess"}

_NORM_TOL = {torch.float64: 1e-9, torch.float32: 1e-4, torch.float16: 1e-2, torch.bfloat16: 1e-2}


def _check_log_probs(lp: Tensor, name: str) -> None:
    if not isinstance(lp, Tensor) or not lp.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor of log-probabilities")
    if lp.dim() not in (2, 3):
        raise ValueError(
            f"{name} must have shape [queries, N] or [tasks, queries, N], got {tuple(lp.shape)}"
        )
    if lp.shape[-1] < 2:
        raise ValueError(f"{name} has N={lp.shape[-1]} classes; a task needs N >= 2")
    if bool(torch.isnan(lp).any()) or bool((lp == float("inf")).any()):
        raise ValueError(f"{name} contains nan or +inf")
    err = (torch.logsumexp(lp.detach(), dim=-1)).abs().max()
    if float(err) > _NORM_TOL.get(lp.dtype, 1e-4):
        raise ValueError(
            f"{name} rows are not normalised log-probabilities "
            f"(max |logsumexp| = {float(err):.3g}); "
            "pass log_softmax(logits), or use sigma_from_logits"
        )


def kl_rows(log_p: Tensor, log_q: Tensor) -> Tensor:
    """Row-wise ``KL(p ‖ q) = Σ_k p_k (log p_k − log q_k)`` over the last dim, from log-probs.

    Entries with ``p_k = 0`` contribute 0 even where ``log q_k = −inf``; ``q_k = 0 < p_k`` gives
    ``+inf``, as it should.
    """
    p = log_p.exp()
    diff = torch.where(p > 0, log_p - log_q, torch.zeros_like(log_p))
    return (p * diff).sum(dim=-1)


def check_direction(direction: object, argument: str = "kl_direction") -> str:
    """``direction`` if it is one of :data:`DIRECTIONS`, else a one-line ``ValueError`` naming
    ``argument`` (and the new name, for a name of the old vocabulary)."""
    if direction in DIRECTIONS:
        return str(direction)
    if direction in _OLD_DIRECTIONS:
        raise ValueError(
            f"{argument}={direction!r} was renamed: use {_OLD_DIRECTIONS[direction]!r} "
            f"(one of {DIRECTIONS})"
        )
    raise ValueError(f"{argument} must be one of {DIRECTIONS}, got {direction!r}")


def upgrade_direction(direction: str) -> str:
    """The current name of a direction read from an older record or checkpoint."""
    return _OLD_DIRECTIONS.get(direction, direction)


def kl_in_direction(log_p_model: Tensor, log_p_target: Tensor, direction: str) -> Tensor:
    """Row-wise KL between a model's and a target's task classifiers in ``direction``:
    ``"sigma"`` → KL(π_model ‖ π_target), ``"sigma_excess"`` → KL(π_target ‖ π_model)."""
    if direction == "sigma":
        return kl_rows(log_p_model, log_p_target)
    if direction == "sigma_excess":
        return kl_rows(log_p_target, log_p_model)
    check_direction(direction, "direction")
    raise AssertionError  # unreachable: check_direction raised


def _reduce(per_query: Tensor) -> Tensor:
    per_task = per_query.sum(dim=-1)  # Σ over queries
    return per_task.mean() if per_task.dim() == 1 else per_task


def _validate_pair(log_p_model: Tensor, log_p_opt: Tensor, validate: bool = True) -> None:
    if not validate:
        if log_p_model.shape != log_p_opt.shape:
            raise ValueError("log_p_model and log_p_opt must have the same shape")
        return
    _check_log_probs(log_p_model, "log_p_model")
    _check_log_probs(log_p_opt, "log_p_opt")
    if log_p_model.shape != log_p_opt.shape:
        raise ValueError(
            f"log_p_model and log_p_opt must have the same shape, got "
            f"{tuple(log_p_model.shape)} and {tuple(log_p_opt.shape)}"
        )


def sigma(log_p_model: Tensor, log_p_opt: Tensor, validate: bool = True) -> Tensor:
    """σ in the paper's direction: mean over tasks of ``Σ_queries KL(π_model ‖ π_opt)``.

    Args:
        log_p_model: ``[tasks, queries, N]`` or ``[queries, N]`` log-probabilities of the model's
            task classifier.
        log_p_opt: same shape, the optimal task-specific model's log-probabilities (from a
            provider: Bayes posterior, a trained copy, or GeSSL's look-ahead model).
        validate: check shapes, finiteness and normalisation (one extra log-sum-exp pass);
            ``False`` in hot loops whose inputs come straight from ``log_softmax``.

    Returns:
        0-dim tensor, ≥ 0, and 0 iff the two classifiers agree on every query.
    """
    _validate_pair(log_p_model, log_p_opt, validate)
    return _reduce(kl_rows(log_p_model, log_p_opt))


def sigma_excess(log_p_model: Tensor, log_p_opt: Tensor, validate: bool = True) -> Tensor:
    """The reverse direction: mean over tasks of ``Σ_queries KL(π_opt ‖ π_model)``.

    With ``π_opt`` the Bayes posterior this is ``n_query ×`` the excess cross-entropy of the model
    over the Bayes classifier, in expectation over the queries' labels (``docs/settings.md``).
    """
    _validate_pair(log_p_model, log_p_opt, validate)
    return _reduce(kl_rows(log_p_opt, log_p_model))


def sigma_from_logits(logits_model: Tensor, logits_opt: Tensor, excess: bool = False) -> Tensor:
    """:func:`sigma` (or :func:`sigma_excess` with ``excess=True``) from unnormalised logits.

    Uses ``KL(p ‖ q) = Σ_k p_k (a_k − b_k) − lse(a) + lse(b)`` for ``p = softmax(a)``,
    ``q = softmax(b)`` (``Σ p = 1``): two log-sum-exps, one softmax and one weighted sum, with no
    normalisation check (the rows are normalised by construction). Entries with ``p_k = 0``
    (``a_k = −inf``) contribute 0.
    """
    if logits_model.shape != logits_opt.shape:
        raise ValueError(
            f"logits_model and logits_opt must have the same shape, got "
            f"{tuple(logits_model.shape)} and {tuple(logits_opt.shape)}"
        )
    if logits_model.dim() not in (2, 3) or logits_model.shape[-1] < 2:
        raise ValueError(
            f"logits must be [queries, N] or [tasks, queries, N] with N >= 2, got "
            f"{tuple(logits_model.shape)}"
        )
    a, b = (logits_opt, logits_model) if excess else (logits_model, logits_opt)
    lse_a, lse_b = torch.logsumexp(a, dim=-1), torch.logsumexp(b, dim=-1)
    p = torch.exp(a - lse_a.unsqueeze(-1))
    weighted = torch.where(p > 0, p * (a - b), torch.zeros_like(p)).sum(-1)
    return _reduce(weighted - lse_a + lse_b)
