"""Data: image datasets (bundled digits; CIFAR/STL from a local folder), batched augmentations,
task samplers (support and query views), synthetic tasks."""

from gessl.data.augment import Augment, cifar_augment, digits_augment
from gessl.data.datasets import (
    ImageSet,
    class_split,
    load_cifar10,
    load_cifar100,
    load_dataset,
    load_digits,
    load_stl10,
)
from gessl.data.image_tasks import DatasetTasks
from gessl.data.synthetic import GaussianLatentTasks, SyntheticImageTasks, TaskBatch

__all__ = [
    "Augment",
    "DatasetTasks",
    "GaussianLatentTasks",
    "ImageSet",
    "SyntheticImageTasks",
    "TaskBatch",
    "cifar_augment",
    "class_split",
    "digits_augment",
    "load_cifar10",
    "load_cifar100",
    "load_dataset",
    "load_digits",
    "load_stl10",
]
