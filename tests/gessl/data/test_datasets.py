"""Dataset readers on small files written in the real formats; uint8 storage and its memory;
splits; missing-data errors; the dataset registry."""

from __future__ import annotations

import pickle
import tracemalloc

import numpy as np
import pytest
import torch

from gessl.data import (
    DATASETS,
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
from gessl.data.augment import cifar_augment
from gessl.data.datasets import CIFAR10_FILES, UNLABELED


def _image_bytes(n: int, size: int, rng: np.random.Generator) -> np.ndarray:
    return rng.integers(0, 256, size=(n, 3, size, size), dtype=np.uint8)


def _write_cifar10(folder, per_batch=4, seed=0):
    rng = np.random.default_rng(seed)
    images = {}
    for name in CIFAR10_FILES:
        img = _image_bytes(per_batch, 32, rng)
        labels = rng.integers(0, 10, per_batch).tolist()
        if name == "test_batch":  # the test split: a few images whatever per_batch is
            img, labels = img[:4], labels[:4]
        with open(folder / name, "wb") as fh:  # the official layout: rows of 3072 bytes, RGB planes
            pickle.dump(
                {
                    b"data": img.reshape(len(img), -1),
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
    assert train.images.dtype == torch.uint8  # stored as in the files
    img, labels = written["data_batch_2"]
    assert np.array_equal(train.images[4:8].numpy(), img)
    # as float: exactly numpy's float32 division by 255, as before the uint8 storage
    want = img.astype(np.float32) / np.float32(255)
    assert np.array_equal(train.as_float(slice(4, 8)).numpy(), want)
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
    assert fine.images.shape == (6, 3, 32, 32) and fine.images.dtype == torch.uint8


def test_stl10_reader_is_column_major(tmp_path):
    rng = np.random.default_rng(2)
    img = _image_bytes(3, 96, rng)  # [n, C, H, W] as we want to read it back
    for split in ("train", "test"):
        # the STL-10 binaries store each channel column-major: write the transposed planes
        img.transpose(0, 1, 3, 2).tofile(tmp_path / f"{split}_X.bin")
        np.array([1, 10, 5], dtype=np.uint8).tofile(tmp_path / f"{split}_y.bin")
    data = load_stl10(tmp_path, "train")
    assert data.images.shape == (3, 3, 96, 96) and data.images.dtype == torch.uint8
    assert np.array_equal(data.images.numpy(), img)
    np.testing.assert_allclose(data.as_float().numpy(), img / 255.0, atol=1e-7)
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
    with pytest.raises(ValueError) as err:
        load_dataset("imagenet")
    assert (
        str(err.value)
        == "unknown dataset 'imagenet'; available: digits, cifar10, cifar100, stl10, mnist1d"
    )


def test_env_folder_is_used(tmp_path, monkeypatch):
    (tmp_path / "cifar10").mkdir()
    _write_cifar10(tmp_path / "cifar10", per_batch=2)
    monkeypatch.setenv("GESSL_DATA_DIR", str(tmp_path))
    assert len(load_dataset("cifar10", split="test")) == 2


def test_digits_and_class_split():
    d = load_digits()
    assert d.images.shape == (1797, 1, 8, 8) and d.images.dtype == torch.uint8
    assert int(d.images.max()) == 255 and float(d.as_float().max()) == 1.0
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
    assert np.array_equal(only.images.numpy(), unlabeled)
    assert only.labels.tolist() == [UNLABELED] * 4 == [-1] * 4
    both = load_stl10(tmp_path, "train+unlabeled")
    assert both.labels.tolist() == [2, 6, -1, -1, -1, -1]  # the labelled images first
    assert np.array_equal(both.images[:2].numpy(), train)
    assert np.array_equal(both.images[2:].numpy(), unlabeled)
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


def test_digits_are_quantised_to_uint8_within_half_a_level():
    from sklearn.datasets import load_digits as sk_digits

    d = load_digits()
    exact = torch.tensor(sk_digits().images / 16.0, dtype=torch.float32).unsqueeze(1)
    err = (d.as_float() - exact).abs()
    assert float(err.max()) <= 0.5 / 255 + 1e-7  # round(255·v/16): at most half a level
    assert float(err.max()) > 0  # a quantisation: 1..15 are not multiples of 16/255
    assert sorted(torch.unique(d.images).tolist())[:4] == [0, 16, 32, 48]
    assert torch.equal(d.as_float()[exact == 0], exact[exact == 0])
    assert torch.equal(d.as_float()[exact == 1], exact[exact == 1])


def test_an_image_set_takes_its_uint8_size_in_memory(tmp_path):
    """Storage bytes of images + labels ≤ 1.1× the uint8 pixels (float32 storage took 4×): no
    float copy, no view into a larger buffer, labels in one byte (int8) each."""
    d = load_digits()
    assert d.nbytes <= 1.1 * d.images.numel()
    assert d.nbytes == 1797 * 64 + 1797  # 115,008 pixel bytes and 1,797 label bytes: 1.016×
    assert d.labels.dtype == torch.int8
    parts = class_split(d, list(range(7)), seed=0)
    assert sum(p.nbytes for p in parts) == d.nbytes  # the splits partition it, nothing more
    _write_cifar10(tmp_path, per_batch=2000)  # a CIFAR-shaped set of 10,000 × 3×32×32
    cifar = load_cifar10(tmp_path, "train")
    assert cifar.images.shape == (10_000, 3, 32, 32)
    assert cifar.nbytes <= 1.1 * cifar.images.numel()  # labels: 1 byte per 3,072 pixels
    assert cifar.nbytes == 10_000 * (3 * 32 * 32 + 1)
    assert cifar.as_float(slice(0, 3)).dtype == torch.float32  # floats only for what is asked


def test_loading_cifar_makes_no_float_copy(tmp_path):
    """numpy's buffers are traced by tracemalloc: the peak while loading stays near two copies
    of the uint8 pixels (the unpickled batches and their concatenation); a float32 copy alone
    would be four."""
    _write_cifar10(tmp_path, per_batch=1000)
    pixels = 5000 * 3 * 32 * 32
    tracemalloc.start()
    try:
        data = load_cifar10(tmp_path, "train")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert len(data) == 5000 and peak < 3 * pixels


def test_as_float_indexes_then_converts_and_from_float_round_trips():
    d = load_digits()
    idx = torch.tensor([[3, 1], [0, 2]])
    x = d.as_float(idx)
    assert x.shape == (2, 2, 1, 8, 8) and x.dtype == torch.float32
    assert torch.equal(x, d.images[idx].float() / 255)
    back = ImageSet.from_float(d.as_float(), d.labels, "digits")
    assert torch.equal(back.images, d.images)  # 255·(q/255) rounds back to q
    assert torch.equal(d.to("cpu").images, d.images)
    with pytest.raises(ValueError, match=r"images must be uint8 .* got torch\.float32"):
        ImageSet(d.as_float(), d.labels)


def test_the_registry_holds_the_four_datasets_with_their_augmentations():
    assert available_datasets()[:4] == ["digits", "cifar10", "cifar100", "stl10"]
    assert dataset_entry("digits").splits == () and dataset_entry("digits").augment.name == "digits"
    assert dataset_entry("cifar10").splits == ("train", "test")
    blur = [
        [fn.__name__ for fn, _ in dataset_entry(n).augment.steps] for n in ("cifar100", "stl10")
    ]
    assert "gaussian_blur" not in blur[0] and blur[1][-1] == "gaussian_blur"  # blur for STL only
    with pytest.raises(ValueError) as err:
        load_dataset("digits", split="train")  # one set: no split to choose
    assert str(err.value) == "digits has no splits (one set, split by class), got split 'train'"


def test_register_and_unregister_a_dataset(tmp_path):
    def toy(root, split):
        n = 6 if split == "train" else 4
        return ImageSet(torch.full((n, 1, 4, 4), 7, dtype=torch.uint8), torch.arange(n) % 2, "toy")

    entry = register_dataset("toy", toy, augment=cifar_augment())
    try:
        assert DATASETS["toy"] is entry and available_datasets()[-1] == "toy"
        assert len(load_dataset("toy")) == 6 and len(load_dataset("toy", tmp_path, "test")) == 4
        with pytest.raises(ValueError) as err:
            load_dataset("toy", split="val")
        assert str(err.value) == "unknown split 'val' for toy (allowed: train, test)"
        with pytest.raises(ValueError) as err:
            register_dataset("toy", toy, augment=cifar_augment())
        assert str(err.value) == (
            "dataset 'toy' is already registered (registered: digits, cifar10, cifar100, stl10, "
            "mnist1d, toy)"
        )
    finally:
        unregister_dataset("toy")
    assert "toy" not in DATASETS
    with pytest.raises(ValueError, match=r"^unknown dataset 'toy'; available: digits, "):
        unregister_dataset("toy")
    with pytest.raises(ValueError, match=r"must be empty .* include 'train' and 'test'"):
        register_dataset("toy", toy, splits=("train",), augment=cifar_augment())
    assert "toy" not in DATASETS


def test_labels_are_kept_in_the_narrowest_integer_type():
    img = torch.zeros(3, 1, 2, 2, dtype=torch.uint8)
    for values, dtype in (
        ([0, 5, 9], torch.int8),
        ([-1, 0, 127], torch.int8),
        ([0, 1, 300], torch.int16),
        ([0, 1, 70_000], torch.int32),
        ([0, 1, 2**40], torch.int64),
    ):
        s = ImageSet(img, torch.tensor(values))
        assert s.labels.dtype == dtype and s.labels.tolist() == values
    assert ImageSet(img[:0], torch.zeros(0, dtype=torch.long)).labels.dtype == torch.long
