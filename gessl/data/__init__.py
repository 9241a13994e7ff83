"""Data: image datasets (bundled digits; CIFAR/STL from a local folder) stored as uint8 and a
registry of them by name, batched augmentations, task samplers (support and query views),
synthetic tasks."""

from gessl.data.augment import Augment, cifar_augment, digits_augment
from gessl.data.datasets import (
    DATASETS,
    DatasetEntry,
    ImageSet,
    available_datasets,
    class_split,
    dataset_entry,
    load_cifar10,
    load_cifar100,
    load_dataset,
    load_digits,
    load_stl10,
    register_dataset,
    unregister_dataset,
)
from gessl.data.image_tasks import DatasetTasks
from gessl.data.synthetic import GaussianLatentTasks, SyntheticImageTasks, TaskBatch

__all__ = [
    "DATASETS",
    "Augment",
    "DatasetEntry",
    "DatasetTasks",
    "GaussianLatentTasks",
    "ImageSet",
    "SyntheticImageTasks",
    "TaskBatch",
    "available_datasets",
    "cifar_augment",
    "class_split",
    "dataset_entry",
    "digits_augment",
    "load_cifar10",
    "load_cifar100",
    "load_dataset",
    "load_digits",
    "load_stl10",
    "register_dataset",
    "unregister_dataset",
]
