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
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import torch
from torch import Tensor

from gessl.devices import resolve_device
from gessl.eval.universality import adapt_per_task, model_log_probs
from gessl.methods import Method, build_method
from gessl.models import MLP, Flatten
from gessl.sigma import kl_rows
from gessl.tasks import Critic, TaskBatch
from gessl.trainer import GeSSLConfig, NonFiniteLossError, Trainer
from theory.floors import Floor, fit_floor
from theory.task_families import FamilySampler, TaskFamily, make_family

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


@dataclass(frozen=True)
class FairTest:
    """Everything a fair-test run depends on (all recorded). ``family_options`` overrides the
    family's defaults (:mod:`theory.task_families`); ``hidden`` adds a linear backbone
    ``dim → hidden`` before the projector (still a linear encoder; it gives ``adapt="projector"``
    something to leave out)."""

    family: str = "subspace"
    family_options: Mapping[str, Any] = field(default_factory=dict)
    critic: str = "two_headed"
    temperature: float = 1.0
    hidden: int | None = None
    n_samples: int = 16
    tasks_per_step: int = 16
    steps: int = 60
    outer_lr: float = 3e-2
    inner_steps: int = 1
    inner_lr: float = 0.1
    lookahead_steps: int = 1
    sigma_weight: float = 1.0
    order: str = "first"
    adapt: str = "all"
    kl_direction: str = "model_target"
    eval_tasks: int = 100

    def __post_init__(self) -> None:
        make_family(self.family, **dict(self.family_options))  # validates family and options
        Critic(self.critic, self.temperature)  # validates the critic
        self.config("gessl")  # validates the GeSSL options
        for key in ("steps", "eval_tasks"):
            if not isinstance(getattr(self, key), int) or getattr(self, key) < 1:
                raise ValueError(f"{key} must be an integer >= 1, got {getattr(self, key)!r}")
        if not isinstance(self.n_samples, int) or self.n_samples < 2:
            raise ValueError(f"n_samples must be an integer >= 2, got {self.n_samples!r}")
        if self.hidden is not None and (not isinstance(self.hidden, int) or self.hidden < 1):
            raise ValueError(f"hidden must be None or an integer >= 1, got {self.hidden!r}")

    @property
    def task_family(self) -> TaskFamily:
        return make_family(self.family, **dict(self.family_options))

    def config(self, mode: str, seed: int = 0) -> GeSSLConfig:
        """The trainer options of ``mode`` (one of :data:`MODES`)."""
        common = {"tasks_per_step": self.tasks_per_step, "outer_lr": self.outer_lr, "seed": seed}
        if mode == "plain":
            return GeSSLConfig(mode="plain", **common)
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        gessl = mode == "gessl"
        return GeSSLConfig(
            mode="gessl",
            inner_steps=self.inner_steps,
            inner_lr=self.inner_lr,
            lookahead_steps=self.lookahead_steps if gessl else 0,
            sigma_weight=self.sigma_weight if gessl else 0.0,
            sigma_critic="method",
            kl_direction=self.kl_direction,
            order=self.order,
            adapt=self.adapt,
            **common,
        )

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["family_options"] = dict(self.family_options)
        return d

    def with_options(self, **changes: Any) -> FairTest:
        return replace(self, **changes)


def build_model(test: FairTest, seed: int) -> Method:
    """The base model: InfoNCE with the test's critic on a linear encoder ``dim → 2·dim``
    (through ``hidden`` if set), initialised with ``torch.manual_seed(seed)``."""
    dim = test.task_family.dim
    torch.manual_seed(seed)
    backbone = (
        Flatten(dim)
        if test.hidden is None
        else MLP(dim, width=test.hidden, depth=1, activation="identity")
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
    """A trained model, its wall-clock seconds and why it stopped early (``None``: it did not)."""

    method: Method
    seconds: float
    diverged: str | None
    last_loss: float


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


def train(
    test: FairTest, mode: str, seed: int, sampler: Any = None, device: str | None = None
) -> Trained:
    """Train the base model in ``mode`` for ``test.steps`` outer steps on fresh tasks of the
    family (or on ``sampler``, e.g. a :class:`~theory.task_families.TaskPool`).

    Training runs on ``device`` (default: the one :func:`training_device` set, else auto); the
    trained model is returned on the CPU, where the float64 evaluations and floors run.

    A run is *diverged* when a loss became non-finite (training stops there) or when the mean
    outer loss of its last five steps exceeds ``BLOW_UP · log N`` — worse than a collapsed
    encoder. A diverged run is marked, counted and shown by its callers, never dropped silently.
    """
    method = build_model(test, seed)
    sampler = sampler if sampler is not None else FamilySampler(test.task_family)
    device = device if device is not None else _TRAINING_DEVICE.get()
    trainer = Trainer(
        method, sampler, test.config(mode, seed), n_samples=test.n_samples, device=device
    )
    start = time.perf_counter()
    diverged = None
    try:
        trainer.fit(test.steps, progress=False)
    except NonFiniteLossError as err:
        diverged = str(err)
    method.to("cpu")
    tail = [h["loss"] for h in trainer.history[-5:]]
    last = sum(tail) / len(tail) if tail else float("nan")
    limit = BLOW_UP * math.log(test.n_samples)
    if diverged is None and last > limit:
        diverged = f"blew up: final outer loss {last:.4g} > {BLOW_UP:g}·log N = {limit:.3g}"
    return Trained(method, time.perf_counter() - start, diverged, last)


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
    (defaults: the test's K and α; the head only when ``test.adapt == "projector"``) and
    ``lookahead_steps`` λ more for the σ-term's target."""
    k = test.inner_steps if test_steps is None else test_steps
    lr = test.inner_lr if test_lr is None else test_lr
    lam = test.lookahead_steps if lookahead_steps is None else lookahead_steps
    family = test.task_family
    n = batch.n_samples
    lp_bayes = family.bayes_log_probs(batch.query_a, batch.query_b, task_params)
    phi = {k_: v.detach().to(torch.float64) for k_, v in method.online_params().items()}
    names = method.head_names() if test.adapt == "projector" else None  # adapted as trained
    adapted, _ = adapt_per_task(method, batch, k, lr, start=phi, names=names)
    # θ̃: λ more steps from θ_K, i.e. K + λ deterministic full-batch steps from φ
    target, _ = adapt_per_task(method, batch, k + lam, lr, start=phi, names=names)
    critic, qa, qb = method.task_critic(), batch.query_a, batch.query_b
    lp_phi = model_log_probs(method, phi, qa, qb, critic, batched_params=False)
    lp_ad = model_log_probs(method, adapted, qa, qb, critic, batched_params=True)
    lp_tg = model_log_probs(method, target, qa, qb, critic, batched_params=True)
    labels = torch.arange(n)

    def per_query(x: Tensor) -> float:
        return float(x.sum(-1).mean()) / n

    term = kl_rows(lp_ad, lp_tg) if test.kl_direction == "model_target" else kl_rows(lp_tg, lp_ad)
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
