"""Readouts tuned per model on validation data (gessl.eval.protocols)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from gessl.eval.protocols import (
    PROBE_C,
    _episodes,
    _few_shot_accuracy,
    _standardise,
    fit_logistic,
    label_efficiency,
    stratified_split,
    tuned_few_shot,
    tuned_knn,
    tuned_probe,
)


def _blobs(n: int, d: int, k: int, spread: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    centres = torch.randn(k, d, generator=gen)
    y = torch.arange(n) % k
    return centres[y] + spread * torch.randn(n, d, generator=gen), y


@pytest.mark.parametrize("c", [0.05, 1.0, 20.0])
def test_the_logistic_regression_is_scikit_learns(c):
    from sklearn.linear_model import LogisticRegression

    x, y = _blobs(300, 6, 3, 1.5, 0)
    (xs,) = _standardise(x)
    w, b = fit_logistic(xs[None], y[None], torch.tensor([c]), 3)
    ref = LogisticRegression(C=c, tol=1e-10, max_iter=10_000).fit(xs.numpy(), y.numpy())
    # the same minimiser: softmax weights are defined up to a shift shared by the classes
    ours = w[0].numpy() - w[0].numpy().mean(1, keepdims=True)
    theirs = ref.coef_.T - ref.coef_.T.mean(1, keepdims=True)
    np.testing.assert_allclose(ours, theirs, atol=2e-4)
    pred = (xs.double() @ w[0] + b[0]).argmax(1).numpy()
    assert (pred == ref.predict(xs.numpy())).all()


def test_the_stratified_split_is_disjoint_and_keeps_each_class():
    y = torch.tensor([0] * 10 + [1] * 20 + [2] * 3)
    fit, val = stratified_split(y, 0.2, seed=1)
    assert sorted(torch.cat([fit, val]).tolist()) == list(range(len(y)))
    assert [int((y[val] == c).sum()) for c in range(3)] == [2, 4, 1]
    assert all(int((y[fit] == c).sum()) >= 1 for c in range(3))


def test_the_probe_reports_the_setting_that_won_on_validation():
    x, y = _blobs(400, 20, 4, 3.0, 1)
    xt, yt = _blobs(200, 20, 4, 3.0, 1)  # the same centres: the same distribution
    r = tuned_probe(x, y, xt, yt, seed=0)
    val = {float(k): v for k, v in r["validation"].items()}
    assert set(val) == set(PROBE_C)
    best = max(val.values())
    assert r["C"] == next(c for c in PROBE_C if val[c] == best)  # the first of the best
    # refitted on every training sample with that C
    xa, xte = _standardise(x, xt)
    w, b = fit_logistic(xa[None], y[None], torch.tensor([r["C"]]), 4)
    assert r["test"] == pytest.approx(float(((xte @ w[0] + b[0]).argmax(1) == yt).double().mean()))
    assert r["train"] >= r["test"] - 0.1


def test_the_knn_leaves_each_training_sample_out():
    # labels unrelated to the features: a kNN that counted a sample as its own neighbour would
    # read 1.0 on the training samples; left out, it is at chance
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(400, 8, generator=gen)
    y = torch.randint(0, 4, (400,), generator=gen)
    r = tuned_knn(x, y, x[:100], y[:100], grid=[(1, 0.07)])
    assert r["train"] < 0.4
    assert r["test"] == 1.0  # the test samples are in the bank here: their own neighbours
    xs, ys = _blobs(400, 8, 4, 0.3, 2)
    assert tuned_knn(xs, ys, xs[:50], ys[:50])["train"] > 0.95


def test_few_shot_without_steps_is_the_prototype_classifier():
    x, y = _blobs(300, 10, 5, 1.5, 3)
    gen = torch.Generator().manual_seed(0)
    sup, qry = _episodes(y, 3, 2, 4, 30, gen)
    acc = _few_shot_accuracy(x, sup, qry, 3, 2, steps=0, lr=0.0)
    xn = F.normalize(x, dim=1)
    for e in range(30):
        protos = F.normalize(xn[sup[e]].view(3, 2, -1).mean(1), dim=1)
        pred = (xn[qry[e]] @ protos.T).argmax(1)
        assert acc[e] == pytest.approx(
            float((pred == torch.arange(3).repeat_interleave(4)).float().mean())
        )
    # each episode's support and query samples differ, and class j of an episode is label j
    for e in range(30):
        assert not set(sup[e].tolist()) & set(qry[e].tolist())
        assert len({int(y[i]) for i in sup[e][:2]}) == 1


def test_few_shot_tunes_on_validation_episodes_and_reports_test_episodes():
    x, y = _blobs(600, 16, 6, 2.0, 4)
    val, test = y < 3, y >= 3
    r = tuned_few_shot(x[val], y[val], x[test], y[test], way=3, shot=5, episodes=50, seed=0)
    assert (r["steps"], r["lr"]) in [(0, 0.0), (10, 0.1), (10, 1.0), (50, 0.1), (50, 1.0)]
    best = max(r["validation"].values())
    assert r["validation"][f"steps={r['steps']},lr={r['lr']}"] == best
    assert 0.34 < r["accuracy"] <= 1.0 and r["ci95"] > 0


def test_more_labels_give_a_better_probe():
    x, y = _blobs(600, 30, 5, 4.0, 5)
    xt, yt = _blobs(300, 30, 5, 4.0, 5)
    r = label_efficiency(x, y, xt, yt, shots=(1, 5, 20), draws=8, seed=0)
    accs = [r[s]["accuracy"] for s in ("1", "5", "20")]
    assert accs[0] < accs[1] < accs[2]
    assert all(r[s]["C"] in PROBE_C and r[s]["se"] > 0 for s in r)


def test_a_class_missing_from_training_is_refused():
    x, y = _blobs(100, 4, 3, 1.0, 6)
    with pytest.raises(ValueError, match="classes the training split lacks"):
        tuned_probe(x[y < 2], y[y < 2], x, y)
