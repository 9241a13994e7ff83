"""Tasks from an image dataset: N distinct images per task, four augmented views each."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from gessl.data.datasets import ImageSet
from gessl.tasks import TaskBatch

__all__ = ["DatasetTasks"]


@dataclass(frozen=True)
class DatasetTasks:
    """Sample M tasks of N distinct images (optionally of chosen classes) with augmented views.

    ``augment(x, gen)`` takes float images in [0, 1] on ``gen.device``.

    A mini-batch task in the paper's sense (arXiv 2405.01053): class k of the N-way task is image
    k; its instances are its augmented views — two support views and two query views.
    """

    data: ImageSet
    augment: Callable[[Tensor, torch.Generator], Tensor]

    def sample(
        self, n_tasks: int, n_samples: int, gen: torch.Generator, classes: list[int] | None = None
    ) -> TaskBatch:
        """M = ``n_tasks`` tasks of N = ``n_samples`` distinct images, drawn and augmented on
        ``gen.device``: the image indices are drawn there, the uint8 images are gathered where
        the set is stored, moved to ``gen.device`` as uint8 and converted to float there."""
        dev = gen.device
        labels = self.data.labels
        pool = (
            torch.arange(len(self.data), device=dev)
            if classes is None
            else torch.nonzero(
                torch.isin(labels, torch.tensor(classes, dtype=labels.dtype, device=labels.device))
            )
            .flatten()
            .to(dev)
        )
        if len(pool) < n_samples:
            raise ValueError(f"a task needs {n_samples} distinct images, only {len(pool)} exist")
        idx = torch.stack(
            [
                pool[torch.randperm(len(pool), generator=gen, device=dev)[:n_samples]]
                for _ in range(n_tasks)
            ]
        )
        images = self.data.as_float(idx.to(self.data.device), device=dev)  # [M, N, C, H, W]
        return TaskBatch(*(self.augment(images, gen) for _ in range(4)))
