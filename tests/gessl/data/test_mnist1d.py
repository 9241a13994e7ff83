"""MNIST-1D: generated offline through the ``mnist1d`` package, deterministic, cached per argument
set, registered; float16 storage in ``ImageSet``."""

from __future__ import annotations

import math
import os
import random
import socket
import urllib.request

import numpy as np
import pytest
import requests
import torch

import gessl.data.mnist1d as m1d
from gessl.data import (
    MNIST1D_DEFAULTS,
    DatasetTasks,
    ImageSet,
    available_datasets,
    dataset_entry,
    load_dataset,
    load_mnist1d,
    signal_augment,
)
from gessl.data.mnist1d import mnist1d_cache_file
from gessl.models import build_backbone

SMALL = {"num_samples": 200}


def _both(root, **options):
    return load_mnist1d(root, "train", **options), load_mnist1d(root, "test", **options)


def _cache_files(folder):
    return sorted(p.name for p in folder.iterdir() if p.suffix == ".pt")


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """The 200-sample set with every other argument at its default, generated once."""
    root = tmp_path_factory.mktemp("mnist1d-base")
    return _both(root, **SMALL)


def test_defaults_are_the_packages_own():
    from mnist1d.data import get_dataset_args

    theirs = get_dataset_args(as_dict=True)
    for key, value in MNIST1D_DEFAULTS.items():
        assert list(np.atleast_1d(value)) == list(np.atleast_1d(theirs[key])), key
    assert set(theirs) - set(MNIST1D_DEFAULTS) == {"shuffle_seq", "url"}


def test_the_set_is_make_datasets_own_in_float16(base):
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()  # an ObjectView of the package defaults
    args.num_samples = 200
    state = random.getstate(), np.random.get_state()
    try:
        theirs = make_dataset(args)
    finally:
        random.setstate(state[0])
        np.random.set_state(state[1])
    for split, key in ((base[0], "x"), (base[1], "x_test")):
        want = torch.from_numpy(theirs[key]).to(torch.float16)[:, None, None, :]
        assert torch.equal(split.images, want)
    assert torch.equal(base[0].labels.long(), torch.from_numpy(theirs["y"]).long())
    assert torch.equal(base[1].labels.long(), torch.from_numpy(theirs["y_test"]).long())


def test_shapes_dtype_labels_and_standardised_values(base):
    train, test = base
    assert train.images.shape == (160, 1, 1, 40) and test.images.shape == (40, 1, 1, 40)
    assert train.images.dtype == torch.float16 and test.images.dtype == torch.float16
    assert train.name == "mnist1d" and train.shape == (1, 1, 40)
    labels = torch.cat([train.labels, test.labels]).long()
    assert torch.equal(torch.bincount(labels), torch.full((10,), 20))  # 20 per class
    x = train.as_float()
    assert x.dtype == torch.float32
    assert abs(float(x.mean())) < 0.2 and 0.7 < float(x.std()) < 1.3
    assert bool(torch.isfinite(x).all())


def test_generation_is_deterministic_and_the_cache_returns_it(tmp_path, base):
    first = _both(tmp_path / "a", **SMALL)  # fresh folders: both generate
    second = _both(tmp_path / "b", **SMALL)
    for a, b, c in zip(first, second, base):
        assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
        assert torch.equal(a.images, c.images) and torch.equal(a.labels, c.labels)
    m1d._MEMORY.clear()  # the next load reads the file
    cached = _both(tmp_path / "a", **SMALL)
    for a, c in zip(first, cached):
        assert torch.equal(a.images, c.images) and torch.equal(a.labels, c.labels)
    assert _cache_files(tmp_path / "a") == [mnist1d_cache_file(tmp_path / "a", **SMALL).name]


def test_a_loaded_set_is_a_copy_of_the_cached_one(tmp_path):
    a = load_mnist1d(tmp_path, **SMALL)
    a.images.zero_()
    b = load_mnist1d(tmp_path, **SMALL)
    assert float(b.images.float().abs().sum()) > 0


CHANGES = {
    "num_samples": 300,
    "train_split": 0.5,
    "template_len": 16,
    "padding": (30, 50),
    "scale_coeff": 0.8,
    "max_translation": 20,
    "corr_noise_scale": 0.5,
    "iid_noise_scale": 0.05,
    "shear_scale": 1.5,
    "final_seq_length": 32,
    "seed": 7,
}


def test_every_argument_is_covered():
    assert set(CHANGES) == set(MNIST1D_DEFAULTS)


@pytest.mark.parametrize("key", list(CHANGES))
def test_every_argument_changes_the_data_and_the_cache_file(tmp_path, base, key):
    changed = {**SMALL, key: CHANGES[key]}
    train, test = _both(tmp_path, **changed)
    if key == "train_split":
        assert (len(train), len(test)) == (100, 100)  # the same 200 signals, split 50/50
        assert (len(base[0]), len(base[1])) == (160, 40)
        joined = torch.cat([train.images, test.images])
        assert torch.equal(joined, torch.cat([base[0].images, base[1].images]))
    else:
        for new, old in zip((train, test), base):
            assert new.images.shape != old.images.shape or not torch.equal(new.images, old.images)
    name = _cache_files(tmp_path)
    assert len(name) == 1 and name[0] != mnist1d_cache_file(tmp_path, **SMALL).name
    assert name[0] == mnist1d_cache_file(tmp_path, **changed).name


def test_equal_arguments_share_a_cache_file(tmp_path):
    a = mnist1d_cache_file(tmp_path, num_samples=200, padding=(36, 60), scale_coeff=0.4)
    b = mnist1d_cache_file(tmp_path, num_samples=200, padding=[36, 60], iid_noise_scale=2e-2)
    assert a == b and a.parent == tmp_path
    assert a.name.startswith("mnist1d-") and len(a.name) == len("mnist1d-") + 16 + len(".pt")


def test_no_network_is_touched(tmp_path, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("network access attempted")

    monkeypatch.setattr(requests, "get", refuse)
    monkeypatch.setattr(requests.Session, "request", refuse)
    monkeypatch.setattr(urllib.request, "urlopen", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    folder = tmp_path / "empty"
    train, test = _both(folder, **SMALL, seed=1234)
    assert len(train) == 160 and len(test) == 40
    assert _cache_files(folder) == [mnist1d_cache_file(folder, **SMALL, seed=1234).name]


def test_the_global_random_states_are_unchanged(tmp_path):
    random.seed(2024)
    np.random.seed(2024)
    py_state, np_state = random.getstate(), np.random.get_state()
    load_mnist1d(tmp_path, **SMALL, seed=5)  # generates (a fresh folder): reseeds inside
    assert random.getstate() == py_state
    after = np.random.get_state()
    assert after[0] == np_state[0] and np.array_equal(after[1], np_state[1])
    assert after[2:] == np_state[2:]


def test_a_corrupt_cache_file_is_regenerated(tmp_path, base):
    load_mnist1d(tmp_path, **SMALL)
    path = mnist1d_cache_file(tmp_path, **SMALL)
    for junk in (b"not a torch file", path.read_bytes()[:100]):
        path.write_bytes(junk)
        again = load_mnist1d(tmp_path, "test", **SMALL)
        assert torch.equal(again.images, base[1].images)
        payload = torch.load(path, weights_only=True)  # overwritten with the real set
        assert torch.equal(payload["test_images"], base[1].images)


def test_a_cache_file_of_other_contents_is_regenerated(tmp_path, base):
    path = mnist1d_cache_file(tmp_path, **SMALL)
    torch.save({"train_images": torch.zeros(3)}, path)
    assert torch.equal(load_mnist1d(tmp_path, **SMALL).images, base[0].images)
    assert torch.load(path, weights_only=True)["arguments"]["num_samples"] == 200


@pytest.mark.skipif(
    hasattr(os, "geteuid") and os.geteuid() == 0, reason="root ignores file permissions"
)
def test_an_unwritable_cache_folder_still_returns_the_data(tmp_path, base):
    tmp_path.chmod(0o500)
    try:
        with pytest.warns(RuntimeWarning, match="could not write the cache file"):
            got = load_mnist1d(tmp_path, **SMALL)
        again = load_mnist1d(tmp_path, **SMALL)  # no second warning (they are errors here)
    finally:
        tmp_path.chmod(0o700)
    assert torch.equal(got.images, base[0].images) and torch.equal(again.images, got.images)
    assert _cache_files(tmp_path) == []


def test_a_cache_folder_that_cannot_be_created_still_returns_the_data(tmp_path, base):
    blocker = tmp_path / "a-file"
    blocker.write_text("in the way")
    with pytest.warns(RuntimeWarning, match="could not write the cache file"):
        got = load_mnist1d(blocker / "cache", "test", **SMALL)
    assert torch.equal(got.images, base[1].images)
    again = load_mnist1d(blocker / "cache", "test", **SMALL)  # warned once: no error here
    assert torch.equal(again.images, got.images)


def test_a_failed_write_leaves_no_temporary_file(tmp_path, base, monkeypatch):
    def fail(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(m1d.os, "replace", fail)
    with pytest.warns(RuntimeWarning, match="disk full"):
        got = load_mnist1d(tmp_path, **SMALL)
    assert torch.equal(got.images, base[0].images)
    assert list(tmp_path.iterdir()) == []


def test_the_cache_folder_follows_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("GESSL_CACHE_DIR", str(tmp_path / "g"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "x"))
    assert mnist1d_cache_file().parent == tmp_path / "g" / "mnist1d"
    monkeypatch.delenv("GESSL_CACHE_DIR")
    assert mnist1d_cache_file().parent == tmp_path / "x" / "gessl" / "mnist1d"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert mnist1d_cache_file().parent == tmp_path / "home" / ".cache" / "gessl" / "mnist1d"
    monkeypatch.setenv("GESSL_CACHE_DIR", str(tmp_path / "g"))
    load_mnist1d(**SMALL)
    assert _cache_files(tmp_path / "g" / "mnist1d") == [mnist1d_cache_file(**SMALL).name]


BAD = [
    ("num_samples", 19),
    ("num_samples", 200.0),
    ("num_samples", True),
    ("train_split", 0),
    ("train_split", 1.0),
    ("train_split", math.nan),
    ("train_split", 1e-4),  # no train signal of 5000
    ("template_len", 0),
    ("padding", (5, 3)),
    ("padding", (-1, 3)),
    ("padding", (1, 2, 3)),
    ("padding", (1.5, 3)),
    ("padding", "ab"),
    ("scale_coeff", -0.1),
    ("corr_noise_scale", math.inf),
    ("iid_noise_scale", -1e-3),
    ("shear_scale", math.nan),
    ("max_translation", 0),
    ("max_translation", 2.5),
    ("final_seq_length", 3),
    ("seed", -1),
    ("seed", 2**32),
    ("seed", 1.0),
]


@pytest.mark.parametrize(("key", "value"), BAD, ids=[f"{k}={v!r}" for k, v in BAD])
def test_bad_arguments_are_refused_naming_the_argument(tmp_path, key, value):
    with pytest.raises(ValueError, match=rf"^mnist1d: {key} ") as err:
        load_mnist1d(tmp_path, **{key: value})
    assert "\n" not in str(err.value)
    assert not tmp_path.exists() or _cache_files(tmp_path) == []


def test_an_unknown_argument_or_split_is_refused(tmp_path):
    with pytest.raises(ValueError, match="unknown argument 'num_sample'") as err:
        load_mnist1d(tmp_path, num_sample=200)
    assert "valid: num_samples, train_split," in str(err.value)
    with pytest.raises(ValueError, match=r"unknown split 'val' .*allowed: train, test"):
        load_mnist1d(tmp_path, "val", **SMALL)


def test_registered_and_loaded_through_the_registry(tmp_path, monkeypatch, base):
    assert "mnist1d" in available_datasets()
    entry = dataset_entry("mnist1d")
    assert entry.splits == ("train", "test") and entry.classes == 10 and entry.locate is None
    assert entry.augment.name == "signal"
    monkeypatch.setitem(MNIST1D_DEFAULTS, "num_samples", 200)  # a small default for the test
    test = load_dataset("mnist1d", tmp_path, "test")
    assert torch.equal(test.images, base[1].images) and torch.equal(test.labels, base[1].labels)
    assert len(load_dataset("mnist1d", tmp_path)) == 160  # the first split: train


def test_tasks_of_augmented_signals_feed_the_1d_cnn(base):
    gen = torch.Generator().manual_seed(0)
    batch = DatasetTasks(base[0], signal_augment()).sample(2, 8, gen)
    assert batch.support_a.shape == (2, 8, 1, 1, 40) and batch.support_a.dtype == torch.float32
    net = build_backbone("cnn1d", base[0].shape, 8)
    feats = net(batch.query_b.flatten(0, 1))
    assert feats.shape == (16, 16) and bool(torch.isfinite(feats).all())


def test_image_set_stores_float16_signals_and_uint8_images():
    x = torch.randn(5, 1, 1, 12).to(torch.float16) * 3
    s = ImageSet(x, torch.arange(5), "signals")
    f = s.as_float()
    assert f.dtype == torch.float32 and torch.equal(f, x.float())  # values unchanged
    assert torch.equal(s.as_float(slice(1, 3)), x[1:3].float())
    assert s.to("cpu").images.dtype == torch.float16
    assert s.subset(torch.tensor([True, False, True, False, False])).images.dtype == torch.float16
    u = ImageSet(torch.full((2, 1, 2, 2), 255, dtype=torch.uint8), torch.zeros(2).long())
    assert torch.equal(u.as_float(), torch.ones(2, 1, 2, 2))  # uint8 still / 255
    for dtype in (torch.float32, torch.bfloat16, torch.int16):
        with pytest.raises(ValueError, match=r"uint8 .* or float16 .* got") as err:
            ImageSet(torch.zeros(2, 1, 1, 4, dtype=dtype), torch.zeros(2).long())
        assert str(dtype) in str(err.value)
