"""Backbones: the CIFAR ResNet-18, the small CNN, the MLP."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from gessl.models import MLP, ResNet18, SmallCNN, build_backbone, count_parameters


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
    with pytest.raises(ValueError, match="unknown backbone"):
        build_backbone("vit", (3, 32, 32))
    with pytest.raises(ValueError, match=r"\[C, H, W\]"):
        build_backbone("cnn", (64,))
    with pytest.raises(ValueError, match="activation"):
        MLP(4, activation="swish")
