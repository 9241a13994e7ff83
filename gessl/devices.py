"""Devices and numerical precision: one place that turns a user's ``device`` and ``precision``
into torch objects, and that names both sides when tensors are on different devices.

``device``: ``None`` or ``"auto"`` picks ``cuda`` when CUDA is available (under ``torchrun``:
``cuda:LOCAL_RANK``), else ``cpu``; ``"cpu"``, ``"cuda"``, ``"cuda:<index>"`` and ``"mps"`` are
taken as given, after a check that the machine has them. ``precision``: ``"float32"`` (default)
or ``"bf16"`` — bfloat16 autocast for the forward passes (:func:`autocast`); parameters,
gradients, optimiser state, the inner-loop SGD updates and the σ-term's softmax/KL arithmetic
stay in float32 (autocast runs ``log_softmax``, ``softmax`` and reductions in float32). On CUDA,
float32 matrix products use TF32 tensor cores (:func:`enable_tf32`).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator, Mapping
from typing import Any, TypeVar

import torch
from torch import Tensor

T = TypeVar("T")

__all__ = [
    "DEVICE_KINDS",
    "PRECISIONS",
    "autocast",
    "check_precision",
    "check_same_device",
    "distributed_backend",
    "enable_tf32",
    "in_float32",
    "init_distributed",
    "is_low_precision",
    "resolve_device",
    "same_device",
]

#: the values of every ``precision`` option
PRECISIONS = ("float32", "bf16")
#: the device kinds a ``device`` option accepts (``cuda`` also as ``cuda:<index>``)
DEVICE_KINDS = ("auto", "cpu", "cuda", "cuda:<index>", "mps")


def _local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """The ``torch.device`` a ``device`` option names.

    Raises:
        ValueError: one line naming the value and the allowed ones — an unknown device, or a
            CUDA/MPS device on a machine without it (or a CUDA index it does not have).
    """
    if isinstance(device, torch.device):
        device = str(device)
    if device is None or device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", _local_rank() % torch.cuda.device_count())
        return torch.device("cpu")
    if not isinstance(device, str):
        raise ValueError(
            f"unknown device {device!r} (allowed: {', '.join(DEVICE_KINDS)}, or None for auto)"
        )
    try:
        dev = torch.device(device)
    except RuntimeError:
        dev = None
    if dev is None or dev.type not in ("cpu", "cuda", "mps") or (dev.type != "cuda" and dev.index):
        raise ValueError(f"unknown device {device!r} (allowed: {', '.join(DEVICE_KINDS)})")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(
                f"device {device!r} requested but CUDA is not available on this machine "
                "(torch.cuda.is_available() is False); use device='cpu' or 'auto'"
            )
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(
                f"device {device!r}: this machine has {torch.cuda.device_count()} CUDA "
                f"device(s) (allowed: cuda:0..cuda:{torch.cuda.device_count() - 1})"
            )
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(
            f"device {device!r} requested but MPS is not available on this machine; use "
            "device='cpu' or 'auto'"
        )
    return dev


def check_precision(precision: object) -> None:
    """Raise a one-line ``ValueError`` unless ``precision`` is one of :data:`PRECISIONS`."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r} (allowed: {', '.join(PRECISIONS)})")


def same_device(a: torch.device, b: torch.device) -> bool:
    """``cuda`` and ``cuda:0`` name the same device when 0 is the current one."""
    if a.type != b.type:
        return False
    if a.type != "cuda" or a.index == b.index:
        return True
    current = torch.cuda.current_device() if torch.cuda.is_available() else 0
    return (current if a.index is None else a.index) == (current if b.index is None else b.index)


def check_same_device(expected: torch.device, tensors: Mapping[str, Tensor], what: str) -> None:
    """Raise ``ValueError`` naming both devices when a tensor of ``tensors`` is not on
    ``expected`` (``what`` says whose device ``expected`` is, e.g. "the trainer")."""
    for name, t in tensors.items():
        if isinstance(t, Tensor) and not same_device(t.device, expected):
            raise ValueError(
                f"mixed devices: {name} is on {t.device} but {what} is on {expected}; move it "
                f"with .to({str(expected)!r}) or pass device={str(t.device)!r}"
            )


@contextlib.contextmanager
def autocast(device: torch.device, precision: str) -> Iterator[None]:
    """bfloat16 autocast on ``device`` for ``precision="bf16"``; nothing for ``"float32"``."""
    check_precision(precision)
    if precision == "float32":
        yield
        return
    with torch.autocast(device_type=device.type, dtype=torch.bfloat16):
        yield


_LOW = (torch.bfloat16, torch.float16)


def is_low_precision(x: object) -> bool:
    """Whether ``x`` is a bfloat16/float16 tensor (what autocast's matrix products return)."""
    return isinstance(x, Tensor) and x.dtype in _LOW


def in_float32(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """``fn(*args, **kwargs)`` with every bfloat16/float16 tensor argument cast to float32 and
    autocast off: the loss and critic arithmetic (normalisation, softmax, covariances) runs in
    float32 whatever precision the forward passes use. Without low-precision arguments and
    outside autocast, a plain call."""
    tensors = [v for v in (*args, *kwargs.values()) if isinstance(v, Tensor)]
    kind = tensors[0].device.type if tensors else "cpu"
    if not any(map(is_low_precision, tensors)) and not torch.is_autocast_enabled(kind):
        return fn(*args, **kwargs)
    args = tuple(a.float() if is_low_precision(a) else a for a in args)
    kwargs = {k: v.float() if is_low_precision(v) else v for k, v in kwargs.items()}
    with torch.autocast(device_type=kind, enabled=False):
        return fn(*args, **kwargs)


def enable_tf32(device: torch.device) -> None:
    """On CUDA, let float32 matrix products and convolutions use TF32 tensor cores (10-bit
    mantissa inputs, float32 accumulation); nothing elsewhere."""
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True


def distributed_backend(device: torch.device) -> str:
    """``nccl`` for CUDA devices, ``gloo`` otherwise."""
    return "nccl" if device.type == "cuda" else "gloo"


def init_distributed(device: str | torch.device | None = None) -> torch.device:
    """Under ``torchrun`` (``WORLD_SIZE`` > 1 in the environment): this rank's device
    (``cuda:LOCAL_RANK`` when CUDA is there and ``device`` is ``None``/``"auto"``/``"cuda"``,
    else the CPU) and a process group on ``nccl`` (CUDA) or ``gloo`` (CPU), unless one is already
    initialised. Outside ``torchrun``: just :func:`resolve_device`."""
    import torch.distributed as dist

    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return resolve_device(device)
    dev = resolve_device(device)
    if dev.type == "cuda" and (device is None or str(device) in ("auto", "cuda")):
        dev = torch.device("cuda", _local_rank() % torch.cuda.device_count())
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if not dist.is_initialized():
        dist.init_process_group(distributed_backend(dev))
    return dev
