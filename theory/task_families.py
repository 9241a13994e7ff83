"""Gaussian task families for a fair test of GeSSL: tasks whose optimal critics differ.

GeSSL (Qiang et al., arXiv 2405.01053) adapts a task-specific model on each mini-batch task. That
can only help where tasks *have* different optima. Each family here draws T tasks × N samples;
every task has its own parameters (a subspace, a noise level), any number of views of the same
N latents (row ``j`` of every view comes from sample ``j``), a closed-form Bayes posterior over
the N candidates — the optimal task-specific model — and a closed-form mutual information
``I_t(U; V)`` between two views. Derivations are in ``docs/settings.md``.

* :class:`HomogeneousTasks` — the **control**: latents ``x ~ N(0, c²I_d)``, views ``x + sε``.
  Every task has the same Bayes critic, so one global model is optimal for all of them (the
  family form of :class:`theory.gaussian_task.LatentViewTasks`).
* :class:`SubspaceTasks` — per task a Haar-random k-dimensional subspace carries the signal; every
  single view is ``N(0, (c²+s²)I_d)`` in every task, so only the pairing of views reveals it.
* :class:`NoiseLevelTasks` — per task a noise level ``s_t ~ U[s_lo, s_hi]``, so the Bayes critic's
  scale and its shrinkage ``ρ_t`` differ by task.

With ``ρ = c²/(c²+s²)`` and ``σ_c² = s²(2c²+s²)/(c²+s²)`` (per task where ``s`` is), the Bayes
logit of an anchor view ``u`` against a candidate ``v_i`` is, up to a per-anchor constant,
``−‖P(u − ρ v_i)‖²/(2σ_c²)`` with ``P`` the task's signal projector (``I`` for the isotropic
families), and ``I_t = −(k/2) log(1 − ρ²)`` with ``k = rank P``.

Every family has the same interface: :meth:`sample_views`, :meth:`bayes_logits`,
:meth:`mutual_information`, :meth:`sample_batch`; :class:`FamilySampler` and :class:`TaskPool`
feed them to :class:`gessl.trainer.Trainer`. Tensors are float64 torch, ``[T, N, d]``.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor

from gessl.data import TaskBatch
from theory.gaussian_task import latent_view_pair

__all__ = [
    "FAMILIES",
    "FamilySampler",
    "HomogeneousTasks",
    "NoiseLevelTasks",
    "SubspaceTasks",
    "TaskFamily",
    "TaskPool",
    "make_family",
]

f64 = torch.float64


def _positive(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ValueError(f"{name} must be a number > 0, got {value!r}")


def _count(name: str, value: Any, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")


def _isotropic_checks(dim: Any, latent_scale: Any) -> None:
    _count("dim", dim, 1)
    _positive("latent_scale", latent_scale)


def _shrunk_sq_distance(a: Tensor, b: Tensor, rho: Tensor, var: Tensor) -> Tensor:
    """``−‖a_i − ρ b_j‖²/(2σ²)`` for ``a [T, n, k]``, ``b [T, N, k]``, per-task ``ρ, σ² [T]``."""
    rho, var = rho.reshape(-1, 1, 1), var.reshape(-1, 1, 1)
    cross = a @ b.transpose(-1, -2)
    sq = a.pow(2).sum(-1, keepdim=True) - 2 * rho * cross + rho**2 * b.pow(2).sum(-1)[:, None, :]
    return -sq / (2 * var)


class TaskFamily:
    """Interface of a Gaussian task family (see the module docstring)."""

    name: ClassVar[str] = "family"
    dim: int

    def bayes_logits(self, u: Tensor, v: Tensor, params: Tensor) -> Tensor:
        """``[T, n, N]`` Bayes logits of anchors ``u [T, n, d]`` against candidates
        ``v [T, N, d]`` (correct up to a per-anchor constant)."""
        raise NotImplementedError

    def mutual_information(self, params: Tensor) -> Tensor:
        """``[T]`` mutual information ``I_t(U; V)`` of two views of one sample (nats)."""
        raise NotImplementedError

    # Sampling is split into draws (every random number, from the generator, in a fixed order)
    # and deterministic maps applied to each task on its own, so that the draws of several
    # generators can be mapped at once (:meth:`sample_batch_each`) with the same numbers.
    def draw_params(self, gen: torch.Generator, tasks: int) -> Tensor:
        """The random numbers of ``tasks`` tasks' parameters (leading dim T)."""
        raise NotImplementedError

    def make_params(self, raw: Tensor) -> Tensor:
        """The parameters from :meth:`draw_params`' numbers."""
        raise NotImplementedError

    def draw_views(
        self, gen: torch.Generator, tasks: int, n_samples: int, views: int
    ) -> list[Tensor]:
        """The random numbers of ``views`` views of N fresh latents per task (leading dim T)."""
        raise NotImplementedError

    def make_views(self, params: Tensor, raw: list[Tensor]) -> tuple[Tensor, ...]:
        """The views ``[T, N, d]`` from :meth:`draw_views`' numbers and the tasks' parameters."""
        raise NotImplementedError

    def sample_params(self, gen: torch.Generator, tasks: int) -> Tensor:
        """The parameters of ``tasks`` fresh tasks (leading dim T)."""
        return self.make_params(self.draw_params(gen, tasks))

    def views_of(
        self, gen: torch.Generator, params: Tensor, n_samples: int, views: int
    ) -> tuple[Tensor, ...]:
        """``views`` independent views ``[T, N, d]`` of N fresh latents per task."""
        return self.make_views(params, self.draw_views(gen, params.shape[0], n_samples, views))

    def sample_views(
        self, gen: torch.Generator, tasks: int, n_samples: int, views: int = 2
    ) -> tuple[tuple[Tensor, ...], Tensor]:
        """``(views, params)``: ``views`` tensors ``[T, N, d]`` of the same latents and the
        tasks' parameters."""
        _count("tasks", tasks, 1)
        _count("n_samples", n_samples, 1)
        _count("views", views, 1)
        params = self.sample_params(gen, tasks)
        return self.views_of(gen, params, n_samples, views), params

    def sample_split(
        self, gen: torch.Generator, tasks: int, n_samples: int
    ) -> tuple[TaskBatch, Tensor, tuple[Tensor, Tensor]]:
        """Tasks for measuring adaptation on *new samples*: support views ``(a, b)`` of N
        latents, query views of N fresh latents of the same task (its parameters), and —
        labelled as such by its users — two more views of the support's latents (the query of
        :meth:`sample_batch`, other views of the samples adapted on). Returns the
        :class:`TaskBatch` (support, new-sample query), the parameters and those two views."""
        return self.split_of(gen, self.sample_params(gen, tasks), n_samples)

    def split_of(
        self, gen: torch.Generator, params: Tensor, n_samples: int
    ) -> tuple[TaskBatch, Tensor, tuple[Tensor, Tensor]]:
        """:meth:`sample_split` for the tasks of ``params`` (e.g. fresh samples of a pool's
        tasks)."""
        sa, sb, qa_same, qb_same = self.views_of(gen, params, n_samples, 4)
        qa, qb = self.views_of(gen, params, n_samples, 2)
        return TaskBatch(sa, sb, qa, qb), params, (qa_same, qb_same)

    def sample_batch_each(
        self, gens: list[torch.Generator], tasks: int, n_samples: int
    ) -> tuple[TaskBatch, Tensor]:
        """:meth:`sample_batch` for each generator, stacked (views ``[S, T, N, d]``, parameters
        ``[S, T, ...]``): the same numbers, the transforms of every generator's draws at once."""
        _count("tasks", tasks, 1)
        _count("n_samples", n_samples, 1)
        raw_params, raw_views = [], []
        for g in gens:  # each generator's numbers in sample_batch's order
            raw_params.append(self.draw_params(g, tasks))
            raw_views.append(self.draw_views(g, tasks, n_samples, 4))
        # the generators' tasks one after another, mapped at once
        params = self.make_params(torch.cat(raw_params))
        views = self.make_views(params, [torch.cat(parts) for parts in zip(*raw_views)])
        s = len(gens)
        views = tuple(v.reshape(s, tasks, *v.shape[1:]) for v in views)
        return TaskBatch(*views), params.reshape(s, tasks, *params.shape[1:])

    def sample_batch(
        self, gen: torch.Generator, tasks: int, n_samples: int
    ) -> tuple[TaskBatch, Tensor]:
        """M = ``tasks`` tasks of N = ``n_samples`` as a float64 :class:`TaskBatch` (support
        views, then query views), and their parameters."""
        (sa, sb, qa, qb), params = self.sample_views(gen, tasks, n_samples, 4)
        return TaskBatch(sa, sb, qa, qb), params

    def bayes_log_probs(self, u: Tensor, v: Tensor, params: Tensor) -> Tensor:
        """``log π*``: the normalised Bayes posterior over the candidates."""
        return torch.log_softmax(self.bayes_logits(u, v, params), dim=-1)

    def describe(self) -> dict[str, Any]:
        """The family's name and options (for records)."""
        return {"family": self.name, **dataclasses.asdict(self)}  # type: ignore[call-overload]


class _IsotropicViews(TaskFamily):
    """Latents ``x ~ N(0, c²I_d)``, views ``x + s_t ε``: the parameters of a task are ``s_t``."""

    latent_scale: float

    def _pair(self, params: Tensor) -> tuple[Tensor, Tensor]:
        c2 = torch.full_like(params, float(self.latent_scale) ** 2)
        return latent_view_pair(c2, params.pow(2))

    def draw_views(
        self, gen: torch.Generator, tasks: int, n_samples: int, views: int
    ) -> list[Tensor]:
        # the latents, then each view's noise, in one draw
        shape = (views + 1, tasks, n_samples, self.dim)
        return list(torch.randn(shape, generator=gen, device=gen.device, dtype=f64).unbind(0))

    def make_views(self, params: Tensor, raw: list[Tensor]) -> tuple[Tensor, ...]:
        latent = self.latent_scale * raw[0]
        s = params.to(f64).reshape(-1, 1, 1)
        return tuple(latent + s * e for e in raw[1:])

    def bayes_logits(self, u: Tensor, v: Tensor, params: Tensor) -> Tensor:
        rho, var = self._pair(params.to(u.dtype))
        return _shrunk_sq_distance(u, v, rho, var)

    def mutual_information(self, params: Tensor) -> Tensor:
        rho, _ = self._pair(params.to(f64))
        return -0.5 * self.dim * torch.log1p(-rho.pow(2))


@dataclass(frozen=True)
class HomogeneousTasks(_IsotropicViews):
    """The control: one noise level ``s`` for every task, hence one Bayes critic for all tasks.

    Latents ``x ~ N(0, c²I_d)``, views ``x + sε``: the family form of
    :class:`theory.gaussian_task.LatentViewTasks` (same Bayes logits and ``I(U; V)``).

    Args:
        dim: d ≥ 1.
        latent_scale: c > 0.
        noise: s > 0.
    """

    name: ClassVar[str] = "homogeneous"
    dim: int = 4
    latent_scale: float = 1.0
    noise: float = 0.8

    def __post_init__(self) -> None:
        _isotropic_checks(self.dim, self.latent_scale)
        _positive("noise", self.noise)

    def draw_params(self, gen: torch.Generator, tasks: int) -> Tensor:
        return torch.empty(tasks, 0, dtype=f64, device=gen.device)  # nothing random

    def make_params(self, raw: Tensor) -> Tensor:
        return torch.full((raw.shape[0],), float(self.noise), dtype=f64, device=raw.device)


@dataclass(frozen=True)
class NoiseLevelTasks(_IsotropicViews):
    """Per-task noise: ``s_t ~ U[noise_low, noise_high]``; latents ``x ~ N(0, c²I_d)``, views
    ``x + s_t ε``. Bayes logits ``−‖u − ρ_t v_i‖²/(2σ_{c,t}²)``, ``I_t = −(d/2) log(1 − ρ_t²)``.
    The parameters of a task are ``s_t`` (``[T]``).

    Args:
        dim: d ≥ 1.
        latent_scale: c > 0.
        noise_low, noise_high: the range of the per-task noise, ``0 < low ≤ high``.
    """

    name: ClassVar[str] = "noise_level"
    dim: int = 4
    latent_scale: float = 1.0
    noise_low: float = 0.3
    noise_high: float = 1.5

    def __post_init__(self) -> None:
        _isotropic_checks(self.dim, self.latent_scale)
        _positive("noise_low", self.noise_low)
        _positive("noise_high", self.noise_high)
        if self.noise_high < self.noise_low:
            raise ValueError(
                f"noise_high must be >= noise_low, got {self.noise_high!r} < {self.noise_low!r}"
            )

    def draw_params(self, gen: torch.Generator, tasks: int) -> Tensor:
        return torch.rand(tasks, generator=gen, device=gen.device, dtype=f64)

    def make_params(self, raw: Tensor) -> Tensor:
        return self.noise_low + (self.noise_high - self.noise_low) * raw


@dataclass(frozen=True)
class SubspaceTasks(TaskFamily):
    """Per-task signal subspace. For task t a Haar-random orthonormal ``U_t ∈ R^{d×k}``,
    ``P_t = U_t U_tᵀ``; latents ``x_j = U_t w_j``, ``w_j ~ N(0, c²I_k)``; each view
    ``x_j + s·P_t e + √(c²+s²)·(I − P_t) e``, ``e ~ N(0, I_d)`` fresh per view.

    Every single view is ``N(0, (c²+s²)I_d)`` in every task. Bayes logits
    ``−‖P_t(u − ρ v_i)‖²/(2σ_c²)``; ``I_t = −(k/2) log(1 − ρ²)`` (the same for every task).
    The parameters of a task are its basis ``U_t`` (``[T, d, k]``).

    Args:
        dim: d ≥ 2.
        k: subspace dimension, ``1 ≤ k < d``.
        latent_scale: c > 0.
        noise: s > 0, the in-subspace view noise.
    """

    name: ClassVar[str] = "subspace"
    dim: int = 4
    k: int = 2
    latent_scale: float = 1.0
    noise: float = 0.5

    def __post_init__(self) -> None:
        _count("dim", self.dim, 2)
        _count("k", self.k, 1)
        if self.k >= self.dim:
            raise ValueError(
                f"k must satisfy 1 <= k < dim = {self.dim} (a proper subspace), got {self.k}"
            )
        _positive("latent_scale", self.latent_scale)
        _positive("noise", self.noise)

    @property
    def rho(self) -> float:
        return latent_view_pair(self.latent_scale**2, self.noise**2)[0]

    @property
    def cond_var(self) -> float:
        return latent_view_pair(self.latent_scale**2, self.noise**2)[1]

    def draw_params(self, gen: torch.Generator, tasks: int) -> Tensor:
        return torch.randn(tasks, self.dim, self.k, generator=gen, device=gen.device, dtype=f64)

    def make_params(self, raw: Tensor) -> Tensor:
        """Haar-random orthonormal frames: QR of a Gaussian matrix with the signs of R's
        diagonal moved into Q (Mezzadri 2007, arXiv math-ph/0609050)."""
        q, r = torch.linalg.qr(raw)
        return q * torch.sign(torch.diagonal(r, dim1=-2, dim2=-1)).unsqueeze(-2)

    def draw_views(
        self, gen: torch.Generator, tasks: int, n_samples: int, views: int
    ) -> list[Tensor]:
        # the latents w (k numbers per sample), then each view's noise e (d per sample), in one draw
        t, n, k, d = tasks, n_samples, self.k, self.dim
        flat = torch.randn(t * n * (k + views * d), generator=gen, device=gen.device, dtype=f64)
        w, e = flat.split([t * n * k, views * t * n * d])
        return [w.reshape(t, n, k), *e.reshape(views, t, n, d).unbind(0)]

    def make_views(self, params: Tensor, raw: list[Tensor]) -> tuple[Tensor, ...]:
        basis = params.to(f64)
        c, s = float(self.latent_scale), float(self.noise)
        latent = (c * raw[0]) @ basis.transpose(-1, -2)  # x = U w
        out = []
        for e in raw[1:]:
            pe = (e @ basis) @ basis.transpose(-1, -2)  # P e
            out.append(latent + s * pe + math.sqrt(c * c + s * s) * (e - pe))
        return tuple(out)

    def bayes_logits(self, u: Tensor, v: Tensor, params: Tensor) -> Tensor:
        basis = params.to(u.dtype)
        t = basis.shape[0]
        rho = torch.full((t,), self.rho, dtype=u.dtype, device=u.device)
        var = torch.full((t,), self.cond_var, dtype=u.dtype, device=u.device)
        return _shrunk_sq_distance(u @ basis, v @ basis, rho, var)  # ‖P x‖ = ‖Uᵀx‖

    def mutual_information(self, params: Tensor) -> Tensor:
        value = -0.5 * self.k * math.log(1 - self.rho**2)
        return torch.full((params.shape[0],), value, dtype=f64)


#: the families by name (the homogeneous control first)
FAMILIES: dict[str, type[TaskFamily]] = {
    "homogeneous": HomogeneousTasks,
    "subspace": SubspaceTasks,
    "noise_level": NoiseLevelTasks,
}


def make_family(name: str, **options: Any) -> TaskFamily:
    """The family ``name`` (one of :data:`FAMILIES`) with its options; ``ValueError`` naming
    the family or the option otherwise."""
    try:
        cls = FAMILIES[name]
    except (KeyError, TypeError):
        raise ValueError(f"family must be one of {tuple(FAMILIES)}, got {name!r}") from None
    fields = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
    unknown = sorted(set(options) - set(fields))
    if unknown:
        raise ValueError(
            f"family {name!r}: unknown option {unknown[0]!r}; valid options: {', '.join(fields)}"
        )
    return cls(**options)


@dataclass(frozen=True)
class FamilySampler:
    """Training tasks from a family for :class:`gessl.trainer.Trainer`: fresh task parameters
    and four views (support a/b, query a/b) per sample, cast to float32 by the trainer."""

    family: TaskFamily

    def sample(self, n_tasks: int, n_samples: int, gen: torch.Generator) -> TaskBatch:
        return self.family.sample_batch(gen, n_tasks, n_samples)[0]

    def sample_each(self, n_tasks: int, n_samples: int, gens: list[torch.Generator]) -> TaskBatch:
        """:meth:`sample` for each generator, stacked (views ``[S, M, N, d]``): what a
        :class:`gessl.trainer.PopulationTrainer` draws per step, mapped at once."""
        return self.family.sample_batch_each(gens, n_tasks, n_samples)[0]


class TaskPool:
    """A fixed pool of ``n_tasks`` tasks, each with its own parameters and four fixed views of
    ``n_samples`` latents (sampled once, m per task). :meth:`sample` draws M tasks of the pool
    uniformly with replacement and returns N of each drawn task's m samples (all m, in their
    stored order, when N = m; else N drawn without replacement): training on a finite set of
    tasks, with N — the N-way task — fixed however many samples m a task has.

    Args:
        family: the task family.
        n_tasks: size of the pool (n ≥ 1).
        n_samples: per-task sample size m ≥ 2.
        gen: the generator the pool is drawn with.
    """

    def __init__(
        self, family: TaskFamily, n_tasks: int, n_samples: int, gen: torch.Generator
    ) -> None:
        _count("n_tasks", n_tasks, 1)
        _count("n_samples", n_samples, 2)
        self.family, self.n_samples = family, n_samples
        self.batch, self.params = family.sample_batch(gen, n_tasks, n_samples)

    def __len__(self) -> int:
        return self.batch.n_tasks

    def first(self, n_tasks: int) -> TaskPool:
        """The pool of this pool's first ``n_tasks`` tasks (nested pools share their tasks)."""
        _count("n_tasks", n_tasks, 1)
        if n_tasks > len(self):
            raise ValueError(f"n_tasks must be <= the pool size {len(self)}, got {n_tasks}")
        sub = TaskPool.__new__(TaskPool)
        sub.family, sub.n_samples = self.family, self.n_samples
        b = self.batch
        sub.batch = TaskBatch(
            b.support_a[:n_tasks], b.support_b[:n_tasks], b.query_a[:n_tasks], b.query_b[:n_tasks]
        )
        sub.params = self.params[:n_tasks]
        return sub

    def sample(self, n_tasks: int, n_samples: int, gen: torch.Generator) -> TaskBatch:
        if not isinstance(n_samples, int) or not 2 <= n_samples <= self.n_samples:
            raise ValueError(
                f"n_samples must be between 2 and the pool's per-task sample size "
                f"{self.n_samples}, got {n_samples}"
            )
        idx = torch.randint(len(self), (n_tasks,), generator=gen, device=gen.device)
        b = self.batch.to(gen.device)  # a pool drawn elsewhere follows the trainer's device
        self.batch = b
        views = [v[idx] for v in b.views()]
        if n_samples < self.n_samples:  # N of the task's m samples, the same N in every view
            keys = torch.rand(n_tasks, self.n_samples, generator=gen, device=gen.device)
            rows = keys.argsort(dim=1)[:, :n_samples]
            views = [torch.take_along_dim(v, rows[..., None], dim=1) for v in views]
        return TaskBatch(*views)
