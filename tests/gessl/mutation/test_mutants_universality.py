"""gessl.adapt.adapt_tasks (the evaluation's task models) against a task-by-task SGD reference
(``docs/testing.md``)."""

from __future__ import annotations

import pytest
import torch

from gessl.adapt import adapt_tasks
from gessl.data import GaussianLatentTasks
from gessl.methods import build_method
from gessl.models import MLP


def _setup(method: str = "byol", seed: int = 0):
    torch.manual_seed(seed)
    m = build_method(
        method, MLP(5, width=8, activation="tanh"), proj_dims=(8, 4), head_activation="tanh"
    ).double()
    batch = GaussianLatentTasks(dim=5).sample(2, 6, torch.Generator().manual_seed(seed))
    batch = type(batch)(
        *(getattr(batch, f).double() for f in ("support_a", "support_b", "query_a", "query_b"))
    )
    return m, batch


def _reference(method, batch, steps, lr, start=None, names=None):
    phi = {k: v.detach() for k, v in (start or method.online_params()).items()}
    moving = set(phi) if names is None else set(names)
    out = []
    for t in range(batch.n_tasks):
        a, b = batch.support_a[t], batch.support_b[t]
        tg = method.targets(a, b)
        p = {k: v.clone().requires_grad_(k in moving) for k, v in phi.items()}
        for _ in range(steps):
            loss = method.loss(p, a, b, tg).loss
            names_ = [k for k in p if k in moving]
            grads = torch.autograd.grad(loss, [p[k] for k in names_])
            g = dict(zip(names_, grads))
            p = {
                k: (v - lr * g[k]).detach().requires_grad_(True) if k in moving else v
                for k, v in p.items()
            }
        out.append({k: v.detach() for k, v in p.items()})
    return out


@pytest.mark.parametrize("method", ["byol", "simclr"])
def test_adapt_tasks_is_sgd_on_each_task(method):
    m, batch = _setup(method)
    params, taken = adapt_tasks(m, batch, steps=3, lr=0.1)
    assert taken == 3
    ref = _reference(m, batch, 3, 0.1)
    for t in range(batch.n_tasks):
        for k in params:
            torch.testing.assert_close(params[k][t], ref[t][k], rtol=1e-10, atol=1e-12)
    # the tasks really moved, differently
    k0 = next(iter(params))
    assert not torch.allclose(params[k0][0], m.online_params()[k0])
    assert not torch.allclose(params[k0][0], params[k0][1])


def test_adapt_tasks_from_start_and_only_named():
    m, batch = _setup("byol", seed=1)
    start = {k: v.detach() + 0.01 for k, v in m.online_params().items()}
    names = m.head_names()
    params, _ = adapt_tasks(m, batch, steps=2, lr=0.1, start=start, names=names)
    ref = _reference(m, batch, 2, 0.1, start=start, names=names)
    for t in range(batch.n_tasks):
        for k in params:
            torch.testing.assert_close(params[k][t], ref[t][k], rtol=1e-10, atol=1e-12)
            if k not in names:
                torch.testing.assert_close(params[k][t], start[k], rtol=0, atol=0)
    zero, taken = adapt_tasks(m, batch, steps=0, lr=0.1, start=start)
    assert taken == 0
    assert all(torch.equal(zero[k][1], start[k]) for k in start)


def test_patience_checks_every_five_steps_with_tol_1e_4():
    m, batch = _setup("simclr", seed=2)
    # lr 0: the loss never improves after the first check: stops at the (1 + patience)-th check
    for patience, expected in ((1, 10), (2, 15), (3, 20)):
        _, taken = adapt_tasks(m, batch, steps=100, lr=0.0, patience=patience)
        assert taken == expected
    # without patience no check is made: all steps are taken even when nothing improves
    _, taken = adapt_tasks(m, batch, steps=12, lr=0.0)
    assert taken == 12
    # a steadily improving loss (improving by more than 1e-4, less than 1, per check) runs on
    _, taken = adapt_tasks(m, batch, steps=30, lr=0.05, patience=1)
    assert taken == 30
    _, taken = adapt_tasks(m, batch, steps=30, lr=0.05, patience=1, tol=1.0)
    assert taken == 10


def _reference_report(m, batch, provider, temperature, steps, lr, patience):
    from gessl.sigma import kl_rows
    from gessl.tasks import Critic

    crit = Critic("cosine", temperature)
    opt, taken = adapt_tasks(
        m, batch, steps, lr, patience=patience if provider == "trained" else None
    )
    phi = {k: v.detach() for k, v in m.online_params().items()}
    n, tasks = batch.n_samples, batch.n_tasks
    sig = exc = acc = acc_opt = 0.0
    for t in range(tasks):
        p_t = {k: v[t] for k, v in opt.items()}
        qa, qb = batch.query_a[t], batch.query_b[t]
        with torch.no_grad():
            lm = crit.log_probs(m.embed(phi, qa), m.embed(phi, qb)).double().log_softmax(-1)
            lo = crit.log_probs(m.embed(p_t, qa), m.embed(p_t, qb)).double().log_softmax(-1)
        sig += float(kl_rows(lm, lo).sum()) / tasks
        exc += float(kl_rows(lo, lm).sum()) / tasks
        acc += float((lm.argmax(-1) == torch.arange(n)).double().mean()) / tasks
        acc_opt += float((lo.argmax(-1) == torch.arange(n)).double().mean()) / tasks
    return {
        "sigma": sig / n,
        "sigma_excess": exc / n,
        "accuracy": acc,
        "accuracy_optimal": acc_opt,
        "tasks": tasks,
        "n": n,
        "provider": provider,
        "provider_steps": taken,
        "critic": f"cosine(τ={temperature:g})",
        "floor_per_task": 0.0,
        "kl_direction": "sigma = KL(π_model ‖ π_opt); sigma_excess = KL(π_opt ‖ π_model)",
    }


def test_universality_report_matches_a_task_by_task_reference():
    from gessl.eval.universality import universality_report

    m, batch = _setup("simclr", seed=3)
    got = universality_report(m, {"x": batch}, provider_steps=7, provider_lr=0.5)
    ref = _reference_report(m, batch, "trained", 0.1, 7, 0.5, 10)
    assert set(got) == {"x"} and set(got["x"]) == set(ref)
    for k, v in ref.items():
        assert got["x"][k] == (pytest.approx(v, rel=1e-6, abs=1e-9) if isinstance(v, float) else v)
    assert got["x"]["sigma"] > 1e-6


def test_universality_report_defaults_and_providers():
    from gessl.eval.universality import universality_report

    m, batch = _setup("simclr", seed=4)
    # lr 0: the trained provider stalls, and stops after (1 + patience) checks of 5 steps
    r = universality_report(m, {"a": batch}, provider_lr=0.0)["a"]
    assert r["provider_steps"] == 55 and r["critic"] == "cosine(τ=0.1)"
    assert abs(r["sigma"]) < 1e-12 and abs(r["sigma_excess"]) < 1e-12
    assert r["accuracy"] == r["accuracy_optimal"]
    # lookahead: no patience, exactly provider_steps (default 100) steps
    look = universality_report(m, {"a": batch}, provider="lookahead", provider_lr=0.0)["a"]
    assert look["provider_steps"] == 100 and look["provider"] == "lookahead"
    t2 = universality_report(m, {"a": batch}, temperature=2.0, provider_steps=1)["a"]
    assert t2["critic"] == "cosine(τ=2)"
    with pytest.raises(
        ValueError,
        match=r"^provider must be one of \('trained', 'lookahead'\), got 'bayes'$",
    ):
        universality_report(m, {"a": batch}, provider="bayes")


def test_patience_counts_a_check_without_strict_improvement():
    m, batch = _setup("simclr", seed=2)
    # tol 0 and lr 0: the second check equals the best exactly, which is no improvement
    _, taken = adapt_tasks(m, batch, steps=30, lr=0.0, patience=1, tol=0.0)
    assert taken == 10
    # tol = inf: no check improves (current < inf − inf is false), so patience 2 stops at the
    # second check
    _, taken = adapt_tasks(m, batch, steps=30, lr=0.0, patience=2, tol=float("inf"))
    assert taken == 10


def test_universality_report_default_provider_lr_is_0_05():
    from gessl.eval.universality import universality_report

    m, batch = _setup("simclr", seed=5)
    default = universality_report(m, {"x": batch}, provider_steps=3)
    assert default == universality_report(m, {"x": batch}, provider_steps=3, provider_lr=0.05)
    assert default != universality_report(m, {"x": batch}, provider_steps=3, provider_lr=1.05)
