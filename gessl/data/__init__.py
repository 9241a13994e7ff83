"""Data: image datasets (bundled digits; CIFAR/STL from a local folder) stored as uint8, MNIST-1D
signals generated offline and stored as float16, a registry of them by name, batched
augmentations (images and 1-D signals), task samplers (support and query views), synthetic
tasks."""

from gessl.data.augment import Augment, cifar_augment, digits_augment, signal_augment
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
from gessl.data.mnist1d import MNIST1D_DEFAULTS, load_mnist1d
from gessl.data.synthetic import GaussianLatentTasks, SyntheticImageTasks, TaskBatch

__all__ = [
    "DATASETS",
    "MNIST1D_DEFAULTS",
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
    "load_mnist1d",
    "load_stl10",
    "register_dataset",
    "signal_augment",
    "unregister_dataset",
]
