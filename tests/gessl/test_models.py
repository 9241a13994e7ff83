"""Backbones: the CIFAR ResNet-18, the small CNN, the 1-D CNN, the MLP; the backbone registry."""

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
    SmallCNN1d,
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
    assert str(err.value) == (
        "unknown backbone 'vit'; available: identity, mlp, cnn, resnet18, cnn1d"
    )
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
    assert available_backbones()[:5] == ["identity", "mlp", "cnn", "resnet18", "cnn1d"]
    builder = register_backbone("toy", lambda shape, width: _Toy(shape[0] * shape[1], width))
    try:
        assert BACKBONES["toy"] is builder and available_backbones()[-1] == "toy"
        net = build_backbone("toy", (2, 3), 5)
        assert isinstance(net, _Toy) and net(torch.randn(4, 2, 3)).shape == (4, 5)
        with pytest.raises(ValueError) as err:
            register_backbone("toy", builder)
        assert str(err.value) == (
            "backbone 'toy' is already registered "
            "(registered: identity, mlp, cnn, resnet18, cnn1d, toy)"
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


def test_cnn1d_backbone_on_signals():
    net = build_backbone("cnn1d", (1, 1, 40), 16)
    assert isinstance(net, SmallCNN1d) and net.out_dim == 32 and SmallCNN1d.rowwise
    x = torch.randn(5, 1, 1, 40)
    out = net(x)
    assert out.shape == (5, 32)
    torch.testing.assert_close(net(x[:, :, 0]), out)  # [B, C, L] input: the same features
    convs = [m for m in net.modules() if isinstance(m, nn.Conv1d)]
    assert [(c.in_channels, c.out_channels) for c in convs] == [(1, 16), (16, 16), (16, 32)]
    assert all(c.kernel_size == (5,) and c.padding == (2,) for c in convs)
    assert sum(isinstance(m, nn.MaxPool1d) for m in net.modules()) == 2
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in net.modules())
    assert build_backbone("cnn1d", (3, 40), 10).out_dim == 16  # width 10 -> 8 (groups of 4)
    assert build_backbone("cnn1d", (2, 1, 33), 2)(torch.randn(2, 2, 1, 33)).shape == (2, 8)
    for shape in [(3, 8, 8), (64,), (1, 1, 1, 40), (1, 0, 40)]:
        with pytest.raises(ValueError, match=r"cnn1d needs \[C, 1, L\] or \[C, L\]"):
            build_backbone("cnn1d", shape, 16)
    with pytest.raises(ValueError, match="SmallCNN1d needs"):
        net(torch.randn(2, 1, 2, 40))


def test_cnn1d_gradients_flow_to_every_parameter():
    net = build_backbone("cnn1d", (1, 1, 40), 8)
    net(torch.randn(6, 1, 1, 40)).square().mean().backward()
    for name, p in net.named_parameters():
        assert p.grad is not None and bool(torch.isfinite(p.grad).all()), name
        assert float(p.grad.abs().sum()) > 0, name


def test_cnn1d_is_rowwise_under_vmap_over_tasks():
    net = build_backbone("cnn1d", (1, 1, 40), 8)
    params = dict(net.named_parameters())
    x = torch.randn(3, 4, 1, 1, 40)  # [M tasks, N samples, C, 1, L]

    def run(xt):
        return torch.func.functional_call(net, params, (xt,))

    batched = torch.func.vmap(run)(x)
    looped = torch.stack([net(xt) for xt in x])
    torch.testing.assert_close(batched, looped)
    one_by_one = torch.stack([torch.cat([net(xt[i : i + 1]) for i in range(4)]) for xt in x])
    torch.testing.assert_close(batched, one_by_one)  # each row on its own
