"""A fair test of GeSSL: plain SSL, first-order meta-learning and GeSSL on one task family,
measured against the exact Bayes posterior of every unseen task.

The setup (``docs/reproduction.md``): the base method is InfoNCE on the N-way task
(:class:`gessl.methods.catalog.InfoNCE`) with a named critic, on a linear encoder (an identity
backbone and a one-layer projector to ``2·dim``), so that with the two-headed critic the family
contains every task's Bayes critic. Three training modes, each from the same initialisation on
the same task stream (same seed), every seed of an arm trained at once by
:class:`gessl.trainer.PopulationTrainer` (meta and GeSSL in one population):

* ``plain`` — the base loss on the support and the query views of every task (matched samples);
* ``meta`` — first-order meta-learning without the σ-term: K inner steps on the support views,
  the base loss on the query views (``lookahead_steps = 0``, ``sigma_weight = 0``);
* ``gessl`` — the same plus the σ-term ``γ·KL(π_θ ‖ π_θ̃)`` against the λ-step look-ahead θ̃.

Each trained model is then measured at its own evaluation protocol — its logit scale, its
test-time (K, α) — against the Bayes posterior of fresh tasks (:mod:`theory.fair_eval`). The
setting (family, dimension, signal and noise, encoder depth) is a stated argument of
:class:`FairTest`. The GeSSL algorithm is our reconstruction (``docs/reconstruction.md``).
"""

from __future__ import annotations

import contextlib
import contextvars
import math
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

import torch

from gessl.devices import resolve_device
from gessl.methods import Method, build_method
from gessl.models import MLP, Flatten
from gessl.tasks import Critic
from gessl.trainer import GeSSLConfig, PopulationTrainer
from theory.task_families import FAMILIES, FamilySampler, TaskFamily, make_family

__all__ = [
    "BLOW_UP",
    "MODES",
    "FairTest",
    "build_model",
    "train",
    "train_arms",
    "train_many",
    "train_settings",
]

#: the three training modes, in the order they are compared
MODES = ("plain", "meta", "gessl")


#: the fair test's GeSSL setting: overrides of :class:`gessl.trainer.GeSSLConfig`'s defaults
#: (K = 1, λ = 1, γ = 1, first order, every parameter adapted, the σ-term in the paper's
#: direction stay the library's defaults): α = 0.1, M = 16 tasks per step, Adam at 3e-2, and the
#: σ-term with the method's own critic (the two-headed one, which can reach every Bayes critic)
FAIR_SETTING: dict[str, Any] = {
    "inner_lr": 0.1,
    "tasks_per_step": 16,
    "outer_lr": 3e-2,
    "sigma_critic": "method",
}
#: the GeSSL options a fair test may set (the rest are the training modes' business)
_GESSL_KEYS = tuple(
    f.name for f in fields(GeSSLConfig) if f.name not in ("mode", "seed", "use_support_in_plain")
)
#: the family settings a fair test names, and the family option each one sets
_FAMILY_KEYS = {"dim": "dim", "k": "k", "signal": "latent_scale", "noise": "noise"}
#: encoder depths: 1 — one affine layer ``dim → 2·dim``; 2 — a linear backbone ``dim → 2·dim``
#: before it (still a linear encoder; it gives ``adapt="projector"`` something to leave out)
ENCODER_DEPTHS = (1, 2)


@dataclass(frozen=True)
class FairTest:
    """Everything a fair-test run depends on (all recorded).

    Args:
        family: the task family (:data:`theory.task_families.FAMILIES`).
        dim, k, signal, noise: the family's dimension d, subspace dimension k (subspace only),
            latent scale c and view noise s (homogeneous and subspace; the noise-level family
            draws its noise from ``family_options`` ``noise_low``/``noise_high``); ``None`` keeps
            the family's default (d = 4, k = 2, c = 1, s = 0.5 for the subspace family).
        family_options: any other option of the family.
        encoder_depth: 1 (one affine layer, 40 parameters at d = 4) or 2 (a linear backbone
            before it).
        critic, temperature: the critic of the base method's task classifier.
        n_samples: N, samples per task.
        steps: outer steps of every training run.
        gessl: GeSSL options (names of :class:`gessl.trainer.GeSSLConfig`) overriding
            :data:`FAIR_SETTING` (itself on top of the config's defaults).
        eval_tasks: test tasks per seed; ``val_tasks``: validation tasks per seed (disjoint).
    """

    family: str = "subspace"
    dim: int | None = None
    k: int | None = None
    signal: float | None = None
    noise: float | None = None
    family_options: Mapping[str, Any] = field(default_factory=dict)
    encoder_depth: int = 1
    critic: str = "two_headed"
    temperature: float = 1.0
    n_samples: int = 16
    steps: int = 60
    gessl: Mapping[str, Any] = field(default_factory=dict)
    eval_tasks: int = 100
    val_tasks: int = 50

    def __post_init__(self) -> None:
        for key, opt in _FAMILY_KEYS.items():
            value = getattr(self, key)
            if value is not None and opt in self.family_options:
                raise ValueError(f"{key}: set it once, not also as family_options[{opt!r}]")
        self.task_family  # noqa: B018  # validates the family and its options, one line
        Critic(self.critic, self.temperature)  # validates the critic
        if self.encoder_depth not in ENCODER_DEPTHS:
            raise ValueError(
                f"encoder_depth must be one of {ENCODER_DEPTHS}, got {self.encoder_depth!r}"
            )
        unknown = sorted(set(self.gessl) - set(_GESSL_KEYS))
        if unknown:
            raise ValueError(
                f"gessl: unknown option {unknown[0]!r}; valid options: {', '.join(_GESSL_KEYS)}"
            )
        self.config("gessl")  # validates the GeSSL options
        for key in ("steps", "eval_tasks", "val_tasks"):
            if not isinstance(getattr(self, key), int) or getattr(self, key) < 1:
                raise ValueError(f"{key} must be an integer >= 1, got {getattr(self, key)!r}")
        if not isinstance(self.n_samples, int) or self.n_samples < 2:
            raise ValueError(f"n_samples must be an integer >= 2, got {self.n_samples!r}")

    @property
    def task_family(self) -> TaskFamily:
        options = dict(self.family_options)
        for key, opt in _FAMILY_KEYS.items():
            if getattr(self, key) is not None:
                options[opt] = getattr(self, key)
        cls = FAMILIES.get(self.family)
        accepted = {f.name for f in fields(cls)} if cls is not None else set()
        for key, opt in _FAMILY_KEYS.items():
            if getattr(self, key) is not None and cls is not None and opt not in accepted:
                raise ValueError(f"{key}: the {self.family} family has no option {opt!r}")
        return make_family(self.family, **options)

    @property
    def gessl_config(self) -> GeSSLConfig:
        """The GeSSL options of the test (the ``gessl`` arm's, without a seed)."""
        return GeSSLConfig(**{**FAIR_SETTING, **dict(self.gessl)})

    def config(self, mode: str, seed: int = 0) -> GeSSLConfig:
        """The trainer options of ``mode`` (one of :data:`MODES`): ``plain`` shares M and the
        outer optimiser; ``meta`` is ``gessl`` with λ = γ = 0 (no σ-term)."""
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        g = replace(self.gessl_config, seed=seed)
        if mode == "plain":
            return GeSSLConfig(
                mode="plain",
                seed=seed,
                tasks_per_step=g.tasks_per_step,
                outer_lr=g.outer_lr,
                optimizer=g.optimizer,
                weight_decay=g.weight_decay,
                batching=g.batching,
                precision=g.precision,
            )
        if mode == "meta":
            return replace(g, lookahead_steps=0, sigma_weight=0.0)
        return g

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["family_options"] = dict(self.family_options)
        d["gessl"] = self.gessl_config.to_dict()  # the resolved options, not the overrides
        d["family_setting"] = self.task_family.describe()
        return d

    def with_options(self, **changes: Any) -> FairTest:
        """A copy with fields changed; GeSSL option names (``inner_lr=…``) change ``gessl``."""
        gessl = {k: changes.pop(k) for k in list(changes) if k in _GESSL_KEYS}
        if gessl:
            changes["gessl"] = {**dict(self.gessl), **gessl}
        return replace(self, **changes)


def build_model(test: FairTest, seed: int) -> Method:
    """The base model: InfoNCE with the test's critic on a linear encoder ``dim → 2·dim``
    (through a linear backbone ``dim → 2·dim`` with ``encoder_depth = 2``), initialised with
    ``torch.manual_seed(seed)``."""
    dim = test.task_family.dim
    torch.manual_seed(seed)
    backbone = (
        Flatten(dim)
        if test.encoder_depth == 1
        else MLP(dim, width=2 * dim, depth=1, activation="identity")
    )
    return build_method(
        "infonce",
        backbone,
        proj_dims=(2 * dim,),
        critic=test.critic,
        temperature=test.temperature,
        symmetric=True,
    )


@dataclass
class Trained:
    """A trained model, its wall-clock seconds, why it stopped early (``None``: it did not) and
    the gradient path its training took (:mod:`gessl.trainer.step`)."""

    method: Method
    seconds: float
    diverged: str | None
    last_loss: float
    path: str = ""


#: a run whose final outer loss exceeds this many times log N (the loss of a collapsed
#: encoder, which any training should beat) has blown up: it is marked diverged
BLOW_UP = 2.0


#: the device the training claims train on (set by :func:`training_device`; None = auto)
_TRAINING_DEVICE: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "training_device", default=None
)


@contextlib.contextmanager
def training_device(device: str | torch.device | None) -> Iterator[None]:
    """Within the block, :func:`train` trains on ``device`` (``None``/``"auto"``: CUDA when
    available, else the CPU); :meth:`theory.claims.base.Claim.check` sets it for its claim."""
    resolve_device(device)  # a bad value fails here, with one line
    token = _TRAINING_DEVICE.set(None if device is None else str(device))
    try:
        yield
    finally:
        _TRAINING_DEVICE.reset(token)


def train_many(
    test: FairTest,
    mode: str,
    seeds: Sequence[int],
    samplers: Any = None,
    device: str | None = None,
) -> list[Trained]:
    """Train the base model in ``mode`` for ``test.steps`` outer steps, once per seed, on fresh
    tasks of the family (or on ``samplers``: one sampler, or one per seed, e.g. each seed's
    :class:`~theory.task_families.TaskPool`): all seeds at once as one population
    (:class:`gessl.trainer.PopulationTrainer`), each seed exactly as its own run would be.

    Training runs on ``device`` (default: the one :func:`training_device` set, else auto); the
    trained models are returned on the CPU, where the float64 evaluations and floors run.
    ``seconds`` is each seed's share of the population's wall time.

    A run is *diverged* when a loss became non-finite (training stops there) or when the mean
    outer loss of its last five steps exceeds ``BLOW_UP · log N`` — worse than a collapsed
    encoder. A diverged run is marked, counted and shown by its callers, never dropped silently.
    """
    return train_arms(test, (mode,), seeds, samplers, device)[mode]


def train_arms(
    test: FairTest,
    modes: Sequence[str],
    seeds: Sequence[int],
    samplers: Any = None,
    device: str | None = None,
) -> dict[str, list[Trained]]:
    """:func:`train_many` for several arms; ``meta`` and ``gessl`` train in *one* population
    when both are asked for (meta-learning without σ-term is GeSSL with γ = 0: the same graph,
    exactly; :class:`gessl.trainer.PopulationTrainer` ``sigma_weights``)."""
    seeds = list(seeds)
    device = device if device is not None else _TRAINING_DEVICE.get()
    groups: list[tuple[str, ...]] = []
    if "meta" in modes and "gessl" in modes and test.gessl_config.sigma_weight > 0:
        groups.append(("meta", "gessl"))
    groups += [(m,) for m in modes if not any(m in g for g in groups)]
    out: dict[str, list[Trained]] = {}
    for group in groups:
        members = [(mode, s, i) for mode in group for i, s in enumerate(seeds)]
        if samplers is None:
            sampler: Any = FamilySampler(test.task_family)
            if len(group) > 1:
                sampler = [sampler] * len(members)  # one sampler object: drawn at once
        elif isinstance(samplers, (list, tuple)):
            sampler = [samplers[i] for _, _, i in members]
        else:
            sampler = [samplers] * len(members) if len(group) > 1 else samplers
        weights = None
        if len(group) > 1:
            gamma = test.gessl_config.sigma_weight
            weights = [0.0 if mode == "meta" else gamma for mode, _, _ in members]
        suffix = " (with the meta arm, γ = 0)" if len(group) > 1 else ""
        trained = _fit_population(
            [test] * len(members),
            test.config(group[-1]),
            [s for _, s, _ in members],
            sampler,
            device,
            weights,
            suffix,
        )
        for (mode, _, _), run in zip(members, trained):
            out.setdefault(mode, []).append(run)
    return out


def train_settings(
    tests: Sequence[FairTest],
    mode: str,
    seeds: Sequence[int],
    device: str | None = None,
) -> list[list[Trained]]:
    """:func:`train_many` for several fair tests at once: every seed of every test in *one*
    population, each member exactly as its own run would be (its test's family and sampler,
    its seed's initialisation and task stream). The tests must train the same model with the
    same options — they may differ only in the task family's setting (family, dimension-free
    options such as the signal) — so that their members share one graph; a ``ValueError``
    says which differs otherwise. Returns one list of runs per test, in ``seeds`` order."""
    tests, seeds = list(tests), list(seeds)
    if not tests:
        raise ValueError("tests: at least one fair test")
    cfg = tests[0].config(mode)
    ref = build_model(tests[0], seeds[0])
    run = (tests[0].steps, tests[0].n_samples)
    for i, t in enumerate(tests[1:], 1):
        if t.config(mode) != cfg or (t.steps, t.n_samples) != run:
            raise ValueError(f"tests[{i}] trains with other {mode} options than tests[0]")
        other = build_model(t, seeds[0])
        if other.options != ref.options or {
            k: v.shape for k, v in other.online_params().items()
        } != {k: v.shape for k, v in ref.online_params().items()}:
            raise ValueError(f"tests[{i}] trains another model than tests[0]")
    device = device if device is not None else _TRAINING_DEVICE.get()
    samplers = [FamilySampler(t.task_family) for t in tests]
    suffix = f" ({len(tests)} settings in one population)" if len(tests) > 1 else ""
    trained = _fit_population(
        [t for t in tests for _ in seeds],
        cfg,
        [s for _ in tests for s in seeds],
        [smp for smp in samplers for _ in seeds] if len(tests) > 1 else samplers[0],
        device,
        None,
        suffix,
    )
    return [trained[i * len(seeds) : (i + 1) * len(seeds)] for i in range(len(tests))]


def _fit_population(
    tests: Sequence[FairTest],
    cfg: GeSSLConfig,
    seeds: Sequence[int],
    sampler: Any,
    device: str | None,
    weights: Sequence[float] | None,
    suffix: str,
) -> list[Trained]:
    """Train one population — member i the model of ``tests[i]`` initialised with ``seeds[i]``
    — for ``tests[0].steps`` outer steps, and mark the runs that diverged or blew up."""
    test = tests[0]
    pop = PopulationTrainer(
        [build_model(t, s) for t, s in zip(tests, seeds)],
        sampler,
        cfg,
        list(seeds),
        n_samples=test.n_samples,
        device=device,
        sigma_weights=weights,
    )
    start = time.perf_counter()
    pop.fit(test.steps, progress=False)
    share = (time.perf_counter() - start) / len(seeds)
    limit = BLOW_UP * math.log(test.n_samples)
    out = []
    for method, history, diverged in zip(pop.methods, pop.history, pop.diverged):
        method.to("cpu")
        tail = [h["loss"] for h in history[-5:]]
        last = sum(tail) / len(tail) if tail else float("nan")
        if diverged is None and last > limit:
            diverged = f"blew up: final outer loss {last:.4g} > {BLOW_UP:g}·log N = {limit:.3g}"
        out.append(Trained(method, share, diverged, last, pop.path + suffix))
    return out


def train(
    test: FairTest, mode: str, seed: int, sampler: Any = None, device: str | None = None
) -> Trained:
    """:func:`train_many` for one seed."""
    return train_many(test, mode, [seed], sampler, device)[0]
