"""The adaptation engine (gessl/adapt): one SGD step for both backends, batching over tasks and
populations, test-time adaptation with trajectories and through-the-steps gradients (float64)."""

from __future__ import annotations

import pytest
import torch
from torch.func import grad, vmap
from torch.utils._pytree import tree_map

from gessl.adapt import Adapter, FactoredPlan, adapt_tasks, per_task, summed_grad
from gessl.losses import no_value_checks
from gessl.methods import build_method
from gessl.models import MLP, Flatten
from gessl.sigma import DIRECTIONS, check_direction, kl_in_direction, kl_rows, upgrade_direction
from gessl.tasks import TaskBatch

f64 = torch.float64


@pytest.fixture(autouse=True)
def _no_value_checks():
    """The losses' finiteness checks read values, which vmap and grad cannot (the trainer
    turns them off around its transforms too)."""
    with no_value_checks():
        yield


def _method(kind: str = "mlp"):
    torch.manual_seed(0)
    if kind == "linear":
        return build_method(
            "infonce", Flatten(4), proj_dims=(8,), critic="two_headed", temperature=1.0
        ).double()
    return build_method(
        "infonce", MLP(4, width=8, activation="tanh"), proj_dims=(6,), critic="cosine"
    ).double()


def _batch(tasks: int = 3, n: int = 5, seed: int = 1) -> TaskBatch:
    g = torch.Generator().manual_seed(seed)
    return TaskBatch(*(torch.randn(tasks, n, 4, generator=g, dtype=f64) for _ in range(4)))


def _support_loss(m, task):
    return lambda p: m.loss(p, task.support_a, task.support_b).loss


def _hand_sgd(m, params, task, steps, lr):
    p = {k: v.detach().clone() for k, v in params.items()}
    for _ in range(steps):
        q = {k: v.requires_grad_(True) for k, v in p.items()}
        loss = m.loss(q, task.support_a, task.support_b).loss
        g = torch.autograd.grad(loss, list(q.values()))
        p = {k: (v - lr * gk).detach() for (k, v), gk in zip(q.items(), g)}
    return p


# ----------------------------------------------------------------------------- the step
def test_dense_step_is_sgd_and_returns_the_loss_before_it():
    m, task = _method(), TaskBatch.of_views([v[0] for v in _batch().views()])
    phi = {k: v.detach() for k, v in m.online_params().items()}
    ad = Adapter({})
    state, first = ad.sgd(ad.start(phi), 3, _support_loss(m, task), 0.2, detach=True)
    want = _hand_sgd(m, phi, task, 3, 0.2)
    for k in phi:
        torch.testing.assert_close(state["dense"][k], want[k], rtol=1e-12, atol=1e-14)
    assert float(first) == pytest.approx(float(_support_loss(m, task)(phi).detach()), rel=1e-14)
    states = [s for s, _ in ad.iterate(ad.start(phi), 3, _support_loss(m, task), 0.2, True)]
    assert len(states) == 3 and all(not t.requires_grad for t in states[-1]["dense"].values())
    for k in phi:
        torch.testing.assert_close(states[-1]["dense"][k], want[k], rtol=1e-12, atol=1e-14)
    assert ad.sgd(ad.start(phi), 0, _support_loss(m, task), 0.2, True)[1] is None


def test_only_the_moving_parameters_move():
    m, task = _method(), TaskBatch.of_views([v[0] for v in _batch().views()])
    phi = {k: v.detach() for k, v in m.online_params().items()}
    head = {k: v for k, v in phi.items() if not k.startswith("backbone.")}
    fixed = {k: v for k, v in phi.items() if k not in head}
    ad = Adapter(fixed)
    state, _ = ad.sgd(ad.start(head), 2, _support_loss(m, task), 0.3, detach=True)
    assert set(state["dense"]) == set(head) and ad.params(state).keys() == phi.keys()
    for k in fixed:
        assert ad.params(state)[k] is fixed[k]


@pytest.mark.parametrize("detach", [True, False])
def test_factored_step_is_the_dense_step(detach):
    """The same K steps with the 8×8 and 8→6 layers in low-rank form: every parameter of the
    adapted model and the model's outputs agree with the dense backend's."""
    m, task = _method(), TaskBatch.of_views([v[0] for v in _batch().views()])
    phi = {k: v.detach() for k, v in m.online_params().items()}
    names = ["backbone.net.0.weight", "projector.0.weight"]
    plan = FactoredPlan(names, worth=0)
    weights = {k: phi[k] for k in names}
    dense = {k: v for k, v in phi.items() if k not in weights}
    fac = Adapter({}, weights, plan, key="k")
    loss = _support_loss(m, task)
    s_f, first_f = fac.sgd(fac.start(dense), 2, loss, 0.3, detach)
    ref = Adapter({})
    s_d, first_d = ref.sgd(ref.start(phi), 2, loss, 0.3, detach)
    assert fac.backend == "factored" and ref.backend == "dense"
    assert float(first_f) == pytest.approx(float(first_d), rel=1e-14)
    # one piece per call of the layer in each step: two views × two steps
    assert set(s_f["X"]) == set(names) and all(len(v) == 4 for v in s_f["X"].values())
    for k in dense:
        torch.testing.assert_close(s_f["dense"][k], s_d["dense"][k], rtol=1e-11, atol=1e-13)
    with torch.no_grad():
        z_f = fac.call(Adapter.merged(s_f), lambda p: m.embed(p, task.query_a))
        z_d = ref.call(s_d, lambda p: m.embed(p, task.query_a))
    torch.testing.assert_close(z_f, z_d, rtol=1e-11, atol=1e-13)


def test_factored_weights_need_their_plan():
    with pytest.raises(
        ValueError, match=r"^factored weights need the FactoredPlan that holds their dry runs$"
    ):
        Adapter({}, {"w": torch.zeros(2, 2)})


# ----------------------------------------------------------------------------- batching
def _loss_fn(m):
    def fn(p, task, targets):
        loss = m.loss(p, task.query_a, task.query_b).loss
        return loss, {"value": loss.detach()}

    return fn


@pytest.mark.parametrize("nested", [False, True])
def test_population_gradients_are_each_models_own(nested):
    """summed_grad with seeds=S over S·M tasks equals S separate calls, for per-model and
    per-task arguments, and stacks aux as [S, M]."""
    m = _method()
    phi = {k: v.detach() for k, v in m.online_params().items()}
    models = [tree_map(lambda t, i=i: t + 0.01 * i, phi) for i in range(3)]
    batches = [_batch(4, 5, seed=s) for s in range(3)]
    stacked = tree_map(lambda *t: torch.stack(t), *models)
    flat = TaskBatch.of_views([torch.cat(v) for v in zip(*(b.views() for b in batches))])
    (got,), aux = summed_grad(
        _loss_fn(m), 1, (None, 0, 0), stacked, flat, {}, nested=nested, seeds=3
    )
    assert aux["value"].shape == (3, 4)
    for i in range(3):
        (want,), want_aux = summed_grad(
            _loss_fn(m), 1, (None, 0, 0), models[i], batches[i], {}, nested=nested
        )
        for k in phi:
            torch.testing.assert_close(got[k][i], want[k], rtol=1e-12, atol=1e-14)
        torch.testing.assert_close(aux["value"][i], want_aux["value"], rtol=1e-14, atol=0)
    # per-task arguments: one value per (seed, task); their gradients summed per model
    per_task_p = tree_map(lambda t: t.unsqueeze(0).expand(12, *t.shape).clone(), phi)
    (g_task,), _ = summed_grad(
        _loss_fn(m), 1, (0, 0, 0), per_task_p, flat, {}, nested=nested, seeds=3
    )
    for i in range(3):
        (want,), _ = summed_grad(_loss_fn(m), 1, (None, 0, 0), phi, batches[i], {}, nested=nested)
        for k in phi:
            torch.testing.assert_close(g_task[k][i], want[k], rtol=1e-12, atol=1e-14)


def test_loop_batching_equals_vmap():
    m, b = _method(), _batch()
    phi = {k: v.detach() for k, v in m.online_params().items()}
    for nested in (False, True):
        (gv,), aux_v = summed_grad(_loss_fn(m), 1, (None, 0, 0), phi, b, {}, nested=nested)
        (gl,), aux_l = summed_grad(
            _loss_fn(m), 1, (None, 0, 0), phi, b, {}, nested=nested, batching="loop"
        )
        for k in phi:
            torch.testing.assert_close(gl[k], gv[k], rtol=1e-12, atol=1e-14)
        torch.testing.assert_close(aux_l["value"], aux_v["value"], rtol=1e-14, atol=0)
    out = per_task(lambda t: t.query_a.sum(), (0,), b, batching="loop")
    torch.testing.assert_close(out, b.query_a.sum((1, 2)))


def test_a_task_batch_is_a_pytree_vmap_slices():
    b = _batch(3, 5)
    sums = vmap(lambda t: t.support_a.sum() + 2 * t.query_b.sum())(b)
    torch.testing.assert_close(sums, b.support_a.sum((1, 2)) + 2 * b.query_b.sum((1, 2)))
    stacked = tree_map(lambda *v: torch.stack(v), b, b)
    assert isinstance(stacked, TaskBatch) and stacked.query_a.shape == (2, 3, 5, 4)


# ----------------------------------------------------------------------------- test-time
def test_adapt_tasks_reports_every_step_of_the_trajectory():
    m, b = _method(), _batch()
    seen = {}
    final, taken = adapt_tasks(
        m, b, 3, 0.2, on_step=lambda k, p: seen.__setitem__(k, tree_map(torch.clone, p))
    )
    assert taken == 3 and sorted(seen) == [1, 2, 3]
    for k in (1, 2):
        want, _ = adapt_tasks(m, b, k, 0.2)
        for name in want:
            torch.testing.assert_close(seen[k][name], want[name], rtol=1e-13, atol=0)
    for name in final:
        assert torch.equal(seen[3][name], final[name])


def test_differentiable_adaptation_has_the_hypergradient():
    """d/dφ of a loss after one step through the steps = (I − αH) ∇ at θ₁, checked against
    finite differences along a direction."""
    m, b = _method("linear"), _batch(2, 5)
    phi = {k: v.detach().clone() for k, v in m.online_params().items()}

    def after(p):
        adapted, _ = adapt_tasks(m, b, 1, 0.3, start=p, differentiable=True)
        z = vmap(m.embed)(adapted, b.query_a)
        return z.pow(2).sum()

    g = grad(after)(phi)
    gen = torch.Generator().manual_seed(3)
    d = {k: torch.randn(v.shape, generator=gen, dtype=f64) for k, v in phi.items()}
    h = 1e-6
    plus = after({k: v + h * d[k] for k, v in phi.items()})
    minus = after({k: v - h * d[k] for k, v in phi.items()})
    numeric = float(plus - minus) / (2 * h)
    analytic = sum(float((g[k] * d[k]).sum()) for k in phi)
    assert analytic == pytest.approx(numeric, rel=1e-6)
    detached = grad(lambda p: adapt_tasks(m, b, 1, 0.3, start=p)[0]["projector.0.bias"].sum())
    assert float(detached(phi)["projector.0.bias"].abs().max()) == 0.0  # no graph kept


# ----------------------------------------------------------------------------- KL vocabulary
def test_one_vocabulary_for_the_kl_direction():
    assert DIRECTIONS == ("sigma", "sigma_excess")
    g = torch.Generator().manual_seed(0)
    a = torch.log_softmax(torch.randn(3, 4, generator=g, dtype=f64), -1)
    b = torch.log_softmax(torch.randn(3, 4, generator=g, dtype=f64), -1)
    torch.testing.assert_close(kl_in_direction(a, b, "sigma"), kl_rows(a, b), rtol=0, atol=0)
    torch.testing.assert_close(kl_in_direction(a, b, "sigma_excess"), kl_rows(b, a))
    for old, new in (("model_target", "sigma"), ("target_model", "sigma_excess")):
        with pytest.raises(ValueError, match=f"^kl_direction='{old}' was renamed: use '{new}'"):
            check_direction(old)
        assert upgrade_direction(old) == new
    with pytest.raises(ValueError, match=r"^direction must be one of \('sigma', 'sigma_excess'\)"):
        kl_in_direction(a, b, "forward")
