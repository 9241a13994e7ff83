"""Synthetic task batches: no download, seeded, for tests, examples and the theory claims.

A :class:`TaskBatch` holds M tasks of N samples, four augmented views per sample: two *support*
views (what a task-specific model adapts on) and two *query* views (where it is evaluated),
each ``[M, N, ...]``. Row ``k`` of every view of task ``m`` comes from the same source sample.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from gessl.tasks import TaskBatch

__all__ = ["GaussianLatentTasks", "SyntheticImageTasks", "TaskBatch"]


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
        gen = torch.Generator().manual_seed(self.class_seed)  # fixed: on the CPU, for any device
        return self.class_spread * torch.randn(
            self.n_classes, self.dim, generator=gen, device="cpu"
        )

    def latents(
        self, shape: tuple[int, ...], gen: torch.Generator, classes: list[int] | None = None
    ) -> tuple[Tensor, Tensor | None]:
        """Latents of the given leading shape, and their class labels (if any)."""
        dev = gen.device
        x = torch.randn(*shape, self.dim, generator=gen, device=dev)
        if self.n_classes is None:
            return x, None
        allowed = torch.tensor(
            classes if classes is not None else range(self.n_classes), device=dev
        )
        y = allowed[torch.randint(len(allowed), shape, generator=gen, device=dev)]
        return x + self.class_means().to(dev)[y], y

    def augment(self, x: Tensor, gen: torch.Generator) -> Tensor:
        dev = gen.device
        u = torch.rand(*x.shape[:-1], 1, generator=gen, device=dev).to(x.device)
        noise = torch.randn(x.shape, generator=gen, device=dev).to(x.device)
        return (1 + self.jitter * (2 * u - 1)) * x + self.noise * noise

    def sample(
        self, n_tasks: int, n_samples: int, gen: torch.Generator, classes: list[int] | None = None
    ) -> TaskBatch:
        """M = ``n_tasks`` fresh tasks of N = ``n_samples`` latents, four views each, drawn on
        ``gen.device`` (the class means are fixed by ``class_seed`` on the CPU and moved there)."""
        x, _ = self.latents((n_tasks, n_samples), gen, classes)
        return TaskBatch(*(self.augment(x, gen) for _ in range(4)))


@dataclass(frozen=True)
class SyntheticImageTasks:
    """channels×size×size images (one channel by default; 3 at size 32 are CIFAR-shaped): a fixed
    random linear map of Gaussian latents, augmented by a random cyclic shift of up to one pixel,
    a random gain and pixel noise (for CNN backbones)."""

    size: int = 8
    latent_dim: int = 6
    noise: float = 0.2
    seed: int = 0
    channels: int = 1

    def _basis(self) -> Tensor:
        gen = torch.Generator().manual_seed(self.seed)  # fixed: on the CPU, for any device
        return (
            torch.randn(
                self.latent_dim, self.channels * self.size * self.size, generator=gen, device="cpu"
            )
            / self.latent_dim**0.5
        )

    def augment(self, img: Tensor, gen: torch.Generator) -> Tensor:
        lead, dev = img.shape[:-3], gen.device
        shifts = torch.randint(-1, 2, (2,), generator=gen, device=dev).tolist()
        out = torch.roll(img, shifts=shifts, dims=(-2, -1))
        u = torch.rand(*lead, 1, 1, 1, generator=gen, device=dev).to(img.device)
        noise = torch.randn(out.shape, generator=gen, device=dev).to(img.device)
        return (1 + 0.2 * (2 * u - 1)) * out + self.noise * noise

    def sample(self, n_tasks: int, n_samples: int, gen: torch.Generator) -> TaskBatch:
        """M = ``n_tasks`` tasks of N = ``n_samples`` images, four views each, on ``gen.device``
        (the fixed basis is drawn on the CPU from ``seed`` and moved there)."""
        z = torch.randn(n_tasks, n_samples, self.latent_dim, generator=gen, device=gen.device)
        img = (z @ self._basis().to(gen.device)).reshape(
            n_tasks, n_samples, self.channels, self.size, self.size
        )
        return TaskBatch(*(self.augment(img, gen) for _ in range(4)))
