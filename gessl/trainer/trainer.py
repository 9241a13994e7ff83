"""The GeSSL trainer (and the plain baseline): outer loop, batching, distribution, checkpoints.

One outer step: sample M tasks (every rank draws the same tasks from the seeded sampler and keeps
its contiguous share), compute the momentum targets once, get each task's gradient of its
objective (batched with ``torch.func.vmap``, or a loop), sum over the local tasks, all-reduce the
sums across ranks and divide by M — identical to one process up to float rounding — then take the
optimiser step and update the method's state (momentum, queue, center) once.

Nothing is gathered across ranks inside a loss: a task's negatives are its own N samples and a
task never spans ranks, so no gradient-scale convention for gathered embeddings arises. Gradients
are averaged with ``dist.all_reduce`` on the parameter gradients after they are computed (outside
autograd).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor

from gessl.adapt import ThresholdNet
from gessl.devices import autocast, check_same_device, enable_tf32, resolve_device
from gessl.losses import no_value_checks
from gessl.methods.base import Method
from gessl.sigma import upgrade_direction
from gessl.tasks import TaskBatch, TaskSampler
from gessl.trainer.checkpoint import (
    load_checkpoint,
    rng_states,
    save_checkpoint,
    set_rng_states,
)
from gessl.trainer.config import GeSSLConfig
from gessl.trainer.step import OuterStep

__all__ = ["NonFiniteLossError", "StepLog", "Trainer"]

StepLog = dict[str, float]


class NonFiniteLossError(FloatingPointError):
    """Training stopped: a loss term is nan or inf. The last good checkpoint is kept."""


class Trainer:
    """Train ``method`` with GeSSL (``cfg.mode="gessl"``) or plainly (``"plain"``).

    Args:
        method: a :class:`gessl.methods.Method` (its parameters are φ); moved to ``device``.
        sampler: a :class:`gessl.tasks.TaskSampler` — ``sample(n_tasks, n_samples, generator)
            -> TaskBatch``; the generator lives on ``device``, so the tasks are drawn there.
        cfg: the options (:class:`GeSSLConfig`).
        n_samples: N, samples per task.
        checkpoint_path: where :meth:`save` writes by default (and :meth:`fit` every
            ``checkpoint_every`` steps).
        device: where the parameters, the method's state (momentum copies, queues, centers),
            the task stream and every step live: ``None``/``"auto"`` (CUDA when available —
            ``cuda:LOCAL_RANK`` under ``torchrun`` — else the CPU), ``"cpu"``, ``"cuda"``,
            ``"cuda:<i>"`` (:func:`gessl.devices.resolve_device`; a bad value raises a one-line
            ``ValueError``). Float32 matrix products use TF32 on CUDA.
        fast_path: ``False`` keeps GeSSL on the reference path even where the factored path
            applies (:mod:`gessl.trainer.step`; for tests and debugging). :attr:`path` names the
            path the last step took.

    A batch passed to :meth:`train_step` must be on ``device``; one elsewhere raises a
    ``ValueError`` naming both devices.
    """

    def __init__(
        self,
        method: Method,
        sampler: TaskSampler,
        cfg: GeSSLConfig,
        n_samples: int = 16,
        checkpoint_path: str | None = None,
        device: str | torch.device | None = None,
        fast_path: bool = True,
    ) -> None:
        self.device = resolve_device(device)
        enable_tf32(self.device)
        self.method, self.sampler, self.cfg, self.n_samples = method, sampler, cfg, n_samples
        self.method.to(self.device)
        self.checkpoint_path = checkpoint_path
        self.step = 0
        self.generator = torch.Generator(device=self.device).manual_seed(cfg.seed)
        self.dtype = next(method.parameters()).dtype
        self.threshold_net = (
            ThresholdNet(cfg.threshold_hidden).to(self.device, self.dtype)
            if cfg.mode == "gessl" and cfg.threshold == "learned"
            else None
        )
        params = list(method.online_params().values())
        if self.threshold_net is not None:
            params += list(self.threshold_net.parameters())
        opt_cls = torch.optim.Adam if cfg.optimizer == "adam" else torch.optim.SGD
        self.optimizer = opt_cls(params, lr=cfg.outer_lr, weight_decay=cfg.weight_decay)
        # the gradients of one outer step (gessl.trainer.step): the factored path where it
        # applies (the same gradients, without per-task weight copies), else the reference
        self.outer_step = OuterStep(method, cfg, self.threshold_net, fast_path)
        self.adapt_names, self.fixed_names = (
            self.outer_step.adapt_names,
            self.outer_step.fixed_names,
        )
        self.rank, self.world = (
            (dist.get_rank(), dist.get_world_size())
            if dist.is_available() and dist.is_initialized()
            else (0, 1)
        )
        self.history: list[StepLog] = []
        self.last_good_checkpoint: str | None = None
        if self.world > 1:  # every rank starts from rank 0's parameters and state
            with torch.no_grad():
                for t in self.method.state_dict().values():
                    dist.broadcast(t, src=0)
                if self.threshold_net is not None:
                    for t in self.threshold_net.state_dict().values():
                        dist.broadcast(t, src=0)

    # ------------------------------------------------------------------ gradients
    @property
    def path(self) -> str:
        """The gradient path the last step took: ``"plain"``, ``"reference"`` or ``"factored"``
        (:mod:`gessl.trainer.step`)."""
        return self.outer_step.path

    def task_gradients(self, batch: TaskBatch) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        """Gradients of the sum of this rank's task objectives (names → tensors), and per-task
        aux values (``aux[k]`` of shape ``[local tasks]``)."""
        # detached: torch.func differentiates functionally; leaving requires_grad on would also
        # record a (useless, memory-hungry) autograd tape of the whole computation
        phi = {k: v.detach() for k, v in self.method.online_params().items()}
        g_params = (
            {k: v.detach() for k, v in self.threshold_net.named_parameters()}
            if self.threshold_net is not None
            else {}
        )
        with no_value_checks():
            return self.outer_step.gradients(phi, g_params, batch, self._targets(batch))

    def _targets(self, batch: TaskBatch) -> dict[str, Tensor]:
        """Momentum-encoder outputs for the views the objective uses (support views are not
        needed by a plain step on the query views only)."""
        tq = self.method.targets(batch.query_a, batch.query_b, batched=True)
        if tq is None:
            return {}
        out = {"q_t_a": tq["t_a"], "q_t_b": tq["t_b"]}
        if self.cfg.mode == "gessl" or self.cfg.use_support_in_plain:
            ts = self.method.targets(batch.support_a, batch.support_b, batched=True)
            out.update(s_t_a=ts["t_a"], s_t_b=ts["t_b"])
        return out

    # ------------------------------------------------------------------ one outer step
    def sample(self) -> TaskBatch:
        """The next M tasks (identical on every rank), drawn on the trainer's device."""
        batch = self.sampler.sample(self.cfg.tasks_per_step, self.n_samples, self.generator)
        return batch.to(self.device, self.dtype)

    def train_step(self, batch: TaskBatch | None = None) -> StepLog:
        """One outer step; raises :class:`NonFiniteLossError` before any update if a term is
        not finite."""
        start = time.perf_counter()
        batch = self.sample() if batch is None else batch
        self.check_devices(batch)
        local = batch.shard(self.rank, self.world) if self.world > 1 else batch
        with autocast(self.device, self.cfg.precision):
            sums, aux = self.task_gradients(local)
        totals = {k: v.sum() for k, v in aux.items()}
        if self.world > 1:
            for t in [*sums.values(), *totals.values()]:
                dist.all_reduce(t)
        m = batch.n_tasks
        log = {k: float(v) / m for k, v in totals.items()}
        for term, value in log.items():
            if not np.isfinite(value):
                where = (
                    f"; last good checkpoint: {self.last_good_checkpoint}"
                    if self.last_good_checkpoint
                    else ""
                )
                raise NonFiniteLossError(
                    f"non-finite {term} = {value} at outer step {self.step + 1}; training "
                    f"stopped before the update{where}"
                )
        self.optimizer.zero_grad(set_to_none=True)
        online = self.method.online_params()
        for name, g in sums.items():
            p = (
                dict(self.threshold_net.named_parameters())[name[len("threshold.") :]]
                if name.startswith("threshold.")
                else online[name]
            )
            p.grad = (g / m).to(p.dtype)
        self.optimizer.step()
        with autocast(self.device, self.cfg.precision):
            targets = self.method.targets(batch.query_a, batch.query_b, batched=True)
        self.method.update_state(batch.query_a, batch.query_b, targets)
        self.step += 1
        log.update(step=float(self.step), seconds=time.perf_counter() - start)
        self.history.append(log)
        return log

    def check_devices(self, batch: TaskBatch) -> None:
        """Raise ``ValueError`` naming both devices when the batch, the method's parameters or
        its state are not on the trainer's device (e.g. a method moved after construction)."""
        where = f"the trainer (device={str(self.device)!r})"
        check_same_device(self.device, {"the task batch": batch.support_a}, where)
        check_same_device(
            self.device,
            {f"the method's {k}": v for k, v in self.method.state_dict(keep_vars=True).items()},
            where,
        )

    # ------------------------------------------------------------------ loop, checkpoints
    def fit(
        self,
        steps: int,
        checkpoint_every: int = 0,
        progress: bool = True,
        callback: Callable[[StepLog], None] | None = None,
    ) -> list[StepLog]:
        """Run ``steps`` outer steps with a progress bar (steps/s, loss, σ-term)."""
        from gessl.progress import progress as progress_bar

        bar = progress_bar(
            range(steps), enabled=progress and self.rank == 0, desc=self.cfg.mode, unit="step"
        )
        for _ in bar:
            log = self.train_step()
            bar.set_postfix(loss=f"{log['loss']:.4f}", sigma=f"{log['kl']:.4f}")
            if callback is not None:
                callback(log)
            if checkpoint_every and self.step % checkpoint_every == 0 and self.checkpoint_path:
                self.save()
        bar.close()
        return self.history

    def state_dict(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "config": self.cfg.to_dict(),
            "method": self.method.state_dict(),
            "threshold": self.threshold_net.state_dict() if self.threshold_net else None,
            "optimizer": self.optimizer.state_dict(),
            "generator": self.generator.get_state(),
            "generator_device": self.generator.device.type,
            "rng": rng_states(),  # tensors and plain numbers: loads with weights_only=True
            "history": [dict(log) for log in self.history],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        # options added since a checkpoint was written take their defaults (e.g. precision)
        saved = {**GeSSLConfig().to_dict(), **state["config"]}
        saved["kl_direction"] = upgrade_direction(saved["kl_direction"])  # older checkpoints
        if saved != self.cfg.to_dict():
            diff = {k for k in saved if saved[k] != self.cfg.to_dict().get(k)}
            raise ValueError(f"checkpoint was written with different options: {sorted(diff)}")
        drawn_on = state.get("generator_device", "cpu")
        if drawn_on != self.generator.device.type:
            raise ValueError(
                f"checkpoint's task stream was drawn on {drawn_on}, this trainer draws on "
                f"{self.generator.device.type}: resume with a {drawn_on} device to continue the "
                "same task stream"
            )
        self.method.load_state_dict(state["method"])
        if self.threshold_net is not None:
            self.threshold_net.load_state_dict(state["threshold"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.generator.set_state(state["generator"])
        set_rng_states(state["rng"])
        self.step, self.history = state["step"], list(state["history"])

    def save(self, path: str | None = None) -> str:
        """Write a checkpoint atomically (rank 0 only); returns the path."""
        path = path or self.checkpoint_path
        if path is None:
            raise ValueError("no checkpoint path given")
        if self.rank == 0:
            save_checkpoint(self.state_dict(), path)
        self.last_good_checkpoint = path
        return path

    def load(self, path: str | None = None) -> None:
        """Resume from a checkpoint written by :meth:`save` (same options required).

        The file is read with ``weights_only=True``: one that holds other pickled objects is
        refused with :class:`gessl.trainer.checkpoint.UnsafeCheckpointError` (a ``ValueError``).
        """
        path = path or self.checkpoint_path
        if path is None or not os.path.exists(path):
            raise FileNotFoundError(f"no checkpoint at {path!r}")
        self.load_state_dict(load_checkpoint(path))
        self.last_good_checkpoint = path
