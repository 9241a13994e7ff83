"""The task view of a mini-batch: N source samples form an N-way classification task.

:class:`TaskBatch` holds M such tasks (support and query views) and is the one task type of the
library: the trainer, the theory settings' samplers and the image-dataset samplers all produce it
(the :class:`TaskSampler` protocol), and ``batch.to(device)`` moves it.

Class ``k`` is source sample ``k``; its instances are its augmented views. Given the embeddings
of query views and of one candidate view per class, the task classifier π is the softmax over the
N candidates of a **critic** ``s(query, candidate)`` (the other view's embeddings act as class
prototypes), so the labels are ``arange(N)``. This is the reading of the GeSSL paper
(Qiang et al., arXiv 2405.01053, abstract of v4: "each mini-batch can be viewed as a multi-class
classification task"), and of the same group's PID-SSL code, which writes SimCLR as an N-way
cross-entropy with labels ``arange(N)``; the notation and the critics are ours (reconstruction,
see ``docs/reconstruction.md``).

π is defined here once. Everything that needs it — the InfoNCE loss, GeSSL's σ-term, the
σ-measurement, the universality report and the theory claims — takes a :class:`Critic` or its
name. The named critics (``z_q`` a query embedding, ``z_c`` a candidate's, τ the temperature):

=================== ======================================== ==================================
name                logit ``s(z_q, z_c)``                    notes
=================== ======================================== ==================================
``cosine``          ``cos(z_q, z_c) / τ``                    SimCLR/MoCo's critic; bounded
``dot``             ``z_qᵀ z_c / τ``                         bilinear; Bayes for prototypes on a
                                                             sphere (Poole et al. 2019, §2)
``neg_sq_distance`` ``−‖z_q − z_c‖² / τ``                    symmetric distance critic
``two_headed``      ``−‖z_q[:h] − z_c[h:]‖² / τ``            asymmetric: the first half of the
                                                             query's embedding against the second
                                                             half of the candidate's (D = 2h)
=================== ======================================== ==================================

The two-headed critic can represent the Bayes critic ``−‖A u − B v‖²`` of every Gaussian task
family in :mod:`theory.task_families` with a *linear* encoder (anchor head ``A``, candidate head
``B``), which the symmetric critics cannot: the Bayes logit of two noisy views needs a
per-candidate ``‖v‖²`` term with a coefficient other than the cross term's
(``docs/settings.md``).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils import _pytree as pytree

from gessl.devices import in_float32

__all__ = [
    "CRITICS",
    "Critic",
    "TaskBatch",
    "TaskSampler",
    "make_critic",
    "task_labels",
    "task_log_probs",
    "task_logits",
]

#: the named critics of the task classifier π (see the module docstring)
CRITICS = ("cosine", "dot", "neg_sq_distance", "two_headed")


@dataclass(frozen=True)
class Critic:
    """A named critic of the N-way task classifier: ``logits(z_query, z_candidates)``.

    Args:
        name: one of :data:`CRITICS`.
        temperature: τ > 0; every critic's logits are divided by it.

    Raises:
        ValueError: naming the argument and the allowed values.
    """

    name: str = "cosine"
    temperature: float = 1.0

    def __post_init__(self) -> None:
        if self.name not in CRITICS:
            raise ValueError(f"critic must be one of {CRITICS}, got {self.name!r}")
        t = self.temperature
        if isinstance(t, bool) or not isinstance(t, (int, float)) or not t > 0:
            raise ValueError(f"critic temperature must be a number > 0, got {t!r}")

    def check_dim(self, dim: int) -> None:
        """Raise ``ValueError`` if embeddings of dimension ``dim`` cannot be used: the
        two-headed critic splits the embedding into two heads of equal size."""
        if self.name == "two_headed" and (dim < 2 or dim % 2):
            raise ValueError(
                f"critic 'two_headed' needs an even embedding dimension >= 2 (two heads of "
                f"equal size), got {dim}; use one of {CRITICS[:3]} or an even projector output"
            )

    def logits(self, z_query: Tensor, z_candidates: Tensor) -> Tensor:
        """``[..., n_query, N]`` logits of ``[..., n_query, D]`` queries against ``[..., N, D]``
        candidates (leading dims are batch dims, e.g. tasks); bfloat16/float16 embeddings
        are scored in float32."""
        return in_float32(self._logits, z_query, z_candidates)

    def _logits(self, z_query: Tensor, z_candidates: Tensor) -> Tensor:
        if z_query.shape[-1] != z_candidates.shape[-1]:
            raise ValueError(
                f"z_query and z_candidates must share the feature dimension, got "
                f"{z_query.shape[-1]} and {z_candidates.shape[-1]}"
            )
        self.check_dim(z_query.shape[-1])
        tau = self.temperature
        if self.name == "cosine":
            zq, zc = F.normalize(z_query, dim=-1), F.normalize(z_candidates, dim=-1)
            return zq @ zc.transpose(-1, -2) / tau
        if self.name == "dot":
            return z_query @ z_candidates.transpose(-1, -2) / tau
        if self.name == "two_headed":
            h = z_query.shape[-1] // 2
            z_query, z_candidates = z_query[..., :h], z_candidates[..., h:]
        # −‖q − c‖² = 2qᵀc − ‖q‖² − ‖c‖²: one matrix product (no [n, N, D] difference tensor),
        # scaled and added to the norms in the same call (fewer passes over the logits)
        qq = z_query.pow(2).sum(-1, keepdim=True)
        cc = z_candidates.pow(2).sum(-1).unsqueeze(-2)
        return _add_scaled_products((qq + cc) / -tau, z_query, z_candidates, 2 / tau)

    def log_probs(self, z_query: Tensor, z_candidates: Tensor) -> Tensor:
        """``log π``: ``log_softmax`` of :meth:`logits` over the candidates."""
        return torch.log_softmax(self.logits(z_query, z_candidates), dim=-1)

    def __str__(self) -> str:
        return f"{self.name}(τ={self.temperature:g})"


def _add_scaled_products(base: Tensor, a: Tensor, b: Tensor, alpha: float) -> Tensor:
    """``base + alpha · a bᵀ`` over the last two dims (any leading batch dims) in one fused
    call (``addmm``/``baddbmm``)."""
    bt = b.transpose(-1, -2)
    if a.dim() == 2:
        return torch.addmm(base, a, bt, alpha=alpha)
    lead = torch.broadcast_shapes(a.shape[:-2], bt.shape[:-2], base.shape[:-2])
    a3 = a.expand(*lead, *a.shape[-2:]).reshape(-1, *a.shape[-2:])
    b3 = bt.expand(*lead, *bt.shape[-2:]).reshape(-1, *bt.shape[-2:])
    out = base.expand(*lead, a.shape[-2], bt.shape[-1]).reshape(-1, a.shape[-2], bt.shape[-1])
    return torch.baddbmm(out, a3, b3, alpha=alpha).reshape(*lead, a.shape[-2], bt.shape[-1])


def make_critic(critic: str | Critic = "cosine", temperature: float = 1.0) -> Critic:
    """A :class:`Critic` from its name (and temperature), or ``critic`` itself if it is one."""
    if isinstance(critic, Critic):
        return critic
    if not isinstance(critic, str):
        raise ValueError(f"critic must be one of {CRITICS} or a Critic, got {critic!r}")
    return Critic(critic, temperature)


def task_logits(
    z_query: Tensor,
    z_candidates: Tensor,
    temperature: float = 1.0,
    critic: str | Critic = "cosine",
) -> Tensor:
    """Logits of the N-way task under a named critic (see :class:`Critic`).

    Args:
        z_query: ``[..., n_query, D]`` query embeddings (leading dims are batch dims).
        z_candidates: ``[..., N, D]`` one candidate (class prototype) per class.
        temperature: τ > 0 (ignored when ``critic`` is a :class:`Critic`, which carries its own).
        critic: a name in :data:`CRITICS` or a :class:`Critic`.

    Returns:
        ``[..., n_query, N]`` logits; with ``n_query == N`` the label of row ``i`` is ``i``.
    """
    return make_critic(critic, temperature).logits(z_query, z_candidates)


def task_log_probs(
    z_query: Tensor,
    z_candidates: Tensor,
    temperature: float = 1.0,
    critic: str | Critic = "cosine",
) -> Tensor:
    """``log π`` of the task classifier: ``log_softmax`` of :func:`task_logits`."""
    return torch.log_softmax(task_logits(z_query, z_candidates, temperature, critic), dim=-1)


def task_labels(n: int, device: torch.device | None = None) -> Tensor:
    """Labels of an N-way instance-discrimination task: ``arange(N)``."""
    return torch.arange(n, device=device)


class TaskSampler(Protocol):
    """Anything that draws M tasks of N samples: the trainer's, the theory settings' and the
    image datasets' samplers. Every random number is drawn on ``gen.device``, so the views are
    made (drawn or augmented) on the device the trainer runs on."""

    def sample(self, n_tasks: int, n_samples: int, gen: torch.Generator) -> TaskBatch: ...


@dataclass(frozen=True)
class TaskBatch:
    """M tasks × N samples: support views ``(support_a, support_b)`` — what a task-specific
    model adapts on — and query views ``(query_a, query_b)`` — where it is evaluated (GeSSL's
    outer loss, the σ-measurement). Each view is ``[M, N, ...]``; row ``k`` of every view of task
    ``m`` comes from the same source sample, the class ``k`` of task ``m``'s N-way problem (our
    reconstruction of the v5 support/query split, ``docs/reconstruction.md``)."""

    support_a: Tensor
    support_b: Tensor
    query_a: Tensor
    query_b: Tensor

    def __post_init__(self) -> None:
        views = [getattr(self, f.name) for f in fields(self)]
        for f, v in zip(fields(self), views):
            if not isinstance(v, Tensor) or v.dim() < 2:
                raise ValueError(f"{f.name} must be a tensor [M, N, ...], got {_describe(v)}")
        shapes = {tuple(v.shape[:2]) for v in views}
        if len(shapes) != 1:
            raise ValueError(f"all views must share [M, N], got {sorted(shapes)}")
        m, n = next(iter(shapes))
        if m < 1 or n < 2:
            raise ValueError(f"a task batch needs M >= 1 tasks of N >= 2 samples, got {m}×{n}")
        devices = {str(v.device) for v in views}
        if len(devices) != 1:
            raise ValueError(f"mixed devices: the views are on {' and '.join(sorted(devices))}")

    def views(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """``(support_a, support_b, query_a, query_b)``."""
        return self.support_a, self.support_b, self.query_a, self.query_b

    @property
    def n_tasks(self) -> int:
        """M, the number of tasks."""
        return int(self.support_a.shape[0])

    @property
    def n_samples(self) -> int:
        """N, the samples (classes) of each task."""
        return int(self.support_a.shape[1])

    @property
    def device(self) -> torch.device:
        return self.support_a.device

    @property
    def labels(self) -> Tensor:
        """``arange(N)`` on the views' device: the labels of every task's N-way problem."""
        return task_labels(self.n_samples, device=self.device)

    def shard(self, rank: int, world: int) -> TaskBatch:
        """The contiguous block of tasks of ``rank`` out of ``world`` (sizes differ by ≤ 1)."""
        m = self.n_tasks
        lo, hi = rank * m // world, (rank + 1) * m // world
        return TaskBatch(*(v[lo:hi] for v in self.views()))

    @classmethod
    def of_views(cls, views: tuple[Tensor, ...] | list[Tensor]) -> TaskBatch:
        """A batch from its four views *without* the ``[M, N, ...]`` checks: what ``vmap`` and
        other pytree transforms build when they slice or stack a batch (inside ``vmap`` over
        tasks each view is one task's ``[N, ...]``; stacked over seeds, ``[S, M, N, ...]``)."""
        batch = object.__new__(cls)
        for f, v in zip(fields(cls), views):
            object.__setattr__(batch, f.name, v)
        return batch

    def to(
        self,
        device: str | torch.device | torch.dtype | None = None,
        dtype: torch.dtype | None = None,
    ) -> TaskBatch:
        """The batch on ``device`` and/or in floating dtype ``dtype`` (``batch.to(torch.float64)``
        also works, like ``Tensor.to``)."""
        if isinstance(device, torch.dtype):
            device, dtype = None, device
        return TaskBatch(*(v.to(device=device, dtype=dtype) for v in self.views()))


# a pytree node: torch.func.vmap slices a batch along its tasks (or seeds), tree_map stacks them
pytree.register_pytree_node(
    TaskBatch,
    lambda b: (list(b.views()), None),
    lambda views, _: TaskBatch.of_views(views),
    serialized_type_name="gessl.tasks.TaskBatch",
)


def _describe(v: object) -> str:
    if isinstance(v, Tensor):
        return f"a tensor of shape {tuple(v.shape)}"
    return f"a {type(v).__name__}"
