"""Population training equals S separate runs (float64), and fails well."""

from __future__ import annotations

import math

import pytest
import torch

from gessl.data import GaussianLatentTasks
from gessl.methods import build_method
from gessl.models import MLP, Flatten
from gessl.trainer import GeSSLConfig, PopulationTrainer, Trainer
from theory.task_families import FamilySampler, make_family

SEEDS = [0, 1, 2]
#: the three arms of the fair test, in both orders
ARMS = {
    "plain": {"mode": "plain"},
    "meta-first": {"inner_lr": 0.2, "lookahead_steps": 0, "sigma_weight": 0.0},
    "gessl-first": {"inner_lr": 0.2, "sigma_weight": 0.7},
    "meta-second": {"inner_lr": 0.2, "lookahead_steps": 0, "sigma_weight": 0.0, "order": "second"},
    "gessl-second": {"inner_lr": 0.2, "sigma_weight": 0.7, "order": "second", "inner_steps": 2},
}


def _model(seed: int, kind: str):
    torch.manual_seed(seed)
    if kind == "linear":  # the fair test's model: a linear encoder, the two-headed critic
        backbone = Flatten(4)
        return build_method(
            "infonce", backbone, proj_dims=(8,), critic="two_headed", temperature=1.0
        ).double()
    # a smooth two-layer backbone whose 8×8 layer the factored path keeps in low-rank form
    return build_method(
        "infonce", MLP(5, width=8, activation="tanh"), proj_dims=(6,), critic="cosine"
    ).double()


def _sampler(kind: str):
    return FamilySampler(make_family("subspace")) if kind == "linear" else GaussianLatentTasks(5)


def _separate(kind: str, cfg: GeSSLConfig, steps: int, fast_path: bool = True):
    out = []
    for s in SEEDS:
        tr = Trainer(
            _model(s, kind),
            _sampler(kind),
            GeSSLConfig(**{**cfg.to_dict(), "seed": s}),
            n_samples=6,
            fast_path=fast_path,
        )
        tr.fit(steps, progress=False)
        out.append(tr)
    return out


@pytest.mark.parametrize("kind", ["linear", "mlp"])
@pytest.mark.parametrize("arm", list(ARMS))
def test_population_equals_separate_runs_after_20_steps(kind, arm):
    cfg = GeSSLConfig(tasks_per_step=3, outer_lr=3e-2, **ARMS[arm])
    separate = _separate(kind, cfg, 20)
    pop = PopulationTrainer([_model(s, kind) for s in SEEDS], _sampler(kind), cfg, SEEDS, 6)
    if kind == "mlp" and cfg.mode == "gessl":
        pop.outer_step.plan.worth = 0  # factor the 8×8 layer (too small to be worth it)
        for tr in separate:
            assert tr.path == "factored"
    pop.fit(20, progress=False)
    assert pop.path == f"population/{separate[0].path}"
    moved = 0.0
    for i, tr in enumerate(separate):
        for name, want in tr.method.online_params().items():
            want, got = want.detach(), pop.params[name][i].detach()
            scale = float(want.abs().max())
            assert float((got - want).abs().max()) <= 1e-10 * scale, (name, i)
            start = _model(SEEDS[i], kind).online_params()[name].detach()
            moved = max(moved, float((want - start).abs().max()))
            # the members' methods hold their trained parameters after fit
            trained = pop.methods[i].online_params()[name].detach()
            torch.testing.assert_close(trained, want, rtol=0, atol=1e-10 * scale)
        assert [h["loss"] for h in pop.history[i]] == pytest.approx(
            [h["loss"] for h in tr.history], rel=1e-10
        )
    assert moved > 1e-2  # training did something


@pytest.mark.parametrize(
    "opt", [{"optimizer": "sgd", "weight_decay": 0.05}, {"optimizer": "adam", "weight_decay": 0.05}]
)
def test_population_optimisers_equal_torch_optim_with_weight_decay(opt):
    """The population's functional Adam/SGD steps are those of torch.optim.Adam/SGD."""
    cfg = GeSSLConfig(tasks_per_step=3, outer_lr=0.1, **ARMS["gessl-first"], **opt)
    separate = _separate("linear", cfg, 8)
    pop = PopulationTrainer([_model(s, "linear") for s in SEEDS], _sampler("linear"), cfg, SEEDS, 6)
    pop.fit(8, progress=False)
    for i, tr in enumerate(separate):
        for name, want in tr.method.online_params().items():
            got = pop.params[name][i].detach()
            torch.testing.assert_close(got, want.detach(), rtol=1e-12, atol=1e-14)


def test_each_member_draws_its_own_task_stream():
    cfg = GeSSLConfig(mode="plain", tasks_per_step=2)
    methods = [_model(s, "linear") for s in SEEDS]
    pop = PopulationTrainer(methods, _sampler("linear"), cfg, SEEDS, 6)
    batch = pop.sample()
    assert tuple(batch.query_a.shape) == (3, 2, 6, 4)
    for i, s in enumerate(SEEDS):
        gen = torch.Generator().manual_seed(s)
        want = _sampler("linear").sample(2, 6, gen)
        assert batch.query_a.dtype == torch.float64  # the models' dtype
        torch.testing.assert_close(batch.query_a[i], want.query_a, rtol=0, atol=0)


class _Exploding(torch.nn.Module):
    """A backbone whose output is scaled by a per-model factor: a large one blows up."""

    rowwise = True

    def __init__(self, scale: float) -> None:
        super().__init__()
        self.out_dim = 4
        self.register_buffer("scale", torch.tensor(scale, dtype=torch.float64))

    def forward(self, x):
        return x * self.scale


def test_a_diverged_member_stops_and_the_others_go_on():
    """Member 1 starts from a model whose loss is non-finite: it stops before its first
    update, with the separate run's message, and members 0 and 2 equal their separate runs."""
    cfg = GeSSLConfig(tasks_per_step=3, outer_lr=3e-2, **ARMS["gessl-first"])
    methods = [_model(s, "linear") for s in SEEDS]
    with torch.no_grad():
        methods[1].projector[0].weight.fill_(math.inf)
    start = {k: v.detach().clone() for k, v in methods[1].online_params().items()}
    pop = PopulationTrainer(methods, _sampler("linear"), cfg, SEEDS, 6)
    pop.fit(10, progress=False)
    assert pop.alive == [True, False, True]
    assert pop.diverged[1].startswith("non-finite ") and "at outer step 1" in pop.diverged[1]
    assert pop.history[1] == [] and pop.steps == [10, 0, 10]
    for k, v in start.items():  # stopped before the update
        assert torch.equal(pop.params[k][1].detach(), v)
    separate = _separate("linear", cfg, 10)
    for i in (0, 2):
        for name, want in separate[i].method.online_params().items():
            got = pop.params[name][i].detach()
            torch.testing.assert_close(got, want.detach(), rtol=1e-10, atol=1e-12)


def test_fit_stops_when_every_member_diverged():
    cfg = GeSSLConfig(mode="plain", tasks_per_step=2)
    methods = [_model(s, "linear") for s in SEEDS[:2]]
    for m in methods:
        with torch.no_grad():
            m.projector[0].bias.fill_(math.nan)
    pop = PopulationTrainer(methods, _sampler("linear"), cfg, SEEDS[:2], 6)
    pop.fit(50, progress=False)
    assert pop.step == 1 and pop.alive == [False, False]


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: ([], [0]), "a population needs at least one member (methods is empty)"),
        (lambda: ([_model(0, "linear")], [0, 1]), "seeds: one per method, got 2 seeds for 1"),
        (
            lambda: ([_model(0, "linear"), _model(1, "linear")], [3, 3]),
            "seeds must differ (each member draws its own task stream; members with their own "
            "samplers may share one): [3, 3]",
        ),
        (
            lambda: ([_model(0, "linear"), _model(0, "mlp")], [0, 1]),
            "methods[1] is not the same method and options as methods[0]",
        ),
        (
            lambda: ([build_method("byol", MLP(5, width=8)) for _ in range(2)], [0, 1]),
            "population training needs a method without momentum encoders, queues or centers; "
            "'byol' has state: train its seeds one by one with Trainer",
        ),
    ],
)
def test_bad_populations_are_refused_in_one_line(build, message):
    methods, seeds = build()
    with pytest.raises(ValueError) as err:
        PopulationTrainer(methods, _sampler("linear"), GeSSLConfig(), seeds)
    assert str(err.value) == message


def test_the_threshold_network_is_refused():
    methods = [_model(s, "linear") for s in SEEDS]
    cfg = GeSSLConfig(threshold="learned")
    with pytest.raises(ValueError, match=r"^population training supports threshold='none' only$"):
        PopulationTrainer(methods, _sampler("linear"), cfg, SEEDS)


def test_members_of_several_samplers_draw_their_own_streams_grouped():
    """Members with different samplers (e.g. two task families) draw, per sampler, what each
    member's own sampler gives its generator — shared samplers in one call, the rest one by
    one — in member order."""
    cfg = GeSSLConfig(mode="plain", tasks_per_step=2)
    fams = [FamilySampler(make_family(f)) for f in ("subspace", "homogeneous")]
    lone = GaussianLatentTasks(4)
    samplers = [fams[0], fams[1], fams[0], lone, fams[1]]
    seeds = [0, 0, 1, 2, 3]
    pop = PopulationTrainer([_model(i, "linear") for i in range(5)], samplers, cfg, seeds, 6)
    batch = pop.sample()
    assert tuple(batch.query_a.shape) == (5, 2, 6, 4)
    for i, (smp, s) in enumerate(zip(samplers, seeds)):
        want = smp.sample(2, 6, torch.Generator().manual_seed(s))
        for got_v, want_v in zip(batch.views(), want.views()):
            torch.testing.assert_close(got_v[i], want_v.double(), rtol=0, atol=0)
    # the families differ, so the grouping matters: members 0 and 1 share a seed, not tasks
    assert not torch.equal(batch.query_a[0], batch.query_a[1])
