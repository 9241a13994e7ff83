"""The fair-test engine: modes, training, evaluation against Bayes, divergence, bad input."""

from __future__ import annotations

import math

import pytest
import torch

from gessl.data import TaskBatch
from theory.fair_test import FairTest, build_model, train, train_arms, train_many, train_settings


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


def test_meta_and_gessl_train_as_one_population_equal_to_their_own():
    """train_arms puts meta (γ = 0) and GeSSL in one population: the same models as training
    each arm on its own."""
    t = FairTest(family="subspace", steps=6, gessl={"tasks_per_step": 3})
    together = train_arms(t, ("plain", "meta", "gessl"), [0, 1])
    for mode in ("plain", "meta", "gessl"):
        alone = train_many(t, mode, [0, 1])
        for a, b in zip(together[mode], alone):
            for (name, x), y in zip(
                a.method.online_params().items(), b.method.online_params().values()
            ):
                torch.testing.assert_close(x, y, rtol=1e-6, atol=1e-7, msg=f"{mode} {name}")
    assert "with the meta arm" in together["gessl"][0].path


@pytest.mark.parametrize("mode", ["plain", "gessl"])
def test_settings_trained_in_one_population_equal_their_own_runs(mode):
    """train_settings trains every seed of several family settings at once: each run is the
    one train_many gives for its own setting, bit for bit."""
    tests = [
        FairTest(family="homogeneous", steps=6),
        FairTest(family="subspace", steps=6, signal=1.5),
    ]
    together = train_settings(tests, mode, [0, 1])
    assert [len(runs) for runs in together] == [2, 2]
    for test, runs in zip(tests, together):
        alone = train_many(test, mode, [0, 1])
        for a, b in zip(runs, alone):
            assert "2 settings in one population" in a.path
            for (name, v), w in zip(
                a.method.online_params().items(), b.method.online_params().values()
            ):
                assert torch.equal(v, w), name
    h, s = (runs[0].method.online_params() for runs in together)
    assert not all(torch.equal(h[k], s[k]) for k in h)  # the settings trained differently


@pytest.mark.parametrize(
    "other, message",
    [
        ({"critic": "cosine", "temperature": 0.5}, "trains another model than tests\\[0\\]"),
        ({"dim": 8}, "trains another model than tests\\[0\\]"),
        ({"gessl": {"inner_lr": 0.3}}, "trains with other gessl options than tests\\[0\\]"),
        ({"steps": 7}, "trains with other gessl options than tests\\[0\\]"),
    ],
)
def test_settings_that_do_not_share_a_graph_are_refused(other, message):
    base = FairTest(family="homogeneous", steps=6)
    with pytest.raises(ValueError, match=message):
        train_settings([base, FairTest(family="subspace", **{"steps": 6, **other})], "gessl", [0])
    with pytest.raises(ValueError, match="at least one fair test"):
        train_settings([], "gessl", [0])
