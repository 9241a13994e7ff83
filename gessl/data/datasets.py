"""Image datasets as tensors: scikit-learn's bundled digits (no download), CIFAR-10/100 and STL-10
from a local folder, and a registry of datasets by name (MNIST-1D, generated offline, registers
itself from :mod:`gessl.data.mnist1d`).

Every loader returns an :class:`ImageSet`: ``images`` ``[n, C, H, W]`` and integer ``labels``.
Images are stored as **uint8** (0..255; :meth:`ImageSet.as_float` gives float32 in [0, 1] for any
subset, converted on the device it is moved to); signals whose values are not in [0, 1], such as
MNIST-1D's standardised sequences (``[n, 1, 1, L]``), are stored as **float16** instead and
:meth:`ImageSet.as_float` gives their values unchanged as float32. CIFAR/STL are uint8 in their
files and are never
copied to float; digits' values 0..16 are stored as ``round(255·v/16)`` (a quantisation of at
most 0.5/255 per pixel, see :func:`load_digits`). CIFAR/STL read the official file formats from
the folder given as ``root`` or, when ``root`` is ``None``, from ``$GESSL_DATA_DIR/<dataset>``;
nothing is ever downloaded. A missing folder or file raises ``FileNotFoundError`` naming the
folder and the expected files; an unknown ``split`` raises ``ValueError`` naming the allowed ones
(``SPLITS``).

:func:`register_dataset` adds a dataset by name — its loader, its splits and the augmentation it
is pretrained with — to :data:`DATASETS`, which :func:`load_dataset`, the experiments' pipeline
and their configuration checks read; digits, cifar10, cifar100 and stl10 are registered that way.
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from gessl.data.augment import cifar_augment, digits_augment

__all__ = [
    "DATASETS",
    "DatasetEntry",
    "ImageSet",
    "available_datasets",
    "class_split",
    "dataset_entry",
    "load_cifar10",
    "load_cifar100",
    "load_dataset",
    "load_digits",
    "load_stl10",
    "register_dataset",
    "unregister_dataset",
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
STL_SHAPE = (3, 96, 96)


def _narrow(labels: Tensor) -> Tensor:
    """``labels`` in the narrowest of int8/int16/int32/int64 holding its values (unchanged when
    it already is; empty and non-integer tensors unchanged)."""
    if labels.numel() == 0 or labels.is_floating_point() or labels.dtype == torch.bool:
        return labels
    lo, hi = int(labels.min()), int(labels.max())
    for dtype in (torch.int8, torch.int16, torch.int32, torch.int64):
        info = torch.iinfo(dtype)
        if info.min <= lo and hi <= info.max:
            return labels if labels.dtype == dtype else labels.to(dtype)
    return labels


@dataclass(frozen=True)
class ImageSet:
    """Images ``[n, C, H, W]`` with integer labels ``[n]`` (``UNLABELED`` = −1 for an image
    without a label), kept in the narrowest integer type that holds them (int8 for up to 127
    classes; ``.long()`` where an index is needed).

    Images are stored as uint8 (0..255, a quarter of float32) or, for signals whose values are
    not in [0, 1] (MNIST-1D's standardised sequences, ``[n, 1, 1, L]``), as float16 (half of
    float32). :meth:`as_float` converts the images a caller needs — a batch, on the device the
    batch goes to — to float32: uint8 to [0, 1] (``/ 255``), float16 unchanged in value. Build a
    uint8 set from float images in [0, 1] with :meth:`from_float`.
    """

    images: Tensor
    labels: Tensor
    name: str = "images"

    def __post_init__(self) -> None:
        if self.images.dim() != 4 or self.images.shape[0] != self.labels.shape[0]:
            raise ValueError(
                f"images must be [n, C, H, W] with one label each, got "
                f"{tuple(self.images.shape)} and {tuple(self.labels.shape)}"
            )
        if self.images.dtype not in (torch.uint8, torch.float16):
            raise ValueError(
                f"images must be uint8 (0..255; ImageSet.from_float converts [0, 1] floats) or "
                f"float16 (signals, values unchanged), got {self.images.dtype}"
            )
        # labels in the narrowest signed integer type that holds them (int8 for up to 127
        # classes and UNLABELED): 8×8 digits would otherwise carry 8 label bytes per 64 pixels
        object.__setattr__(self, "labels", _narrow(self.labels))

    @classmethod
    def from_float(cls, images: Tensor, labels: Tensor, name: str = "images") -> ImageSet:
        """Quantise float images in [0, 1] to uint8 (``round(255·x)``, clamped to 0..255)."""
        q = (images * 255).round_().clamp_(0, 255).to(torch.uint8)
        return cls(q, labels, name)

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.images.shape[1:])  # type: ignore[return-value]

    @property
    def device(self) -> torch.device:
        return self.images.device

    @property
    def nbytes(self) -> int:
        """Bytes of the tensor storage the set holds (images and labels)."""
        return sum(t.untyped_storage().nbytes() for t in (self.images, self.labels))

    def as_float(
        self, index: Tensor | slice | None = None, device: str | torch.device | None = None
    ) -> Tensor:
        """Float32 images of ``images[index]`` (all when ``None``): uint8 storage in [0, 1]
        (``uint8 / 255``), float16 storage unchanged in value. The stored block is indexed where
        it is stored, moved to ``device`` (default: where it is) and converted there."""
        x = self.images if index is None else self.images[index]
        x = x.to(device)
        if x.dtype == torch.float16:
            return x.to(torch.float32)
        return x.to(torch.float32).div_(255)

    def to(self, device: str | torch.device) -> ImageSet:
        """The same set stored on ``device`` (in the same storage dtype)."""
        return ImageSet(self.images.to(device), self.labels.to(device), self.name)

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
    labels = data.labels.cpu()
    train_idx, test_idx = [], []
    for c in seen:
        idx = torch.nonzero(labels == c).flatten()
        idx = idx[torch.randperm(len(idx), generator=gen)]
        n_test = max(1, round(test_fraction * len(idx)))
        test_idx.append(idx[:n_test])
        train_idx.append(idx[n_test:])
    seen_mask = torch.isin(data.labels, torch.tensor(seen, device=data.labels.device))
    train, test = (torch.cat(i).to(data.labels.device) for i in (train_idx, test_idx))
    return (
        ImageSet(data.images[train], data.labels[train], data.name),
        ImageSet(data.images[test], data.labels[test], data.name),
        data.subset(~seen_mask),
    )


def load_digits() -> ImageSet:
    """scikit-learn's bundled 8×8 digits: 1797 images, 10 classes, shipped in the wheel.

    The pixel values ``v`` = 0..16 are stored as uint8 ``round(255·v/16)`` (ties to even:
    8 → 128), so :meth:`ImageSet.as_float` gives ``v/16`` to within 0.5/255 (exactly for 0 and
    16 only; 1..16 map to 16, 32, 48, …, 239, 255).
    """
    from sklearn.datasets import load_digits as sk_digits

    d = sk_digits()
    images = np.rint(d.images * (255 / 16)).astype(np.uint8)[:, None]
    return ImageSet(torch.from_numpy(images), torch.from_numpy(d.target.astype(np.int64)), "digits")


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


def _check_split(name: str, split: str, allowed: Sequence[str]) -> None:
    if split not in allowed:
        raise ValueError(f"unknown split {split!r} for {name} (allowed: {', '.join(allowed)})")


def _unpickle(path: Path) -> dict:
    with open(path, "rb") as fh:
        return pickle.load(fh, encoding="bytes")


def load_cifar10(root: str | os.PathLike | None = None, split: str = "train") -> ImageSet:
    """CIFAR-10 from the python pickle batches (``data_batch_1..5``, ``test_batch``)."""
    _check_split("cifar10", split, SPLITS["cifar10"])
    folder = _folder(root, "cifar10", CIFAR10_FILES)
    files = CIFAR10_FILES[:5] if split == "train" else ["test_batch"]
    batches = [_unpickle(folder / f) for f in files]
    images = np.concatenate([b[b"data"] for b in batches]).reshape(-1, 3, 32, 32)
    labels = np.concatenate([np.asarray(b[b"labels"], dtype=np.int64) for b in batches])
    return ImageSet(torch.from_numpy(images), torch.from_numpy(labels), "cifar10")


def load_cifar100(
    root: str | os.PathLike | None = None, split: str = "train", label: str = "fine"
) -> ImageSet:
    """CIFAR-100 from the python pickle files ``train`` and ``test`` (fine or coarse labels)."""
    if label not in ("fine", "coarse"):
        raise ValueError(f"label must be 'fine' or 'coarse', got {label!r}")
    _check_split("cifar100", split, SPLITS["cifar100"])
    folder = _folder(root, "cifar100", CIFAR100_FILES)
    batch = _unpickle(folder / ("train" if split == "train" else "test"))
    labels = np.asarray(batch[f"{label}_labels".encode()], dtype=np.int64)
    images = np.ascontiguousarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
    return ImageSet(torch.from_numpy(images), torch.from_numpy(labels), "cifar100")


def _stl_count(path: Path) -> int:
    size = path.stat().st_size
    if size % (3 * 96 * 96):
        raise ValueError(f"{path} is not a whole number of 3×96×96 images")
    return size // (3 * 96 * 96)


def load_stl10(root: str | os.PathLike | None = None, split: str = "train") -> ImageSet:
    """STL-10 from the binary files (``<split>_X.bin``: uint8 3×96×96 images stored
    column-major; ``<split>_y.bin``: labels 1..10, returned as 0..9).

    ``split``: ``"train"`` (5,000 labelled), ``"test"`` (8,000), ``"unlabeled"`` (100,000, the
    usual SSL training split; ``unlabeled_X.bin`` only, every label ``UNLABELED``) or
    ``"train+unlabeled"`` (both, the labelled images first). Only the files of the chosen split
    must be present. The files are memory-mapped and transposed straight into the one uint8
    tensor returned (no second copy in memory: 2.8 GB for the unlabeled split).
    """
    _check_split("stl10", split, SPLITS["stl10"])
    parts = split.split("+")
    expected = [f"{p}_{x}.bin" for p in parts for x in ("X", "y") if (p, x) != ("unlabeled", "y")]
    folder = _folder(root, "stl10", expected)
    counts = [_stl_count(folder / f"{part}_X.bin") for part in parts]
    labels = []
    for part, n in zip(parts, counts, strict=True):
        if part == "unlabeled":
            labels.append(np.full(n, UNLABELED, dtype=np.int64))
            continue
        labels.append(np.fromfile(folder / f"{part}_y.bin", dtype=np.uint8).astype(np.int64) - 1)
        if len(labels[-1]) != n:
            raise ValueError(f"stl10 {part}: {n} images but {len(labels[-1])} labels")
    images = torch.empty((sum(counts), *STL_SHAPE), dtype=torch.uint8)
    out, start = images.numpy(), 0
    for part, n in zip(parts, counts, strict=True):
        if n:
            raw = np.memmap(folder / f"{part}_X.bin", dtype=np.uint8, mode="r")
            out[start : start + n] = raw.reshape(n, *STL_SHAPE).transpose(0, 1, 3, 2)
            del raw
        start += n
    return ImageSet(images, torch.from_numpy(np.concatenate(labels)), "stl10")


# ----------------------------------------------------------------------------- the registry
Loader = Callable[[str | os.PathLike | None, str | None], ImageSet]
AugmentFn = Callable[[Tensor, torch.Generator], Tensor]


@dataclass(frozen=True)
class DatasetEntry:
    """A registered dataset: ``loader(root, split) -> ImageSet``, its ``splits`` and the
    augmentation ``augment(x, gen)`` it is pretrained with (float32 images as
    :meth:`ImageSet.as_float` gives them: in [0, 1] for uint8 sets, the signal's own values for
    float16 ones).

    ``splits`` is either empty — one set without an official split (``loader`` gets
    ``split=None``; the pipeline splits it by class, stratified 80/20) — or the names of the
    splits ``loader`` reads, among them ``"train"`` and ``"test"`` (the pipeline pretrains on
    the first and evaluates on the second).
    """

    name: str
    loader: Loader
    splits: tuple[str, ...]
    augment: AugmentFn
    #: ``locate(root)`` raises ``FileNotFoundError`` (one line, naming the folder and files)
    #: when the data is not where ``loader`` would read it, without reading it; ``None`` for a
    #: dataset that needs no files (bundled or generated)
    locate: Callable[[str | os.PathLike | None], Any] | None = None
    #: the number of classes (labels ``0 … classes − 1``), when known without loading the data
    classes: int | None = None


#: the registered datasets by name, in the order they were registered
DATASETS: dict[str, DatasetEntry] = {}


def available_datasets() -> list[str]:
    """The registered dataset names, in registration order."""
    return list(DATASETS)


def register_dataset(
    name: str,
    loader: Loader,
    *,
    splits: Sequence[str] = ("train", "test"),
    augment: AugmentFn,
    locate: Callable[[str | os.PathLike | None], Any] | None = None,
    classes: int | None = None,
) -> DatasetEntry:
    """Add a dataset to :data:`DATASETS` under ``name`` (see :class:`DatasetEntry`).

    Raises:
        ValueError: ``name`` is registered already, or ``splits`` is neither empty nor holds
            ``"train"`` and ``"test"``.
    """
    if name in DATASETS:
        raise ValueError(
            f"dataset {name!r} is already registered (registered: {', '.join(DATASETS)})"
        )
    splits = tuple(splits)
    if splits and not {"train", "test"} <= set(splits):
        raise ValueError(
            f"splits of {name!r} must be empty (one set, split by class) or include 'train' and "
            f"'test', got {splits}"
        )
    entry = DatasetEntry(name, loader, splits, augment, locate, classes)
    DATASETS[name] = entry
    return entry


def dataset_entry(name: str) -> DatasetEntry:
    """The registry entry of ``name``; an unknown name raises ``ValueError`` naming the
    registered ones."""
    try:
        return DATASETS[name]
    except KeyError:
        raise ValueError(f"unknown dataset {name!r}; available: {', '.join(DATASETS)}") from None


def unregister_dataset(name: str) -> None:
    """Remove ``name`` from :data:`DATASETS` (an unknown name raises ``ValueError``)."""
    dataset_entry(name)
    del DATASETS[name]


def load_dataset(
    name: str, root: str | os.PathLike | None = None, split: str | None = None
) -> ImageSet:
    """The registered dataset ``name`` (:func:`available_datasets`: ``"digits"``, bundled;
    ``"cifar10"``, ``"cifar100"``, ``"stl10"`` from ``root``; ``"mnist1d"``, generated and
    cached in ``root``), split ``split`` (default: its
    first, ``"train"``; ``None`` for a dataset without splits, such as digits)."""
    entry = dataset_entry(name)
    if not entry.splits:
        if split is not None:
            raise ValueError(f"{name} has no splits (one set, split by class), got split {split!r}")
        return entry.loader(root, None)
    split = entry.splits[0] if split is None else split
    _check_split(name, split, entry.splits)
    return entry.loader(root, split)


def _digits(root: str | os.PathLike | None, split: str | None) -> ImageSet:
    return load_digits()


register_dataset("digits", _digits, splits=(), augment=digits_augment(), classes=10)
register_dataset(
    "cifar10",
    load_cifar10,
    splits=SPLITS["cifar10"],
    augment=cifar_augment(),
    locate=partial(_folder, name="cifar10", expected=CIFAR10_FILES),
    classes=10,
)
register_dataset(
    "cifar100",
    load_cifar100,
    splits=SPLITS["cifar100"],
    augment=cifar_augment(),
    locate=partial(_folder, name="cifar100", expected=CIFAR100_FILES),
    classes=100,
)
register_dataset(
    "stl10",
    load_stl10,
    splits=SPLITS["stl10"],
    augment=cifar_augment(blur=True),
    classes=10,
    # the splits the pipeline reads: pretraining on train, evaluation on test
    locate=partial(
        _folder,
        name="stl10",
        expected=[f"{p}_{x}.bin" for p in ("train", "test") for x in ("X", "y")],
    ),
)
