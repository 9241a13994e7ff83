"""Probes on data with known answers; few-shot intervals shrink; effective rank."""

from __future__ import annotations

import pytest
import torch

from gessl.eval import effective_rank, few_shot, knn_accuracy, linear_probe


def _clusters(n_per=60, d=8, classes=4, spread=6.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    means = spread * torch.randn(classes, d, generator=g)
    y = torch.arange(classes).repeat_interleave(n_per)
    return means[y] + torch.randn(len(y), d, generator=g), y


def test_linear_probe_and_knn_on_separable_data():
    xtr, ytr = _clusters(seed=0)
    xte, yte = _clusters(seed=0)
    xte = xte + 0.1 * torch.randn(xte.shape, generator=torch.Generator().manual_seed(5))
    assert linear_probe(xtr, ytr, xte, yte)["accuracy"] >= 0.99
    assert knn_accuracy(xtr, ytr, xte, yte, k=10)["accuracy"] >= 0.99


def test_probes_at_chance_on_random_labels():
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(400, 8, generator=g), torch.randint(0, 4, (400,), generator=g)
    xt, yt = torch.randn(400, 8, generator=g), torch.randint(0, 4, (400,), generator=g)
    assert abs(linear_probe(x, y, xt, yt)["accuracy"] - 0.25) < 0.1
    assert abs(knn_accuracy(x, y, xt, yt)["accuracy"] - 0.25) < 0.1


def test_few_shot_interval_shrinks_with_episodes():
    x, y = _clusters(spread=1.2, classes=6, seed=2)
    short = few_shot(x, y, n_way=5, k_shot=1, episodes=30, seed=0)
    long = few_shot(x, y, n_way=5, k_shot=1, episodes=600, seed=0)
    assert long.ci95 < short.ci95 / 3  # ~ 1/sqrt(episodes)
    assert 0.2 < long.accuracy < 1.0
    assert few_shot(x, y, n_way=5, k_shot=5, episodes=300).accuracy > long.accuracy
    with pytest.raises(ValueError, match="need 5 classes"):
        few_shot(x[y < 3], y[y < 3], n_way=5)


def test_effective_rank():
    g = torch.Generator().manual_seed(3)
    assert effective_rank(torch.randn(2000, 6, generator=g)) > 5.8  # isotropic: about d
    line = torch.randn(200, 1, generator=g) * torch.tensor([[1.0, 2.0, -1.0, 0.5]])
    assert effective_rank(line) == pytest.approx(1.0, abs=1e-3)


def _on_circle(*angles: float) -> torch.Tensor:
    a = torch.tensor(angles, dtype=torch.float32)
    return torch.stack([torch.cos(a), torch.sin(a)], dim=1)


@pytest.mark.parametrize(
    ("k", "temperature", "winner"),
    [
        (1, 1.0, 0),  # the nearest point alone
        (2, 1.0, 0),  # e^{.995} = 2.70 > e^{.825} = 2.28; a third neighbour would flip it
        (
            3,
            0.07,
            0,
        ),  # one very close vote outweighs two farther ones: e^{.995/.07} > 2e^{.825/.07}
        (3, 1.0, 1),  # nearly equal weights: 2e^{.825} = 4.56 > e^{.995} = 2.70
        (6, 1.0, 2),  # all six: 3e^{.540} = 5.15 > 4.56 > 2.70
        (6, 0.07, 0),  # sharp weights: the closest point decides again
    ],
)
def test_knn_votes_with_exp_cos_over_temperature_among_the_k_nearest(k, temperature, winner):
    """One query at angle 0; class 0 at angle 0.1 (one point), class 1 at 0.6 (two), class 2 at
    1.0 (three): which class wins pins both the weighting exp(cos/τ) and the neighbourhood k."""
    train_x = _on_circle(0.1, 0.6, 0.6, 1.0, 1.0, 1.0) * torch.tensor(
        [[1.0], [2], [3], [1], [2], [5]]
    )
    train_y = torch.tensor([0, 1, 1, 2, 2, 2])
    query = _on_circle(0.0) * 7.0  # norms do not matter: cosine similarity
    for label in range(3):
        got = knn_accuracy(train_x, train_y, query, torch.tensor([label]), k, temperature)
        assert got["accuracy"] == (1.0 if label == winner else 0.0), (label, got)
    assert got["k"] == k and got["temperature"] == temperature
