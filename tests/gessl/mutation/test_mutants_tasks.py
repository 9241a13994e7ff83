"""gessl.tasks: defaults, normalisation axis, devices and the Task checks (``docs/testing.md``)."""

from __future__ import annotations

import re

import pytest
import torch
import torch.nn.functional as F

from gessl.tasks import TaskBatch, task_labels, task_log_probs, task_logits

f64 = torch.float64


def _z(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=f64)


def test_defaults_are_cosine_at_temperature_one():
    q, c = _z(3, 4, seed=1), _z(5, 4, seed=2)
    cos = F.normalize(q, dim=-1) @ F.normalize(c, dim=-1).T
    torch.testing.assert_close(task_logits(q, c), cos, rtol=1e-14, atol=1e-14)
    torch.testing.assert_close(
        task_log_probs(q, c), torch.log_softmax(cos, -1), rtol=1e-14, atol=1e-14
    )
    torch.testing.assert_close(
        task_log_probs(q, c, critic="dot"), torch.log_softmax(q @ c.T, -1), rtol=1e-14, atol=1e-14
    )


def test_log_probs_normalise_over_the_candidates():
    # 3 queries, 5 candidates: rows (not columns) are distributions
    lp = task_log_probs(_z(3, 4, seed=3), _z(5, 4, seed=4), 0.5)
    assert lp.shape == (3, 5)
    torch.testing.assert_close(torch.logsumexp(lp, -1), torch.zeros(3, dtype=f64))
    assert not torch.allclose(torch.logsumexp(lp, 0), torch.zeros(5, dtype=f64))
    # batched: [T=2, n=3, N=5], still over the candidates (the last dim)
    lp3 = task_log_probs(_z(2, 3, 4, seed=3), _z(2, 5, 4, seed=4), 0.5)
    torch.testing.assert_close(torch.logsumexp(lp3, -1), torch.zeros(2, 3, dtype=f64))


def test_labels_follow_the_device():
    meta = torch.device("meta")
    assert task_labels(3, device=meta).device == meta
    assert task_labels(4).tolist() == [0, 1, 2, 3]
    v = torch.zeros(1, 2, 3, device=meta)
    t = TaskBatch(v, v, v, v)
    assert t.labels.device == meta and t.labels.shape == (2,) and t.device == meta
    assert t.to(dtype=torch.float64).query_a.dtype == torch.float64
    assert TaskBatch(*(torch.zeros(1, 2, 3) for _ in range(4))).to("meta").device == meta


def _full(msg: str) -> str:
    return "^" + re.escape(msg) + "$"


def test_task_batch_checks_name_the_part_and_the_problem():
    a = torch.zeros(1, 3, 2)
    with pytest.raises(
        ValueError, match=_full("support_b must be a tensor [M, N, ...], got a list")
    ):
        TaskBatch(a, [0, 0, 0], a, a)
    with pytest.raises(
        ValueError, match=_full("query_a must be a tensor [M, N, ...], got a tensor of shape (3,)")
    ):
        TaskBatch(a, a, torch.zeros(3), a)
    with pytest.raises(
        ValueError, match=_full("all views must share [M, N], got [(1, 2), (1, 3)]")
    ):
        TaskBatch(a, a, a, torch.zeros(1, 2, 2))
    with pytest.raises(
        ValueError, match=_full("a task batch needs M >= 1 tasks of N >= 2 samples, got 1×1")
    ):
        TaskBatch(*(torch.zeros(1, 1, 2) for _ in range(4)))
    with pytest.raises(
        ValueError, match=_full("a task batch needs M >= 1 tasks of N >= 2 samples, got 0×3")
    ):
        TaskBatch(*(torch.zeros(0, 3, 2) for _ in range(4)))
    meta = torch.zeros(1, 3, 2, device="meta")
    with pytest.raises(ValueError, match=_full("mixed devices: the views are on cpu and meta")):
        TaskBatch(a, a, a, meta)
    assert TaskBatch(a, a, a, a).n_samples == 3


@pytest.mark.parametrize("name", ["cosine", "dot", "neg_sq_distance", "two_headed"])
def test_batched_tasks_equal_task_by_task(name):
    """Leading dims are batch dims: [T, n, D] × [T, N, D] → [T, n, N], task by task."""
    from gessl.tasks import Critic

    c = Critic(name, 0.5)
    q, k = _z(2, 3, 4, seed=5), _z(2, 5, 4, seed=6)  # n = 3 queries, N = 5 candidates, D = 4
    logits, lp = c.logits(q, k), c.log_probs(q, k)
    assert logits.shape == lp.shape == (2, 3, 5)
    for t in range(2):
        torch.testing.assert_close(logits[t], c.logits(q[t], k[t]), rtol=1e-13, atol=1e-13)
        torch.testing.assert_close(lp[t], torch.log_softmax(logits[t], -1), rtol=1e-13, atol=1e-13)
    # the 2-D values against the formulas of the module docstring
    q0, k0 = q[0], k[0]
    if name == "neg_sq_distance":
        ref = -(torch.cdist(q0, k0) ** 2) / 0.5
    elif name == "two_headed":
        ref = -(torch.cdist(q0[:, :2], k0[:, 2:]) ** 2) / 0.5
    elif name == "dot":
        ref = q0 @ k0.T / 0.5
    else:
        ref = F.normalize(q0, dim=-1) @ F.normalize(k0, dim=-1).T / 0.5
    torch.testing.assert_close(logits[0], ref, rtol=1e-12, atol=1e-12)


def test_feature_mismatch_message_names_the_feature_dims():
    from gessl.tasks import Critic

    with pytest.raises(
        ValueError,
        match=_full("z_query and z_candidates must share the feature dimension, got 4 and 6"),
    ):
        Critic("dot").logits(_z(2, 3, 4), _z(2, 5, 6))


def test_critic_arguments_and_defaults():
    from gessl.tasks import Critic, make_critic

    assert make_critic() == Critic("cosine", 1.0)
    for bad in (True, "1", 0, -0.5):
        with pytest.raises(
            ValueError, match=_full(f"critic temperature must be a number > 0, got {bad!r}")
        ):
            Critic("dot", bad)
    assert Critic("dot", 2).temperature == 2


def test_two_headed_needs_an_even_dimension_of_at_least_two():
    from gessl.tasks import Critic

    c = Critic("two_headed", 1.0)
    c.check_dim(2)  # two heads of one feature each
    z = _z(3, 2)
    torch.testing.assert_close(
        c.logits(z, z), -((z[:, None, :1] - z[None, :, 1:]) ** 2).sum(-1), rtol=1e-13, atol=1e-13
    )
    for dim in (0, 1, 3):
        with pytest.raises(
            ValueError,
            match=_full(
                f"critic 'two_headed' needs an even embedding dimension >= 2 (two heads of equal "
                f"size), got {dim}; use one of ('cosine', 'dot', 'neg_sq_distance') or an even "
                "projector output"
            ),
        ):
            c.check_dim(dim)
