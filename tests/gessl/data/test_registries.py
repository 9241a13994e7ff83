"""A dataset and a backbone registered from outside the package train through the experiments'
pipeline, and the configuration checks accept exactly the registered names."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from experiments.pipeline import build_model, prepare_data, train
from experiments.validation import UsageError, validate
from gessl.data import ImageSet, available_datasets, register_dataset, unregister_dataset
from gessl.data.augment import Augment, gaussian_noise
from gessl.eval import features
from gessl.models import available_backbones, register_backbone, unregister_backbone


def _toy_images(root, split):
    """Three 2×6×6 classes of noisy uint8 blobs; 8 images per class and split."""
    gen = torch.Generator().manual_seed(0 if split == "train" else 1)
    labels = torch.arange(3).repeat_interleave(8)
    base = torch.linspace(40, 200, 3)[labels][:, None, None, None]
    noise = 20 * torch.randn(len(labels), 2, 6, 6, generator=gen)
    return ImageSet((base + noise).clamp(0, 255).round().to(torch.uint8), labels, "toy")


class _TinyNet(nn.Module):
    def __init__(self, in_dim: int, width: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(in_dim, width), nn.Tanh())
        self.out_dim = width

    def forward(self, x):
        return self.net(x)


@pytest.fixture
def toys():
    register_dataset("toy", _toy_images, augment=Augment([(gaussian_noise, {"std": 0.1})], "toy"))
    register_backbone("tiny", lambda shape, width: _TinyNet(math.prod(shape), width))
    try:
        yield
    finally:
        unregister_dataset("toy")
        unregister_backbone("tiny")


def test_a_registered_dataset_and_backbone_train_one_step_through_the_pipeline(toys):
    validate("experiments/pretrain", {"dataset": "toy", "encoder": "tiny", "encoders": ["tiny"]})
    splits = prepare_data("toy", seed=0)
    assert splits.seen_classes == [0, 1] and splits.input_shape == (2, 6, 6)  # 70%, at least 2
    assert splits.held_out.classes() == [2] and splits.augment.name == "toy"
    method = build_model("simclr", "tiny", 8, [8], splits.input_shape, seed=0)
    trainer, _ = train(
        method, splits, "plain", steps=1, tasks_per_step=2, n_samples=4, seed=0, progress=False
    )
    assert trainer.step == 1 and math.isfinite(float(trainer.history[-1]["loss"]))
    feats = features(method.backbone, splits.test)  # uint8 set, converted batch by batch
    assert feats.shape == (16, 8) and feats.dtype == torch.float32


def test_configuration_checks_read_the_registries(toys):
    with pytest.raises(UsageError) as err:
        validate("experiments/pretrain", {"dataset": "imagenet"})
    assert str(err.value) == (
        "dataset: unknown value 'imagenet' "
        "(allowed: digits, cifar10, cifar100, stl10, mnist1d, toy)"
    )
    with pytest.raises(UsageError, match=r"allowed: identity, mlp, cnn, resnet18, cnn1d, tiny\)$"):
        validate("experiments/pretrain", {"encoder": "vit"})


def test_unregistered_names_are_refused_again():
    assert "toy" not in available_datasets() and "tiny" not in available_backbones()
    with pytest.raises(UsageError, match="dataset: unknown value 'toy'"):
        validate("experiments/pretrain", {"dataset": "toy"})
    with pytest.raises(ValueError, match=r"^unknown dataset 'toy'; available: "):
        prepare_data("toy")
