"""Population training: S seeds of one configuration trained as one batched computation.

A small model's outer step costs per-operation overhead, not arithmetic, so training S seeds one
after the other pays that overhead S times. Here every parameter is stacked along a leading seed
axis and one outer step of all seeds is one computation
(:meth:`gessl.trainer.step.OuterStep.gradients` with ``seeds=S``: the S·M (seed, task) pairs
under one ``vmap``, :mod:`gessl.adapt.batching`): the same per-task objective, on the same path
(reference or factored), as a single :class:`~gessl.trainer.Trainer`. Adam and SGD are
elementwise, so one optimiser over the stacked parameters is exactly S independent optimisers,
and the gradient of a sum of independent per-seed losses is each seed's gradient.

**Equal to S separate runs.** Member ``s`` starts from ``methods[s]``'s parameters (build it
exactly as its separate run would, e.g. after ``torch.manual_seed(seed)``), draws its tasks from
its own generator seeded with ``seeds[s]`` on the trainer's device (the stream a separate
:class:`Trainer` with ``cfg.seed = seeds[s]`` draws), and takes the same steps; float64 results
agree with separate runs to rounding (``tests/gessl/trainer/test_population.py``).

**Divergence per seed.** A member whose loss terms turn non-finite stops there — its parameters
stay those before the failing update, as a separate run's would when it raises
:class:`~gessl.trainer.NonFiniteLossError` — and the others go on; :attr:`diverged` holds each
member's message (``None`` while it trains).

Applies to methods without momentum encoders, queues or centers (their state would need a seed
axis too) and without the threshold network; a one-line ``ValueError`` says so otherwise.
Checkpoints are not written: a population is meant for many small, short runs.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor
from torch.optim.adam import adam
from torch.optim.sgd import sgd
from torch.utils._pytree import tree_map

from gessl.devices import autocast, enable_tf32, resolve_device
from gessl.losses import no_value_checks
from gessl.methods.base import Method
from gessl.tasks import TaskBatch, TaskSampler
from gessl.trainer.config import GeSSLConfig
from gessl.trainer.step import OuterStep

__all__ = ["PopulationTrainer"]

StepLog = dict[str, float]


def _check_members(
    methods: Sequence[Method], seeds: Sequence[int], cfg: GeSSLConfig, sampler: Any
) -> None:
    if not methods:
        raise ValueError("a population needs at least one member (methods is empty)")
    if len(seeds) != len(methods):
        raise ValueError(f"seeds: one per method, got {len(seeds)} seeds for {len(methods)}")
    if len(set(seeds)) != len(seeds) and not isinstance(sampler, (list, tuple)):
        raise ValueError(
            f"seeds must differ (each member draws its own task stream; members with their own "
            f"samplers may share one): {seeds}"
        )
    first = methods[0]
    shapes = {k: (v.shape, v.dtype) for k, v in first.online_params().items()}
    for i, m in enumerate(methods):
        if type(m) is not type(first) or m.options != first.options:
            raise ValueError(f"methods[{i}] is not the same method and options as methods[0]")
        if {k: (v.shape, v.dtype) for k, v in m.online_params().items()} != shapes:
            raise ValueError(f"methods[{i}] has other parameters than methods[0]")
    own = type(first)
    if own.targets is not Method.targets or own.update_state is not Method.update_state:
        raise ValueError(
            f"population training needs a method without momentum encoders, queues or centers; "
            f"{first.name!r} has state: train its seeds one by one with Trainer"
        )
    if cfg.threshold != "none":
        raise ValueError("population training supports threshold='none' only")
    if cfg.batching != "vmap":
        raise ValueError("population training batches its tasks with vmap (batching='vmap')")
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        raise ValueError("population training runs in one process (no torchrun)")


class PopulationTrainer:
    """Train S seeds of one configuration at once (see the module docstring).

    Args:
        methods: one method per member, of the same class, options and parameter shapes; their
            parameters are the members' initialisations (moved to ``device``).
        sampler: the task sampler, or one per member (e.g. each member's own task pool).
        cfg: the options shared by every member (its ``seed`` is replaced by ``seeds[s]``).
        seeds: one per member: seeds the member's task stream (as ``cfg.seed`` does for a
            :class:`~gessl.trainer.Trainer`).
        n_samples: N, samples per task.
        device: as for :class:`~gessl.trainer.Trainer`.
        fast_path: as for :class:`~gessl.trainer.Trainer`.
        sigma_weights: each member's own σ-term weight γ (default: ``cfg.sigma_weight`` for
            all): members that differ only in γ share one graph — first-order meta-learning
            without σ-term is exactly γ = 0 (its look-ahead is computed and weighted by 0).
            Needs GeSSL with ``cfg.sigma_weight > 0``.
    """

    def __init__(
        self,
        methods: Sequence[Method],
        sampler: TaskSampler | Sequence[TaskSampler],
        cfg: GeSSLConfig,
        seeds: Sequence[int],
        n_samples: int = 16,
        device: str | torch.device | None = None,
        fast_path: bool = True,
        sigma_weights: Sequence[float] | None = None,
    ) -> None:
        _check_members(methods, seeds, cfg, sampler)
        if sigma_weights is not None:
            if cfg.mode != "gessl" or not cfg.sigma_weight > 0:
                raise ValueError("sigma_weights: needs mode='gessl' with sigma_weight > 0")
            if len(sigma_weights) != len(seeds) or any(not w >= 0 for w in sigma_weights):
                raise ValueError(
                    f"sigma_weights: one weight >= 0 per member ({len(seeds)}), got "
                    f"{list(sigma_weights)}"
                )
        self.device = resolve_device(device)
        enable_tf32(self.device)
        self.methods = list(methods)
        for m in self.methods:
            m.to(self.device)
        self.seeds, self.cfg, self.n_samples = list(seeds), cfg, n_samples
        samplers = list(sampler) if isinstance(sampler, (list, tuple)) else [sampler] * len(seeds)
        if len(samplers) != len(seeds):
            raise ValueError(f"sampler: one, or one per member ({len(seeds)}), got {len(samplers)}")
        self.samplers = samplers
        self.configs = [replace(cfg, seed=s) for s in self.seeds]
        self.generators = [torch.Generator(device=self.device).manual_seed(s) for s in self.seeds]
        template = self.methods[0]
        self.dtype = next(template.parameters()).dtype
        self.params = {
            k: torch.stack([m.online_params()[k].detach() for m in self.methods]).requires_grad_()
            for k in template.online_params()
        }
        # torch's functional Adam and SGD (the computation torch.optim.Adam/SGD run, elementwise:
        # one over the stack is S independent ones); the optimizer classes are not constructed,
        # which would import torch._dynamo (about a second) in every worker process
        self._moments = {
            k: (torch.zeros_like(v), torch.zeros_like(v)) for k, v in self.params.items()
        }
        self._adam_steps = {k: torch.zeros((), dtype=v.dtype) for k, v in self.params.items()}
        self.outer_step = OuterStep(template, cfg, None, fast_path)
        self.sigma_weights = (
            None
            if sigma_weights is None
            else torch.tensor(list(sigma_weights), dtype=self.dtype, device=self.device)
        )
        self.step = 0
        self.steps = [0] * len(self.seeds)
        self.diverged: list[str | None] = [None] * len(self.seeds)
        self.history: list[list[StepLog]] = [[] for _ in self.seeds]

    @property
    def size(self) -> int:
        """S, the number of members."""
        return len(self.seeds)

    @property
    def path(self) -> str:
        """``"population/<path>"``: the members' gradient path (:mod:`gessl.trainer.step`)."""
        return f"population/{self.outer_step.path}"

    @property
    def alive(self) -> list[bool]:
        return [d is None for d in self.diverged]

    def sample(self) -> TaskBatch:
        """The next M tasks of every member, stacked: views ``[S, M, N, ...]``. The members
        that share a sampler object with ``sample_each(n_tasks, n_samples, gens)`` have their
        tasks drawn in one call (the same numbers as one ``sample`` per member, e.g.
        :meth:`theory.task_families.FamilySampler.sample_each`): one call for a population
        with one sampler, one per sampler for members of several settings (e.g. task
        families); the others draw with ``sample``."""
        m, n = self.cfg.tasks_per_step, self.n_samples
        first = self.samplers[0]
        if hasattr(first, "sample_each") and all(s is first for s in self.samplers):
            return first.sample_each(m, n, self.generators).to(self.device, self.dtype)
        shared: dict[int, list[int]] = {}
        for i, s in enumerate(self.samplers):
            shared.setdefault(id(s), []).append(i)
        drawn: list[TaskBatch | None] = [None] * self.size
        for members in shared.values():
            s = self.samplers[members[0]]
            if hasattr(s, "sample_each") and len(members) > 1:
                views = s.sample_each(m, n, [self.generators[i] for i in members]).views()
                for j, i in enumerate(members):
                    drawn[i] = TaskBatch.of_views([v[j] for v in views])
            else:
                for i in members:
                    drawn[i] = s.sample(m, n, self.generators[i])
        batches = [b.to(self.device, self.dtype) for b in drawn if b is not None]
        return tree_map(lambda *views: torch.stack(views), *batches)

    def train_step(self, batch: TaskBatch | None = None) -> list[StepLog | None]:
        """One outer step of every member still training; returns each member's log (``None``
        for a member that had diverged before, or diverges at this step)."""
        start = time.perf_counter()
        batch = self.sample() if batch is None else batch
        phi = {k: v.detach() for k, v in self.params.items()}
        with autocast(self.device, self.cfg.precision), no_value_checks():
            sums, aux = self.outer_step.gradients(
                phi, {}, batch, {}, seeds=self.size, weights=self.sigma_weights
            )
        m = self.cfg.tasks_per_step
        means = {k: v.detach().mean(dim=1) for k, v in aux.items()}  # [S] per term
        logs: list[StepLog | None] = []
        for s in range(self.size):
            if self.diverged[s] is not None:
                logs.append(None)
                continue
            log = {k: float(v[s]) for k, v in means.items()}
            bad = [k for k, v in log.items() if not np.isfinite(v)]
            if bad:
                self.diverged[s] = (
                    f"non-finite {bad[0]} = {log[bad[0]]} at outer step {self.steps[s] + 1}; "
                    "training stopped before the update"
                )
                logs.append(None)
                continue
            logs.append(log)
        frozen = torch.tensor([d is not None for d in self.diverged], device=self.device)
        kept = {k: v.detach()[frozen].clone() for k, v in self.params.items()}
        grads = {}
        for name, p in self.params.items():
            g = (sums[name] / m).to(p.dtype)
            mask = frozen.reshape(-1, *([1] * (g.dim() - 1)))
            grads[name] = torch.where(mask, torch.zeros_like(g), g)
        self._optimizer_step(grads)
        if bool(frozen.any()):  # a stopped member keeps its parameters
            with torch.no_grad():
                for k, v in self.params.items():
                    v[frozen] = kept[k]
        self.step += 1
        seconds = time.perf_counter() - start
        for s, log in enumerate(logs):
            if log is not None:
                self.steps[s] += 1
                log.update(step=float(self.steps[s]), seconds=seconds)
                self.history[s].append(log)
        return logs

    @torch.no_grad()
    def _optimizer_step(self, grads: dict[str, Tensor]) -> None:
        """One step of the configured optimiser over the stacked parameters: torch's
        functional ``adam``/``sgd`` with ``torch.optim.Adam``/``SGD``'s defaults."""
        cfg, names = self.cfg, list(self.params)
        params = [self.params[k].detach() for k in names]
        g = [grads[k] for k in names]
        if cfg.optimizer == "sgd":
            sgd(params, g, [None] * len(names), weight_decay=cfg.weight_decay, momentum=0.0,
                lr=cfg.outer_lr, dampening=0.0, nesterov=False, maximize=False,
                foreach=False)  # fmt: skip
            return
        adam(
            params,
            g,
            [self._moments[k][0] for k in names],
            [self._moments[k][1] for k in names],
            [],
            [self._adam_steps[k] for k in names],
            foreach=False,
            capturable=False,
            differentiable=False,
            fused=None,
            grad_scale=None,
            found_inf=None,
            has_complex=False,
            amsgrad=False,
            beta1=0.9,
            beta2=0.999,
            lr=cfg.outer_lr,
            weight_decay=cfg.weight_decay,
            eps=1e-8,
            maximize=False,
        )

    def fit(
        self,
        steps: int,
        progress: bool = True,
        callback: Callable[[list[StepLog | None]], None] | None = None,
    ) -> list[list[StepLog]]:
        """Run ``steps`` outer steps (fewer if every member diverged); writes the parameters
        back into the members' methods (:meth:`sync`)."""
        from gessl.progress import progress as progress_bar

        bar = progress_bar(
            range(steps), enabled=progress, desc=f"{self.cfg.mode} ×{self.size}", unit="step"
        )
        for _ in bar:
            if not any(self.alive):
                break
            logs = self.train_step()
            live = [log for log in logs if log is not None]
            if live:
                bar.set_postfix(loss=f"{np.mean([lg['loss'] for lg in live]):.4f}")
            if callback is not None:
                callback(logs)
        bar.close()
        self.sync()
        return self.history

    def member_params(self, s: int) -> dict[str, Tensor]:
        """Member ``s``'s parameters (detached views into the stack)."""
        return {k: v.detach()[s] for k, v in self.params.items()}

    def sync(self) -> list[Method]:
        """Copy the stacked parameters into the members' methods; returns them."""
        with torch.no_grad():
            for s, method in enumerate(self.methods):
                for k, p in method.online_params().items():
                    p.copy_(self.params[k][s])
        return self.methods
