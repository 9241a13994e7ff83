"""The universality report orders a trained encoder above a random one on seen classes."""

from __future__ import annotations

import pytest
import torch

from gessl.data import DatasetTasks, class_split, digits_augment, load_digits
from gessl.eval import universality_report
from gessl.methods import build_method
from gessl.models import SmallCNN
from gessl.trainer import GeSSLConfig, Trainer


@pytest.fixture(scope="module")
def setting():
    train, test, held = class_split(load_digits(), list(range(7)), seed=0)
    gen = torch.Generator().manual_seed(0)
    aug = digits_augment()
    sets = {
        "train": DatasetTasks(train, aug).sample(4, 24, gen),
        "fresh": DatasetTasks(test, aug).sample(4, 24, gen),
        "held_out": DatasetTasks(held, aug).sample(4, 24, gen),
    }
    return train, aug, sets


def _model():
    torch.manual_seed(0)
    return build_method("simclr", SmallCNN(1, 8), proj_dims=(32, 16))


def test_trained_encoder_beats_random_on_seen_classes(setting):
    train, aug, sets = setting
    random_model, trained_model = _model(), _model()
    Trainer(
        trained_model,
        DatasetTasks(train, aug),
        GeSSLConfig(mode="plain", outer_lr=3e-3),
        n_samples=24,
    ).fit(80, progress=False)
    rand = universality_report(random_model, sets, provider_steps=40)
    good = universality_report(trained_model, sets, provider_steps=40)
    for split in ("train", "fresh"):
        assert good[split]["accuracy"] > rand[split]["accuracy"] + 0.1
        assert good[split]["sigma"] < rand[split]["sigma"]
    for rep in (rand, good):
        for r in rep.values():
            assert r["sigma"] >= 0 and r["sigma_excess"] >= 0
            assert 0 <= r["accuracy"] <= 1 and r["n"] == 24


def test_providers_and_errors(setting):
    _, _, sets = setting
    m = _model()
    look = universality_report(m, {"fresh": sets["fresh"]}, provider="lookahead", provider_steps=3)
    assert look["fresh"]["provider_steps"] == 3
    trained = universality_report(m, {"fresh": sets["fresh"]}, provider_steps=200, patience=1)
    assert trained["fresh"]["provider_steps"] < 200  # stopped once the support loss plateaued
    with pytest.raises(ValueError, match="provider"):
        universality_report(m, sets, provider="bayes")
