"""The task view of a mini-batch: N source samples form an N-way classification task.

Class ``k`` is source sample ``k``; its instances are its augmented views. Given the embeddings
of query views and of one candidate view per class, the task classifier is the softmax over the
N candidates of their similarity to the query (the other view's embeddings act as class
prototypes), so the labels are ``arange(N)``. This is the reading of the GeSSL paper
(Qiang et al., arXiv 2405.01053, abstract of v4: "each mini-batch can be viewed as a multi-class
classification task"), and of the same group's PID-SSL code, which writes SimCLR as an N-way
cross-entropy with labels ``arange(N)``; the notation is ours (reconstruction, see
``shared/research/paper.md`` §1.1).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["SIMILARITIES", "Task", "task_labels", "task_log_probs", "task_logits"]

SIMILARITIES = ("cosine", "dot")


def task_logits(
    z_query: Tensor,
    z_candidates: Tensor,
    temperature: float = 1.0,
    similarity: str = "cosine",
) -> Tensor:
    """Logits of the N-way task: ``sim(z_query[i], z_candidates[k]) / temperature``.

    Args:
        z_query: ``[..., n_query, D]`` query embeddings (leading dims are batch dims, e.g. tasks).
        z_candidates: ``[..., N, D]`` one candidate (class prototype) per class.
        temperature: softmax temperature, > 0.
        similarity: ``"cosine"`` (rows L2-normalised first) or ``"dot"`` (raw inner product;
            the critic under which InfoNCE is Bayes-optimal in theory.md §A3(a′)).

    Returns:
        ``[..., n_query, N]`` logits; with ``n_query == N`` the label of row ``i`` is ``i``.
    """
    if not (isinstance(temperature, (int, float)) and temperature > 0):
        raise ValueError(f"temperature must be > 0, got {temperature!r}")
    if similarity not in SIMILARITIES:
        raise ValueError(f"similarity must be one of {SIMILARITIES}, got {similarity!r}")
    if z_query.shape[-1] != z_candidates.shape[-1]:
        raise ValueError(
            f"z_query and z_candidates must share the feature dimension, got "
            f"{z_query.shape[-1]} and {z_candidates.shape[-1]}"
        )
    if similarity == "cosine":
        z_query = F.normalize(z_query, dim=-1)
        z_candidates = F.normalize(z_candidates, dim=-1)
    return z_query @ z_candidates.transpose(-1, -2) / temperature


def task_log_probs(logits: Tensor) -> Tensor:
    """Log-probabilities of the task classifier, ``log_softmax`` over the last (class) dim."""
    return torch.log_softmax(logits, dim=-1)


def task_labels(n: int, device: torch.device | None = None) -> Tensor:
    """Labels of an N-way instance-discrimination task: ``arange(N)``."""
    return torch.arange(n, device=device)


@dataclass(frozen=True)
class Task:
    """One mini-batch task: support and query views of the same N source samples.

    ``support`` views are what a task-specific model adapts on; ``query`` views are where it is
    evaluated (GeSSL's outer loss, the σ-measurement). Each is a pair of tensors ``(view_a,
    view_b)`` whose first dimension is N, row ``k`` of every tensor coming from source sample
    ``k`` (reconstruction of the v5 support/query split, paper.md §2.3, gap G5).
    """

    support: tuple[Tensor, Tensor]
    query: tuple[Tensor, Tensor]

    def __post_init__(self) -> None:
        for name, pair in (("support", self.support), ("query", self.query)):
            if len(pair) != 2:
                raise ValueError(f"{name} must be a pair of view tensors, got {len(pair)}")
            for v in pair:
                if not isinstance(v, Tensor):
                    raise ValueError(f"{name} views must be tensors, got {type(v).__name__}")
        sizes = {int(v.shape[0]) for v in (*self.support, *self.query)}
        if len(sizes) != 1:
            raise ValueError(
                "support and query views must all hold the same N samples, "
                f"got sizes {sorted(sizes)}"
            )
        if next(iter(sizes)) < 2:
            raise ValueError("a task needs N >= 2 samples")

    @property
    def n_classes(self) -> int:
        """N, the number of source samples (classes) in the task."""
        return int(self.support[0].shape[0])

    @property
    def labels(self) -> Tensor:
        """``arange(N)`` on the views' device."""
        return task_labels(self.n_classes, device=self.support[0].device)
