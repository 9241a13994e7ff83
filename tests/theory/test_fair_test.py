"""The fair-test engine: modes, training, evaluation against Bayes, divergence, bad input."""

from __future__ import annotations

import math

import pytest
import torch

from gessl.data import TaskBatch
from gessl.sigma import sigma
from theory.fair_test import (
    FairTest,
    bayes_accuracy,
    build_model,
    eval_tasks,
    evaluate,
    fit_floors,
    train,
)


def _bayes_model(test: FairTest):
    """The linear two-headed model whose critic is the homogeneous family's Bayes critic:
    −‖u/(√2σ_c) − ρv/(√2σ_c)‖² = −‖u − ρv‖²/(2σ_c²)."""
    fam = test.task_family
    c2, s2 = fam.latent_scale**2, fam.noise**2
    rho, var = c2 / (c2 + s2), s2 * (2 * c2 + s2) / (c2 + s2)
    m = build_model(test, 0)
    eye = torch.eye(fam.dim)
    with torch.no_grad():
        m.projector[0].weight.copy_(torch.cat([eye, rho * eye]) / math.sqrt(2 * var))
        m.projector[0].bias.zero_()
    return m


def test_modes_differ_only_where_they_should():
    t = FairTest(
        gessl={"inner_steps": 2, "inner_lr": 0.05, "lookahead_steps": 3, "sigma_weight": 0.5}
    )
    plain, meta, gessl = (t.config(m, seed=4) for m in ("plain", "meta", "gessl"))
    assert plain.mode == "plain" and plain.seed == 4
    assert (meta.inner_steps, meta.inner_lr, meta.lookahead_steps, meta.sigma_weight) == (
        2,
        0.05,
        0,
        0.0,
    )
    assert (gessl.lookahead_steps, gessl.sigma_weight, gessl.sigma_critic) == (3, 0.5, "method")
    assert meta.tasks_per_step == gessl.tasks_per_step == plain.tasks_per_step == 16


def test_the_bayes_critic_measures_zero_and_its_accuracy_is_bayes():
    t = FairTest(family="homogeneous", gessl={"inner_steps": 1})
    batch, params = eval_tasks(t, 0, 30)
    got = evaluate(t, _bayes_model(t), batch, params, test_steps=0, lookahead_steps=0)
    assert got["sigma_phi"] < 1e-10 and got["excess_phi"] < 1e-10
    assert got["sigma_adapted"] == got["sigma_phi"] and got["sigma_term"] == 0.0
    assert got["accuracy_phi"] == bayes_accuracy(t, batch, params)
    floors = fit_floors(t, _bayes_model(t), batch, params, 3)
    assert all(f.value < 1e-8 and f.converged for f in floors.values())


def test_adapted_sigma_is_one_hand_written_sgd_step_per_task():
    t = FairTest(family="subspace", gessl={"inner_lr": 0.2})
    batch, params = eval_tasks(t, 1, 3)
    m = build_model(t, 1)
    got = evaluate(t, m, batch, params, test_steps=1, lookahead_steps=0)
    rows = []
    for i in range(3):
        p = {k: v.detach().double().requires_grad_() for k, v in m.online_params().items()}
        loss = m.loss(p, batch.support_a[i], batch.support_b[i]).loss
        grads = torch.autograd.grad(loss, list(p.values()))
        theta = {k: v - 0.2 * g for (k, v), g in zip(p.items(), grads)}
        with torch.no_grad():
            za, zb = m.embed(theta, batch.query_a[i]), m.embed(theta, batch.query_b[i])
            rows.append(m.task_critic().log_probs(za, zb))
    lb = t.task_family.bayes_log_probs(batch.query_a, batch.query_b, params)
    assert got["sigma_adapted"] == pytest.approx(float(sigma(torch.stack(rows), lb)) / 16, 1e-10)
    assert got["sigma_term"] == 0.0  # λ = 0: the target is the adapted model itself


def test_training_is_seeded_and_diverged_runs_are_marked():
    t = FairTest(family="noise_level", steps=3, gessl={"tasks_per_step": 2})
    a, b = train(t, "gessl", 5), train(t, "gessl", 5)
    assert all(
        torch.equal(x, y)
        for x, y in zip(a.method.state_dict().values(), b.method.state_dict().values())
    )
    assert a.diverged is None and math.isfinite(a.last_loss) and a.seconds > 0

    class Broken:
        def sample(self, n_tasks, n_samples, gen):
            x = torch.full((n_tasks, n_samples, 4), float("nan"))
            return TaskBatch(x, x, x, x)

    bad = train(t, "plain", 0, sampler=Broken())
    assert bad.diverged and "non-finite" in bad.diverged


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"family": "spheres"}, "family must be one of"),
        ({"critic": "euclid"}, "critic must be one of"),
        ({"family_options": {"k": 9}}, "k must satisfy"),
        ({"gessl": {"inner_lr": -1.0}}, "inner_lr must be >= 0"),
        ({"gessl": {"inner_rate": 0.1}}, "gessl: unknown option 'inner_rate'; valid options:"),
        ({"steps": 0}, "steps must be an integer >= 1"),
        ({"val_tasks": 0}, "val_tasks must be an integer >= 1"),
        ({"n_samples": 1}, "n_samples must be an integer >= 2"),
        ({"gessl": {"order": "third"}}, "order must be one of"),
        ({"gessl": {"kl_direction": "model_target"}}, "kl_direction='model_target' was renamed"),
        ({"encoder_depth": 3}, r"encoder_depth must be one of \(1, 2\), got 3"),
        ({"dim": 1}, "dim must be an integer >= 2"),
        ({"dim": 4, "k": 4}, "k must satisfy 1 <= k < dim = 4"),
        ({"signal": -1.0}, "latent_scale must be a number > 0"),
        ({"family": "noise_level", "noise": 0.5}, "noise: the noise_level family has no option"),
        ({"k": 2, "family_options": {"k": 2}}, r"k: set it once, not also as family_options"),
    ],
)
def test_bad_setups_raise_naming_the_argument(options, message):
    with pytest.raises(ValueError, match=message):
        FairTest(**options)


def test_a_blown_up_run_is_marked_diverged():
    """First-order meta-learning with α = 0.3 blows up on this model: its final outer loss is
    far above log N, the loss of a collapsed encoder, although it stays finite."""
    t = FairTest(family="homogeneous", gessl={"inner_lr": 0.3})
    meta = train(t, "meta", 0)
    assert meta.diverged and meta.diverged.startswith("blew up")
    assert math.isfinite(meta.last_loss) and meta.last_loss > 2 * math.log(16)
    assert train(t, "plain", 0).diverged is None


def test_family_settings_and_encoder_depth_reach_the_family_and_the_model():
    t = FairTest(dim=8, k=3, signal=1.5, noise=0.7, encoder_depth=2)
    fam = t.task_family
    assert (fam.dim, fam.k, fam.latent_scale, fam.noise) == (8, 3, 1.5, 0.7)
    m = build_model(t, 0)
    shapes = {k: tuple(v.shape) for k, v in m.online_params().items()}
    assert shapes == {
        "backbone.net.0.weight": (16, 8),
        "backbone.net.0.bias": (16,),
        "projector.0.weight": (16, 16),
        "projector.0.bias": (16,),
    }
    assert t.to_dict()["family_setting"] == {
        "family": "subspace",
        "dim": 8,
        "k": 3,
        "latent_scale": 1.5,
        "noise": 0.7,
    }
    one = build_model(FairTest(), 0)
    assert sum(v.numel() for v in one.online_params().values()) == 40  # d = 4: 8×4 + 8


def test_gessl_options_come_from_the_library_defaults_and_the_fair_setting():
    from gessl.trainer import GeSSLConfig
    from theory.fair_test import FAIR_SETTING

    g, lib = FairTest().gessl_config, GeSSLConfig()
    for key, value in g.to_dict().items():
        assert value == FAIR_SETTING.get(key, getattr(lib, key)), key
    assert FairTest().with_options(inner_lr=0.3, steps=5).gessl_config.inner_lr == 0.3
