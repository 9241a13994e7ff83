"""The factored fast path (``gessl.adapt.linear``) gives the reference path's gradients."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from gessl.adapt import views_batchable
from gessl.data import GaussianLatentTasks
from gessl.methods import build_method
from gessl.methods.catalog import SimCLR
from gessl.models import MLP, ResNet18, SmallCNN
from gessl.trainer import GeSSLConfig, Trainer
from tests.gessl.trainer.helpers import make_trainer


def _pair(method: str = "simclr", **cfg) -> tuple[Trainer, Trainer]:
    """Two identical trainers: the first on the fast path with every linear layer factored
    (at these sizes none would be worth it), the second on the reference path."""
    fast, ref = make_trainer(method, **cfg), make_trainer(method, fast_path=False, **cfg)
    assert fast.outer_step.plan is not None
    fast.outer_step.plan.worth = 0
    return fast, ref


def _assert_same(fast: Trainer, ref: Trainer, batch=None) -> None:
    batch = ref.sample() if batch is None else batch
    (got, got_aux), (want, want_aux) = fast.task_gradients(batch), ref.task_gradients(batch)
    assert fast.path == "factored" and ref.path == "reference"  # each path really ran
    assert set(got) == set(want) and set(got_aux) == set(want_aux)
    scale = max(float(g.abs().max()) for g in want.values())
    assert scale > 1e-3  # a real gradient
    for name, g in want.items():
        torch.testing.assert_close(got[name], g, rtol=0, atol=1e-10 * scale, msg=name)
    for key, v in want_aux.items():
        torch.testing.assert_close(got_aux[key], v, rtol=1e-10, atol=1e-12, msg=key)


@pytest.mark.parametrize("order", ["first", "second"])
@pytest.mark.parametrize("inner_steps", [1, 3])
@pytest.mark.parametrize("lookahead_steps", [0, 1])
@pytest.mark.parametrize("method", ["simclr", "byol", "moco"])
def test_fast_path_gradients_equal_the_reference(method, lookahead_steps, inner_steps, order):
    """SimCLR, BYOL (predictor, momentum targets) and MoCo (queue); every linear layer
    factored, float64."""
    fast, ref = _pair(
        method,
        order=order,
        inner_steps=inner_steps,
        lookahead_steps=lookahead_steps,
        inner_lr=0.3,
        sigma_weight=0.5,
    )
    _assert_same(fast, ref)
    names = _factored_names(fast)
    assert names == fast.outer_step.plan.candidates and len(names) == 4 + 2 * (method == "byol")


def _factored_names(tr: Trainer) -> list[str]:
    b = tr.sample()
    phi = {k: v.detach() for k, v in tr.method.online_params().items()}
    return tr.outer_step.factored_names(phi, b, tr._targets(b))


@pytest.mark.parametrize(
    "cfg",
    [
        {"inner_steps": 0, "lookahead_steps": 2},
        {"inner_steps": 2, "sigma_weight": 0.0},
        {"inner_steps": 2, "batching": "loop"},
        {"inner_steps": 2, "batching": "loop", "order": "second"},
    ],
    ids=["no-inner-steps", "no-sigma-term", "loop", "loop-second-order"],
)
def test_fast_path_edge_cases_equal_the_reference(cfg):
    fast, ref = _pair(**cfg)
    _assert_same(fast, ref)


@pytest.mark.parametrize("method", ["swav", "dino", "simsiam"])
def test_fast_path_with_other_parameters_and_state(method):
    """Prototypes (SwAV), a center (DINO) and a stop-gradient predictor (SimSiam)."""
    fast, ref = _pair(method, inner_steps=2, sigma_weight=0.5)
    _assert_same(fast, ref)


def test_only_layers_worth_it_are_factored():
    """``out·in ≥ 3·rows·(in + out)``: with N = 6 samples (12 rows per step) a 128×128 layer is
    factored, the 5→128 input layer and the small head are not."""
    torch.manual_seed(0)
    m = build_method("simclr", MLP(5, width=128, activation="tanh"), proj_dims=(8, 4)).double()
    tr = Trainer(m, GaussianLatentTasks(dim=5), GeSSLConfig(tasks_per_step=2), n_samples=6)
    assert _factored_names(tr) == ["backbone.net.2.weight"]
    ref = Trainer(
        m, GaussianLatentTasks(dim=5), GeSSLConfig(tasks_per_step=2), n_samples=6, fast_path=False
    )
    _assert_same(tr, ref)


@pytest.mark.parametrize("order", ["first", "second"])
def test_small_cnn_goes_through_the_fast_path_without_factored_layers(order):
    """Conv weights stay dense per task; the two views share one backbone call."""
    torch.manual_seed(0)

    def trainer(fast_path: bool) -> Trainer:
        torch.manual_seed(0)
        m = build_method("simclr", SmallCNN(1, width=4, groups=2), proj_dims=(8, 4)).double()
        from gessl.data import SyntheticImageTasks

        cfg = GeSSLConfig(tasks_per_step=2, order=order, inner_lr=0.3, sigma_weight=0.5)
        return Trainer(m, SyntheticImageTasks(size=8), cfg, n_samples=4, fast_path=fast_path)

    fast, ref = trainer(True), trainer(False)
    assert fast.outer_step.joint and _factored_names(fast) == []
    _assert_same(fast, ref)


class _BatchNormBackbone(nn.Module):
    """A backbone with batch statistics: its two views must not share a call."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(dim, 8), nn.BatchNorm1d(8, track_running_stats=False), nn.Tanh()
        )
        self.out_dim = 8

    def forward(self, x):
        return self.net(x)


def test_views_share_a_backbone_call_only_without_batch_statistics():
    assert views_batchable(build_method("simclr", MLP(5, width=8), proj_dims=(8, 4)))
    assert views_batchable(build_method("byol", SmallCNN(1, width=4, groups=2)))
    assert views_batchable(build_method("simclr", ResNet18(1, width=4, norm="group")))
    assert not views_batchable(build_method("simclr", ResNet18(1, width=4, norm="batch")))
    assert not views_batchable(build_method("simclr", _BatchNormBackbone(5)))

    class OwnLoss(SimCLR):
        def loss(self, params, a, b, targets=None):
            return super().loss(params, b, a, targets)

    assert not views_batchable(OwnLoss(MLP(5, width=8), (8, 4)))

    class Redeclared(MLP):  # a subclass may change forward: row-wise only if it says so
        pass

    assert not views_batchable(build_method("simclr", Redeclared(5, width=8), proj_dims=(8, 4)))
    Redeclared.rowwise = True
    assert views_batchable(build_method("simclr", Redeclared(5, width=8), proj_dims=(8, 4)))


def test_a_backbone_with_batch_statistics_keeps_its_views_apart():
    def trainer(fast_path: bool) -> Trainer:
        torch.manual_seed(0)
        m = build_method("simclr", _BatchNormBackbone(5), proj_dims=(8, 4)).double()
        cfg = GeSSLConfig(tasks_per_step=3, inner_steps=2, sigma_weight=0.5)
        return Trainer(m, GaussianLatentTasks(dim=5), cfg, n_samples=6, fast_path=fast_path)

    fast, ref = trainer(True), trainer(False)
    fast.outer_step.plan.worth = 0
    assert not fast.outer_step.joint
    _assert_same(fast, ref)


class _WeightPenalty(SimCLR):
    """SimCLR plus a penalty on a linear layer's weight: a use other than ``F.linear``."""

    name = "simclr_weight_penalty"

    def loss_from_projections(self, params, za, zb, targets):
        out = super().loss_from_projections(params, za, zb, targets)
        penalty = 0.1 * params["projector.3.weight"].square().sum()
        return type(out)(out.loss + penalty, out.terms)


def test_another_use_of_a_factored_weight_falls_back_to_the_reference(caplog):
    def trainer(fast_path: bool) -> Trainer:
        torch.manual_seed(0)
        m = _WeightPenalty(MLP(5, width=8, activation="tanh"), (8, 4)).double()
        cfg = GeSSLConfig(tasks_per_step=3, inner_steps=2, sigma_weight=0.5)
        return Trainer(m, GaussianLatentTasks(dim=5), cfg, n_samples=6, fast_path=fast_path)

    fast, ref = trainer(True), trainer(False)
    fast.outer_step.plan.worth = 0
    batch = ref.sample()
    with caplog.at_level("WARNING", logger="gessl.trainer"):
        (got, _), (want, _) = fast.task_gradients(batch), ref.task_gradients(batch)
    # detected on the first step, off from then on; the reason is logged and kept
    assert not fast.outer_step.plan.enabled and fast.path == "reference"
    reason = "a factored weight reaches"
    assert reason in fast.outer_step.fallback
    assert fast.outer_step.describe()["fallback"] == fast.outer_step.fallback
    assert [r.getMessage() for r in caplog.records if reason in r.getMessage()] == [
        f"GeSSL fast path off ({fast.outer_step.fallback}); the reference path runs from now on"
    ]
    for name, g in want.items():
        torch.testing.assert_close(got[name], g, rtol=1e-12, atol=1e-14)
    assert float(want["projector.3.weight"].abs().max()) > 1e-3


class _ShapeReader(SimCLR):
    """SimCLR that reads a linear layer's weight's shape and dtype (not its values)."""

    name = "simclr_shape_reader"

    def loss_from_projections(self, params, za, zb, targets):
        w = params["projector.3.weight"]
        assert w.shape[0] == za.shape[-1] and w.dtype == za.dtype and w.dim() == 2
        return super().loss_from_projections(params, za, zb, targets)


def test_reading_a_factored_weights_shape_keeps_the_fast_path():
    def trainer(fast_path: bool) -> Trainer:
        torch.manual_seed(0)
        m = _ShapeReader(MLP(5, width=8, activation="tanh"), (8, 4)).double()
        cfg = GeSSLConfig(tasks_per_step=3, inner_steps=2, sigma_weight=0.5)
        return Trainer(m, GaussianLatentTasks(dim=5), cfg, n_samples=6, fast_path=fast_path)

    fast, ref = trainer(True), trainer(False)
    fast.outer_step.plan.worth = 0
    _assert_same(fast, ref)


@pytest.mark.parametrize(
    "cfg",
    [
        {"mode": "plain"},
        {"adapt": "projector"},
        {"threshold": "learned"},
    ],
    ids=["plain", "projector", "threshold"],
)
def test_the_fast_path_does_not_apply(cfg):
    tr = make_trainer(**cfg)
    assert tr.outer_step.fast is None and tr.outer_step.plan is None
    tr.train_step()
    assert tr.path == ("plain" if cfg.get("mode") == "plain" else "reference")


def test_one_sgd_step_is_the_same_on_both_paths():
    """The whole outer step: logs and the parameters after a plain SGD update."""
    fast, ref = _pair(inner_steps=2, sigma_weight=0.5, optimizer="sgd", outer_lr=0.3)
    batch = ref.sample()
    log_fast, log_ref = fast.train_step(batch), ref.train_step(batch)
    for key in ("loss", "ssl", "kl", "support_loss"):
        assert log_fast[key] == pytest.approx(log_ref[key], rel=1e-12)
    for (name, p), q in zip(
        fast.method.online_params().items(), ref.method.online_params().values()
    ):
        torch.testing.assert_close(p, q, rtol=1e-12, atol=1e-14, msg=name)


@pytest.mark.parametrize("order", ["first", "second"])
def test_fast_path_under_bf16_autocast(order):
    """``precision="bf16"``: the fast path stays on and its gradient points where the float32
    reference does, as closely as the bf16 reference path's (cosine 0.99 here)."""
    from gessl.devices import autocast

    def gradient(precision: str, fast: bool) -> torch.Tensor:
        torch.manual_seed(0)
        m = build_method(
            "simclr", MLP(5, width=8, activation="tanh"), proj_dims=(8, 4), head_activation="tanh"
        )
        cfg = GeSSLConfig(
            tasks_per_step=3, inner_steps=2, sigma_weight=0.5, order=order, precision=precision
        )
        tr = Trainer(m, GaussianLatentTasks(dim=5), cfg, n_samples=6, fast_path=fast)
        if fast:
            tr.outer_step.plan.worth = 0
        with autocast(tr.device, precision):
            g, _ = tr.task_gradients(tr.sample())
        assert tr.path == ("factored" if fast else "reference")
        return torch.cat([g[k].flatten() for k in sorted(g)])

    want = gradient("float32", fast=False)
    for fast in (False, True):
        got = gradient("bf16", fast)
        assert float(torch.nn.functional.cosine_similarity(got, want, dim=0)) > 0.98
