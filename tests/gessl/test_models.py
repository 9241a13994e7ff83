"""Backbones: the CIFAR ResNet-18, the small CNN, the MLP; the backbone registry."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from gessl.models import (
    BACKBONES,
    MLP,
    Flatten,
    ResNet18,
    SmallCNN,
    available_backbones,
    build_backbone,
    count_parameters,
    register_backbone,
    unregister_backbone,
)


def test_resnet18_is_the_cifar_variant():
    net = ResNet18(3, width=64)
    assert count_parameters(net) == 11_168_832  # torchvision's ResNet-18 body: 11.17 M
    stem = net.stem[0]
    assert stem.kernel_size == (3, 3) and stem.stride == (1, 1)
    assert not any(isinstance(m, nn.MaxPool2d) for m in net.modules())
    small = ResNet18(3, width=8, norm="batch")
    out = small(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 64) and small.out_dim == 64
    assert not any(getattr(m, "track_running_stats", False) for m in small.modules())


def test_backbone_factory():
    assert build_backbone("mlp", (1, 8, 8), 16)(torch.randn(3, 1, 8, 8)).shape == (3, 16)
    assert isinstance(build_backbone("cnn", (1, 8, 8), 16), SmallCNN)
    assert isinstance(build_backbone("resnet18", (3, 32, 32), 8), ResNet18)
    assert isinstance(build_backbone("identity", (1, 8, 8)), Flatten)
    with pytest.raises(ValueError) as err:
        build_backbone("vit", (3, 32, 32))
    assert str(err.value) == "unknown backbone 'vit'; available: identity, mlp, cnn, resnet18"
    with pytest.raises(ValueError, match=r"\[C, H, W\]"):
        build_backbone("cnn", (64,))
    with pytest.raises(ValueError, match="activation"):
        MLP(4, activation="swish")


class _Toy(nn.Module):
    def __init__(self, in_dim: int, width: int) -> None:
        super().__init__()
        self.lin = nn.Linear(in_dim, width)
        self.out_dim = width

    def forward(self, x):
        return self.lin(x.flatten(1))


def test_register_and_unregister_a_backbone():
    assert available_backbones()[:4] == ["identity", "mlp", "cnn", "resnet18"]
    builder = register_backbone("toy", lambda shape, width: _Toy(shape[0] * shape[1], width))
    try:
        assert BACKBONES["toy"] is builder and available_backbones()[-1] == "toy"
        net = build_backbone("toy", (2, 3), 5)
        assert isinstance(net, _Toy) and net(torch.randn(4, 2, 3)).shape == (4, 5)
        with pytest.raises(ValueError) as err:
            register_backbone("toy", builder)
        assert str(err.value) == (
            "backbone 'toy' is already registered (registered: identity, mlp, cnn, resnet18, toy)"
        )
    finally:
        unregister_backbone("toy")
    assert "toy" not in BACKBONES
    with pytest.raises(ValueError, match=r"^unknown backbone 'toy'; available: identity, "):
        unregister_backbone("toy")
    register_backbone("no_out_dim", lambda shape, width: nn.Flatten())
    try:
        with pytest.raises(ValueError, match="without an integer out_dim: None"):
            build_backbone("no_out_dim", (2, 3))
    finally:
        unregister_backbone("no_out_dim")
