"""Dataset readers on small files written in the real formats; splits; missing-data errors."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from gessl.data import (
    class_split,
    load_cifar10,
    load_cifar100,
    load_dataset,
    load_digits,
    load_stl10,
)
from gessl.data.datasets import CIFAR10_FILES, UNLABELED


def _image_bytes(n: int, size: int, rng: np.random.Generator) -> np.ndarray:
    return rng.integers(0, 256, size=(n, 3, size, size), dtype=np.uint8)


def _write_cifar10(folder, per_batch=4, seed=0):
    rng = np.random.default_rng(seed)
    images = {}
    for name in CIFAR10_FILES:
        img = _image_bytes(per_batch, 32, rng)
        labels = rng.integers(0, 10, per_batch).tolist()
        with open(folder / name, "wb") as fh:  # the official layout: rows of 3072 bytes, RGB planes
            pickle.dump(
                {
                    b"data": img.reshape(per_batch, -1),
                    b"labels": labels,
                    b"batch_label": name.encode(),
                },
                fh,
            )
        images[name] = (img, labels)
    return images


def test_cifar10_reader(tmp_path):
    written = _write_cifar10(tmp_path)
    train = load_cifar10(tmp_path, "train")
    test = load_cifar10(tmp_path, "test")
    assert train.images.shape == (20, 3, 32, 32) and test.images.shape == (4, 3, 32, 32)
    img, labels = written["data_batch_2"]
    np.testing.assert_allclose(train.images[4:8].numpy(), img / 255.0, rtol=0, atol=1e-7)
    assert train.labels[4:8].tolist() == labels
    assert test.labels.tolist() == written["test_batch"][1]


def test_cifar100_reader_fine_and_coarse(tmp_path):
    rng = np.random.default_rng(1)
    for split, n in (("train", 6), ("test", 3)):
        img = _image_bytes(n, 32, rng)
        with open(tmp_path / split, "wb") as fh:
            pickle.dump(
                {
                    b"data": img.reshape(n, -1),
                    b"fine_labels": list(range(n)),
                    b"coarse_labels": [i // 2 for i in range(n)],
                },
                fh,
            )
    fine = load_cifar100(tmp_path, "train")
    coarse = load_cifar100(tmp_path, "test", label="coarse")
    assert fine.labels.tolist() == list(range(6)) and coarse.labels.tolist() == [0, 0, 1]
    assert fine.images.shape == (6, 3, 32, 32)


def test_stl10_reader_is_column_major(tmp_path):
    rng = np.random.default_rng(2)
    img = _image_bytes(3, 96, rng)  # [n, C, H, W] as we want to read it back
    for split in ("train", "test"):
        # the STL-10 binaries store each channel column-major: write the transposed planes
        img.transpose(0, 1, 3, 2).tofile(tmp_path / f"{split}_X.bin")
        np.array([1, 10, 5], dtype=np.uint8).tofile(tmp_path / f"{split}_y.bin")
    data = load_stl10(tmp_path, "train")
    assert data.images.shape == (3, 3, 96, 96)
    np.testing.assert_allclose(data.images.numpy(), img / 255.0, atol=1e-7)
    assert data.labels.tolist() == [0, 9, 4]  # labels 1..10 become 0..9


def test_missing_files_name_the_folder_and_the_files(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match=r"does not exist.*data_batch_1"):
        load_cifar10(tmp_path / "nowhere")
    (tmp_path / "stl").mkdir()
    (tmp_path / "stl" / "train_X.bin").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match=r"lacks train_y\.bin"):
        load_stl10(tmp_path / "stl")
    monkeypatch.delenv("GESSL_DATA_DIR", raising=False)
    with pytest.raises(FileNotFoundError, match="GESSL_DATA_DIR"):
        load_cifar100()
    monkeypatch.setenv("GESSL_DATA_DIR", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="cifar10"):
        load_dataset("cifar10")
    with pytest.raises(FileNotFoundError) as err:
        load_stl10()  # $GESSL_DATA_DIR/stl10 does not exist
    msg = str(err.value)  # the files of the split asked for (train), not the others
    assert "expected the files train_X.bin, train_y.bin (" in msg and "stl10" in msg
    with pytest.raises(ValueError, match="unknown dataset"):
        load_dataset("imagenet")


def test_env_folder_is_used(tmp_path, monkeypatch):
    (tmp_path / "cifar10").mkdir()
    _write_cifar10(tmp_path / "cifar10", per_batch=2)
    monkeypatch.setenv("GESSL_DATA_DIR", str(tmp_path))
    assert len(load_dataset("cifar10", split="test")) == 2


def test_digits_and_class_split():
    d = load_digits()
    assert d.images.shape == (1797, 1, 8, 8) and float(d.images.max()) == 1.0
    train, test, held = class_split(d, list(range(7)), test_fraction=0.2, seed=0)
    assert len(train) + len(test) + len(held) == 1797
    assert set(held.classes()) == {7, 8, 9} and set(train.classes()) == set(range(7))
    for c in range(7):  # stratified: about 20% of every seen class in the test split
        n_c = int((d.labels == c).sum())
        assert abs(int((test.labels == c).sum()) - 0.2 * n_c) <= 1
    # disjoint train and test (no image appears in both)
    flat_tr = {tuple(x.flatten().tolist()) for x in train.images}
    dup = sum(tuple(x.flatten().tolist()) in flat_tr for x in test.images)
    raw_dups = len(d) - len({tuple(x.flatten().tolist()) for x in d.images})
    assert dup <= raw_dups  # only images that are duplicated in the raw data itself
    with pytest.raises(ValueError, match="not in the dataset"):
        class_split(d, [11])
    again = class_split(d, list(range(7)), seed=0)[1]
    assert torch.equal(again.images, test.images)


def test_stl10_unlabeled_and_train_plus_unlabeled_load_without_label_files(tmp_path):
    rng = np.random.default_rng(3)
    train, unlabeled = _image_bytes(2, 96, rng), _image_bytes(4, 96, rng)
    train.transpose(0, 1, 3, 2).tofile(tmp_path / "train_X.bin")
    np.array([3, 7], dtype=np.uint8).tofile(tmp_path / "train_y.bin")
    unlabeled.transpose(0, 1, 3, 2).tofile(tmp_path / "unlabeled_X.bin")
    only = load_stl10(tmp_path, "unlabeled")  # no test_* and no unlabeled_y.bin needed
    assert only.images.shape == (4, 3, 96, 96)
    np.testing.assert_allclose(only.images.numpy(), unlabeled / 255.0, atol=1e-7)
    assert only.labels.tolist() == [UNLABELED] * 4 == [-1] * 4
    both = load_stl10(tmp_path, "train+unlabeled")
    assert both.labels.tolist() == [2, 6, -1, -1, -1, -1]  # the labelled images first
    np.testing.assert_allclose(both.images[:2].numpy(), train / 255.0, atol=1e-7)
    np.testing.assert_allclose(both.images[2:].numpy(), unlabeled / 255.0, atol=1e-7)
    (tmp_path / "unlabeled_X.bin").unlink()
    with pytest.raises(FileNotFoundError, match=r"lacks unlabeled_X\.bin;"):
        load_stl10(tmp_path, "train+unlabeled")


@pytest.mark.parametrize(
    ("loader", "allowed"),
    [
        (load_cifar10, "train, test"),
        (load_cifar100, "train, test"),
        (load_stl10, "train, test, unlabeled, train+unlabeled"),
    ],
)
def test_an_unknown_split_names_the_allowed_ones(tmp_path, loader, allowed):
    name = loader.__name__.removeprefix("load_")
    with pytest.raises(ValueError) as err:
        loader(tmp_path, "tset")  # checked before any file is looked for
    assert str(err.value) == f"unknown split 'tset' for {name} (allowed: {allowed})"
    with pytest.raises(ValueError, match=r"^unknown split 'validation' for "):
        load_dataset(name, tmp_path, "validation")
