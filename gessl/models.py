"""Encoders (backbones) and heads. Small by default: CPU runs and tests stay fast.

Normalisation inside anything the GeSSL inner loop differentiates must not keep running
statistics (they cannot be updated under ``torch.func.vmap`` and would leak across tasks), so the
CNN uses GroupNorm and projector BatchNorm layers have ``track_running_stats=False`` (SPEC §2.5).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

__all__ = ["ACTIVATIONS", "MLP", "SmallCNN", "build_backbone", "mlp_head"]

ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh, "gelu": nn.GELU}


def _activation(name: str) -> nn.Module:
    try:
        return ACTIVATIONS[name]()
    except KeyError:
        raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {name!r}") from (
            None
        )


class MLP(nn.Module):
    """Fully connected backbone on flattened input: ``[Linear → activation] × depth``.

    ``activation="tanh"`` gives a smooth network (finite-difference gradient checks).
    """

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
                layers.append(nn.BatchNorm1d(out, track_running_stats=False))
            layers.append(_activation(activation))
        d = out
    return nn.Sequential(*layers)


def build_backbone(name: str, input_shape: Sequence[int], width: int = 64) -> nn.Module:
    """``"mlp"`` (any input, flattened) or ``"cnn"`` (``[C, H, W]`` input)."""
    if name == "mlp":
        return MLP(math.prod(input_shape), width=width)
    if name == "cnn":
        if len(input_shape) != 3:
            raise ValueError(f"cnn needs [C, H, W] inputs, got shape {tuple(input_shape)}")
        return SmallCNN(input_shape[0], width=max(4, width - width % 4))
    raise ValueError(f"unknown backbone {name!r}; available: mlp, cnn")


def count_parameters(module: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


@torch.no_grad()
def ema_update(target: dict[str, Tensor], online: dict[str, Tensor], momentum: float) -> None:
    """In place: ``target ← m·target + (1 − m)·online`` for every shared name."""
    for k, t in target.items():
        t.mul_(momentum).add_(online[k].detach(), alpha=1 - momentum)
