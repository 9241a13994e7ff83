"""gessl.trainer.checkpoint and gessl.trainer.config: file safety, messages and bounds.

Each test asserts an exact message, a boundary, a stored format or a behaviour of a checkpoint
file (where the temporary file goes, what a failed write leaves, on which device a file loads,
what an environment override cannot switch off) that a one-token change of
:mod:`gessl.trainer.checkpoint` or :mod:`gessl.trainer.config` would get wrong
(``docs/testing.md``).
"""

from __future__ import annotations

import os
import pickle
import random
import re
import zipfile
from collections import namedtuple

import numpy as np
import pytest
import torch
import torch.serialization

from gessl.trainer import GeSSLConfig
from gessl.trainer.checkpoint import (
    UnsafeCheckpointError,
    _first_line,
    load_checkpoint,
    rng_states,
    save_checkpoint,
    set_rng_states,
)


def _full(msg: str) -> str:
    """A regex matching exactly ``msg``."""
    return "^" + re.escape(msg) + "$"


# ---------------------------------------------------------------------------- config
def test_mode_is_validated_by_name():
    with pytest.raises(ValueError, match=_full("mode must be 'gessl' or 'plain', got 'maml'")):
        GeSSLConfig(mode="maml")


def test_tasks_per_step_bounds():
    assert GeSSLConfig(tasks_per_step=1).tasks_per_step == 1  # one task is allowed
    for bad in (0, -2, 2.5):
        with pytest.raises(
            ValueError, match=_full(f"tasks_per_step must be an integer >= 1, got {bad!r}")
        ):
            GeSSLConfig(tasks_per_step=bad)


@pytest.mark.parametrize("key", ["inner_lr", "sigma_weight", "weight_decay"])
def test_non_negative_options(key):
    assert getattr(GeSSLConfig(**{key: 0.0}), key) == 0.0
    with pytest.raises(ValueError, match=_full(f"{key} must be >= 0, got -0.5")):
        GeSSLConfig(**{key: -0.5})


@pytest.mark.parametrize("key", ["sigma_temperature", "outer_lr", "threshold_sharpness"])
def test_positive_options(key):
    assert getattr(GeSSLConfig(**{key: 1e-9}), key) == 1e-9
    for bad in (0.0, -1.0):
        with pytest.raises(ValueError, match=_full(f"{key} must be > 0, got {bad!r}")):
            GeSSLConfig(**{key: bad})


def test_learned_threshold_needs_inner_steps():
    with pytest.raises(
        ValueError,
        match=_full("threshold='learned' acts through the inner steps: inner_steps >= 1"),
    ):
        GeSSLConfig(threshold="learned", inner_steps=0)
    assert GeSSLConfig(threshold="learned", inner_steps=1).inner_steps == 1


# ---------------------------------------------------------------------------- what may be saved
def test_a_non_string_key_is_named_with_its_type(tmp_path):
    path = tmp_path / "k.pt"
    with pytest.raises(TypeError, match=_full("checkpoint key state['history'][1.5] is a float")):
        save_checkpoint({"history": {1.5: 1.0}}, str(path))
    assert not path.exists() and os.listdir(tmp_path) == []


def test_an_object_in_a_nested_list_is_named_by_its_path(tmp_path):
    path = tmp_path / "o.pt"
    with pytest.raises(
        TypeError,
        match=_full(
            "checkpoint entry state['history'][1][0] is a builtins.object; "
            "store tensors, numbers, strings, lists and dicts only"
        ),
    ):
        save_checkpoint({"history": [1.0, (object(),)]}, str(path))
    assert os.listdir(tmp_path) == []


Point = namedtuple("Point", "x y")


class Steps(list):
    pass


def test_list_and_tuple_subclasses_are_refused(tmp_path):
    for value, name in ((Point(1, 2), "Point"), (Steps([1, 2]), "Steps")):
        with pytest.raises(
            TypeError,
            match=_full(
                f"checkpoint entry state['x'] is a {__name__}.{name}; "
                "store tensors, numbers, strings, lists and dicts only"
            ),
        ):
            save_checkpoint({"x": value}, str(tmp_path / "s.pt"))
    assert os.listdir(tmp_path) == []


# ---------------------------------------------------------------------------- writing
def test_the_temporary_file_is_hidden_and_in_the_target_folder(tmp_path, monkeypatch):
    folder = tmp_path / "runs"
    path = folder / "ckpt.pt"
    seen: list[list[str]] = []
    real_save = torch.save

    def spy(obj, fh, *args, **kwargs):
        seen.append(sorted(os.listdir(folder)))  # while the bytes are being written
        real_save(obj, fh, *args, **kwargs)

    monkeypatch.setattr(torch, "save", spy)
    save_checkpoint({"step": 1}, str(path))
    assert len(seen) == 1 and len(seen[0]) == 1
    assert seen[0][0].startswith(".ckpt-")
    assert os.listdir(folder) == ["ckpt.pt"]
    assert load_checkpoint(str(path)) == {"step": 1}


def test_a_failed_write_keeps_the_old_checkpoint_and_leaves_no_temporary_file(
    tmp_path, monkeypatch
):
    path = tmp_path / "ckpt.pt"
    save_checkpoint({"step": 1}, str(path))

    def failing(obj, fh, *args, **kwargs):
        fh.write(b"partial")
        raise OSError("No space left on device")

    monkeypatch.setattr(torch, "save", failing)
    with pytest.raises(OSError, match=_full("No space left on device")):
        save_checkpoint({"step": 2}, str(path))
    monkeypatch.undo()
    assert os.listdir(tmp_path) == ["ckpt.pt"]
    assert load_checkpoint(str(path)) == {"step": 1}


# ---------------------------------------------------------------------------- reading
def test_a_checkpoint_written_on_a_gpu_loads_on_the_cpu(tmp_path, monkeypatch):
    path = str(tmp_path / "gpu.pt")
    # as torch.save writes a CUDA tensor: the storage's location tag is "cuda:0"
    monkeypatch.setattr(torch.serialization, "location_tag", lambda storage: "cuda:0")
    torch.save({"w": torch.arange(3.0)}, path)
    monkeypatch.undo()
    state = load_checkpoint(path)
    assert state["w"].device.type == "cpu"
    assert torch.equal(state["w"], torch.arange(3.0))


def test_the_force_no_weights_only_variable_does_not_switch_the_check_off(tmp_path, monkeypatch):
    path = str(tmp_path / "x.pt")
    torch.save({"x": os.system}, path)
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    what = f"e.g. {os.system.__module__}.system"  # posix.system
    with pytest.raises(UnsafeCheckpointError, match=re.escape(f"pickled Python objects ({what})")):
        load_checkpoint(path)


def _crafted(tmp_path, pickled: bytes) -> str:
    """A torch zip checkpoint whose ``data.pkl`` is ``pickled``."""
    base = str(tmp_path / "base.pt")
    torch.save({"a": 1}, base)
    path = str(tmp_path / "crafted.pt")
    with zipfile.ZipFile(base) as src, zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as dst:
        for name in src.namelist():
            dst.writestr(name, pickled if name.endswith("/data.pkl") else src.read(name))
    return path


def test_an_unsupported_pickle_operation_is_refused_with_the_full_message(tmp_path):
    path = _crafted(tmp_path, b"I1\n.")  # protocol-0 INT: no global, still refused
    with pytest.raises(
        UnsafeCheckpointError,
        match=_full(
            f"refusing to load checkpoint {path}: it holds pickled Python objects (an unsupported "
            "pickle operation) that would run code when loaded; GeSSL checkpoints hold only "
            "tensors, numbers, strings, lists and dicts"
        ),
    ):
        load_checkpoint(path)


def test_an_empty_file_and_a_truncated_file(tmp_path):
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    with pytest.raises(
        ValueError, match=_full(f"{empty} is not a readable checkpoint: empty file")
    ):
        load_checkpoint(str(empty))
    torch.save({"w": torch.zeros(100)}, str(tmp_path / "whole.pt"))
    data = (tmp_path / "whole.pt").read_bytes()
    cut = tmp_path / "cut.pt"
    cut.write_bytes(data[: len(data) // 2])
    try:
        torch.load(str(cut), map_location="cpu", weights_only=True)
    except RuntimeError as err:
        first = str(err).strip().splitlines()[0].strip()
    assert first.startswith("PytorchStreamReader failed reading zip archive")
    with pytest.raises(ValueError, match=_full(f"{cut} is not a readable checkpoint: {first}")):
        load_checkpoint(str(cut))


def test_a_raw_unpickling_error_is_reported_by_its_first_line(tmp_path, monkeypatch):
    """Torch versions that let the unpickler's own error through (not "Weights only load
    failed") get a "not a readable checkpoint" ``ValueError`` naming its first line."""
    path = str(tmp_path / "p.pt")
    for text, shown in (("\n  invalid load key, 'x'.\nmore\n", "invalid load key, 'x'."), ("", "")):

        def raising(*args, text=text, **kwargs):
            raise pickle.UnpicklingError(text)

        monkeypatch.setattr(torch, "load", raising)
        with pytest.raises(
            ValueError, match=_full(f"{path} is not a readable checkpoint: {shown}")
        ):
            load_checkpoint(path)


def test_first_line_of_blank_text_is_empty():
    assert _first_line("") == ""
    assert _first_line(" \n\t\n") == ""
    assert _first_line("\n  a b \nc") == "a b"


def test_a_file_that_is_not_a_dict_is_named_with_its_type(tmp_path):
    path = str(tmp_path / "l.pt")
    torch.save([1, 2], path)
    with pytest.raises(
        ValueError, match=_full(f"{path} is not a GeSSL checkpoint (it holds a list)")
    ):
        load_checkpoint(path)


# ---------------------------------------------------------------------------- RNG states
@pytest.fixture
def _global_rngs():
    """Leave the global RNG states as they were."""
    saved = (np.random.get_state(), random.getstate(), torch.get_rng_state())
    yield
    np.random.set_state(saved[0])
    random.setstate(saved[1])
    torch.set_rng_state(saved[2])


@pytest.mark.usefixtures("_global_rngs")
def test_rng_states_store_the_numpy_key_as_int64_and_round_trip(tmp_path):
    np.random.seed(5)
    random.seed(5)
    torch.manual_seed(5)
    state = rng_states()
    keys = state["numpy"]["keys"]
    assert keys.dtype == torch.int64 and tuple(keys.shape) == (624,)
    assert np.array_equal(keys.numpy(), np.random.get_state()[1].astype(np.int64))
    assert state["python"]["state"].dtype == torch.int64
    path = str(tmp_path / "rng.pt")
    save_checkpoint({"rng": state}, path)
    expected = (np.random.rand(3), random.random(), torch.rand(2))
    np.random.seed(0)
    random.seed(0)
    torch.manual_seed(0)
    set_rng_states(load_checkpoint(path)["rng"])
    assert np.array_equal(np.random.rand(3), expected[0])
    assert random.random() == expected[1]
    assert torch.equal(torch.rand(2), expected[2])
