"""gessl.eval: geometry and probe numbers against independent references (``docs/testing.md``)."""

from __future__ import annotations

import math
import re

import pytest
import torch

from gessl.eval.geometry import alignment, uniformity
from gessl.eval.probes import FewShotResult, effective_rank, few_shot

f64 = torch.float64


def _z(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=f64)


def _full(msg: str) -> str:
    return "^" + re.escape(msg) + "$"


def test_alignment_values():
    z1 = torch.tensor([[0.0, 0.0], [1.0, 1.0]], dtype=f64)
    z2 = torch.tensor([[3.0, 4.0], [1.0, 2.0]], dtype=f64)  # distances 5 and 1
    assert float(alignment(z1, z2)) == pytest.approx((25 + 1) / 2, rel=1e-14)  # α = 2
    assert float(alignment(z1, z2, alpha=1.0)) == pytest.approx(3.0, rel=1e-14)
    assert float(alignment(z1, z2, alpha=0.5)) == pytest.approx((5**0.5 + 1) / 2, rel=1e-14)
    a, b = _z(6, 3, seed=1), _z(6, 3, seed=2)
    ref = sum(float(torch.dist(a[i], b[i])) ** 3 for i in range(6)) / 6
    assert float(alignment(a, b, 3.0)) == pytest.approx(ref, rel=1e-12)


def test_alignment_errors():
    a = _z(4, 3)
    for z1, z2 in ((a, a[:3]), (a[0], a[0]), (a[None], a[None])):
        with pytest.raises(
            ValueError,
            match=_full(
                f"z1 and z2 must be [N, D] of the same shape, got {tuple(z1.shape)}, "
                f"{tuple(z2.shape)}"
            ),
        ):
            alignment(z1, z2)
    for alpha in (0, -1.0):
        with pytest.raises(ValueError, match=_full(f"alpha must be > 0, got {alpha}")):
            alignment(a, a, alpha)


def test_uniformity_values():
    z = torch.tensor([[0.0], [1.0], [3.0]], dtype=f64)  # squared distances 1, 9, 4
    ref2 = math.log((math.exp(-2) + math.exp(-18) + math.exp(-8)) / 3)
    assert float(uniformity(z)) == pytest.approx(ref2, rel=1e-14)
    ref05 = math.log((math.exp(-0.5) + math.exp(-4.5) + math.exp(-2)) / 3)
    assert float(uniformity(z, 0.5)) == pytest.approx(ref05, rel=1e-14)
    # two points (one pair), one feature
    assert float(uniformity(torch.tensor([[0.0], [2.0]], dtype=f64), 1.0)) == pytest.approx(-4.0)
    x = _z(5, 3, seed=3)
    pairs = [float(torch.dist(x[i], x[j])) ** 2 for i in range(5) for j in range(i + 1, 5)]
    ref = math.log(sum(math.exp(-2 * d) for d in pairs) / len(pairs))
    assert float(uniformity(x)) == pytest.approx(ref, rel=1e-12)


def test_uniformity_errors():
    for z in (torch.zeros(1, 3), torch.zeros(3), torch.zeros(2, 2, 2)):
        with pytest.raises(
            ValueError, match=_full(f"z must be [N, D] with N >= 2, got {tuple(z.shape)}")
        ):
            uniformity(z)
    for t in (0, -2.0):
        with pytest.raises(ValueError, match=_full(f"t must be > 0, got {t}")):
            uniformity(torch.zeros(3, 2), t)


def _clusters(n_cls: int, per: int, seed: int = 0, noise: float = 0.4):
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(n_cls, 8, generator=g, dtype=f64) * 2
    y = torch.arange(n_cls).repeat_interleave(per)
    x = centres[y] + noise * torch.randn(len(y), 8, generator=g, dtype=f64)
    return x, y


def test_few_shot_is_seeded_and_recorded():
    x, y = _clusters(7, 12, noise=1.5)
    torch.manual_seed(123)
    r1 = few_shot(x, y, episodes=20)
    torch.manual_seed(456)
    r2 = few_shot(x, y, episodes=20)
    assert r1 == r2  # the episodes come from `seed`, not from the global generator
    assert (r1.n_way, r1.k_shot, r1.episodes) == (5, 5, 20)
    assert r1.to_dict() == {
        "accuracy": r1.accuracy,
        "ci95": r1.ci95,
        "n_way": 5,
        "k_shot": 5,
        "episodes": 20,
    }
    assert few_shot(x, y, episodes=20, seed=1) != r1
    assert few_shot(x, y).episodes == 200
    assert 0.3 < r1.accuracy < 1.0 and r1.ci95 > 0


def test_few_shot_reference_on_separable_classes():
    # well separated classes: every query is right, the interval is 0
    x, y = _clusters(5, 7, noise=0.01)
    r = few_shot(x, y, n_way=5, k_shot=6, n_query=15, episodes=3)
    assert r == FewShotResult(1.0, 0.0, 5, 6, 3)


def test_few_shot_prototypes_use_cosine_of_each_row():
    """Row-normalised: scaling one sample's features must not change any prediction."""
    x, y = _clusters(5, 8, noise=1.0, seed=4)
    scale = torch.ones(len(x), 1, dtype=f64)
    scale[::3] = 50.0
    assert few_shot(x * scale, y, episodes=30) == few_shot(x, y, episodes=30)


def test_few_shot_class_and_sample_checks():
    x, y = _clusters(5, 6)
    with pytest.raises(
        ValueError, match=_full("6-way episodes need 6 classes, the features have 5")
    ):
        few_shot(x, y, n_way=6)
    assert few_shot(x, y, n_way=5, k_shot=5, episodes=2).n_way == 5  # 6 = k_shot + 1 samples
    assert few_shot(x, y, n_way=5, k_shot=4, episodes=2).accuracy == 1.0
    with pytest.raises(ValueError, match=r"^class \d has 6 samples; need > k_shot$"):
        few_shot(x, y, n_way=5, k_shot=6, episodes=2)


def test_few_shot_interval_is_1_96_standard_errors():
    x, y = _clusters(6, 10, noise=2.0, seed=5)
    r = few_shot(x, y, n_way=3, k_shot=1, n_query=4, episodes=40, seed=2)
    # recompute the per-episode accuracies from the same episodes via mean and interval: the
    # interval of 40 accuracies in steps of 1/12 is 1.96·sd/√40 with sd > 0
    assert r.ci95 > 0
    # an interval consistent with accuracies in [0, 1]: sd ≤ 0.5·√(40/39)
    assert r.ci95 <= 1.96 * 0.5 * math.sqrt(40 / 39) / math.sqrt(40)


def test_effective_rank_values():
    # centred rank-2 data with equal singular values: exp(H) = 2
    x = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.0, -1.0]], dtype=f64)
    assert effective_rank(x) == pytest.approx(2.0, rel=1e-12)
    # shifting by a constant row changes nothing (the features are centred)
    assert effective_rank(x + torch.tensor([5.0, -3.0], dtype=f64)) == pytest.approx(2.0, rel=1e-12)
    # a line: one non-zero singular value (the zero ones are dropped, 0·log 0 = 0)
    line = torch.tensor([[0.0, 0.0], [1.0, 0.0], [2.0, 0.0]], dtype=f64)
    assert torch.linalg.svdvals(line - line.mean(0))[1] == 0
    assert effective_rank(line) == pytest.approx(1.0, rel=1e-12)
    # unequal singular values 3 and 1: p = (3/4, 1/4)
    y = torch.tensor([[3.0, 0.0], [-3.0, 0.0], [0.0, 1.0], [0.0, -1.0]], dtype=f64)
    h = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
    assert effective_rank(y) == pytest.approx(math.exp(h), rel=1e-12)


def test_few_shot_default_queries_per_class_is_15():
    # 25 samples per class, k_shot 5: 15 of the 20 left are queries, 75 per 5-way episode, so
    # the summed accuracy over 20 episodes is a whole number of 1/75ths
    x, y = _clusters(6, 25, noise=2.5, seed=6)
    r = few_shot(x, y, episodes=20)
    total = r.accuracy * 20 * 75
    assert total == pytest.approx(round(total), abs=1e-3)  # float32 per-episode means
    assert r == few_shot(x, y, episodes=20, n_query=15)
    assert r != few_shot(x, y, episodes=20, n_query=16)


def _probe_data(seed: int = 0):
    x, y = _clusters(3, 30, noise=2.0, seed=seed)
    g = torch.Generator().manual_seed(seed + 100)
    perm = torch.randperm(len(y), generator=g)
    x, y = x[perm].float(), y[perm]
    return x[:60], y[:60], x[60:], y[60:]


def test_linear_probe_matches_sklearn_with_its_settings():
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    from gessl.eval.probes import linear_probe

    tx, ty, vx, vy = _probe_data()
    for c in (1.0, 0.01):
        sc = StandardScaler().fit(tx.numpy())
        clf = LogisticRegression(C=c, max_iter=2000).fit(sc.transform(tx.numpy()), ty.numpy())
        ref = {
            "accuracy": float(clf.score(sc.transform(vx.numpy()), vy.numpy())),
            "train_accuracy": float(clf.score(sc.transform(tx.numpy()), ty.numpy())),
            "C": c,
        }
        got = linear_probe(tx, ty, vx, vy) if c == 1.0 else linear_probe(tx, ty, vx, vy, c=c)
        assert got == ref
    # C changes the fit: a strong penalty gives a different train accuracy here
    assert linear_probe(tx, ty, vx, vy, c=0.01) != linear_probe(tx, ty, vx, vy)


def test_linear_probe_iterates_past_sklearns_default_100():
    """An ill-conditioned, weakly penalised fit that L-BFGS needs more than 100 iterations for:
    with sklearn's default cap it would stop early (a ConvergenceWarning, an error here)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    from gessl.eval.probes import linear_probe

    g = torch.Generator().manual_seed(0)
    u = torch.randn(200, 3, generator=g)
    # three groups of eight nearly collinear features: an ill-conditioned problem
    x = torch.cat([u[:, i : i + 1] + 1e-2 * torch.randn(200, 8, generator=g) for i in range(3)], 1)
    y = ((u[:, 0] - u[:, 1] + 0.5 * torch.randn(200, generator=g)) > 0).long() + (
        u[:, 2] > 0.5
    ).long()
    sc = StandardScaler().fit(x.numpy())
    clf = LogisticRegression(C=1e4, max_iter=2000).fit(sc.transform(x.numpy()), y.numpy())
    assert 100 < clf.n_iter_[0] < 2000  # 137 here
    r = linear_probe(x, y, x, y, c=1e4)
    assert r["train_accuracy"] == r["accuracy"] == float(clf.score(sc.transform(x.numpy()), y))


def test_knn_settings_and_checks():
    from gessl.eval.probes import knn_accuracy

    tx, ty, vx, vy = _probe_data(1)
    r = knn_accuracy(tx, ty, vx, vy)
    assert (r["k"], r["temperature"]) == (20, 0.07)
    assert knn_accuracy(tx, ty, vx, vy, k=500)["k"] == 60  # at most the training set
    for k, t in ((0, 0.07), (5, 0.0), (5, -1.0)):
        with pytest.raises(ValueError, match=_full("k must be >= 1 and temperature > 0")):
            knn_accuracy(tx, ty, vx, vy, k=k, temperature=t)


def test_knn_reference_and_row_normalisation():
    from gessl.eval.probes import knn_accuracy

    tx, ty, vx, vy = _probe_data(2)
    tx, vx = tx.double(), vx.double()
    for k, t in ((20, 0.07), (7, 0.5), (1, 1.0)):
        a = vx / vx.norm(dim=1, keepdim=True)
        b = tx / tx.norm(dim=1, keepdim=True)
        sim = a @ b.T
        correct = 0
        for i in range(len(vx)):
            s, j = sim[i].topk(k)
            votes = torch.zeros(3, dtype=f64).index_add_(0, ty[j], torch.exp(s / t))
            correct += int(votes.argmax()) == int(vy[i])
        ref = correct / len(vx)
        got = knn_accuracy(tx.float(), ty, vx.float(), vy, k=k, temperature=t)
        assert got["accuracy"] == pytest.approx(ref, abs=1e-6)
    # scaling individual rows of either side changes nothing (cosine similarity)
    s_tr = torch.linspace(0.1, 10, len(tx), dtype=f64)[:, None]
    s_te = torch.linspace(10, 0.1, len(vx), dtype=f64)[:, None]
    base = knn_accuracy(tx.float(), ty, vx.float(), vy, k=7, temperature=0.5)
    scaled = knn_accuracy((tx * s_tr).float(), ty, (vx * s_te).float(), vy, k=7, temperature=0.5)
    assert scaled == base


def test_few_shot_interval_value_from_two_episodes():
    """Two episodes a1, a2: ci95 = 1.96 · sd/√2 = 1.96 · |a1 − a2| / 2."""
    import warnings

    x, y = _clusters(6, 10, noise=2.5, seed=7)
    for seed in range(5):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the sd of one episode is undefined
            a1 = few_shot(x, y, n_way=3, k_shot=1, n_query=4, episodes=1, seed=seed).accuracy
        r2 = few_shot(x, y, n_way=3, k_shot=1, n_query=4, episodes=2, seed=seed)
        a2 = 2 * r2.accuracy - a1
        if abs(a1 - a2) > 0.05:
            break
    assert abs(a1 - a2) > 0.05
    assert r2.ci95 == pytest.approx(1.96 * abs(a1 - a2) / 2, rel=1e-6)
