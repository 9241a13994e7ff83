"""The gradients of one outer step of one model, as a pure function of its parameters.

:class:`OuterStep` turns a method and its :class:`~gessl.trainer.GeSSLConfig` into
``gradients(phi, g_params, batch, targets) -> (sums, aux)``: the gradient of the sum of the
batch's task objectives (plain, or GeSSL through :mod:`gessl.adapt`) and the per-task aux
values. Being pure, it runs for one model (:class:`gessl.trainer.Trainer`) or under
``torch.func.vmap`` over the seeds of a population (:class:`gessl.trainer.PopulationTrainer`).

**Paths.** GeSSL with every parameter adapted and no threshold network takes the *factored*
path (:mod:`gessl.adapt.linear`: large linear layers in low-rank form, both views of a pair in
one backbone call where the backbone treats rows on its own); anything else takes the
*reference* path (dense per-task parameters). Both give the same gradients up to float rounding
(``tests/gessl/trainer/test_fast_paths.py``). A model that turns out not to be factorable (a
factored weight used other than as ``F.linear``'s weight) falls back to the reference path on
its first step; the fallback is logged (logger ``gessl.trainer``) with its reason and kept in
:attr:`OuterStep.fallback`. :attr:`OuterStep.path` names the path that ran last.
"""

from __future__ import annotations

import logging
from functools import partial
from typing import Any

from torch import Tensor

from gessl.adapt import (
    Adaptation,
    FactoredPlan,
    NotFactorableError,
    TaskObjective,
    ThresholdNet,
    linear_weights,
    per_task,
    plain_objective,
    summed_grad,
    views_batchable,
)
from gessl.methods.base import Method, Params, resolve_critic
from gessl.tasks import TaskBatch
from gessl.trainer.config import GeSSLConfig

__all__ = ["PATHS", "OuterStep"]

LOG = logging.getLogger("gessl.trainer")
#: the gradient paths a step can take
PATHS = ("plain", "reference", "factored")


class OuterStep:
    """``gradients(phi, g_params, batch, targets)`` of one model (see the module docstring).

    Args:
        method: the method (its parameters' names and its functional pieces; its parameters
            themselves are passed to :meth:`gradients`).
        cfg: the options.
        threshold_net: the v5 threshold network g, or ``None``.
        fast_path: ``False`` keeps the reference path even where the factored one applies
            (tests, debugging).
    """

    def __init__(
        self,
        method: Method,
        cfg: GeSSLConfig,
        threshold_net: ThresholdNet | None = None,
        fast_path: bool = True,
    ) -> None:
        self.method, self.cfg = method, cfg
        names = list(method.online_params())
        self.adapt_names = method.head_names() if cfg.adapt == "projector" else names
        self.fixed_names = [n for n in names if n not in self.adapt_names]
        self.fallback: str | None = None
        self.plan: FactoredPlan | None = None
        self.reference = self.fast = None
        if cfg.mode == "plain":
            self.plain = plain_objective(method, cfg.use_support_in_plain)
            self.path = "plain"
            return
        critic = resolve_critic(
            method, cfg.sigma_critic, cfg.sigma_temperature, argument="sigma_critic"
        )
        adaptation = Adaptation.of(cfg)
        common = {
            "head_only": cfg.adapt == "projector",
            "threshold_net": threshold_net if cfg.threshold == "learned" else None,
            "sharpness": cfg.threshold_sharpness,
        }
        self.reference = TaskObjective(method, adaptation, critic, **common)
        joint = views_batchable(method)
        linears = linear_weights(method, self.adapt_names)
        applies = cfg.adapt == "all" and cfg.threshold == "none" and (linears or joint)
        if fast_path and applies:
            self.plan = FactoredPlan(linears)
            self.fast = TaskObjective(method, adaptation, critic, joint=joint, plan=self.plan)
        self.path = "factored" if self.fast is not None else "reference"

    @property
    def joint(self) -> bool:
        """Whether the fast path sends both views of a pair through the backbone at once."""
        return self.fast is not None and self.fast.joint

    @staticmethod
    def key(batch: TaskBatch, targets: dict[str, Tensor]) -> tuple:
        """The shape signature of one task of ``batch`` (the factored path's dry runs)."""
        items = [("views", tuple(v.shape[1:]), v.dtype, v.device.type) for v in batch.views()]
        items += [(k, tuple(v.shape[1:]), v.dtype) for k, v in sorted(targets.items())]
        return tuple(items)

    def factored_names(self, phi: Params, batch: TaskBatch, targets: dict[str, Tensor]) -> list:
        """The linear weights the factored path keeps in low-rank form for tasks shaped like
        ``batch``'s (``[]`` on the reference path); ``phi``: one model's parameters."""
        if self.fast is None or self.plan is None or not self.plan.enabled:
            return []
        fast = self.fast
        one = TaskBatch.of_views([v[0] for v in batch.views()])
        first = {k: v[0] for k, v in targets.items()}
        weights = {k: phi[k] for k in self.plan.candidates}
        return self.plan.names(
            self.key(batch, targets),
            weights,
            lambda: fast.support_loss(one, first)(phi),
        )

    def gradients(
        self,
        phi: Params,
        g_params: Params,
        batch: TaskBatch,
        targets: dict[str, Tensor],
        seeds: int | None = None,
        weights: Tensor | None = None,
    ) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        """Gradients of the sum of the batch's task objectives (names → tensors; the threshold
        network's under ``threshold.<name>``) and per-task aux values (``[M]`` each).

        With ``seeds=S`` (a population, :class:`gessl.trainer.PopulationTrainer`): ``phi`` and
        ``g_params`` hold one value per model (leaves ``[S, ...]``) and the batch's views and the
        targets ``[S, M, ...]``; each model's gradients (``[S, ...]``) and aux (``[S, M]``).
        ``weights`` (``[S]``, a population only): each model's own σ-term weight γ — one graph
        for models that differ only in γ (meta-learning without σ-term is γ = 0, exactly)."""
        b, one = self.cfg.batching, (phi, batch, targets)
        if seeds is not None:  # one model's parameters and batch, for the path's plan
            one = (
                {k: v[0] for k, v in phi.items()},
                TaskBatch.of_views([v[0] for v in batch.views()]),
                {k: v[0] for k, v in targets.items()},
            )
            batch = TaskBatch.of_views([v.flatten(0, 1) for v in batch.views()])
            targets = {k: v.flatten(0, 1) for k, v in targets.items()}
        if self.cfg.mode == "plain":
            (g,), aux = summed_grad(
                self.plain,
                1,
                (None, 0, 0),
                phi,
                batch,
                targets,
                nested=False,
                batching=b,
                seeds=seeds,
            )
            return g, {**aux, "loss": aux["ssl"]}
        if self.fast is not None and self.plan is not None and self.plan.enabled:
            try:
                names = self.factored_names(*one)
                out = self._gessl(
                    self.fast, tuple(names), phi, g_params, batch, targets, seeds, one, weights
                )
                self.path = "factored"
                return out
            except NotFactorableError as err:
                self.plan.disable(str(err))
                self.fallback = str(err)
                LOG.warning("GeSSL fast path off (%s); the reference path runs from now on", err)
        assert self.reference is not None
        self.path = "reference"
        return self._gessl(self.reference, (), phi, g_params, batch, targets, seeds, one, weights)

    def _gessl(
        self,
        obj: TaskObjective,
        factored: tuple[str, ...],
        phi: Params,
        g_params: Params,
        batch: TaskBatch,
        targets: dict[str, Tensor],
        seeds: int | None,
        one: tuple[Params, TaskBatch, dict[str, Tensor]],
        weights: Tensor | None = None,
    ) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        cfg, b = self.cfg, self.cfg.batching
        key = self.key(one[1], one[2])
        shared = {k: phi[k] for k in (*self.fixed_names, *factored)}
        moving = {k: phi[k] for k in self.adapt_names if k not in factored}
        if cfg.order == "first" and obj.threshold_net is None:  # split: two un-nested passes
            inner = partial(obj.inner, factored=factored, key=key)
            states, support = per_task(
                inner, (None, None, 0, 0), shared, moving, batch, targets, batching=b, seeds=seeds
            )
            if seeds is not None:
                support = support.reshape(seeds, -1)
            (gs, gm), aux = summed_grad(
                partial(obj.outer, factored=factored, key=key),
                2,
                (None, 0, 0, 0, 0, None),
                shared,
                states["theta"]["dense"],
                batch,
                targets,
                states,
                weights,
                nested=False,
                batching=b,
                seeds=seeds,
            )
            return {**gs, **gm}, {**aux, "support_loss": support.detach()}
        (gs, gm, gg), aux = summed_grad(
            partial(obj.nested, factored=factored, key=key),
            3,
            (None, None, None, 0, 0, None),
            shared,
            moving,
            g_params,
            batch,
            targets,
            weights,
            nested=True,
            batching=b,
            seeds=seeds,
        )
        return {**gs, **gm, **{f"threshold.{k}": v for k, v in gg.items()}}, aux

    def describe(self) -> dict[str, Any]:
        """What ran: the path, the factored weights' plan, and any fallback with its reason."""
        return {
            "path": self.path,
            "joint_views": self.joint,
            "fallback": self.fallback,
        }
