"""The task view: logits of the N-way task and the Task container."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from gessl.losses import infonce
from gessl.tasks import Task, task_labels, task_log_probs, task_logits

f64 = torch.float64


def test_task_logits_values_and_batching():
    g = torch.Generator().manual_seed(0)
    q, c = torch.randn(5, 3, generator=g, dtype=f64), torch.randn(4, 3, generator=g, dtype=f64)
    lg = task_logits(q, c, temperature=0.5, similarity="dot")
    assert lg.shape == (5, 4)
    assert float(lg[2, 1]) == pytest.approx(float(q[2] @ c[1]) / 0.5, rel=1e-14)
    cos = task_logits(q, c, temperature=0.5)
    want = float(F.cosine_similarity(q[3], c[0], dim=0)) / 0.5
    assert float(cos[3, 0]) == pytest.approx(want, rel=1e-13)
    qb, cb = torch.stack([q, 2 * q]), torch.stack([c, c])
    out = task_logits(qb, cb, 0.5, "dot")
    assert out.shape == (2, 5, 4) and torch.allclose(out[1], 2 * lg)
    assert torch.allclose(task_log_probs(lg).exp().sum(-1), torch.ones(5, dtype=f64))


def test_infonce_is_the_task_cross_entropy():
    z1, z2 = torch.randn(6, 4, dtype=f64), torch.randn(6, 4, dtype=f64)
    ce = F.cross_entropy(task_logits(z1, z2, 0.3), task_labels(6))
    assert float(infonce(z1, z2, temperature=0.3).loss) == pytest.approx(float(ce), rel=1e-14)


def test_task_logits_errors():
    q = torch.randn(3, 2)
    with pytest.raises(ValueError, match="temperature"):
        task_logits(q, q, temperature=0)
    with pytest.raises(ValueError, match="similarity"):
        task_logits(q, q, similarity="l2")
    with pytest.raises(ValueError, match="feature dimension"):
        task_logits(q, torch.randn(3, 4))


def test_task_container():
    views = [torch.randn(4, 2) for _ in range(4)]
    t = Task(support=(views[0], views[1]), query=(views[2], views[3]))
    assert t.n_classes == 4 and t.labels.tolist() == [0, 1, 2, 3]
    with pytest.raises(ValueError, match="same N samples"):
        Task(support=(views[0], views[1]), query=(views[2], torch.randn(5, 2)))
    with pytest.raises(ValueError, match="pair"):
        Task(support=(views[0],), query=(views[2], views[3]))
    with pytest.raises(ValueError, match="N >= 2"):
        Task(support=(views[0][:1], views[1][:1]), query=(views[2][:1], views[3][:1]))
