"""A fair test of GeSSL: plain SSL, first-order meta-learning and GeSSL on one task family,
measured against the exact Bayes posterior of every unseen task.

The setup (``docs/reproduction.md``): the base method is InfoNCE on the N-way task
(:class:`gessl.methods.catalog.InfoNCE`) with a named critic, on a linear encoder (an identity
backbone and a one-layer projector to ``2·dim``), so that with the two-headed critic the family
contains every task's Bayes critic. Three training modes, each from the same initialisation on
the same task stream (same seed), trained by :class:`gessl.trainer.Trainer`:

* ``plain`` — the base loss on the support and the query views of every task (matched samples);
* ``meta`` — first-order meta-learning without the σ-term: K inner steps on the support views,
  the base loss on the query views (``lookahead_steps = 0``, ``sigma_weight = 0``);
* ``gessl`` — the same plus the σ-term ``γ·KL(π_θ ‖ π_θ̃)`` against the λ-step look-ahead θ̃.

Each trained model is measured on fresh tasks of the family (the same tasks for every mode of a
seed): σ = KL(π_model ‖ π*) — the paper's direction — and sigma_excess = KL(π* ‖ π_model) — the
excess InfoNCE — per query, of the shared parameters φ and of the task-specific model after K
test-time SGD steps (step size α) on each task's support views, both models adapted alike; the
σ-term GeSSL optimises, KL(π_θK ‖ π_θ̃) with θ̃ λ further steps, on the query views; and the task
accuracy of argmax π. The GeSSL algorithm is our reconstruction (``docs/reconstruction.md``).
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
from torch import Tensor

from gessl.adapt import adapt_tasks
from gessl.devices import resolve_device
from gessl.eval.universality import model_log_probs
from gessl.methods import Method, build_method
from gessl.models import MLP, Flatten
from gessl.sigma import kl_in_direction, kl_rows
from gessl.tasks import Critic, TaskBatch
from gessl.trainer import GeSSLConfig, PopulationTrainer
from theory.floors import Floor, fit_floor
from theory.task_families import FAMILIES, FamilySampler, TaskFamily, make_family

__all__ = [
    "BLOW_UP",
    "MEASURES",
    "MODES",
    "FairTest",
    "build_model",
    "concat_tasks",
    "eval_tasks",
    "evaluate",
    "fit_floors",
    "train",
    "train_many",
]

#: the three training modes, in the order they are compared
MODES = ("plain", "meta", "gessl")
#: what :func:`evaluate` measures (σ per query, nats; accuracies in [0, 1])
MEASURES = (
    "sigma_phi",
    "excess_phi",
    "sigma_adapted",
    "excess_adapted",
    "sigma_term",
    "accuracy_phi",
    "accuracy_adapted",
)


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
    seeds = list(seeds)
    sampler = samplers if samplers is not None else FamilySampler(test.task_family)
    device = device if device is not None else _TRAINING_DEVICE.get()
    pop = PopulationTrainer(
        [build_model(test, s) for s in seeds],
        sampler,
        test.config(mode),
        seeds,
        n_samples=test.n_samples,
        device=device,
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
        out.append(Trained(method, share, diverged, last, pop.path))
    return out


def train(
    test: FairTest, mode: str, seed: int, sampler: Any = None, device: str | None = None
) -> Trained:
    """:func:`train_many` for one seed."""
    return train_many(test, mode, [seed], sampler, device)[0]


def eval_tasks(test: FairTest, seed: int, tasks: int | None = None) -> tuple[TaskBatch, Tensor]:
    """The fresh evaluation tasks of a seed (float64): the same for every mode of that seed."""
    gen = torch.Generator().manual_seed(1_000_003 * (seed + 1) + 7)
    return test.task_family.sample_batch(gen, tasks or test.eval_tasks, test.n_samples)


def concat_tasks(parts: list[tuple[TaskBatch, Tensor]]) -> tuple[TaskBatch, Tensor]:
    """One batch (and parameters) of the tasks of several ``(batch, params)`` pairs."""
    names = ("support_a", "support_b", "query_a", "query_b")
    batch = TaskBatch(*(torch.cat([getattr(b, f) for b, _ in parts]) for f in names))
    return batch, torch.cat([p for _, p in parts])


def evaluate(
    test: FairTest,
    method: Method,
    batch: TaskBatch,
    task_params: Tensor,
    test_steps: int | None = None,
    test_lr: float | None = None,
    lookahead_steps: int | None = None,
) -> dict[str, float]:
    """Every measure of :data:`MEASURES` on the tasks of ``batch`` (σ per query, nats), with
    ``test_steps`` K SGD steps of size ``test_lr`` α on the support views for the adapted model
    (defaults: the test's K and α; the head only with ``adapt="projector"``) and
    ``lookahead_steps`` λ more for the σ-term's target."""
    g = test.gessl_config
    k = g.inner_steps if test_steps is None else test_steps
    lr = g.inner_lr if test_lr is None else test_lr
    lam = g.lookahead_steps if lookahead_steps is None else lookahead_steps
    family = test.task_family
    n = batch.n_samples
    lp_bayes = family.bayes_log_probs(batch.query_a, batch.query_b, task_params)
    phi = {k_: v.detach().to(torch.float64) for k_, v in method.online_params().items()}
    names = method.head_names() if g.adapt == "projector" else None  # adapted as trained
    adapted, _ = adapt_tasks(method, batch, k, lr, start=phi, names=names)
    # θ̃: λ more steps from θ_K, i.e. K + λ deterministic full-batch steps from φ
    target, _ = adapt_tasks(method, batch, k + lam, lr, start=phi, names=names)
    critic, qa, qb = method.task_critic(), batch.query_a, batch.query_b
    lp_phi = model_log_probs(method, phi, qa, qb, critic, batched_params=False)
    lp_ad = model_log_probs(method, adapted, qa, qb, critic, batched_params=True)
    lp_tg = model_log_probs(method, target, qa, qb, critic, batched_params=True)
    labels = torch.arange(n)

    def per_query(x: Tensor) -> float:
        return float(x.sum(-1).mean()) / n

    term = kl_in_direction(lp_ad, lp_tg, g.kl_direction)
    out = {
        "sigma_phi": per_query(kl_rows(lp_phi, lp_bayes)),
        "excess_phi": per_query(kl_rows(lp_bayes, lp_phi)),
        "sigma_adapted": per_query(kl_rows(lp_ad, lp_bayes)),
        "excess_adapted": per_query(kl_rows(lp_bayes, lp_ad)),
        "sigma_term": per_query(term),
        "accuracy_phi": float((lp_phi.argmax(-1) == labels).double().mean()),
        "accuracy_adapted": float((lp_ad.argmax(-1) == labels).double().mean()),
    }
    return {key: (v if math.isfinite(v) else float("nan")) for key, v in out.items()}


def bayes_accuracy(test: FairTest, batch: TaskBatch, task_params: Tensor) -> float:
    """Task accuracy of the Bayes classifier on the query views."""
    lp = test.task_family.bayes_log_probs(batch.query_a, batch.query_b, task_params)
    return float((lp.argmax(-1) == torch.arange(batch.n_samples)).double().mean())


def fit_floors(
    test: FairTest,
    method: Method,
    batch: TaskBatch,
    task_params: Tensor,
    per_task_tasks: int,
) -> dict[str, Floor]:
    """The family's floors on these tasks, both directions: ``shared_<dir>`` on every task
    (started from ``method``'s parameters), ``per_task_<dir>`` on the first ``per_task_tasks``
    tasks (started from the shared fit) (:func:`theory.floors.fit_floor`)."""
    lp = test.task_family.bayes_log_probs(batch.query_a, batch.query_b, task_params)
    views = (batch.query_a, batch.query_b)
    critic = method.task_critic()
    out = {}
    k = min(per_task_tasks, batch.n_tasks)
    sub = (views[0][:k], views[1][:k])
    for direction in ("sigma", "sigma_excess"):
        shared = fit_floor(method, critic, views, lp, direction, "shared")
        out[f"shared_{direction}"] = shared
        # per task, started from the shared fit (a good start for every task)
        out[f"per_task_{direction}"] = fit_floor(
            method, critic, sub, lp[:k], direction, "per_task", init=shared.params
        )
    return out
