"""Image datasets as tensors: scikit-learn's bundled digits (no download), CIFAR-10/100 and STL-10
from a local folder.

Every loader returns an :class:`ImageSet` (``images`` float32 in [0, 1], ``[n, C, H, W]``, and
integer ``labels``). CIFAR/STL read the official file formats from the folder given as ``root``
or, when ``root`` is ``None``, from ``$GESSL_DATA_DIR/<dataset>``; nothing is ever downloaded. A
missing folder or file raises ``FileNotFoundError`` naming the folder and the expected files; an
unknown ``split`` raises ``ValueError`` naming the allowed ones (``SPLITS``).
"""

from __future__ import annotations

import os
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "ImageSet",
    "class_split",
    "load_cifar10",
    "load_cifar100",
    "load_dataset",
    "load_digits",
    "load_stl10",
]

CIFAR10_FILES = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
CIFAR100_FILES = ["train", "test"]
#: the splits each loader reads; anything else raises ``ValueError`` naming these
SPLITS = {
    "cifar10": ("train", "test"),
    "cifar100": ("train", "test"),
    "stl10": ("train", "test", "unlabeled", "train+unlabeled"),
}
#: the label of an image that has none (STL-10's ``unlabeled`` split)
UNLABELED = -1


@dataclass(frozen=True)
class ImageSet:
    """Images ``[n, C, H, W]`` (float32, [0, 1]) with integer labels ``[n]`` (``UNLABELED`` = −1
    for an image without a label)."""

    images: Tensor
    labels: Tensor
    name: str = "images"

    def __post_init__(self) -> None:
        if self.images.dim() != 4 or self.images.shape[0] != self.labels.shape[0]:
            raise ValueError(
                f"images must be [n, C, H, W] with one label each, got "
                f"{tuple(self.images.shape)} and {tuple(self.labels.shape)}"
            )

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.images.shape[1:])  # type: ignore[return-value]

    def subset(self, mask: Tensor) -> ImageSet:
        return ImageSet(self.images[mask], self.labels[mask], self.name)

    def classes(self) -> list[int]:
        return sorted(int(c) for c in torch.unique(self.labels))


def class_split(
    data: ImageSet, seen: list[int], test_fraction: float = 0.2, seed: int = 0
) -> tuple[ImageSet, ImageSet, ImageSet]:
    """``(train, test, held_out)``: seen classes split per class (seeded, stratified) into train
    and test; every sample of the other classes goes to ``held_out``."""
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    missing = sorted(set(seen) - set(data.classes()))
    if missing:
        raise ValueError(f"seen classes {missing} are not in the dataset ({data.classes()})")
    gen = torch.Generator().manual_seed(seed)
    train_idx, test_idx = [], []
    for c in seen:
        idx = torch.nonzero(data.labels == c).flatten()
        idx = idx[torch.randperm(len(idx), generator=gen)]
        n_test = max(1, round(test_fraction * len(idx)))
        test_idx.append(idx[:n_test])
        train_idx.append(idx[n_test:])
    seen_mask = torch.isin(data.labels, torch.tensor(seen))
    return (
        ImageSet(data.images[torch.cat(train_idx)], data.labels[torch.cat(train_idx)], data.name),
        ImageSet(data.images[torch.cat(test_idx)], data.labels[torch.cat(test_idx)], data.name),
        data.subset(~seen_mask),
    )


def load_digits() -> ImageSet:
    """scikit-learn's bundled 8×8 digits: 1797 images, 10 classes, shipped in the wheel."""
    from sklearn.datasets import load_digits as sk_digits

    d = sk_digits()
    images = torch.tensor(d.images / 16.0, dtype=torch.float32).unsqueeze(1)
    return ImageSet(images, torch.tensor(d.target, dtype=torch.long), "digits")


def _folder(root: str | os.PathLike | None, name: str, expected: list[str]) -> Path:
    if root is None:
        base = os.environ.get("GESSL_DATA_DIR")
        if base is None:
            raise FileNotFoundError(
                f"no folder given for {name}: pass root=... or set GESSL_DATA_DIR so that "
                f"$GESSL_DATA_DIR/{name} holds {', '.join(expected)} (no download is attempted)"
            )
        root = Path(base) / name
    folder = Path(root)
    missing = [f for f in expected if not (folder / f).is_file()]
    if missing:
        where = "does not exist" if not folder.is_dir() else f"lacks {', '.join(missing)}"
        raise FileNotFoundError(
            f"{name}: folder {str(folder)!r} {where}; expected the files "
            f"{', '.join(expected)} (the official python/binary distribution; no download is "
            "attempted)"
        )
    return folder


def _check_split(name: str, split: str) -> None:
    if split not in SPLITS[name]:
        raise ValueError(f"unknown split {split!r} for {name} (allowed: {', '.join(SPLITS[name])})")


def _unpickle(path: Path) -> dict:
    with open(path, "rb") as fh:
        return pickle.load(fh, encoding="bytes")


def _cifar_images(raw: np.ndarray) -> Tensor:
    return torch.from_numpy(raw.reshape(-1, 3, 32, 32).astype(np.float32) / 255.0)


def load_cifar10(root: str | os.PathLike | None = None, split: str = "train") -> ImageSet:
    """CIFAR-10 from the python pickle batches (``data_batch_1..5``, ``test_batch``)."""
    _check_split("cifar10", split)
    folder = _folder(root, "cifar10", CIFAR10_FILES)
    files = CIFAR10_FILES[:5] if split == "train" else ["test_batch"]
    batches = [_unpickle(folder / f) for f in files]
    images = np.concatenate([b[b"data"] for b in batches])
    labels = np.concatenate([np.asarray(b[b"labels"]) for b in batches])
    return ImageSet(_cifar_images(images), torch.from_numpy(labels.astype(np.int64)), "cifar10")


def load_cifar100(
    root: str | os.PathLike | None = None, split: str = "train", label: str = "fine"
) -> ImageSet:
    """CIFAR-100 from the python pickle files ``train`` and ``test`` (fine or coarse labels)."""
    if label not in ("fine", "coarse"):
        raise ValueError(f"label must be 'fine' or 'coarse', got {label!r}")
    _check_split("cifar100", split)
    folder = _folder(root, "cifar100", CIFAR100_FILES)
    batch = _unpickle(folder / ("train" if split == "train" else "test"))
    labels = np.asarray(batch[f"{label}_labels".encode()], dtype=np.int64)
    return ImageSet(_cifar_images(batch[b"data"]), torch.from_numpy(labels), "cifar100")


def load_stl10(root: str | os.PathLike | None = None, split: str = "train") -> ImageSet:
    """STL-10 from the binary files (``<split>_X.bin``: uint8 3×96×96 images stored
    column-major; ``<split>_y.bin``: labels 1..10, returned as 0..9).

    ``split``: ``"train"`` (5,000 labelled), ``"test"`` (8,000), ``"unlabeled"`` (100,000, the
    usual SSL training split; ``unlabeled_X.bin`` only, every label ``UNLABELED``) or
    ``"train+unlabeled"`` (both, the labelled images first). Only the files of the chosen split
    must be present.
    """
    _check_split("stl10", split)
    parts = split.split("+")
    expected = [f"{p}_{x}.bin" for p in parts for x in ("X", "y") if (p, x) != ("unlabeled", "y")]
    folder = _folder(root, "stl10", expected)
    images, labels = [], []
    for part in parts:
        path = folder / f"{part}_X.bin"
        raw = np.fromfile(path, dtype=np.uint8)
        if raw.size % (3 * 96 * 96):
            raise ValueError(f"{path} is not a whole number of 3×96×96 images")
        images.append(raw.reshape(-1, 3, 96, 96).transpose(0, 1, 3, 2))
        if part == "unlabeled":
            labels.append(np.full(len(images[-1]), UNLABELED, dtype=np.int64))
            continue
        labels.append(np.fromfile(folder / f"{part}_y.bin", dtype=np.uint8).astype(np.int64) - 1)
        if len(labels[-1]) != len(images[-1]):
            raise ValueError(f"stl10 {part}: {len(images[-1])} images but {len(labels[-1])} labels")
    pixels = np.concatenate(images).astype(np.float32) / 255.0
    return ImageSet(
        torch.from_numpy(np.ascontiguousarray(pixels)),
        torch.from_numpy(np.concatenate(labels)),
        "stl10",
    )


def load_dataset(
    name: str, root: str | os.PathLike | None = None, split: str = "train"
) -> ImageSet:
    """``"digits"`` (default, bundled), ``"cifar10"``, ``"cifar100"`` or ``"stl10"``."""
    if name == "digits":
        return load_digits()
    loaders = {"cifar10": load_cifar10, "cifar100": load_cifar100, "stl10": load_stl10}
    if name not in loaders:
        raise ValueError(f"unknown dataset {name!r}; available: digits, {', '.join(loaders)}")
    return loaders[name](root, split)
