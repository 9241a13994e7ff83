"""Shared pieces of the loss library: the result object, the registry and input validation.

Every loss in :mod:`gessl.losses` is a *pure function* of embeddings: it reads its tensors and
keyword options, keeps no state, moves nothing between devices and returns a :class:`LossOutput`.
Registration wraps the function so that an unknown keyword option raises ``ValueError`` naming
it (instead of Python's ``TypeError``), and attaches the loss's property card.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import math
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

import torch
from torch import Tensor

from gessl.devices import in_float32

__all__ = [
    "LossFn",
    "LossOutput",
    "available_losses",
    "builtin_card_path",
    "check_embeddings",
    "check_positive",
    "get_loss",
    "no_value_checks",
    "register_loss",
    "value_checks_enabled",
]


@dataclass(frozen=True)
class LossOutput:
    """The value of an SSL loss on one batch.

    Attributes:
        loss: 0-dim tensor, the scalar to minimise (differentiable where the loss is).
        terms: named 0-dim tensors making up the loss, e.g. VICReg's ``invariance``,
            ``variance`` and ``covariance``, for logging and for testing each term alone.
    """

    loss: Tensor
    terms: dict[str, Tensor] = field(default_factory=dict)

    def detached(self) -> dict[str, float]:
        """``{"loss": ..., **terms}`` as Python floats, for logging."""
        out = {"loss": float(self.loss.detach())}
        out.update({k: float(v.detach()) for k, v in self.terms.items()})
        return out


LossFn = Callable[..., LossOutput]

_REGISTRY: dict[str, LossFn] = {}


def register_loss(name: str) -> Callable[[LossFn], LossFn]:
    """Register ``fn`` under ``name`` and make unknown keyword options a ``ValueError``.

    The wrapped function keeps its signature and docstring; ``fn.loss_name`` holds ``name``.
    """

    def decorate(fn: LossFn) -> LossFn:
        sig = inspect.signature(fn)
        accepted = set(sig.parameters)

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> LossOutput:
            unknown = sorted(set(kwargs) - accepted)
            if unknown:
                valid = ", ".join(p for p in sig.parameters if p not in ("z1", "z2"))
                raise ValueError(
                    f"{name}: unknown option {unknown[0]!r}; valid options are: {valid}"
                )
            # bfloat16/float16 embeddings (autocast forward passes): the loss runs in float32
            return in_float32(fn, *args, **kwargs)

        wrapper.loss_name = name  # type: ignore[attr-defined]
        if name in _REGISTRY:
            raise ValueError(f"loss {name!r} is registered twice")
        _REGISTRY[name] = wrapper
        return wrapper

    return decorate


def get_loss(name: str) -> LossFn:
    """The registered loss function called ``name`` (see :func:`available_losses`)."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(
            f"unknown loss {name!r}; available: {', '.join(available_losses())}"
        ) from None


def available_losses() -> list[str]:
    """Names of all registered losses, sorted."""
    return sorted(_REGISTRY)


def builtin_card_path(name: str) -> str:
    """Filesystem path of the property card (TOML) shipped with built-in loss ``name``."""
    get_loss(name)  # validates the name
    return str(resources.files("gessl.losses") / "cards" / f"{name}.toml")


# ----------------------------------------------------------------------------- validation

_STATE = threading.local()


def value_checks_enabled() -> bool:
    """Whether losses check tensor values (finiteness); shapes and options are always checked."""
    return getattr(_STATE, "value_checks", True)


@contextlib.contextmanager
def no_value_checks() -> Iterator[None]:
    """Skip the data-dependent finiteness checks inside losses.

    Needed under ``torch.func.vmap`` (a batched tensor has no single truth value) and useful in hot
    training loops, which check the loss for finiteness themselves.
    """
    previous = value_checks_enabled()
    _STATE.value_checks = False
    try:
        yield
    finally:
        _STATE.value_checks = previous


def check_embeddings(
    z1: Any,
    z2: Any,
    names: tuple[str, str] = ("z1", "z2"),
    same_shape: bool = True,
    allow_tasks: bool = False,
) -> None:
    """Validate a pair of [N, D] embedding batches; raise ``ValueError`` naming the argument.

    With ``allow_tasks``, ``[T, N, D]`` (T tasks of N samples) is accepted too.
    """
    dims = (2, 3) if allow_tasks else (2,)
    shape_txt = "[N, D] or [T, N, D]" if allow_tasks else "[N, D]"
    for z, nm in zip((z1, z2), names, strict=True):
        if not isinstance(z, Tensor):
            raise ValueError(f"{nm} must be a torch.Tensor, got {type(z).__name__}")
        if z.dim() not in dims:
            raise ValueError(f"{nm} must have shape {shape_txt}, got shape {tuple(z.shape)}")
        if not z.is_floating_point():
            raise ValueError(f"{nm} must be a floating-point tensor, got {z.dtype}")
        if z.shape[-2] < 2:
            raise ValueError(f"{nm} has batch size {z.shape[-2]}; these losses need N >= 2")
        if z.shape[-1] < 1:
            raise ValueError(f"{nm} has feature dimension 0")
        if value_checks_enabled() and not bool(torch.isfinite(z).all()):
            raise ValueError(f"{nm} contains non-finite values (nan or inf)")
    if same_shape and z1.shape != z2.shape:
        raise ValueError(
            f"{names[0]} and {names[1]} must have the same shape, got "
            f"{tuple(z1.shape)} and {tuple(z2.shape)}"
        )
    if z1.dtype != z2.dtype:
        raise ValueError(f"{names[0]} and {names[1]} have different dtypes: {z1.dtype}, {z2.dtype}")


def check_extra(x: Any, name: str, dim: int, like: Tensor, rows_min: int = 1) -> None:
    """Validate an auxiliary [K, D] tensor (queue, prototypes) against the embeddings ``like``."""
    if not isinstance(x, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() != 2 or x.shape[1] != dim:
        raise ValueError(f"{name} must have shape [K, {dim}], got {tuple(x.shape)}")
    if x.shape[0] < rows_min:
        raise ValueError(f"{name} needs at least {rows_min} rows, got {x.shape[0]}")
    if x.dtype != like.dtype:
        raise ValueError(f"{name} has dtype {x.dtype} but the embeddings have {like.dtype}")
    if value_checks_enabled() and not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name} contains non-finite values (nan or inf)")


def check_positive(name: str, value: float, allow_zero: bool = False) -> None:
    """Raise ``ValueError`` unless ``value`` is a finite number > 0 (or >= 0)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name} must be a number, got {value!r}")
    ok = value >= 0 if allow_zero else value > 0
    if not (math.isfinite(value) and ok):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be finite and {bound}, got {value!r}")


def check_choice(name: str, value: Any, choices: Mapping[str, Any] | tuple[str, ...]) -> None:
    """Raise ``ValueError`` unless ``value`` is one of ``choices``."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {sorted(choices)}, got {value!r}")
