"""The trainer's gradients are the ones the algorithm defines (float64)."""

from __future__ import annotations

import math

import pytest
import torch

from gessl.data import GaussianLatentTasks
from gessl.methods import available_methods, build_method
from gessl.models import MLP
from gessl.sigma import kl_rows
from gessl.tasks import TaskBatch, task_logits
from gessl.trainer import GeSSLConfig, Trainer
from tests.gessl.trainer.helpers import make_trainer, mean_gradient, mean_objective


def _directional_check(tr, batch, grads, params, n_dirs=4, h=1e-6, g_params=None, prefix=""):
    gen = torch.Generator().manual_seed(0)
    worst = 0.0
    for _ in range(n_dirs):
        direction = {
            k: torch.randn(v.shape, generator=gen, dtype=v.dtype) for k, v in params.items()
        }
        analytic = sum(float((grads[prefix + k] * d).sum()) for k, d in direction.items())

        def shifted(s, direction=direction):
            return {k: (v + s * direction[k]).detach() for k, v in params.items()}

        if g_params is None:
            plus = mean_objective(tr, batch, shifted(h))
            minus = mean_objective(tr, batch, shifted(-h))
        else:
            phi = {k: v.detach() for k, v in tr.method.online_params().items()}
            plus = mean_objective(tr, batch, phi, shifted(h))
            minus = mean_objective(tr, batch, phi, shifted(-h))
        numeric = (plus - minus) / (2 * h)
        worst = max(worst, abs(analytic - numeric) / max(abs(numeric), 1e-8))
    return worst


@pytest.mark.parametrize("adapt", ["all", "projector"])
def test_second_order_matches_finite_differences(adapt):
    tr = make_trainer(
        inner_steps=2,
        inner_lr=0.1,
        lookahead_steps=0,
        sigma_weight=0.5,
        order="second",
        adapt=adapt,
    )
    batch = tr.sample()
    params = {k: v.detach() for k, v in tr.method.online_params().items()}
    err = _directional_check(tr, batch, mean_gradient(tr, batch), params)
    assert err <= 1e-6


def test_first_order_is_not_the_hypergradient():
    """The check above can fail: FOMAML's gradient differs from the finite differences."""
    tr = make_trainer(inner_steps=2, inner_lr=0.1, lookahead_steps=0, sigma_weight=0.0)
    batch = tr.sample()
    params = {k: v.detach() for k, v in tr.method.online_params().items()}
    assert _directional_check(tr, batch, mean_gradient(tr, batch), params) > 1e-3


def _reference_first_order(tr, batch, k, lr, lam, gamma, tau, critic="cosine"):
    """FOMAML with look-ahead, written with plain autograd on detached copies."""
    m = tr.method
    names = list(m.online_params())
    total = {n: torch.zeros_like(v) for n, v in m.online_params().items()}
    for i in range(batch.n_tasks):
        sa, sb, qa, qb = (
            batch.support_a[i],
            batch.support_b[i],
            batch.query_a[i],
            batch.query_b[i],
        )
        theta = [v.detach().clone() for v in m.online_params().values()]
        for _ in range(k):
            theta = [t.requires_grad_(True) for t in theta]
            g = torch.autograd.grad(m.loss(dict(zip(names, theta)), sa, sb).loss, theta)
            theta = [(t - lr * gg).detach() for t, gg in zip(theta, g)]
        look = [t.clone() for t in theta]
        for _ in range(lam):
            look = [t.requires_grad_(True) for t in look]
            g = torch.autograd.grad(m.loss(dict(zip(names, look)), sa, sb).loss, look)
            look = [(t - lr * gg).detach() for t, gg in zip(look, g)]
        theta = [t.requires_grad_(True) for t in theta]
        p, pt = dict(zip(names, theta)), dict(zip(names, look))

        def log_pi(params, qa=qa, qb=qb):
            logits = task_logits(m.embed(params, qa), m.embed(params, qb), tau, critic)
            return torch.log_softmax(logits, -1)

        loss = m.loss(p, qa, qb).loss + gamma * kl_rows(log_pi(p), log_pi(pt).detach()).mean()
        for n, g in zip(names, torch.autograd.grad(loss, theta)):
            total[n] += g / batch.n_tasks
    return total


@pytest.mark.parametrize("method", ["simclr", "vicreg", "simsiam"])
def test_first_order_matches_detached_reference(method):
    tr = make_trainer(
        method,
        inner_steps=2,
        inner_lr=0.1,
        lookahead_steps=2,
        sigma_weight=0.7,
        sigma_temperature=0.3,
    )
    batch = tr.sample()
    got = mean_gradient(tr, batch)
    want = _reference_first_order(tr, batch, 2, 0.1, 2, 0.7, 0.3)
    for name, w in want.items():
        torch.testing.assert_close(got[name], w, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize(
    ("method", "options", "sigma_critic", "critic", "tau"),
    [
        ("infonce", {"critic": "two_headed", "temperature": 0.7}, "method", "two_headed", 0.7),
        (
            "infonce",
            {"critic": "neg_sq_distance", "temperature": 2.0},
            "method",
            "neg_sq_distance",
            2.0,
        ),
        ("simclr", {"temperature": 0.4}, "method", "cosine", 0.4),
        ("vicreg", {}, "dot", "dot", 0.5),
        ("simsiam", {}, "two_headed", "two_headed", 0.5),
    ],
)
def test_sigma_term_uses_the_named_critic(method, options, sigma_critic, critic, tau):
    """The σ-term's π is the named critic's (or the method's own): the trainer's gradient equals
    the detached reference written with that critic, and differs from the cosine one."""
    tr = make_trainer(
        method,
        options=options,
        inner_steps=1,
        inner_lr=0.1,
        lookahead_steps=2,
        sigma_weight=0.8,
        sigma_critic=sigma_critic,
        sigma_temperature=0.5,
    )
    batch = tr.sample()
    got = mean_gradient(tr, batch)
    want = _reference_first_order(tr, batch, 1, 0.1, 2, 0.8, tau, critic)
    for name, w in want.items():
        torch.testing.assert_close(got[name], w, rtol=1e-10, atol=1e-12)
    cosine = _reference_first_order(tr, batch, 1, 0.1, 2, 0.8, 0.37, "cosine")
    assert any(not torch.allclose(got[n], cosine[n], atol=1e-9) for n in cosine)


def test_a_critic_a_method_cannot_use_is_refused_by_name():
    with pytest.raises(ValueError, match=r"sigma_critic must be one of \('cosine', 'dot'"):
        make_trainer(sigma_critic="euclid")
    with pytest.raises(ValueError, match="sigma_critic='method': method 'barlow_twins' declares"):
        make_trainer("barlow_twins", sigma_critic="method")
    torch.manual_seed(0)
    odd = build_method("simclr", MLP(5, width=8), proj_dims=(8, 5))
    with pytest.raises(ValueError, match="sigma_critic: method 'simclr' cannot use it: critic"):
        Trainer(odd, GaussianLatentTasks(dim=5), GeSSLConfig(sigma_critic="two_headed"))
    with pytest.raises(ValueError, match="critic 'two_headed' needs an even embedding dimension"):
        build_method("infonce", MLP(5, width=8), proj_dims=(8, 5), critic="two_headed")


def test_k0_lambda0_gamma0_is_the_plain_gradient_on_query_views():
    g = make_trainer(inner_steps=0, lookahead_steps=0, sigma_weight=0.0)
    p = make_trainer(mode="plain", use_support_in_plain=False)
    batch = g.sample()
    assert g.cfg.is_plain_equivalent
    got, want = mean_gradient(g, batch), mean_gradient(p, batch)
    for name in want:
        torch.testing.assert_close(got[name], want[name], rtol=0, atol=1e-14)


def test_sigma_term_gradient_vanishes_without_lookahead():
    """λ = 0: the target is sg(θ) itself and ∇KL(π_θ ‖ sg π_θ) = 0."""
    a = make_trainer(inner_steps=1, lookahead_steps=0, sigma_weight=3.0)
    b = make_trainer(inner_steps=1, lookahead_steps=0, sigma_weight=0.0)
    batch = a.sample()
    ga, gb = mean_gradient(a, batch), mean_gradient(b, batch)
    for name in gb:
        torch.testing.assert_close(ga[name], gb[name], rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize("method", available_methods())
@pytest.mark.parametrize("adapt", ["all", "projector"])
def test_vmap_and_loop_agree(method, adapt):
    kw = dict(inner_steps=1, lookahead_steps=1, sigma_weight=0.5, adapt=adapt)
    v, lp = make_trainer(method, batching="vmap", **kw), make_trainer(method, batching="loop", **kw)
    batch = v.sample()
    (gv, av), (gl, al) = v.task_gradients(batch), lp.task_gradients(batch)
    scale = max(float(x.abs().max()) for x in gl.values())
    for name in gl:
        torch.testing.assert_close(gv[name], gl[name], rtol=0, atol=1e-10 * max(scale, 1.0))
    torch.testing.assert_close(av["loss"], al["loss"], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("order", ["first", "second"])
def test_threshold_network_gradient_matches_finite_differences(order):
    """g is differentiated exactly through the inner steps in both orders. λ = 0 keeps the
    outer σ-term's stop-gradient target equal to sg(θ_K), whose value does not move with g."""
    tr = make_trainer(
        inner_steps=2,
        inner_lr=0.5,
        lookahead_steps=0,
        sigma_weight=2.0,
        sigma_temperature=0.2,
        threshold="learned",
        threshold_sharpness=1.0,
        order=order,
    )
    with torch.no_grad():  # δ = 0.05, comparable to the support σ-term
        tr.threshold_net.net[-1].bias.fill_(math.log(math.expm1(0.05)))
    batch = tr.sample()
    grads = mean_gradient(tr, batch)
    g = {k: v.detach() for k, v in tr.threshold_net.named_parameters()}
    assert any(float(grads[f"threshold.{k}"].abs().max()) > 1e-6 for k in g)
    err = _directional_check(tr, batch, grads, g, g_params=True, prefix="threshold.")
    assert err <= 1e-5


@pytest.mark.parametrize("method", ["byol", "simclr", "dino"])
def test_a_tasks_objective_does_not_depend_on_the_other_tasks(method):
    """Batch statistics (projector BN, target networks) are per task: a task's loss and gradient
    are the same whether it is computed with the others or alone (as on another rank)."""
    tr = make_trainer(method, inner_steps=1, lookahead_steps=1, sigma_weight=0.5)
    batch = tr.sample()
    _, aux_all = tr.task_gradients(batch)
    for rank in range(2):
        _, aux_part = tr.task_gradients(batch.shard(rank, 2))
        lo = rank * batch.n_tasks // 2
        torch.testing.assert_close(
            aux_part["loss"],
            aux_all["loss"][lo : lo + len(aux_part["loss"])],
            rtol=1e-12,
            atol=1e-12,
        )


@pytest.mark.parametrize("method", ["simclr", "byol", "swav"])
@pytest.mark.parametrize("adapt", ["all", "projector"])
def test_split_first_order_equals_the_nested_objective(method, adapt):
    """The trainer's cheap un-nested first-order path gives the nested objective's gradients."""
    from torch.func import grad

    tr = make_trainer(
        method, inner_steps=2, lookahead_steps=1, sigma_weight=0.6, adapt=adapt, fast_path=False
    )
    batch = tr.sample()
    calls = []
    inner = tr.outer_step.reference.inner
    tr.outer_step.reference.inner = lambda *a, **k: calls.append(1) or inner(*a, **k)
    got, aux = tr.task_gradients(batch)
    assert calls and tr.path == "reference"  # the split form ran
    phi = {k: v.detach() for k, v in tr.method.online_params().items()}
    adapt_p = {k: phi[k] for k in tr.adapt_names}
    fixed_p = {k: phi[k] for k in tr.fixed_names}
    targets = tr._targets(batch)
    want: dict[str, torch.Tensor] = {}
    losses = []
    nested = tr.outer_step.reference.nested
    for i in range(batch.n_tasks):
        task = TaskBatch.of_views([v[i] for v in batch.views()])
        (gf, ga), a = grad(nested, argnums=(0, 1), has_aux=True)(
            fixed_p, adapt_p, {}, task, {k: v[i] for k, v in targets.items()}
        )
        for k, v in {**ga, **gf}.items():
            want[k] = want.get(k, 0) + v
        losses.append(a["support_loss"])
    for k in want:
        torch.testing.assert_close(got[k], want[k], rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(aux["support_loss"], torch.stack(losses), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(("method", "weight_decay"), [("simclr", 0.0), ("vicreg", 0.05)])
def test_one_sgd_step_moves_by_the_mean_task_gradient(method, weight_decay):
    """The optimiser step itself: with plain SGD, φ moves by −η·(mean over tasks of the
    first-order task gradient + weight decay · φ), with the gradient from the independent
    reference above (Adam would hide a wrong gradient scale; SGD does not)."""
    lr = 0.3
    tr = make_trainer(
        method,
        inner_steps=1,
        inner_lr=0.1,
        lookahead_steps=1,
        sigma_weight=0.5,
        sigma_temperature=0.3,
        optimizer="sgd",
        outer_lr=lr,
        weight_decay=weight_decay,
        tasks_per_step=4,
    )
    batch = tr.sample()
    before = {k: v.detach().clone() for k, v in tr.method.online_params().items()}
    want = _reference_first_order(tr, batch, 1, 0.1, 1, 0.5, 0.3)
    tr.train_step(batch)
    after = tr.method.online_params()
    moved = 0.0
    for name, g in want.items():
        expected = before[name] - lr * (g + weight_decay * before[name])
        torch.testing.assert_close(after[name].detach(), expected, rtol=1e-10, atol=1e-12)
        moved = max(moved, float((after[name].detach() - before[name]).abs().max()))
    assert moved > 1e-4  # the step is not vacuous
