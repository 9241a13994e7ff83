"""Encoders (backbones) and heads. Small by default: CPU runs and tests stay fast.

Normalisation inside anything the GeSSL inner loop differentiates must not keep running
statistics (they cannot be updated under ``torch.func.vmap`` and would leak across tasks), so the
CNN uses GroupNorm and projector BatchNorm layers have ``track_running_stats=False``.

A module class that sets ``rowwise = True`` in its own body declares that its ``forward`` treats
every sample (row) on its own: it only composes its children with elementwise operations, or
(a leaf) maps each row alone. GeSSL's fast path (:mod:`gessl.adapt`) sends both views of a pair
through such a backbone in one call; a subclass must declare it again (its forward may differ).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import ClassVar

import torch
from torch import Tensor, nn

from gessl.devices import is_low_precision

__all__ = [
    "ACTIVATIONS",
    "BACKBONES",
    "MLP",
    "Flatten",
    "ResNet18",
    "SmallCNN",
    "SmallCNN1d",
    "available_backbones",
    "build_backbone",
    "mlp_head",
    "register_backbone",
    "unregister_backbone",
]

ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh, "gelu": nn.GELU, "identity": nn.Identity}


def _activation(name: str) -> nn.Module:
    try:
        return ACTIVATIONS[name]()
    except KeyError:
        raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {name!r}") from (
            None
        )


class Flatten(nn.Module):
    """The identity backbone on flattened input (no parameters): with a one-layer projector the
    method is a *linear* (affine) encoder, whose best member can be fitted exactly."""

    rowwise: ClassVar[bool] = True  # each row on its own (module docstring)

    def __init__(self, in_dim: int) -> None:
        super().__init__()
        if in_dim < 1:
            raise ValueError(f"in_dim must be >= 1, got {in_dim}")
        self.out_dim = in_dim

    def forward(self, x: Tensor) -> Tensor:
        return x.flatten(1) if x.dim() > 1 else x


class MLP(nn.Module):
    """Fully connected backbone on flattened input: ``[Linear → activation] × depth``.

    ``activation="tanh"`` gives a smooth network (finite-difference gradient checks);
    ``activation="identity"`` a linear (affine) one.
    """

    rowwise: ClassVar[bool] = True  # each row on its own (module docstring)

    def __init__(
        self, in_dim: int, width: int = 64, depth: int = 2, activation: str = "relu"
    ) -> None:
        super().__init__()
        if in_dim < 1 or width < 1 or depth < 1:
            raise ValueError("in_dim, width and depth must be >= 1")
        layers: list[nn.Module] = []
        d = in_dim
        for _ in range(depth):
            layers += [nn.Linear(d, width), _activation(activation)]
            d = width
        self.net = nn.Sequential(*layers)
        self.out_dim = width

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x.flatten(1))


class SmallCNN(nn.Module):
    """Two conv blocks (3×3 conv → GroupNorm → ReLU → 2×2 pool) and global average pooling."""

    rowwise: ClassVar[bool] = True  # each row on its own (module docstring)

    def __init__(self, in_channels: int = 1, width: int = 16, groups: int = 4) -> None:
        super().__init__()
        if width % groups:
            raise ValueError(f"width {width} must be divisible by groups {groups}")
        self.net = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1),
            nn.GroupNorm(groups, width),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1),
            nn.GroupNorm(groups, 2 * width),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.out_dim = 2 * width

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class SmallCNN1d(nn.Module):
    """A 1-D CNN for signals (MNIST-1D): three blocks of a length-5 convolution (padding 2) →
    GroupNorm → ReLU with ``width, width, 2·width`` channels, a 2× max-pool after the first two,
    then global average pooling; ``out_dim = 2·width``.

    Input ``[B, C, 1, L]`` (signals stored as height-1 images, the height squeezed) or
    ``[B, C, L]``.
    """

    rowwise: ClassVar[bool] = True  # each row on its own (module docstring)

    def __init__(self, in_channels: int = 1, width: int = 16, groups: int = 4) -> None:
        super().__init__()
        if in_channels < 1 or width < 1:
            raise ValueError(f"in_channels and width must be >= 1, got {in_channels}, {width}")
        if width % groups:
            raise ValueError(f"width {width} must be divisible by groups {groups}")
        self.net = nn.Sequential(
            nn.Conv1d(in_channels, width, 5, padding=2),
            nn.GroupNorm(groups, width),
            nn.ReLU(),
            nn.MaxPool1d(2),
            nn.Conv1d(width, width, 5, padding=2),
            nn.GroupNorm(groups, width),
            nn.ReLU(),
            nn.MaxPool1d(2),
            nn.Conv1d(width, 2 * width, 5, padding=2),
            nn.GroupNorm(groups, 2 * width),
            nn.ReLU(),
            nn.AdaptiveAvgPool1d(1),
            nn.Flatten(),
        )
        self.out_dim = 2 * width

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() == 4:
            if x.shape[2] != 1:
                raise ValueError(
                    f"SmallCNN1d needs [B, C, 1, L] or [B, C, L], got {tuple(x.shape)}"
                )
            x = x.squeeze(2)
        return self.net(x)


class _Float32Norm:
    """Batch normalisation computed in float32: under bfloat16 autocast the preceding layer's
    output is bfloat16, and ``batch_norm``'s backward under ``torch.func.vmap`` rejects a
    bfloat16 input with float32 affine parameters (torch 2.13); float32 statistics are also
    what mixed-precision training keeps for normalisation."""

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(x.float() if is_low_precision(x) else x)  # type: ignore[misc]


class BatchNorm1d(_Float32Norm, nn.BatchNorm1d):
    """``nn.BatchNorm1d`` whose statistics are float32 under autocast (see ``_Float32Norm``)."""


class BatchNorm2d(_Float32Norm, nn.BatchNorm2d):
    """``nn.BatchNorm2d`` whose statistics are float32 under autocast (see ``_Float32Norm``)."""


def _norm(kind: str, channels: int) -> nn.Module:
    if kind == "group":
        return nn.GroupNorm(min(8, channels), channels)
    if kind == "batch":  # batch statistics only: usable inside GeSSL's inner loop and vmap
        return BatchNorm2d(channels, track_running_stats=False)
    raise ValueError(f"norm must be 'group' or 'batch', got {kind!r}")


class _BasicBlock(nn.Module):
    rowwise: ClassVar[bool] = True  # each row on its own (module docstring)

    def __init__(self, cin: int, cout: int, stride: int, norm: str) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.n1 = _norm(norm, cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.n2 = _norm(norm, cout)
        self.short = (
            nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), _norm(norm, cout))
            if stride != 1 or cin != cout
            else nn.Identity()
        )

    def forward(self, x: Tensor) -> Tensor:
        out = torch.relu(self.n1(self.conv1(x)))
        return torch.relu(self.n2(self.conv2(out)) + self.short(x))


class ResNet18(nn.Module):
    """CIFAR ResNet-18: 3×3 stride-1 stem and no max-pool (the CIFAR variant whose absence is the
    usual cause of "cannot reproduce" reports for CIFAR SimCLR numbers; He et al. 2016 for the
    blocks), four stages of two basic blocks with
    widths ``w, 2w, 4w, 8w`` (``w = 64`` is the standard network; smaller widths for CPUs), global
    average pooling. ``norm="group"`` (default) or ``"batch"`` without running statistics."""

    rowwise: ClassVar[bool] = True  # each row on its own (module docstring)

    def __init__(self, in_channels: int = 3, width: int = 64, norm: str = "group") -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, 1, 1, bias=False), _norm(norm, width), nn.ReLU()
        )
        blocks, cin = [], width
        for i, mult in enumerate((1, 2, 4, 8)):
            cout = width * mult
            blocks += [
                _BasicBlock(cin, cout, 1 if i == 0 else 2, norm),
                _BasicBlock(cout, cout, 1, norm),
            ]
            cin = cout
        self.layers = nn.Sequential(*blocks)
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.out_dim = cin

    def forward(self, x: Tensor) -> Tensor:
        return self.pool(self.layers(self.stem(x)))


def mlp_head(
    in_dim: int,
    dims: Sequence[int],
    batchnorm: bool = True,
    last_bias: bool = True,
    activation: str = "relu",
) -> nn.Sequential:
    """Projector/predictor: ``Linear → [BN] → activation`` between layers, a plain last
    ``Linear``.

    BatchNorm here never tracks running statistics (batch statistics of the current task).
    """
    if not dims:
        raise ValueError("a head needs at least one layer")
    layers: list[nn.Module] = []
    d = in_dim
    for i, out in enumerate(dims):
        last = i == len(dims) - 1
        layers.append(nn.Linear(d, out, bias=last_bias or not last))
        if not last:
            if batchnorm:
                layers.append(BatchNorm1d(out, track_running_stats=False))
            layers.append(_activation(activation))
        d = out
    return nn.Sequential(*layers)


#: ``builder(input_shape, width) -> nn.Module``; the module has an ``out_dim`` attribute
BackboneBuilder = Callable[[tuple[int, ...], int], nn.Module]
#: the registered backbones by name, in the order they were registered
BACKBONES: dict[str, BackboneBuilder] = {}


def available_backbones() -> list[str]:
    """The registered backbone names, in registration order."""
    return list(BACKBONES)


def register_backbone(name: str, builder: BackboneBuilder) -> BackboneBuilder:
    """Add ``builder(input_shape, width)`` to :data:`BACKBONES` under ``name`` (usable as
    ``register_backbone(name, builder)``; returns ``builder``). The module it builds must have
    an ``out_dim`` attribute (its feature size). A name registered already raises
    ``ValueError``."""
    if name in BACKBONES:
        raise ValueError(
            f"backbone {name!r} is already registered (registered: {', '.join(BACKBONES)})"
        )
    BACKBONES[name] = builder
    return builder


def unregister_backbone(name: str) -> None:
    """Remove ``name`` from :data:`BACKBONES` (an unknown name raises ``ValueError``)."""
    _builder(name)
    del BACKBONES[name]


def _builder(name: str) -> BackboneBuilder:
    try:
        return BACKBONES[name]
    except KeyError:
        raise ValueError(f"unknown backbone {name!r}; available: {', '.join(BACKBONES)}") from None


def build_backbone(name: str, input_shape: Sequence[int], width: int = 64) -> nn.Module:
    """The registered backbone ``name`` for inputs of ``input_shape`` (:func:`available_backbones`:
    ``"identity"`` or ``"mlp"``, any input, flattened (the MLP also serves signals such as
    MNIST-1D); ``"cnn"`` or ``"resnet18"``, ``[C, H, W]`` input; ``"cnn1d"``, signals ``[C, 1, L]``
    or ``[C, L]``)."""
    module = _builder(name)(tuple(input_shape), width)
    out_dim = getattr(module, "out_dim", None)
    if isinstance(out_dim, bool) or not isinstance(out_dim, int):
        raise ValueError(
            f"backbone {name!r} built a module without an integer out_dim: {out_dim!r}"
        )
    return module


def _image_shape(name: str, input_shape: tuple[int, ...]) -> tuple[int, ...]:
    if len(input_shape) != 3:
        raise ValueError(f"{name} needs [C, H, W] inputs, got shape {tuple(input_shape)}")
    return input_shape


def _signal_shape(name: str, input_shape: tuple[int, ...]) -> tuple[int, ...]:
    if not (len(input_shape) == 2 or (len(input_shape) == 3 and input_shape[1] == 1)) or any(
        d < 1 for d in input_shape
    ):
        raise ValueError(
            f"{name} needs [C, 1, L] or [C, L] inputs (signals), got shape {tuple(input_shape)}"
        )
    return input_shape


register_backbone("identity", lambda shape, width: Flatten(math.prod(shape)))
register_backbone("mlp", lambda shape, width: MLP(math.prod(shape), width=width))
register_backbone(
    "cnn",
    lambda shape, width: SmallCNN(_image_shape("cnn", shape)[0], width=max(4, width - width % 4)),
)
register_backbone(
    "resnet18", lambda shape, width: ResNet18(_image_shape("resnet18", shape)[0], width=width)
)
register_backbone(
    "cnn1d",
    lambda shape, width: SmallCNN1d(
        _signal_shape("cnn1d", shape)[0], width=max(4, width - width % 4)
    ),
)


def count_parameters(module: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


@torch.no_grad()
def ema_update(target: dict[str, Tensor], online: dict[str, Tensor], momentum: float) -> None:
    """In place: ``target ← m·target + (1 − m)·online`` for every shared name."""
    for k, t in target.items():
        t.mul_(momentum).add_(online[k].detach(), alpha=1 - momentum)
