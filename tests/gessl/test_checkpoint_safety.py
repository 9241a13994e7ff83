"""Checkpoints load with ``weights_only=True``; a file that would run code is refused unopened."""

from __future__ import annotations

import os
import random

import numpy as np
import pytest
import torch

from gessl.data import GaussianLatentTasks
from gessl.methods import build_method
from gessl.models import MLP
from gessl.trainer import GeSSLConfig, Trainer
from gessl.trainer.checkpoint import (
    UnsafeCheckpointError,
    load_checkpoint,
    rng_states,
    save_checkpoint,
    set_rng_states,
)


class _Payload:
    """Unpickling this creates the folder ``marker`` (``os.system`` would do just as well)."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def _trainer(path=None, **cfg) -> Trainer:
    torch.manual_seed(0)
    m = build_method("byol", MLP(8, width=16), proj_dims=(16, 8))
    cfg.setdefault("tasks_per_step", 2)
    return Trainer(
        m, GaussianLatentTasks(dim=8), GeSSLConfig(**cfg), n_samples=8, checkpoint_path=path
    )


def test_a_trainer_checkpoint_loads_with_weights_only(tmp_path):
    path = str(tmp_path / "ckpt.pt")
    tr = _trainer(path, threshold="learned")
    tr.fit(2, checkpoint_every=2, progress=False)
    state = torch.load(path, weights_only=True)  # the plain torch call, no allow-list
    assert state["step"] == 2 and len(state["history"]) == 2
    assert state["threshold"] is not None and state["optimizer"]["state"]
    assert isinstance(state["rng"]["numpy"]["keys"], torch.Tensor)


def test_a_pickled_callable_is_refused_and_does_not_run(tmp_path):
    marker = tmp_path / "payload-ran"
    path = str(tmp_path / "sent-to-you.pt")
    state = _trainer().state_dict()
    state["history"] = [{"loss": 1.0, "hook": _Payload(str(marker))}]
    torch.save(state, path)  # a crafted file (save_checkpoint would not write it)
    with pytest.raises(UnsafeCheckpointError) as err:
        load_checkpoint(path)
    message = str(err.value)
    assert "\n" not in message and path in message
    assert "would run code when loaded" in message and "mkdir" in message
    assert not marker.exists()  # the payload did not run
    with pytest.raises(UnsafeCheckpointError):
        _trainer().load(path)  # the trainer's resume refuses it too
    assert not marker.exists()
    assert isinstance(err.value, ValueError)
    # the payload is real: full unpickling (what load_checkpoint used to do) runs it
    torch.load(path, weights_only=False)
    assert marker.exists()


def test_os_system_is_refused(tmp_path):
    path = str(tmp_path / "x.pt")
    torch.save({"x": os.system}, path)
    with pytest.raises(UnsafeCheckpointError, match=r"refusing to load checkpoint .*x\.pt.*system"):
        load_checkpoint(path)


def test_old_format_with_a_numpy_rng_state_is_refused(tmp_path):
    """Checkpoints written before the weights_only format pickled numpy's RNG state (an
    array): they are refused like any other file needing arbitrary unpickling."""
    path = str(tmp_path / "old.pt")
    state = _trainer().state_dict()
    state["rng"]["numpy"] = np.random.get_state()
    torch.save(state, path)
    with pytest.raises(UnsafeCheckpointError, match="numpy"):
        load_checkpoint(path)


def test_unreadable_files_are_a_value_error_naming_the_file(tmp_path):
    for name, data in [("empty.pt", b""), ("text.pt", b"not a checkpoint")]:
        path = tmp_path / name
        path.write_bytes(data)
        with pytest.raises(ValueError, match=name) as err:
            load_checkpoint(str(path))
        assert "\n" not in str(err.value)


def test_save_refuses_what_load_would_refuse(tmp_path):
    path = tmp_path / "c.pt"
    with pytest.raises(TypeError, match=r"state\['rng'\].*numpy.ndarray"):
        save_checkpoint({"rng": np.zeros(3)}, str(path))
    with pytest.raises(TypeError, match="float64"):
        save_checkpoint({"history": [{"loss": np.float64(1.0)}]}, str(path))
    assert not path.exists() and not list(tmp_path.iterdir())  # nothing written


def test_rng_states_round_trip_exactly(tmp_path):
    random.seed(3)
    np.random.seed(4)
    torch.manual_seed(5)
    random.gauss(0, 1)  # leaves a cached gaussian in both generators
    np.random.normal()
    path = str(tmp_path / "rng.pt")
    save_checkpoint({"rng": rng_states()}, path)
    expected = (random.random(), random.gauss(0, 1), np.random.normal(size=3), torch.rand(3))
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
    set_rng_states(load_checkpoint(path)["rng"])
    got = (random.random(), random.gauss(0, 1), np.random.normal(size=3), torch.rand(3))
    assert got[:2] == expected[:2]
    assert np.array_equal(got[2], expected[2]) and torch.equal(got[3], expected[3])


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"hello world\n", "not a torch file (KeyError(101))"),
        (b"epoch 3 loss 0.2\n", "not a torch file (IndexError('pop from empty list'))"),
        (bytes([177]) * 64, "byte 177 is not a pickle opcode (a corrupt or foreign file)"),
    ],
    ids=["text", "log-line", "random-bytes"],
)
def test_a_file_that_is_no_checkpoint_is_reported_as_unreadable_not_as_unsafe(
    tmp_path, data, reason
):
    path = tmp_path / "notes.pt"
    path.write_bytes(data)
    with pytest.raises(ValueError) as err:
        load_checkpoint(str(path))
    assert not isinstance(err.value, UnsafeCheckpointError)
    assert str(err.value) == f"{path} is not a readable checkpoint: {reason}"
