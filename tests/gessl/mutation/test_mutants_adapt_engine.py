"""gessl.adapt (the step, the factored form, batching, test-time adaptation): what mutation
testing showed unpinned.

Each test asserts a number, a structure or an exact message that a one-token change of
``gessl/adapt`` would get wrong (``docs/testing.md``): the factored step on inputs with more than
one leading dim, the plan's row counts at its threshold, every mismatch between a step and its
dry run raising :class:`NotFactorableError` with its message, the dry runs keyed per task shape,
each population member's own γ, graphs dropped where the engine promises "no graph", and the
population's per-task gradient path where the gradient of the sum is wrong (float64 throughout).
"""

from __future__ import annotations

import re

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad
from torch.utils._pytree import tree_leaves, tree_map

from gessl.adapt import (
    Adaptation,
    Adapter,
    FactoredPlan,
    NotFactorableError,
    TaskObjective,
    adapt_tasks,
    linear_weights,
    per_task,
    summed_grad,
)
from gessl.adapt.linear import Linears
from gessl.losses import no_value_checks
from gessl.methods import build_method
from gessl.methods.base import resolve_critic
from gessl.models import MLP
from gessl.tasks import TaskBatch
from gessl.trainer import GeSSLConfig
from tests.gessl.trainer.helpers import make_trainer

f64 = torch.float64
MISMATCH = "^" + re.escape("the factored layers' calls differ from the dry run's") + "$"


@pytest.fixture(autouse=True)
def _no_value_checks():
    with no_value_checks():
        yield


def _randn(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=f64)


# ----------------------------------------------------------------------------- batching
def test_per_task_runs_the_function_once_under_vmap_by_default():
    """The default batching is ``vmap``: the function is traced once for all tasks (a loop
    would call it once per task)."""
    calls = []

    def fn(x):
        calls.append(x.shape)
        return x.sum()

    x = _randn(4, 3)
    torch.testing.assert_close(per_task(fn, (0,), x), x.sum(1))
    assert calls == [torch.Size([3])]
    calls.clear()
    per_task(fn, (0,), x, batching="loop")
    assert len(calls) == 4


def _bn_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Linear(4, 6), nn.BatchNorm1d(6, track_running_stats=False), nn.Tanh(), nn.Linear(6, 3)
    ).double()


def test_population_nested_gradients_are_per_task_where_the_sum_is_wrong():
    """A nested objective (one inner step on batch normalisation's affine parameters): torch's
    gradient of the task sum through the inner ``grad`` is wrong for it, so a population's
    nested gradients must be taken per (seed, task) — equal to each model's own, task by task."""
    net = _bn_net()
    phi = {k: v.detach() for k, v in net.named_parameters()}

    def fn(p, x, y):
        q = {k: p[k] for k in ("1.weight", "1.bias")}
        g = grad(lambda q: functional_call(net, {**p, **q}, (x,)).square().mean())(q)
        out = functional_call(net, {**p, **{k: q[k] - 0.5 * g[k] for k in q}}, (y,))
        loss = out.square().mean()
        return loss, loss.detach()

    models = [tree_map(lambda t, i=i: t + 0.05 * i, phi) for i in range(2)]
    xs, ys = _randn(2, 3, 5, 4, seed=1), _randn(2, 3, 5, 4, seed=2)
    stacked = tree_map(lambda *t: torch.stack(t), *models)
    (got,), _ = summed_grad(
        fn, 1, (None, 0, 0), stacked, xs.flatten(0, 1), ys.flatten(0, 1), nested=True, seeds=2
    )
    # the gradient of the sum differs here: the per-task path is the one that must run
    (summed,), _ = summed_grad(fn, 1, (None, 0, 0), phi, xs[0], ys[0], nested=False)
    for i in range(2):
        (want,), _ = summed_grad(
            fn, 1, (None, 0, 0), models[i], xs[i], ys[i], nested=True, batching="loop"
        )
        for k in phi:
            torch.testing.assert_close(got[k][i], want[k], rtol=1e-12, atol=1e-14)
    (own,), _ = summed_grad(fn, 1, (None, 0, 0), phi, xs[0], ys[0], nested=True, batching="loop")
    assert float((summed["0.weight"] - own["0.weight"]).abs().max()) > 1e-4


# ----------------------------------------------------------------------------- the factored form
def _layer_loss(x: torch.Tensor):
    return lambda p: F.linear(x, p["w"], p["b"]).tanh().square().mean()


@pytest.mark.parametrize("detach", [True, False])
def test_factored_step_on_inputs_with_two_leading_dims(detach):
    """A layer called on ``[2, 3, in]`` inputs: the update's pieces are its 6 rows, and the
    adapted layer's outputs equal the dense backend's."""
    w, b = _randn(5, 4, seed=1), _randn(5, seed=2)
    x, xq = _randn(2, 3, 4, seed=3), _randn(2, 2, 4, seed=4)
    fac = Adapter({}, {"w": w}, FactoredPlan(["w"], worth=0), key="k")
    s_f, _ = fac.sgd(fac.start({"b": b}), 2, _layer_loss(x), 0.4, detach)
    dense = Adapter({})
    s_d, _ = dense.sgd(dense.start({"w": w, "b": b}), 2, _layer_loss(x), 0.4, detach)
    assert [tuple(t.shape) for t in s_f["X"]["w"]] == [(6, 4), (6, 4)]
    assert [tuple(t.shape) for t in s_f["G"]["w"]] == [(6, 5), (6, 5)]
    with torch.no_grad():
        y_f = fac.call(s_f, lambda p: F.linear(xq, p["w"], p["b"]))
        y_d = dense.call(s_d, lambda p: F.linear(xq, p["w"], p["b"]))
    torch.testing.assert_close(y_f, y_d, rtol=1e-12, atol=1e-14)


def test_detached_steps_carry_no_graph_in_either_backend():
    """``detach=True``: every tensor of the new state is free of the autograd graph, also when
    the starting parameters and W require gradients (first order, look-ahead)."""
    w = _randn(5, 4, seed=1).requires_grad_(True)
    b = _randn(5, seed=2).requires_grad_(True)
    x = _randn(3, 4, seed=3)
    fac = Adapter({}, {"w": w}, FactoredPlan(["w"], worth=0), key="k")
    dense = Adapter({"w": w})
    for ad in (fac, dense):
        states = [s for s, _ in ad.iterate(ad.start({"b": b}), 2, _layer_loss(x), 0.4, True)]
        state, _ = ad.sgd(ad.start({"b": b}), 2, _layer_loss(x), 0.4, True)
        for s in (states[-1], state):
            assert not any(t.requires_grad for t in tree_leaves(s)), ad.backend
        kept, _ = ad.sgd(ad.start({"b": b}), 2, _layer_loss(x), 0.4, False)
        assert kept["dense"]["b"].requires_grad  # without detach the graph is kept


def test_a_step_with_fewer_layer_calls_than_its_dry_run_is_not_factorable():
    w, x = _randn(5, 4, seed=1), _randn(3, 4, seed=2)
    runs = []

    def loss_of(p):  # the dry run (first evaluation) calls the layer twice, the step once
        runs.append(1)
        y = F.linear(x, p["w"], p["b"])
        if len(runs) == 1:
            y = y + F.linear(x, p["w"])
        return y.square().mean()

    fac = Adapter({}, {"w": w}, FactoredPlan(["w"], worth=0), key="k")
    with pytest.raises(NotFactorableError, match=MISMATCH):
        fac.step(fac.start({"b": _randn(5, seed=3)}), loss_of, 0.1, True)


def _probed(expected_rows: int, calls: list[int]) -> None:
    """Linear calls on ``rows`` inputs under a step's mode whose dry run saw one call of
    ``expected_rows`` rows."""
    w = _randn(5, 4, seed=1)
    expected = [("w", torch.Size([expected_rows, 5]), f64)]
    mode = Linears({id(w): ("w", (), ())}, [torch.zeros(expected_rows, 5, dtype=f64)], expected)
    with mode:
        for rows in calls:
            F.linear(_randn(rows, 4, seed=rows), w)


def test_a_step_whose_calls_differ_from_the_dry_run_is_not_factorable():
    _probed(3, [3])  # the same call: fine
    with pytest.raises(NotFactorableError, match=MISMATCH):
        _probed(3, [3, 3])  # one call more than the dry run
    with pytest.raises(NotFactorableError, match=MISMATCH):
        _probed(3, [2])  # a call of another shape


def test_a_factored_weight_inside_a_list_argument_is_another_use():
    w = _randn(5, 4, seed=1)
    with (
        pytest.raises(NotFactorableError, match=r"^a factored weight reaches"),
        Linears({id(w): ("w", (), ())}),
    ):
        torch.cat([w, w])
    with Linears({id(w): ("w", (), ())}):  # other tensors in a list: no objection
        assert torch.cat([_randn(1, 4, seed=2), _randn(1, 4, seed=3)]).shape == (2, 4)


@pytest.mark.parametrize(
    ("size", "worth", "inputs", "factored"),
    [
        # out·in ≥ worth·rows·(in + out), at equality: 64 = 1·4·16
        (8, 1.0, [(4,)], True),
        (8, 1.0, [(5,)], False),
        # rows summed over calls: two calls of 4 rows are 8 rows (64 < 128)
        (8, 1.0, [(4,), (4,)], False),
        # rows of a [2, 3, in] input are 6 (64 < 96), not 2
        (8, 1.0, [(2, 3)], False),
        (12, 1.0, [(2, 3)], True),
    ],
)
def test_a_weight_is_factored_exactly_when_worth_it(size, worth, inputs, factored):
    w = _randn(size, size, seed=1)

    def run():
        for lead in inputs:
            F.linear(_randn(*lead, size, seed=2), w)

    plan = FactoredPlan(["w", "unused"], worth=worth)
    assert plan.names("k", {"w": w, "unused": w.clone()}, run) == (["w"] if factored else [])


def test_a_new_plan_has_no_fallback_until_disabled():
    plan = FactoredPlan(["w"])
    assert plan.enabled and plan.fallback is None
    plan.disable("why")
    assert not plan.enabled and plan.fallback == "why"


@pytest.mark.parametrize("order", ["first", "second"])
def test_each_task_shape_has_its_own_dry_run(order):
    """The same factored objective on tasks of 6 and then 4 samples: each shape's dry run is
    its own (one cache key for both would make the second shape's calls differ from the first
    shape's record and turn the fast path off); gradients equal the reference path's."""
    fast = make_trainer(order=order, inner_steps=2, lookahead_steps=1, sigma_weight=0.5)
    ref = make_trainer(
        order=order, inner_steps=2, lookahead_steps=1, sigma_weight=0.5, fast_path=False
    )
    fast.outer_step.plan.worth = 0
    six = ref.sample()
    four = TaskBatch.of_views([v[:, :4] for v in six.views()])
    for batch in (six, four):
        (got, _), (want, _) = fast.task_gradients(batch), ref.task_gradients(batch)
        assert fast.path == "factored" and fast.outer_step.plan.enabled
        for name, g in want.items():
            torch.testing.assert_close(got[name], g, rtol=1e-10, atol=1e-12, msg=name)


# ----------------------------------------------------------------------------- the objective
def _objective(m, gamma: float, order: str) -> TaskObjective:
    cfg = GeSSLConfig(
        inner_steps=1, inner_lr=0.3, lookahead_steps=2, sigma_weight=gamma, order=order
    )
    return TaskObjective(m, Adaptation.of(cfg), resolve_critic(m, cfg.sigma_critic, 0.1))


def _setup():
    torch.manual_seed(0)
    m = build_method("simclr", MLP(5, width=8, activation="tanh"), proj_dims=(8, 4)).double()
    phi = {k: v.detach().clone() for k, v in m.online_params().items()}
    head = set(m.head_names())
    moving = {k: v for k, v in phi.items() if k in head}
    shared = {k: v for k, v in phi.items() if k not in head}
    task = TaskBatch.of_views([_randn(6, 5, seed=s) for s in range(4)])
    return m, shared, moving, task


@pytest.mark.parametrize("form", ["split", "nested"])
def test_a_tasks_own_weight_replaces_the_adaptations(form):
    """``weight``: the task's γ (a population whose members differ in γ) — the loss is
    ℓ(θ; query) + weight·KL, and a weight of 0 reports no σ-term."""
    m, shared, moving, task = _setup()
    obj = _objective(m, 0.8, "first")

    def run(weight):
        if form == "nested":
            return obj.nested(shared, moving, {}, task, {}, weight)
        states, _ = obj.inner(shared, moving, task, {})
        return obj.outer(shared, states["theta"]["dense"], task, {}, states, weight)

    _, base = run(None)
    kl, query = float(base["kl"]), float(base["ssl"])
    assert kl > 1e-4 and float(base["loss"]) == pytest.approx(query + 0.8 * kl, rel=1e-12)
    _, own = run(torch.tensor(0.3, dtype=f64))
    assert float(own["loss"]) == pytest.approx(query + 0.3 * kl, rel=1e-12)
    assert float(own["kl"]) == pytest.approx(kl, rel=1e-12)  # a σ-term ran: it is reported
    _, off = run(torch.tensor(0.0, dtype=f64))
    assert float(off["loss"]) == pytest.approx(query, rel=1e-14) and float(off["kl"]) == 0.0


def test_the_split_inner_pass_returns_no_graph_for_the_lookahead():
    """The look-ahead target θ̃ is a constant of the outer objective: computed from parameters
    that require gradients, it carries no graph (nor does θ_K)."""
    m, shared, moving, task = _setup()
    grad_shared = {k: v.clone().requires_grad_(True) for k, v in shared.items()}
    states, _ = _objective(m, 0.8, "first").inner(grad_shared, moving, task, {})
    assert not any(t.requires_grad for t in tree_leaves(states))
    assert not torch.equal(
        states["look"]["dense"]["projector.0.weight"],
        states["theta"]["dense"]["projector.0.weight"],
    )


# ----------------------------------------------------------------------------- test-time
def _byol():
    torch.manual_seed(0)
    return build_method("byol", MLP(4, width=8, activation="tanh"), proj_dims=(6, 4)).double()


def _tasks(n_tasks: int = 3) -> TaskBatch:
    return TaskBatch.of_views([_randn(n_tasks, 5, 4, seed=s) for s in range(4)])


def test_adapting_the_head_only_reports_every_parameter_at_every_step():
    m, b = _byol(), _tasks()
    head = m.head_names()
    seen = {}
    final, taken = adapt_tasks(
        m, b, 2, 0.2, names=head, on_step=lambda k, p: seen.__setitem__(k, tree_map(torch.clone, p))
    )
    assert taken == 2 and sorted(seen) == [1, 2]
    one, _ = adapt_tasks(m, b, 1, 0.2, names=head)
    phi = m.online_params()
    for name in phi:
        assert seen[1][name].shape == (3, *phi[name].shape)
        torch.testing.assert_close(seen[1][name], one[name], rtol=0, atol=0)
        torch.testing.assert_close(seen[2][name], final[name], rtol=0, atol=0)
        if name not in head:  # the backbone stays φ's, repeated per task
            torch.testing.assert_close(final[name], phi[name].detach().expand_as(final[name]))


def test_non_differentiable_adaptation_returns_no_graph():
    """``differentiable=False``: neither the method's parameters (which require gradients) nor
    a step size that requires gradients leave a graph on any returned parameter."""
    m, b = _byol(), _tasks()
    assert all(v.requires_grad for v in m.online_params().values())
    lr = torch.tensor(0.2, dtype=f64, requires_grad=True)
    for steps in (0, 2):
        adapted, _ = adapt_tasks(m, b, steps, lr, names=m.head_names())
        assert not any(v.requires_grad for v in adapted.values()), steps


def test_the_stopping_rule_reads_the_loss_with_the_steps_targets():
    """BYOL's momentum targets: the support loss that early stopping reads is the one the
    steps descend (the same targets), never a loss without them."""
    m, b = _byol(), _tasks()
    got = []
    original = m.loss

    def recording(params, a, bb, targets=None):
        got.append(targets is not None)
        return original(params, a, bb, targets)

    m.loss = recording
    _, taken = adapt_tasks(m, b, 4, 0.2, patience=5, check_every=1)
    assert taken == 4 and len(got) >= 2 and all(got)


def test_merged_pieces_are_one_concatenation_per_layer():
    """A layer used in two steps has two pieces; merged, one (their rows stacked), with the
    same adapted outputs."""
    w, b, x = _randn(5, 4, seed=1), _randn(5, seed=2), _randn(3, 4, seed=3)
    fac = Adapter({}, {"w": w}, FactoredPlan(["w"], worth=0), key="k")
    state, _ = fac.sgd(fac.start({"b": b}), 2, _layer_loss(x), 0.4, True)
    merged = Adapter.merged(state)
    assert len(state["X"]["w"]) == 2 and len(merged["X"]["w"]) == 1
    for part in ("X", "G"):
        assert torch.equal(merged[part]["w"][0], torch.cat(state[part]["w"]))
    one, _ = fac.sgd(fac.start({"b": b}), 1, _layer_loss(x), 0.4, True)
    assert Adapter.merged(one)["X"]["w"] == one["X"]["w"]  # a single piece stays as it is
    with torch.no_grad():
        y, y_m = (fac.call(s, lambda p: F.linear(x, p["w"], p["b"])) for s in (state, merged))
    torch.testing.assert_close(y_m, y, rtol=1e-13, atol=1e-14)


def test_linear_weights_are_plain_linear_layers_only():
    class Scaled(nn.Linear):  # a Linear subclass with its own forward is not F.linear's weight
        def forward(self, x):
            return 2 * super().forward(x)

    net = nn.Sequential(nn.Linear(3, 4), Scaled(4, 2))
    names = [n for n, _ in net.named_parameters()]
    assert linear_weights(net, names) == ["0.weight"]
    assert linear_weights(nn.Linear(3, 2), ["weight", "bias"]) == ["weight"]  # the root itself
    assert linear_weights(net, ["1.weight"]) == []


def test_an_unknown_order_is_refused_with_its_value():
    with pytest.raises(ValueError, match=r"^order must be 'first' or 'second', got 'third'$"):
        Adaptation(1, 0.1, 0, 0.0, "sigma", "third")


def test_the_objectives_default_sharpness_is_the_configs():
    m, *_ = _setup()
    obj = TaskObjective(m, Adaptation.of(GeSSLConfig()), resolve_critic(m, "cosine", 0.1))
    assert obj.sharpness == GeSSLConfig().threshold_sharpness == 10.0


def test_a_step_with_nothing_moving_returns_the_state_and_the_loss():
    """No dense parameter and nothing factored: the model is φ's; the step reports its loss."""
    w, b, x = _randn(5, 4, seed=1), _randn(5, seed=2), _randn(3, 4, seed=3)
    ad = Adapter({"w": w, "b": b})
    start = Adapter.start({})
    state, value = ad.step(start, _layer_loss(x), 0.4, True)
    assert state is start
    assert float(value) == float(_layer_loss(x)({"w": w, "b": b}))
