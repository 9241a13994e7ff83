"""Checkpoint files: written atomically, read without running code.

A checkpoint holds only tensors, numbers, strings, ``None`` and lists/tuples/dicts of them, so it
is read with ``torch.load(..., weights_only=True)``: opening a checkpoint someone sent you cannot
run their code. The numpy and Python RNG states (which ``np.random.get_state`` and
``random.getstate`` return as a numpy array and nested tuples) are stored as tensors and plain
numbers (:func:`rng_states` / :func:`set_rng_states`). A file that needs anything else unpickled
— a class, a function, a numpy array, the pre-``weights_only`` checkpoints of this project that
stored the numpy RNG state as an array — is refused with :class:`UnsafeCheckpointError` before
any of its objects is built. Writing goes to a temporary file in the same folder, then
``os.replace``: a crash while writing never destroys the previous checkpoint.
"""

from __future__ import annotations

import os
import pickle
import pickletools
import random
import re
import tempfile
from typing import Any

import numpy as np
import torch

__all__ = [
    "UnsafeCheckpointError",
    "load_checkpoint",
    "rng_states",
    "save_checkpoint",
    "set_rng_states",
]

_SCALARS = (str, int, float, bool, type(None))


class UnsafeCheckpointError(ValueError):
    """A checkpoint file holds pickled objects that would run code when loaded: refused."""


def _check_plain(obj: Any, where: str) -> None:
    """Raise ``TypeError`` naming the first entry ``weights_only=True`` could not load back."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            if not isinstance(k, (str, int)):
                raise TypeError(f"checkpoint key {where}[{k!r}] is a {type(k).__name__}")
            _check_plain(v, f"{where}[{k!r}]")
    elif isinstance(obj, (list, tuple)) and type(obj) in (list, tuple):
        for i, v in enumerate(obj):
            _check_plain(v, f"{where}[{i}]")
    elif type(obj) not in _SCALARS and not isinstance(obj, (torch.Tensor, torch.Size)):
        raise TypeError(
            f"checkpoint entry {where} is a {type(obj).__module__}.{type(obj).__qualname__}; "
            "store tensors, numbers, strings, lists and dicts only"
        )


def save_checkpoint(state: dict[str, Any], path: str) -> None:
    """``torch.save`` to a temporary file in the same folder, then ``os.replace`` onto ``path``.

    Raises:
        TypeError: ``state`` holds something :func:`load_checkpoint` would refuse (checked
            before anything is written).
    """
    _check_plain(state, "state")
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".ckpt-", dir=folder)
    try:
        with os.fdopen(fd, "wb") as fh:
            torch.save(state, fh)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def load_checkpoint(path: str) -> dict[str, Any]:
    """Read a checkpoint with ``torch.load(..., weights_only=True)`` (on the CPU).

    Raises:
        UnsafeCheckpointError: the file holds pickled objects (classes, functions, numpy
            arrays, ...) that would run code when loaded; none of them is built.
        ValueError: the file is not a readable checkpoint (truncated, not a torch file).
        FileNotFoundError: no file at ``path``.
    """
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        text = str(err)
        byte = _foreign_byte(text)
        if byte is not None:
            raise ValueError(
                f"{path} is not a readable checkpoint: byte {byte} is not a pickle opcode "
                "(a corrupt or foreign file)"
            ) from None
        if "Weights only load failed" not in text:
            raise ValueError(f"{path} is not a readable checkpoint: {_first_line(text)}") from None
        found = re.search(r"GLOBAL ([\w.]+)", text)
        what = f"e.g. {found.group(1)}" if found else "an unsupported pickle operation"
        raise UnsafeCheckpointError(
            f"refusing to load checkpoint {path}: it holds pickled Python objects ({what}) "
            "that would run code when loaded; GeSSL checkpoints hold only tensors, numbers, "
            "strings, lists and dicts"
        ) from None
    except (EOFError, RuntimeError) as err:
        raise ValueError(
            f"{path} is not a readable checkpoint: {_first_line(str(err)) or 'empty file'}"
        ) from None
    except (KeyError, IndexError, ValueError, TypeError, AttributeError) as err:
        # what torch's weights-only unpickler raises on bytes that are not a pickle at all
        raise ValueError(
            f"{path} is not a readable checkpoint: not a torch file ({err!r})"
        ) from None
    if not isinstance(state, dict):
        raise ValueError(f"{path} is not a GeSSL checkpoint (it holds a {type(state).__name__})")
    return state


def _foreign_byte(text: str) -> int | None:
    """The byte a weights-only failure stopped at when it is no pickle opcode at all (a corrupt
    or foreign file); ``None`` when real pickle code (a global, an object-building opcode) was
    refused."""
    op = re.search(r"Unsupported operand (\d+)", text)
    if op is None or chr(int(op.group(1))) in _OPCODES:
        return None
    return int(op.group(1))


_OPCODES = {op.code for op in pickletools.opcodes}


def _first_line(text: str) -> str:
    return next((ln.strip() for ln in text.splitlines() if ln.strip()), "")


def rng_states() -> dict[str, Any]:
    """The global torch (CPU, and CUDA once initialised), numpy and Python RNG states as tensors
    and plain numbers."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    version, mt, gauss_next = random.getstate()
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else []
    return {
        "cuda": cuda,
        "torch": torch.get_rng_state(),
        "numpy": {
            "bit_generator": str(name),
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "python": {
            "version": int(version),
            "state": torch.tensor(mt, dtype=torch.int64),
            "gauss_next": None if gauss_next is None else float(gauss_next),
        },
    }


def set_rng_states(state: dict[str, Any]) -> None:
    """Restore the global RNG states saved by :func:`rng_states` (the CUDA ones when this
    machine has as many CUDA devices as the one that saved them)."""
    torch.set_rng_state(state["torch"])
    cuda = state.get("cuda", [])
    if cuda and torch.cuda.is_available() and torch.cuda.device_count() == len(cuda):
        torch.cuda.set_rng_state_all(cuda)
    n = state["numpy"]
    np.random.set_state(
        (
            n["bit_generator"],
            n["keys"].numpy().astype(np.uint32),
            n["pos"],
            n["has_gauss"],
            n["cached_gaussian"],
        )
    )
    p = state["python"]
    random.setstate((p["version"], tuple(int(x) for x in p["state"].tolist()), p["gauss_next"]))
