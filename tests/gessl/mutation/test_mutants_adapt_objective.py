"""gessl.adapt.objective: the pieces of the GeSSL objective that mutation testing showed unpinned.

Each test asserts a number (a loss, a gradient, a count of backbone passes), a structure or an
exact message that a one-token change of :mod:`gessl.adapt.objective` would get wrong
(``docs/testing.md``). Expected values come from a plain-autograd re-derivation of the algorithm
in the module docstring (float64), not from the objective itself.
"""

from __future__ import annotations

import math
import re

import pytest
import torch
import torch.nn.functional as F
from torch.func import grad, vjp

from gessl.adapt import Adaptation, Adapter, TaskObjective, ThresholdNet
from gessl.methods import build_method
from gessl.methods.base import resolve_critic
from gessl.models import MLP
from gessl.sigma import kl_rows
from gessl.tasks import TaskBatch
from gessl.trainer import GeSSLConfig

f64 = torch.float64
N, DIM = 6, 5
VIEWS = ("sa", "sb", "qa", "qb")


def _method():
    torch.manual_seed(0)
    backbone = MLP(DIM, width=8, activation="tanh")
    return build_method("simclr", backbone, proj_dims=(8, 4), head_activation="tanh").double()


def _task(seed: int = 1) -> TaskBatch:
    """One task (views ``[N, DIM]``), as ``vmap`` hands it to the per-task objective."""
    g = torch.Generator().manual_seed(seed)
    return TaskBatch.of_views([torch.randn(N, DIM, generator=g, dtype=f64) for _ in VIEWS])


def _objective(m, cfg, net=None) -> TaskObjective:
    critic = resolve_critic(m, cfg.sigma_critic, cfg.sigma_temperature)
    return TaskObjective(
        m,
        Adaptation.of(cfg),
        critic,
        head_only=cfg.adapt == "projector",
        threshold_net=net if cfg.threshold == "learned" else None,
        sharpness=cfg.threshold_sharpness,
    )


def build_objective(m, cfg, net=None):
    """The nested objective as ``f(adapted, fixed, g_params, task, targets)``."""
    obj = _objective(m, cfg, net)
    return lambda adapt, fixed, g, task, targets: obj.nested(fixed, adapt, g, task, targets)


def build_first_order_split(m, cfg):
    """The split first-order form as ``inner(adapted, fixed, task, targets) -> (θ, θ̃, ℓ(φ))``
    and ``outer(θ, fixed, task, targets, θ̃) -> (loss, aux)`` (dense backend)."""
    obj = _objective(m, cfg)

    def inner(adapt, fixed, task, targets):
        states, support = obj.inner(fixed, adapt, task, targets)
        return states["theta"]["dense"], states["look"]["dense"], support

    def outer(theta, fixed, task, targets, look):
        states = {"theta": Adapter.start(theta), "look": Adapter.start(look)}
        return obj.outer(fixed, theta, task, targets, states)

    return inner, outer


def _parts(m, head_only: bool) -> tuple[dict, dict]:
    """(adapted, fixed) parameters: the head and the backbone, or everything and nothing."""
    phi = {k: v.detach().clone() for k, v in m.online_params().items()}
    if not head_only:
        return phi, {}
    head = set(m.head_names())
    return {k: v for k, v in phi.items() if k in head}, {
        k: v for k, v in phi.items() if k not in head
    }


def _count_backbone_passes(m) -> list[int]:
    """Replace ``m.features`` by a counting wrapper; returns the (growing) list of calls."""
    calls: list[int] = []
    original = m.features

    def counting(params, x):
        calls.append(x.shape[0])
        return original(params, x)

    m.features = counting
    return calls


def _threshold_net(bias: float = 0.0) -> ThresholdNet:
    torch.manual_seed(3)
    net = ThresholdNet().double()
    with torch.no_grad():
        net.net[0].weight.mul_(3.0)
        net.net[-1].bias.fill_(bias)
    return net


def _full(msg: str) -> str:
    return "^" + re.escape(msg) + "$"


# ----------------------------------------------------------------------------- plain reference


def _log_pi(m, params, a, b, tau):
    za, zb = m.embed(params, a), m.embed(params, b)
    cos = F.normalize(za, dim=-1) @ F.normalize(zb, dim=-1).T
    return torch.log_softmax(cos / tau, dim=-1)


def _sgd(m, params, names, views, steps, lr, graph):
    """``steps`` plain SGD steps on ``names`` of ``params`` (autograd; ``graph`` keeps it)."""
    p = dict(params)
    for _ in range(steps):
        if not graph:
            p = {k: (v.detach().requires_grad_(True) if k in names else v) for k, v in p.items()}
        loss = m.loss(p, views[0], views[1]).loss
        g = torch.autograd.grad(loss, [p[k] for k in names], create_graph=graph)
        p = {**p, **{k: p[k] - lr * gk for k, gk in zip(names, g)}}
        if not graph:
            p = {k: v.detach() for k, v in p.items()}
    return p


def _reference(m, task, adapt, fixed, *, order, k, lam, lr, gamma, tau=0.1):
    """(loss, query loss, KL, gradients w.r.t. adapt and fixed) of the v4 objective."""
    a = {n: v.clone().requires_grad_(True) for n, v in adapt.items()}
    f = {n: v.clone().requires_grad_(True) for n, v in fixed.items()}
    sup, names = (task.support_a, task.support_b), list(a)
    if order == "second":
        theta = _sgd(m, {**f, **a}, names, sup, k, lr, graph=True)
    else:  # FOMAML: the inner loop sees detached parameters; θ_K + (φ − sg φ)
        start = {n: v.detach() for n, v in {**f, **a}.items()}
        theta = _sgd(m, start, names, sup, k, lr, graph=False)
        theta = {**f, **{n: theta[n].detach() + (a[n] - a[n].detach()) for n in names}}
    look = _sgd(m, {n: v.detach() for n, v in theta.items()}, names, sup, lam, lr, graph=False)
    qa, qb = task.query_a, task.query_b
    query = m.loss(theta, qa, qb).loss
    kl = kl_rows(_log_pi(m, theta, qa, qb, tau), _log_pi(m, look, qa, qb, tau).detach()).mean()
    loss = query + gamma * kl
    grads = torch.autograd.grad(loss, [*a.values(), *f.values()], allow_unused=True)
    ga, gf = dict(zip(a, grads[: len(a)])), dict(zip(f, grads[len(a) :]))
    return loss.detach(), query.detach(), kl.detach(), ga, gf


# ----------------------------------------------------------------------------- ThresholdNet


def test_threshold_net_default_width_and_tanh_layer():
    net = ThresholdNet().double()
    assert ThresholdNet.n_stats == 3
    assert [type(layer).__name__ for layer in net.net] == ["Linear", "Tanh", "Linear"]
    assert net.net[0].in_features == 3 and net.net[0].out_features == 16
    assert net.net[2].in_features == 16 and net.net[2].out_features == 1
    assert GeSSLConfig().threshold_hidden == 16
    # g(s) = softplus(w2·tanh(W1 s + b1) + b2), by hand on a 2-unit net
    small = ThresholdNet(hidden=2).double()
    with torch.no_grad():
        small.net[0].weight.copy_(torch.tensor([[1.0, 0.0, 0.0], [0.0, 2.0, -1.0]]))
        small.net[0].bias.copy_(torch.tensor([0.5, 0.0]))
        small.net[2].weight.copy_(torch.tensor([[1.0, -3.0]]))
        small.net[2].bias.fill_(0.25)
    s = torch.tensor([0.5, 1.0, 0.5], dtype=f64)
    pre = math.tanh(1.0) - 3 * math.tanh(1.5) + 0.25
    with torch.no_grad():
        out = small(s)
    assert out.shape == ()
    assert float(out) == pytest.approx(math.log1p(math.exp(pre)), rel=1e-14)


# ----------------------------------------------------------------------------- objective values


@pytest.mark.parametrize("order", ["first", "second"])
def test_objective_and_gradients_match_plain_autograd_with_a_fixed_part(order):
    """phi_fixed is held fixed by the inner loop: with ``order="second"`` its gradient includes
    the path through the inner steps, with ``"first"`` it does not (the inner loop runs on
    detached parameters). Here phi_fixed (the backbone) enters the support loss itself."""
    m, task = _method(), _task()
    adapt, fixed = _parts(m, head_only=True)
    cfg = GeSSLConfig(order=order, inner_steps=2, inner_lr=0.3, lookahead_steps=1, sigma_weight=0.7)
    obj = build_objective(m, cfg)
    (ga, gf), aux = grad(obj, argnums=(0, 1), has_aux=True)(adapt, fixed, {}, task, {})
    loss, query, kl, wa, wf = _reference(
        m, task, adapt, fixed, order=order, k=2, lam=1, lr=0.3, gamma=0.7
    )
    assert set(aux) == {"ssl", "kl", "support_loss", "loss"}
    torch.testing.assert_close(aux["loss"], loss, rtol=1e-12, atol=0)
    torch.testing.assert_close(aux["ssl"], query, rtol=1e-12, atol=0)
    torch.testing.assert_close(aux["kl"], kl, rtol=1e-12, atol=0)
    torch.testing.assert_close(
        aux["support_loss"],
        m.loss(adapt | fixed, task.support_a, task.support_b).loss,
        rtol=1e-14,
        atol=0,
    )
    for name in wa:
        torch.testing.assert_close(ga[name], wa[name], rtol=1e-9, atol=1e-12)
    for name in wf:
        torch.testing.assert_close(gf[name], wf[name], rtol=1e-9, atol=1e-12)
    # the two orders' φ_fixed gradients differ by far more than the tolerance
    other = "first" if order == "second" else "second"
    *_, wf_other = _reference(m, task, adapt, fixed, order=other, k=2, lam=1, lr=0.3, gamma=0.7)
    assert max(float((wf[n] - wf_other[n]).abs().max()) for n in wf) > 1e-4
    assert float(loss) == pytest.approx(float(query + 0.7 * kl), rel=1e-14)


def test_without_sigma_weight_the_kl_is_exactly_zero():
    m, task = _method(), _task()
    adapt, _ = _parts(m, head_only=False)
    cfg = GeSSLConfig(inner_steps=1, inner_lr=0.3, lookahead_steps=2, sigma_weight=0.0)
    loss, aux = build_objective(m, cfg)(adapt, {}, {}, task, {})
    assert float(aux["kl"]) == 0.0
    assert float(loss) == float(aux["ssl"])
    # with γ > 0 the same look-ahead gives a clearly positive KL
    _, aux_on = build_objective(m, GeSSLConfig(inner_steps=1, inner_lr=0.3, lookahead_steps=2))(
        adapt, {}, {}, task, {}
    )
    assert float(aux_on["kl"]) > 1e-3


@pytest.mark.parametrize("head_only", [False, True])
def test_no_inner_steps_reports_the_support_loss_at_phi(head_only):
    m, task = _method(), _task()
    adapt, fixed = _parts(m, head_only)
    cfg = GeSSLConfig(inner_steps=0, adapt="projector" if head_only else "all")
    _, aux = build_objective(m, cfg)(adapt, fixed, {}, task, {})
    want = m.loss(adapt | fixed, task.support_a, task.support_b).loss
    torch.testing.assert_close(aux["support_loss"], want, rtol=1e-14, atol=0)
    assert not aux["support_loss"].requires_grad
    assert float(aux["ssl"]) == pytest.approx(
        float(m.loss(adapt | fixed, task.query_a, task.query_b).loss), rel=1e-14
    )


def test_a_threshold_net_is_ignored_unless_threshold_learned():
    m, task = _method(), _task()
    adapt, _ = _parts(m, head_only=False)
    net = _threshold_net()
    g = {k: v.detach() for k, v in net.named_parameters()}
    kw = dict(inner_steps=1, inner_lr=0.3, lookahead_steps=1)
    plain, _ = build_objective(m, GeSSLConfig(**kw))(adapt, {}, {}, task, {})
    # a net with threshold="none" is ignored
    with_net, _ = build_objective(m, GeSSLConfig(**kw), net)(adapt, {}, g, task, {})
    assert float(with_net) == float(plain)
    # both: a different objective
    learned, _ = build_objective(m, GeSSLConfig(threshold="learned", **kw), net)(
        adapt, {}, g, task, {}
    )
    assert abs(float(learned) - float(plain)) > 1e-4


# ----------------------------------------------------------------------------- threshold (v5)


def _threshold_reference(m, task, phi, net, *, k, lam, lr, gamma, beta, tau=0.1):
    """(loss, ∇g, statistics) of the v5 objective (first order, everything adapted)."""
    names = list(phi)
    sa, sb, qa, qb = task.views()
    start = {n: v.detach() for n, v in phi.items()}
    a = {n: v.clone().requires_grad_(True) for n, v in phi.items()}
    gp = {n: v.detach().clone().requires_grad_(True) for n, v in net.named_parameters()}
    far = _sgd(m, start, names, (sa, sb), k + lam, lr, graph=False)
    lp_far = _log_pi(m, far, sa, sb, tau).detach()
    with torch.no_grad():
        z = F.normalize(m.embed(start, sa), dim=-1)
        cos = z @ z.T
        off = ~torch.eye(N, dtype=torch.bool)
        stats = torch.stack(
            [
                m.loss(start, sa, sb).loss,
                cos[off].mean(),
                kl_rows(_log_pi(m, start, sa, sb, tau), lp_far).mean(),
            ]
        )
    hidden = torch.tanh(gp["net.0.weight"] @ stats + gp["net.0.bias"])
    pre = gp["net.2.weight"][0] @ hidden + gp["net.2.bias"][0]
    delta = torch.log1p(torch.exp(pre))

    p = {n: v.clone().requires_grad_(True) for n, v in start.items()}
    for _ in range(k):
        gap = kl_rows(_log_pi(m, p, sa, sb, tau), lp_far).mean()
        hinge = torch.log1p(torch.exp(beta * (gap - delta))) / beta
        inner = m.loss(p, sa, sb).loss + gamma * hinge
        g = torch.autograd.grad(inner, [p[n] for n in names], create_graph=True)
        p = {n: p[n] - lr * gn for n, gn in zip(names, g)}
    theta = {n: p[n] + (a[n] - a[n].detach()) for n in names}
    look = _sgd(m, {n: v.detach() for n, v in theta.items()}, names, (sa, sb), lam, lr, False)
    kl = kl_rows(_log_pi(m, theta, qa, qb, tau), _log_pi(m, look, qa, qb, tau).detach()).mean()
    loss = m.loss(theta, qa, qb).loss + gamma * kl
    gg = torch.autograd.grad(loss, list(gp.values()))
    return loss.detach(), dict(zip(gp, gg)), stats, float(delta.detach())


@pytest.mark.parametrize("beta", [10.0, 3.0])
def test_threshold_objective_matches_plain_autograd(beta):
    """ℓ + γ·softplus_β(KL_support(π_θ ‖ π_θ̃s) − δ) with θ̃s = K + λ steps and
    δ = softplus(g(ℓ(φ), mean off-diagonal cosine, KL at φ)); loss and g's gradient."""
    m, task = _method(), _task()
    phi, _ = _parts(m, head_only=False)
    kw = dict(k=1, lam=2, lr=0.4, gamma=1.5, beta=beta)
    # the last bias puts δ near the support gap, where the hinge bends
    net = _threshold_net(bias=1.0)
    cfg = GeSSLConfig(
        inner_steps=1,
        lookahead_steps=2,
        inner_lr=0.4,
        sigma_weight=1.5,
        threshold="learned",
        threshold_sharpness=beta,
    )
    g = {n: v.detach() for n, v in net.named_parameters()}
    obj = build_objective(m, cfg, net)

    gg, aux = grad(lambda gp: obj(phi, {}, gp, task, {}), has_aux=True)(g)
    loss, want_gg, stats, delta = _threshold_reference(m, task, phi, net, **kw)
    # a non-degenerate case: the three statistics are distinct, the hinge is in its bend
    assert 0.05 < delta < 2.0 and abs(float(stats[2]) - delta) < 0.5
    assert float(stats[1]) != pytest.approx(float(stats[0]), abs=1e-3)
    torch.testing.assert_close(aux["loss"], loss, rtol=1e-11, atol=0)
    torch.testing.assert_close(aux["support_loss"], stats[0], rtol=1e-14, atol=0)
    for name, w in want_gg.items():
        assert float(w.abs().max()) > 1e-6
        torch.testing.assert_close(gg[name], w, rtol=1e-8, atol=1e-13)


# ----------------------------------------------------------------------------- backbone passes


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"order": "second"},
        {"inner_steps": 0},
        {"inner_steps": 2, "lookahead_steps": 2},
        {"threshold": "learned"},
        {"threshold": "learned", "order": "second"},
    ],
)
def test_projector_mode_runs_the_backbone_once_per_view(options):
    """adapt="projector": backbone features are computed once per task (sa, sb, qa, qb), and
    every loss, π and statistic reuses them; the numbers are those of the same partition with
    the backbone recomputed at every use (adapt="all" with φ_fixed = the backbone)."""
    m, task = _method(), _task()
    adapt, fixed = _parts(m, head_only=True)
    cfg = GeSSLConfig(adapt="projector", inner_lr=0.3, sigma_weight=0.8, **options)
    net = _threshold_net(bias=1.0) if cfg.threshold == "learned" else None
    g = {k: v.detach() for k, v in net.named_parameters()} if net else {}
    calls = _count_backbone_passes(m)
    loss, aux = build_objective(m, cfg, net)(adapt, fixed, g, task, {})
    assert calls == [N] * 4
    recomputed = GeSSLConfig(**{**cfg.to_dict(), "adapt": "all"})
    calls.clear()
    want, want_aux = build_objective(m, recomputed, net)(adapt, fixed, g, task, {})
    assert len(calls) > 4
    torch.testing.assert_close(loss, want, rtol=1e-12, atol=0)
    for key in ("ssl", "kl", "support_loss"):
        torch.testing.assert_close(aux[key], want_aux[key], rtol=1e-12, atol=0)


@pytest.mark.parametrize(
    ("options", "passes"),
    [
        # K = 1 step (sa, sb) + λ = 1 step (sa, sb) + query (qa, qb) + target π (qa, qb)
        ({}, 8),
        # ℓ(φ) for the statistics, K + λ target steps, π target, z, π at φ, K, λ, query, target
        ({"threshold": "learned"}, 2 + 4 + 2 + 1 + 2 + 2 + 2 + 2 + 2),
        # ℓ(φ; support) read without a step, λ = 1, query, target
        ({"inner_steps": 0}, 2 + 2 + 2 + 2),
    ],
)
def test_all_mode_backbone_passes_have_no_redundant_forward(options, passes):
    """With K ≥ 1 the logged ℓ(φ; support) is read off the first inner step, not recomputed."""
    m, task = _method(), _task()
    adapt, _ = _parts(m, head_only=False)
    cfg = GeSSLConfig(**options)
    net = _threshold_net() if cfg.threshold == "learned" else None
    g = {k: v.detach() for k, v in net.named_parameters()} if net else {}
    calls = _count_backbone_passes(m)
    build_objective(m, cfg, net)(adapt, {}, g, task, {})
    assert len(calls) == passes


# ----------------------------------------------------------------------------- split form


@pytest.mark.parametrize("head_only", [False, True])
def test_split_form_passes_and_values(head_only):
    """inner: 2 backbone passes in projector mode (sa, sb), K + λ steps' worth otherwise;
    outer: 2 (qa, qb) in projector mode; the loss and aux are those of the nested objective."""
    m, task = _method(), _task()
    adapt, fixed = _parts(m, head_only)
    cfg = GeSSLConfig(
        adapt="projector" if head_only else "all",
        inner_steps=1,
        inner_lr=0.3,
        lookahead_steps=1,
        sigma_weight=0.8,
    )
    want, want_aux = build_objective(m, cfg)(adapt, fixed, {}, task, {})
    inner, outer = build_first_order_split(m, cfg)
    calls = _count_backbone_passes(m)
    theta, look, support = inner(adapt, fixed, task, {})
    assert len(calls) == (2 if head_only else 4)
    calls.clear()
    loss, aux = outer(theta, fixed, task, {}, look)
    assert len(calls) == (2 if head_only else 4)
    assert set(aux) == {"ssl", "kl", "loss"}
    torch.testing.assert_close(loss, want, rtol=1e-12, atol=0)
    torch.testing.assert_close(aux["ssl"], want_aux["ssl"], rtol=1e-12, atol=0)
    torch.testing.assert_close(aux["kl"], want_aux["kl"], rtol=1e-12, atol=0)
    torch.testing.assert_close(support, want_aux["support_loss"], rtol=1e-14, atol=0)


def test_split_without_sigma_weight_has_no_lookahead_and_no_kl():
    m, task = _method(), _task()
    adapt, _ = _parts(m, head_only=False)
    cfg = GeSSLConfig(inner_steps=1, inner_lr=0.3, lookahead_steps=2, sigma_weight=0.0)
    inner, outer = build_first_order_split(m, cfg)
    theta, look, _ = inner(adapt, {}, task, {})
    for name in theta:
        assert torch.equal(look[name], theta[name])
    # outer ignores any look-ahead when γ = 0 (here one far from θ)
    far = {k: v + 0.5 for k, v in theta.items()}
    loss, aux = outer(theta, {}, task, {}, far)
    assert float(aux["kl"]) == 0.0
    assert float(loss) == float(aux["ssl"])
    # with γ > 0 that look-ahead gives a clearly positive KL
    _, on = build_first_order_split(m, GeSSLConfig(inner_steps=1, sigma_weight=0.8))
    assert float(on(theta, {}, task, {}, far)[1]["kl"]) > 1e-3


def test_split_inner_theta_is_one_sgd_step_and_carries_no_graph():
    """inner's θ_K = φ − α∇ℓ(φ), computed outside any gradient transform with the graph
    dropped: the outer objective is differentiated with respect to θ_K itself (FOMAML), so a
    pullback through inner is zero; the look-ahead adds λ further steps to θ_K."""
    m, task = _method(), _task()
    phi, _ = _parts(m, head_only=False)
    lr = 0.3
    inner, _ = build_first_order_split(m, GeSSLConfig(inner_steps=1, inner_lr=lr, sigma_weight=0))
    theta, look, support = inner(phi, {}, task, {})
    p = {k: v.clone().requires_grad_(True) for k, v in phi.items()}
    loss = m.loss(p, task.support_a, task.support_b).loss
    g = dict(zip(p, torch.autograd.grad(loss, list(p.values()))))
    for k in phi:
        torch.testing.assert_close(theta[k], phi[k] - lr * g[k], rtol=1e-12, atol=1e-14)
        assert torch.equal(look[k], theta[k])  # γ = 0: no look-ahead
    assert float(support) == pytest.approx(float(loss.detach()), rel=1e-14)
    _, pull = vjp(lambda a: inner(a, {}, task, {})[0], phi)
    gen = torch.Generator().manual_seed(5)
    v = {k: torch.randn(x.shape, generator=gen, dtype=f64) for k, x in phi.items()}
    (got,) = pull(v)
    assert all(float(x.abs().max()) == 0.0 for x in got.values())
    cfg = GeSSLConfig(inner_steps=0, inner_lr=lr, lookahead_steps=2, sigma_weight=0.8)
    inner0, _ = build_first_order_split(m, cfg)
    _, look0, _ = inner0(phi, {}, task, {})
    two = _sgd(m, phi, list(phi), (task.support_a, task.support_b), 2, lr, graph=False)
    for k in phi:
        torch.testing.assert_close(look0[k], two[k], rtol=1e-12, atol=1e-14)
