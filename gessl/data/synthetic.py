"""Synthetic task batches: no download, seeded, for tests, examples and the theory claims.

A :class:`TaskBatch` holds M tasks of N samples, four augmented views per sample: two *support*
views (what a task-specific model adapts on) and two *query* views (where it is evaluated),
each ``[M, N, ...]``. Row ``k`` of every view of task ``m`` comes from the same source sample.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch
from torch import Tensor

__all__ = ["GaussianLatentTasks", "SyntheticImageTasks", "TaskBatch"]


@dataclass(frozen=True)
class TaskBatch:
    """M tasks × N samples, support views ``(support_a, support_b)``, query views likewise."""

    support_a: Tensor
    support_b: Tensor
    query_a: Tensor
    query_b: Tensor

    def __post_init__(self) -> None:
        shapes = {tuple(getattr(self, f.name).shape[:2]) for f in fields(self)}
        if len(shapes) != 1:
            raise ValueError(f"all views must share [M, N], got {sorted(shapes)}")
        m, n = next(iter(shapes))
        if m < 1 or n < 2:
            raise ValueError(f"a task batch needs M >= 1 tasks of N >= 2 samples, got {m}×{n}")

    @property
    def n_tasks(self) -> int:
        return int(self.support_a.shape[0])

    @property
    def n_samples(self) -> int:
        return int(self.support_a.shape[1])

    def shard(self, rank: int, world: int) -> TaskBatch:
        """The contiguous block of tasks of ``rank`` out of ``world`` (sizes differ by ≤ 1)."""
        m = self.n_tasks
        lo, hi = rank * m // world, (rank + 1) * m // world
        return TaskBatch(*(getattr(self, f.name)[lo:hi] for f in fields(self)))

    def to(self, dtype: torch.dtype) -> TaskBatch:
        return TaskBatch(*(getattr(self, f.name).to(dtype) for f in fields(self)))


@dataclass(frozen=True)
class GaussianLatentTasks:
    """Vector data: latents ``x ~ N(0, I_d)`` (or around ``n_classes`` class means), views
    ``g·x + s·ε`` with a random gain ``g ~ U[1 − jitter, 1 + jitter]`` per view."""

    dim: int = 8
    noise: float = 0.5
    jitter: float = 0.2
    n_classes: int | None = None
    class_spread: float = 3.0
    class_seed: int = 0

    def class_means(self) -> Tensor:
        if self.n_classes is None:
            raise ValueError("this sampler has no classes")
        gen = torch.Generator().manual_seed(self.class_seed)
        return self.class_spread * torch.randn(self.n_classes, self.dim, generator=gen)

    def latents(
        self, shape: tuple[int, ...], gen: torch.Generator, classes: list[int] | None = None
    ) -> tuple[Tensor, Tensor | None]:
        """Latents of the given leading shape, and their class labels (if any)."""
        x = torch.randn(*shape, self.dim, generator=gen)
        if self.n_classes is None:
            return x, None
        allowed = torch.tensor(classes if classes is not None else range(self.n_classes))
        y = allowed[torch.randint(len(allowed), shape, generator=gen)]
        return x + self.class_means()[y], y

    def augment(self, x: Tensor, gen: torch.Generator) -> Tensor:
        gain = 1 + self.jitter * (2 * torch.rand(*x.shape[:-1], 1, generator=gen) - 1)
        return gain * x + self.noise * torch.randn(x.shape, generator=gen)

    def sample(
        self, n_tasks: int, n_samples: int, gen: torch.Generator, classes: list[int] | None = None
    ) -> TaskBatch:
        """M = ``n_tasks`` fresh tasks of N = ``n_samples`` latents, four views each."""
        x, _ = self.latents((n_tasks, n_samples), gen, classes)
        return TaskBatch(*(self.augment(x, gen) for _ in range(4)))


@dataclass(frozen=True)
class SyntheticImageTasks:
    """1×size×size images: a fixed random linear map of Gaussian latents, augmented by a random
    cyclic shift of up to one pixel, a random gain and pixel noise (for CNN backbones)."""

    size: int = 8
    latent_dim: int = 6
    noise: float = 0.2
    seed: int = 0

    def _basis(self) -> Tensor:
        gen = torch.Generator().manual_seed(self.seed)
        return (
            torch.randn(self.latent_dim, self.size * self.size, generator=gen)
            / self.latent_dim**0.5
        )

    def augment(self, img: Tensor, gen: torch.Generator) -> Tensor:
        lead = img.shape[:-3]
        shifts = torch.randint(-1, 2, (2,), generator=gen).tolist()
        out = torch.roll(img, shifts=shifts, dims=(-2, -1))
        gain = 1 + 0.2 * (2 * torch.rand(*lead, 1, 1, 1, generator=gen) - 1)
        return gain * out + self.noise * torch.randn(out.shape, generator=gen)

    def sample(self, n_tasks: int, n_samples: int, gen: torch.Generator) -> TaskBatch:
        z = torch.randn(n_tasks, n_samples, self.latent_dim, generator=gen)
        img = (z @ self._basis()).reshape(n_tasks, n_samples, 1, self.size, self.size)
        return TaskBatch(*(self.augment(img, gen) for _ in range(4)))
