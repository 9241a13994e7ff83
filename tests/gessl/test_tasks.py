"""The task view: logits of the N-way task and the TaskBatch container."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from gessl.losses import infonce
from gessl.tasks import (
    CRITICS,
    Critic,
    TaskBatch,
    make_critic,
    task_labels,
    task_log_probs,
    task_logits,
)

f64 = torch.float64


def test_task_logits_values_and_batching():
    g = torch.Generator().manual_seed(0)
    q, c = torch.randn(5, 3, generator=g, dtype=f64), torch.randn(4, 3, generator=g, dtype=f64)
    lg = task_logits(q, c, temperature=0.5, critic="dot")
    assert lg.shape == (5, 4)
    assert float(lg[2, 1]) == pytest.approx(float(q[2] @ c[1]) / 0.5, rel=1e-14)
    cos = task_logits(q, c, temperature=0.5)
    want = float(F.cosine_similarity(q[3], c[0], dim=0)) / 0.5
    assert float(cos[3, 0]) == pytest.approx(want, rel=1e-13)
    qb, cb = torch.stack([q, 2 * q]), torch.stack([c, c])
    out = task_logits(qb, cb, 0.5, "dot")
    assert out.shape == (2, 5, 4) and torch.allclose(out[1], 2 * lg)
    lp = task_log_probs(q, c, 0.5, "dot")
    assert torch.allclose(lp, torch.log_softmax(lg, -1), atol=1e-14)
    assert torch.allclose(lp.exp().sum(-1), torch.ones(5, dtype=f64))


def test_every_critic_against_a_direct_formula():
    g = torch.Generator().manual_seed(1)
    q, c = torch.randn(5, 6, generator=g, dtype=f64), torch.randn(4, 6, generator=g, dtype=f64)
    want = {
        "cosine": lambda a, b: float(a @ b / (a.norm() * b.norm())),
        "dot": lambda a, b: float(a @ b),
        "neg_sq_distance": lambda a, b: -float((a - b).pow(2).sum()),
        "two_headed": lambda a, b: -float((a[:3] - b[3:]).pow(2).sum()),
    }
    assert set(want) == set(CRITICS)
    for name, fn in want.items():
        lg = Critic(name, 0.7).logits(q, c)
        direct = torch.tensor(
            [[fn(q[i], c[j]) / 0.7 for j in range(4)] for i in range(5)], dtype=f64
        )
        assert torch.allclose(lg, direct, rtol=1e-12, atol=1e-12), name
    # the two-headed critic is asymmetric; the symmetric distance critic is not
    th = Critic("two_headed").logits(q[:4], c)
    assert not torch.allclose(th, Critic("two_headed").logits(c, q[:4]).transpose(0, 1))
    sq = Critic("neg_sq_distance").logits(q[:4], c)
    assert torch.allclose(sq, Critic("neg_sq_distance").logits(c, q[:4]).transpose(0, 1))


def test_two_headed_critic_represents_a_gaussian_bayes_critic():
    """−‖Au − Bv‖² with a linear encoder z = [Ax; Bx]: the form of the families' Bayes logits."""
    g = torch.Generator().manual_seed(2)
    a, b = torch.randn(3, 3, generator=g, dtype=f64), torch.randn(3, 3, generator=g, dtype=f64)
    u, v = torch.randn(7, 3, generator=g, dtype=f64), torch.randn(7, 3, generator=g, dtype=f64)
    enc = torch.cat([a, b])  # [6, 3]
    lg = Critic("two_headed").logits(u @ enc.T, v @ enc.T)
    want = -torch.cdist(u @ a.T, v @ b.T).pow(2)
    assert torch.allclose(lg, want, atol=1e-12)


def test_infonce_is_the_task_cross_entropy():
    z1, z2 = torch.randn(6, 4, dtype=f64), torch.randn(6, 4, dtype=f64)
    ce = F.cross_entropy(task_logits(z1, z2, 0.3), task_labels(6))
    assert float(infonce(z1, z2, temperature=0.3).loss) == pytest.approx(float(ce), rel=1e-14)


def test_task_logits_errors():
    q = torch.randn(3, 2)
    with pytest.raises(ValueError, match="temperature"):
        task_logits(q, q, temperature=0)
    with pytest.raises(ValueError, match=r"critic must be one of \('cosine', 'dot'"):
        task_logits(q, q, critic="l2")
    with pytest.raises(ValueError, match="temperature must be a number > 0"):
        Critic("dot", -1.0)
    with pytest.raises(ValueError, match="even embedding dimension"):
        Critic("two_headed").logits(torch.randn(3, 5), torch.randn(3, 5))
    with pytest.raises(ValueError, match="critic must be one of"):
        make_critic(3)
    assert make_critic(Critic("dot", 2.0)) == Critic("dot", 2.0)
    assert str(make_critic("cosine", 0.5)) == "cosine(τ=0.5)"
    with pytest.raises(ValueError, match="feature dimension"):
        task_logits(q, torch.randn(3, 4))


def test_task_batch_container():
    views = [torch.randn(3, 4, 2) for _ in range(4)]
    t = TaskBatch(*views)
    assert (t.n_tasks, t.n_samples) == (3, 4) and t.labels.tolist() == [0, 1, 2, 3]
    assert t.device == torch.device("cpu") and t.views()[2] is views[2]
    with pytest.raises(ValueError, match="share"):
        TaskBatch(views[0], views[1], views[2], torch.randn(3, 5, 2))
    with pytest.raises(ValueError, match="N >= 2"):
        TaskBatch(*(v[:, :1] for v in views))
    d = t.to(torch.float64)
    assert d.query_b.dtype == torch.float64 and torch.equal(d.query_b, views[3].double())
    assert t.to("cpu", torch.float64).support_a.dtype == torch.float64
    assert [s.n_tasks for s in (t.shard(0, 2), t.shard(1, 2))] == [1, 2]
