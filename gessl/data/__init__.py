"""Data: synthetic task batches (no download)."""

from gessl.data.synthetic import GaussianLatentTasks, SyntheticImageTasks, TaskBatch

__all__ = ["GaussianLatentTasks", "SyntheticImageTasks", "TaskBatch"]
