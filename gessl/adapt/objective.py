"""GeSSL's per-task objective, written once over :class:`gessl.adapt.sgd.Adapter`.

Reconstruction of GeSSL v4 (Qiang et al., arXiv 2405.01053; ``docs/reconstruction.md``), for
one task with support views ``(sa, sb)`` and query views ``(qa, qb)`` of the same N samples::

    θ ← φ;  K times: θ ← θ − α ∇ℓ_ssl(θ; support)          (task-specific model)
    θ̃ ← sg(θ); λ times: θ̃ ← θ̃ − α ∇ℓ_ssl(θ̃; support)     (future updates, no graph)
    L = ℓ_ssl(θ; query) + γ · KL(π_θ ‖ π_θ̃)  on the query views

(the KL in the direction named by :data:`gessl.sigma.DIRECTIONS`; ``"sigma"`` is the one
written). Three forms of the same objective:

* :meth:`TaskObjective.inner` and :meth:`TaskObjective.outer` — first order (FOMAML, Nichol et
  al. 2018, arXiv 1803.02999) as two un-nested functions: the inner and look-ahead steps outside
  any gradient transform, then the outer objective differentiated with respect to the shared
  parameters and the task's adapted ones (the gradient at θ_K is FOMAML's gradient for φ);
* :meth:`TaskObjective.nested` — the whole objective with the graph kept through the K steps
  (``order="second"``: the exact hypergradient), or, with ``order="first"``, the inner steps on
  detached parameters re-attached as ``θ_K + (φ − sg(φ))`` (value θ_K, Jacobian I), which the
  threshold network needs: g is differentiated through the inner steps;
* :func:`plain_objective` — the base method's loss, no adaptation (the plain arm).

With ``threshold`` (v5 reading) the inner loss is ``ℓ_ssl(θ; support) + γ·h(KL_support(π_θ ‖
π_θ̃s) − δ)``, with ``h`` a smooth hinge (``softplus`` with sharpness β), ``θ̃s`` = K + λ plain
steps from sg(φ) and ``δ = softplus(g(task statistics))``.

The parameters come in two dicts: ``shared`` — what every task starts from and does not move
(the fixed parameters, and the linear weights kept in factored form, by name in ``factored``)
— and ``moving`` — the dense parameters each task adapts. With nothing factored this is the
dense (reference) backend; otherwise the factored one (:mod:`gessl.adapt.linear`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from gessl.adapt.linear import FactoredPlan
from gessl.adapt.sgd import Adapter, State, detach_params, detach_state
from gessl.methods.base import Method, Params
from gessl.sigma import check_direction, kl_in_direction
from gessl.tasks import Critic, TaskBatch

__all__ = ["Adaptation", "TaskObjective", "ThresholdNet", "plain_objective"]

Targets = dict[str, Tensor]
Feats = tuple[Tensor | None, Tensor | None]


@dataclass(frozen=True)
class Adaptation:
    """The plain values of task-specific adaptation and of GeSSL's σ-term.

    Attributes:
        steps: K, inner SGD steps on the support views.
        lr: α, their step size.
        lookahead: λ, further steps (no graph) giving the σ-term's target θ̃.
        weight: γ, the σ-term's weight (0: no σ-term, no look-ahead).
        direction: the σ-term's KL direction (:data:`gessl.sigma.DIRECTIONS`).
        order: ``"first"`` or ``"second"``.
    """

    steps: int
    lr: float
    lookahead: int
    weight: float
    direction: str
    order: str

    def __post_init__(self) -> None:
        check_direction(self.direction)
        if self.order not in ("first", "second"):
            raise ValueError(f"order must be 'first' or 'second', got {self.order!r}")

    @classmethod
    def of(cls, cfg: Any) -> Adaptation:
        """The adaptation of a :class:`gessl.trainer.GeSSLConfig`."""
        return cls(
            cfg.inner_steps,
            cfg.inner_lr,
            cfg.lookahead_steps,
            cfg.sigma_weight,
            cfg.kl_direction,
            cfg.order,
        )


class ThresholdNet(nn.Module):
    """g: task statistics (3 numbers) → a tolerance δ > 0 on the support σ-term (v5 option)."""

    n_stats = 3

    def __init__(self, hidden: int = 16) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(self.n_stats, hidden), nn.Tanh(), nn.Linear(hidden, 1))

    def forward(self, stats: Tensor) -> Tensor:
        return F.softplus(self.net(stats)).squeeze(-1)


def _d(x: Tensor | None) -> Tensor | None:
    return None if x is None else x.detach()


def targets_of(targets: Targets, which: str) -> Targets | None:
    """The momentum-encoder outputs of the support (``"s"``) or query (``"q"``) views."""
    if not targets:
        return None
    return {"t_a": targets[f"{which}_t_a"], "t_b": targets[f"{which}_t_b"]}


def plain_objective(method: Method, use_support: bool) -> Callable[..., tuple[Tensor, Any]]:
    """The plain arm's per-task ``(loss, aux)``: the base loss on the query views (and the
    support views, averaged, with ``use_support``), ``objective(params, task, targets)``."""

    def objective(params: Params, task: TaskBatch, targets: Targets) -> tuple[Tensor, Any]:
        loss = method.loss(params, task.query_a, task.query_b, targets_of(targets, "q")).loss
        if use_support:
            ts = targets_of(targets, "s")
            loss = (loss + method.loss(params, task.support_a, task.support_b, ts).loss) / 2
        value = loss.detach()
        return loss, {"ssl": value, "kl": torch.zeros_like(value), "support_loss": value}

    return objective


class TaskObjective:
    """GeSSL's objective of one task (see the module docstring).

    Args:
        method: the base method (its loss, embeddings and parameters' names).
        adaptation: K, α, λ, γ, the KL direction and the order.
        critic: the critic of π in the σ-term (:class:`gessl.tasks.Critic`).
        head_only: adapt the head only (backbone features computed once per task and view).
        joint: both views of a pair go through the backbone in one call (a backbone that treats
            rows on its own, :func:`gessl.adapt.linear.views_batchable`).
        threshold_net: the v5 threshold network g (``None``: v4).
        sharpness: β of the smooth hinge.
        plan: the :class:`~gessl.adapt.linear.FactoredPlan` of the factored backend.
    """

    def __init__(
        self,
        method: Method,
        adaptation: Adaptation,
        critic: Critic,
        *,
        head_only: bool = False,
        joint: bool = False,
        threshold_net: ThresholdNet | None = None,
        sharpness: float = 10.0,
        plan: FactoredPlan | None = None,
    ) -> None:
        self.method, self.a, self.critic = method, adaptation, critic
        self.head_only, self.joint = head_only, joint and not head_only
        self.threshold_net, self.sharpness, self.plan = threshold_net, sharpness, plan

    # ------------------------------------------------------------------ pieces
    def adapter(self, shared: Params, factored: tuple[str, ...], key: Any) -> Adapter:
        weights = {k: shared[k] for k in factored}
        fixed = {k: v for k, v in shared.items() if k not in weights}
        return Adapter(fixed, weights, self.plan, key)

    def features(self, params: Params, a: Tensor, b: Tensor) -> Feats:
        """Backbone features of two views (projector-only mode), else ``(None, None)``."""
        if not self.head_only:
            return None, None
        return self.method.features(params, a), self.method.features(params, b)

    def support_loss(
        self, task: TaskBatch, targets: Targets, feats: Feats = (None, None)
    ) -> Callable[[Params], Tensor]:
        """ℓ_ssl on the task's support views as a function of the parameters."""
        method, ts = self.method, targets_of(targets, "s")
        if feats[0] is not None:
            return lambda p: method.loss_from_features(p, feats[0], feats[1], ts).loss
        if self.joint:
            n = task.support_a.shape[0]
            both = torch.cat([task.support_a, task.support_b])

            def joint_loss(p: Params) -> Tensor:
                fa, fb = method.features(p, both).split(n)
                return method.loss_from_features(p, fa, fb, ts).loss

            return joint_loss
        return lambda p: method.loss(p, task.support_a, task.support_b, ts).loss

    def query_embeddings(self, p: Params, task: TaskBatch, feats: Feats) -> tuple[Tensor, Tensor]:
        """The two query views' embeddings (π's inputs) under ``p``."""
        method = self.method
        if feats[0] is not None:
            return method.embed(p, task.query_a, feats[0]), method.embed(p, task.query_b, feats[1])
        if self.joint:
            n = task.query_a.shape[0]
            fa, fb = method.features(p, torch.cat([task.query_a, task.query_b])).split(n)
            return method.project(p, fa), method.project(p, fb)
        return method.embed(p, task.query_a), method.embed(p, task.query_b)

    def kl(self, lp_model: Tensor, lp_target: Tensor) -> Tensor:
        """The σ-term: the mean over the task's rows of the KL in the configured direction."""
        return kl_in_direction(lp_model, lp_target, self.a.direction).mean()

    def outer_terms(
        self,
        ad: Adapter,
        theta: State,
        look: State | None,
        task: TaskBatch,
        targets: Targets,
        feats: Feats,
        weight: Tensor | None = None,
    ) -> tuple[Tensor, Tensor, Tensor]:
        """``(ℓ(θ; query) + γ·KL(π_θ ‖ π_θ̃), ℓ(θ; query), γ > 0 ? KL : 0)``; no gradient flows
        through the target θ̃ (``look``; ``None``: no σ-term). ``weight``: this task's γ where
        it is the model's own (a population whose members differ in γ), else the adaptation's."""
        tq = targets_of(targets, "q")

        def model_side(p: Params) -> tuple[Tensor, Tensor, Tensor]:
            za, zb = self.query_embeddings(p, task, feats)
            return za, zb, self.method.loss_from_projections(p, za, zb, tq).loss

        za, zb, query = ad.call(theta, model_side)
        if look is None:
            return query, query, torch.zeros_like(query)
        frozen = (_d(feats[0]), _d(feats[1]))
        with torch.no_grad():
            lp_target = ad.call(
                look, lambda p: self.critic.log_probs(*self.query_embeddings(p, task, frozen))
            )
        kl_term = self.kl(self.critic.log_probs(za, zb), lp_target)
        if weight is None:
            return query + self.a.weight * kl_term, query, kl_term
        # γ = 0 adds exactly 0 (a finite KL), and reports no σ-term, as a run without one does
        return query + weight * kl_term, query, torch.where(weight > 0, kl_term, 0.0)

    # ------------------------------------------------------------------ first order, split
    def inner(
        self,
        shared: Params,
        moving: Params,
        task: TaskBatch,
        targets: Targets,
        factored: tuple[str, ...] = (),
        key: Any = None,
    ) -> tuple[dict[str, State], Tensor]:
        """First order: the K inner steps and the λ look-ahead steps from φ (no graph);
        returns ``{"theta": state, "look": state}`` and ℓ(φ; support)."""
        a = self.a
        ad = self.adapter(shared, factored, key)
        fs = self.features({**shared, **moving}, task.support_a, task.support_b)
        loss_of = self.support_loss(task, targets, fs)
        theta, first = ad.sgd(ad.start(moving), a.steps, loss_of, a.lr, detach=True)
        theta = ad.merged(theta)
        support = first if first is not None else loss_of(ad.params(theta)).detach()
        look = theta
        if a.weight > 0:
            look, _ = ad.sgd(theta, a.lookahead, loss_of, a.lr, detach=True)
        return {"theta": theta, "look": look}, support

    def outer(
        self,
        shared: Params,
        theta_dense: Params,
        task: TaskBatch,
        targets: Targets,
        states: dict[str, State],
        weight: Tensor | None = None,
        factored: tuple[str, ...] = (),
        key: Any = None,
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """First order: the outer objective at θ_K (the inner steps' update held constant);
        differentiated with respect to ``shared`` and the task's ``theta_dense``; ``weight``:
        the task's own γ (see :meth:`outer_terms`)."""
        ad = self.adapter(shared, factored, key)
        theta = {**states["theta"], "dense": theta_dense}
        feats = self.features({**shared, **theta_dense}, task.query_a, task.query_b)
        look = states["look"] if self.a.weight > 0 else None
        loss, query, kl_term = self.outer_terms(ad, theta, look, task, targets, feats, weight)
        return loss, {"ssl": query.detach(), "kl": kl_term.detach(), "loss": loss.detach()}

    # ------------------------------------------------------------------ nested
    def nested(
        self,
        shared: Params,
        moving: Params,
        g_params: Params,
        task: TaskBatch,
        targets: Targets,
        weight: Tensor | None = None,
        factored: tuple[str, ...] = (),
        key: Any = None,
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """The objective with the inner steps inside (second order, or the threshold network);
        ``aux``: ``ssl`` (query loss of θ_K), ``kl`` (the σ-term), ``support_loss`` (ℓ(φ;
        support)) and ``loss``; ``weight``: the task's own γ of the σ-term (not of the
        threshold network's hinge)."""
        a = self.a
        second = a.order == "second"
        phi = {**shared, **moving}
        fs = self.features(phi, task.support_a, task.support_b)
        fq = self.features(phi, task.query_a, task.query_b)
        in_shared = shared if second else detach_params(shared)
        in_fs = fs if second else (_d(fs[0]), _d(fs[1]))
        support_loss = self.support_loss(task, targets, in_fs)
        thresholded = self.threshold_net is not None
        # ℓ(φ; support): for logging and g's statistics; otherwise read off the first step
        support_value = (
            self.support_loss(task, targets, fs)(phi).detach()
            if thresholded or a.steps == 0
            else None
        )
        start = moving if second else detach_params(moving)
        ad_in = self.adapter(in_shared, factored, key)
        inner_loss = support_loss
        if thresholded:
            assert support_value is not None
            inner_loss = self._thresholded(
                g_params, in_shared, start, support_loss, task, targets, in_fs, support_value
            )
        theta, first = ad_in.sgd(ad_in.start(start), a.steps, inner_loss, a.lr, detach=False)
        theta = ad_in.merged(theta)
        if support_value is None:
            assert first is not None
            support_value = first.detach()
        if not second:  # FOMAML: θ_K + (φ − sg(φ)) has value θ_K and Jacobian I w.r.t. φ
            d = theta["dense"]
            theta = {**theta, "dense": {k: d[k] + (moving[k] - moving[k].detach()) for k in d}}
        look = None
        if a.weight > 0:
            frozen = self.adapter(detach_params(shared), factored, key)
            look_loss = self.support_loss(task, targets, (_d(fs[0]), _d(fs[1])))
            look, _ = frozen.sgd(detach_state(theta), a.lookahead, look_loss, a.lr, detach=True)
        ad = self.adapter(shared, factored, key)
        loss, query, kl_term = self.outer_terms(ad, theta, look, task, targets, fq, weight)
        aux = {"ssl": query.detach(), "kl": kl_term.detach(), "support_loss": support_value}
        return loss, {**aux, "loss": loss.detach()}

    def _thresholded(
        self,
        g_params: Params,
        fixed: Params,
        base: Params,
        support_loss: Callable[[Params], Tensor],
        task: TaskBatch,
        targets: Targets,
        feats: Feats,
        support_value: Tensor,
    ) -> Callable[[Params], Tensor]:
        """The v5-style inner loss ``ℓ + γ·h(KL_support(π_θ ‖ π_θ̃s) − δ_g(stats))``."""
        a, method = self.a, self.method
        sa, sb, ts = task.support_a, task.support_b, targets_of(targets, "s")
        fsa, fsb = feats
        start = {**detach_params(fixed), **detach_params(base)}
        dense = Adapter(detach_params(fixed))
        look, _ = dense.sgd(
            dense.start(detach_params(base)), a.steps + a.lookahead, support_loss, a.lr, True
        )
        target = {**start, **look["dense"]}

        def log_pi(p: Params) -> Tensor:
            return self.critic.log_probs(method.embed(p, sa, _d(fsa)), method.embed(p, sb, _d(fsb)))

        lp_target = log_pi(target).detach()
        with torch.no_grad():
            z = F.normalize(method.embed(start, sa, _d(fsa)), dim=-1)
            n = z.shape[-2]
            mean_cos = ((z @ z.transpose(-1, -2)).sum() - n) / (n * (n - 1))
            kl0 = self.kl(log_pi(start), lp_target)
            stats = torch.stack([support_value, mean_cos, kl0]).detach()
        assert self.threshold_net is not None
        delta = functional_call(self.threshold_net, g_params, (stats,))

        def loss(p: Params) -> Tensor:
            za, zb = method.embed(p, sa, fsa), method.embed(p, sb, fsb)  # shared by both terms
            gap = self.kl(self.critic.log_probs(za, zb), lp_target)
            # a smooth hinge: its θ-gradient sigmoid(β(gap − δ))·∇gap depends on δ, so g gets a
            # gradient through the inner steps (a hard relu's would not: its slope is a step)
            hinge = F.softplus(gap - delta, beta=self.sharpness)
            return method.loss_from_projections(p, za, zb, ts).loss + a.weight * hinge

        return loss
