"""Floors of σ: zero where the family contains the Bayes critic, positive where it does not,
and never above the σ of a member of the family."""

from __future__ import annotations

import math

import pytest
import torch

from gessl.sigma import kl_rows
from theory.fair_eval import EvalSet
from theory.fair_test import FairTest, build_model
from theory.floors import fit_floor


def _setup(family: str, critic: str = "two_headed", tasks: int = 20):
    test = FairTest(family=family, critic=critic, temperature=1.0 if critic != "cosine" else 0.5)
    s = EvalSet.draw(test.task_family, torch.Generator().manual_seed(7), tasks, 16)
    return test, build_model(test, 0), (s.batch.query_a, s.batch.query_b), s.lp


def _sigma_of(method, views, lp, direction="sigma") -> float:
    p = {k: v.detach().double() for k, v in method.online_params().items()}
    emb = torch.func.vmap(method.embed, in_dims=(None, 0))
    lf = method.task_critic().log_probs(emb(p, views[0]), emb(p, views[1]))
    kl = kl_rows(lf, lp) if direction == "sigma" else kl_rows(lp, lf)
    return float(kl.sum(-1).mean()) / views[0].shape[1]


@pytest.mark.parametrize("family", ["subspace", "noise_level"])
@pytest.mark.parametrize("direction", ["sigma", "sigma_excess"])
def test_two_headed_per_task_floor_is_zero_and_shared_floor_is_not(family, direction):
    _, method, views, lp = _setup(family)
    shared = fit_floor(method, method.task_critic(), views, lp, direction)
    sub = (views[0][:4], views[1][:4])
    per_task = fit_floor(
        method, method.task_critic(), sub, lp[:4], direction, "per_task", init=shared.params
    )
    assert per_task.converged and per_task.value < 1e-5 and per_task.kind == "per_task"
    assert shared.converged and shared.value > 0.1  # one model cannot serve every task
    assert shared.value <= _sigma_of(method, views, lp, direction) + 1e-9
    assert shared.to_dict()["direction"] == direction and shared.se is None


def test_homogeneous_two_headed_shared_floor_is_zero_cosine_is_not():
    _, method, views, lp = _setup("homogeneous")
    assert fit_floor(method, method.task_critic(), views, lp).value < 1e-6
    _, cos, views, lp = _setup("homogeneous", "cosine")
    for kind, k in (("shared", 20), ("per_task", 4)):
        f = fit_floor(cos, cos.task_critic(), (views[0][:k], views[1][:k]), lp[:k], kind=kind)
        assert f.value > 0.05, kind  # a cosine critic cannot represent the Bayes critic
        assert f.value <= _sigma_of(cos, (views[0][:k], views[1][:k]), lp[:k]) + 1e-9
    assert math.isfinite(f.se) and f.se > 0


def test_the_method_is_not_changed_and_bad_arguments_raise():
    _, method, views, lp = _setup("homogeneous", tasks=3)
    before = {k: v.clone() for k, v in method.state_dict().items()}
    fit_floor(method, method.task_critic(), views, lp, max_iter=20)
    assert all(torch.equal(before[k], v) for k, v in method.state_dict().items())
    with pytest.raises(ValueError, match="direction must be one of"):
        fit_floor(method, method.task_critic(), views, lp, direction="forward")
    with pytest.raises(ValueError, match="kind must be 'shared' or 'per_task'"):
        fit_floor(method, method.task_critic(), views, lp, kind="global")


def test_a_reachable_floor_through_no_step_is_the_shared_floor_and_never_above_its_start():
    """``fit_reachable_floor`` minimises σ after the K-step adaptation over φ: with K = 0 it is
    the shared floor; with K = 1 it ends at or below the σ of the model it starts from, and the
    value it reports is the σ of its fitted φ after that adaptation."""
    from gessl.adapt import adapt_tasks
    from theory.floors import fit_reachable_floor

    test = FairTest(family="subspace")
    s = EvalSet.draw(test.task_family, torch.Generator().manual_seed(3), 6, 16)
    method = build_model(test, 0)
    critic = method.task_critic()
    q = (s.batch.query_a, s.batch.query_b)
    shared = fit_floor(method, critic, q, s.lp, "sigma")
    zero = fit_reachable_floor(method, critic, s.batch, s.lp, 0, 0.1, "sigma")
    assert zero.value == pytest.approx(shared.value, abs=1e-5) and zero.converged

    def after_one_step(params) -> float:
        adapted, _ = adapt_tasks(method, s.batch.to(torch.float64), 1, 0.1, start=params)
        emb = torch.func.vmap(method.embed)
        lf = critic.log_probs(emb(adapted, q[0].double()), emb(adapted, q[1].double()))
        return float(kl_rows(lf, s.lp).sum(-1).mean()) / 16

    start = {k: v.detach().double() for k, v in method.online_params().items()}
    one = fit_reachable_floor(method, critic, s.batch, s.lp, 1, 0.1, "sigma")
    assert one.value <= after_one_step(start) + 1e-12
    assert one.value == pytest.approx(after_one_step(one.params), rel=1e-9)
    assert one.kind == "reachable(K=1, α=0.1)" and one.direction == "sigma"
    # one step of size 0.1 cannot reach the per-task floor (0 for this family)
    assert one.value > 0.05
