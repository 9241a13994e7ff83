"""The per-task GeSSL objective as a pure function of parameters (for ``torch.func``).

Reconstruction of GeSSL v4 (``docs/reconstruction.md``), for one task with support views
``(sa, sb)`` and query views ``(qa, qb)`` of the same N samples::

    θ ← φ;  K times: θ ← θ − α ∇ℓ_ssl(θ; support)          (task-specific model)
    θ̃ ← sg(θ); λ times: θ̃ ← θ̃ − α ∇ℓ_ssl(θ̃; support)     (future updates, no graph)
    L = ℓ_ssl(θ; query) + γ · KL(π_θ ‖ π_θ̃)  on the query views

``order="first"`` runs the inner loop on detached parameters and features, then re-attaches
``θ_K + (φ − sg(φ))``, so the outer gradient with respect to φ is the gradient at θ_K (FOMAML).
``order="second"`` keeps the graph through the K steps (exact hypergradient). For first order
without a threshold network, :func:`build_first_order_split` gives the same gradients from two
un-nested passes (the inner loop outside any gradient transform), which is cheaper. With
``adapt="all"`` the trainer takes :mod:`gessl.trainer.factored` (linear layers in low-rank
form, the same gradients); these functions are its reference and its fallback.
With ``threshold="learned"`` (v5 reading) the inner loss is
``ℓ_ssl(θ; support) + γ·h(KL_support(π_θ ‖ π_θ̃s) − δ)``, with ``h`` a smooth hinge
(``softplus`` with sharpness β), ``θ̃s`` = K + λ plain steps from sg(φ) and
``δ = softplus(g(task statistics))``; g is differentiated through the inner steps.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, grad

from gessl.methods.base import Method, Params, resolve_critic
from gessl.sigma import kl_rows
from gessl.trainer.config import GeSSLConfig

__all__ = ["ThresholdNet", "build_first_order_split", "build_objective"]

Task = dict[str, Tensor]


class ThresholdNet(nn.Module):
    """g: task statistics (3 numbers) → a tolerance δ > 0 on the support σ-term (v5 option)."""

    n_stats = 3

    def __init__(self, hidden: int = 16) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(self.n_stats, hidden), nn.Tanh(), nn.Linear(hidden, 1))

    def forward(self, stats: Tensor) -> Tensor:
        return F.softplus(self.net(stats)).squeeze(-1)


def _detach(p: Params) -> Params:
    return {k: v.detach() for k, v in p.items()}


class _Pieces:
    """The building blocks shared by the objectives: losses, task classifier, KL, inner SGD."""

    def __init__(self, method: Method, cfg: GeSSLConfig) -> None:
        self.method, self.cfg = method, cfg
        self.head_only = cfg.adapt == "projector"
        self.critic = resolve_critic(
            method, cfg.sigma_critic, cfg.sigma_temperature, argument="sigma_critic"
        )

    @staticmethod
    def targets_of(t: dict[str, Tensor], which: str) -> dict[str, Tensor] | None:
        if not t:
            return None
        return {"t_a": t[f"{which}_t_a"], "t_b": t[f"{which}_t_b"]}

    def ssl(
        self,
        params: Params,
        a: Tensor,
        b: Tensor,
        fa: Tensor | None,
        fb: Tensor | None,
        tg: dict[str, Tensor] | None,
    ) -> Tensor:
        if fa is None:
            return self.method.loss(params, a, b, tg).loss
        return self.method.loss_from_features(params, fa, fb, tg).loss

    def log_pi(
        self, params: Params, a: Tensor, b: Tensor, fa: Tensor | None, fb: Tensor | None
    ) -> Tensor:
        return self.log_pi_of(self.method.embed(params, a, fa), self.method.embed(params, b, fb))

    def log_pi_of(self, za: Tensor, zb: Tensor) -> Tensor:
        """log π of the N-way task from the two views' embeddings (the σ-term's critic)."""
        return self.critic.log_probs(za, zb)

    def kl(self, lp_model: Tensor, lp_target: Tensor) -> Tensor:
        if self.cfg.kl_direction == "model_target":
            return kl_rows(lp_model, lp_target).mean()
        return kl_rows(lp_target, lp_model).mean()

    def sgd(
        self,
        params: Params,
        adapt: Params,
        steps: int,
        loss_of: Callable[[Params], Tensor],
        detach_grads: bool,
    ) -> tuple[Params, Tensor | None]:
        """``steps`` SGD steps; also returns the loss at the start (``None`` if no step)."""
        first = None
        for i in range(steps):
            g, value = grad(lambda ad: _with_value(loss_of({**params, **ad})), has_aux=True)(adapt)
            if i == 0:
                first = value
            if detach_grads:
                g = _detach(g)
            adapt = {k: adapt[k] - self.cfg.inner_lr * g[k] for k in adapt}
        return adapt, first

    def backbone_features(
        self, phi: Params, task: Task, keys: tuple[str, ...] = ("sa", "sb", "qa", "qb")
    ) -> tuple[Tensor | None, ...]:
        """Backbone features of the named views (projector-only mode), else Nones."""
        if not self.head_only:
            return (None,) * len(keys)
        return tuple(self.method.features(phi, task[k]) for k in keys)

    def outer(
        self,
        full: Params,
        task: Task,
        tq: dict[str, Tensor] | None,
        fqa: Tensor | None,
        fqb: Tensor | None,
        look: Params | None,
    ) -> tuple[Tensor, Tensor, Tensor]:
        """``ℓ(θ; query) + γ·KL(π_θ ‖ π_θ̃)``, the query projections computed once for both."""
        target = None if look is None else {**_detach(full), **_detach(look)}
        feats = (fqa, fqb) if self.head_only else (None, None)
        return self.outer_to(full, task, tq, target, feats, (_d(feats[0]), _d(feats[1])))

    def outer_to(
        self,
        full: Params,
        task: Task,
        tq: dict[str, Tensor] | None,
        target: Params | None,
        feats: tuple[Tensor | None, Tensor | None] = (None, None),
        target_feats: tuple[Tensor | None, Tensor | None] = (None, None),
    ) -> tuple[Tensor, Tensor, Tensor]:
        """:meth:`outer` with the σ-term's target given as a whole parameter dict (used as it
        is: no gradient flows through π of the target), or ``None`` for no σ-term; ``feats``
        and ``target_feats`` are the query views' backbone features under ``full`` and
        ``target`` where already computed (``None``: computed here)."""
        qa, qb = task["qa"], task["qb"]
        za = self.method.embed(full, qa, feats[0])
        zb = self.method.embed(full, qb, feats[1])
        query = self.method.loss_from_projections(full, za, zb, tq).loss
        if target is None:
            return query, query, torch.zeros_like(query)
        kl_term = self.kl(
            self.log_pi_of(za, zb), self.log_pi(target, qa, qb, *target_feats).detach()
        )
        return query + self.cfg.sigma_weight * kl_term, query, kl_term


def build_objective(
    method: Method,
    cfg: GeSSLConfig,
    threshold_net: ThresholdNet | None = None,
) -> Callable[..., tuple[Tensor, dict[str, Tensor]]]:
    """``objective(phi_adapt, phi_fixed, g_params, task, targets) -> (loss, aux)``.

    ``task`` holds ``sa, sb, qa, qb``; ``targets`` holds the momentum-encoder outputs
    ``s_t_a, s_t_b, q_t_a, q_t_b`` (empty for stateless methods). ``aux`` holds the scalars
    ``ssl`` (query loss of θ_K), ``kl`` (the σ-term) and ``support_loss`` (ℓ(φ; support)).
    """
    pc = _Pieces(method, cfg)

    def objective(
        phi_adapt: Params,
        phi_fixed: Params,
        g_params: Params,
        task: Task,
        targets: dict[str, Tensor],
    ) -> tuple[Tensor, dict[str, Tensor]]:
        sa, sb = task["sa"], task["sb"]
        ts, tq = pc.targets_of(targets, "s"), pc.targets_of(targets, "q")
        phi = {**phi_fixed, **phi_adapt}
        second = cfg.order == "second"
        fsa, fsb, fqa, fqb = pc.backbone_features(phi, task)
        inner_fixed = phi_fixed if second else _detach(phi_fixed)
        in_fsa, in_fsb = (fsa, fsb) if second else (_d(fsa), _d(fsb))

        def support_loss(p: Params) -> Tensor:
            return pc.ssl(p, sa, sb, in_fsa, in_fsb, ts)

        thresholded = threshold_net is not None and cfg.threshold == "learned"
        # ℓ(φ; support): for logging and g's statistics; otherwise read off the first inner step
        support_value = (
            pc.ssl(phi, sa, sb, fsa, fsb, ts).detach()
            if thresholded or cfg.inner_steps == 0
            else None
        )
        base = phi_adapt if second else _detach(phi_adapt)
        inner_loss = support_loss
        if thresholded:
            inner_loss = _thresholded_support_loss(
                pc,
                threshold_net,
                g_params,
                inner_fixed,
                base,
                support_loss,
                (sa, sb, in_fsa, in_fsb, ts),
                support_value,
            )
        theta, first = pc.sgd(inner_fixed, base, cfg.inner_steps, inner_loss, detach_grads=False)
        if support_value is None:
            support_value = first.detach()
        if not second:  # FOMAML: θ_K + (φ − sg(φ)) has value θ_K and Jacobian I w.r.t. φ
            theta = {k: theta[k] + (phi_adapt[k] - phi_adapt[k].detach()) for k in theta}
        full = {**phi_fixed, **theta}
        look = None
        if cfg.sigma_weight > 0:
            look, _ = pc.sgd(
                _detach(full), _detach(theta), cfg.lookahead_steps, support_loss, detach_grads=True
            )
        loss, query, kl_term = pc.outer(full, task, tq, fqa, fqb, look)
        return loss, {"ssl": query.detach(), "kl": kl_term.detach(), "support_loss": support_value}

    return objective


def build_first_order_split(
    method: Method, cfg: GeSSLConfig
) -> tuple[Callable[..., Any], Callable[..., Any]]:
    """First-order GeSSL (no threshold network) as two un-nested functions.

    ``inner(phi_adapt, phi_fixed, task, targets) -> (theta, look, support_value)`` runs the K
    inner steps and the λ look-ahead steps on the support views (no gradient transform around
    it); ``outer(theta, phi_fixed, task, targets, look) -> (loss, aux)`` is differentiated with
    respect to ``theta`` and ``phi_fixed``: the gradient at θ_K is FOMAML's gradient for φ.
    """
    if cfg.order != "first" or cfg.threshold != "none":
        raise ValueError("the split form is for order='first' without a threshold network")
    pc = _Pieces(method, cfg)

    def inner(
        phi_adapt: Params, phi_fixed: Params, task: Task, targets: dict[str, Tensor]
    ) -> tuple[Params, Params, Tensor]:
        ts = pc.targets_of(targets, "s")
        phi = {**phi_fixed, **phi_adapt}
        fsa, fsb = pc.backbone_features(phi, task, ("sa", "sb"))

        def support_loss(p: Params) -> Tensor:
            return pc.ssl(p, task["sa"], task["sb"], fsa, fsb, ts)

        theta, first = pc.sgd(phi_fixed, phi_adapt, cfg.inner_steps, support_loss, False)
        support_value = first if first is not None else support_loss(phi)
        look = theta
        if cfg.sigma_weight > 0:
            look, _ = pc.sgd(phi_fixed, theta, cfg.lookahead_steps, support_loss, True)
        return theta, look, support_value

    def outer(
        theta: Params, phi_fixed: Params, task: Task, targets: dict[str, Tensor], look: Params
    ) -> tuple[Tensor, dict[str, Tensor]]:
        full = {**phi_fixed, **theta}
        fqa, fqb = pc.backbone_features(full, task, ("qa", "qb"))
        loss, query, kl_term = pc.outer(
            full,
            task,
            pc.targets_of(targets, "q"),
            fqa,
            fqb,
            look if cfg.sigma_weight > 0 else None,
        )
        return loss, {"ssl": query.detach(), "kl": kl_term.detach()}

    return inner, outer


def _with_value(loss: Tensor) -> tuple[Tensor, Tensor]:
    return loss, loss.detach()


def _d(x: Tensor | None) -> Tensor | None:
    return None if x is None else x.detach()


def _thresholded_support_loss(
    pc: _Pieces,
    net: ThresholdNet,
    g_params: Params,
    fixed: Params,
    base: Params,
    support_loss: Callable[[Params], Tensor],
    views: tuple[Any, ...],
    support_value: Tensor,
) -> Callable[[Params], Tensor]:
    """The v5-style inner loss ``ℓ + γ·h(KL_support(π_θ ‖ π_θ̃s) − δ_g(stats))``."""
    cfg = pc.cfg
    sa, sb, fsa, fsb, ts = views
    start = {**_detach(fixed), **_detach(base)}
    look, _ = pc.sgd(
        start, _detach(base), cfg.inner_steps + cfg.lookahead_steps, support_loss, detach_grads=True
    )
    target = {**start, **_detach(look)}
    lp_target = pc.log_pi(target, sa, sb, _d(fsa), _d(fsb)).detach()
    with torch.no_grad():
        z = torch.nn.functional.normalize(pc.method.embed(start, sa, _d(fsa)), dim=-1)
        n = z.shape[-2]
        mean_cos = ((z @ z.transpose(-1, -2)).sum() - n) / (n * (n - 1))
        kl0 = pc.kl(pc.log_pi(start, sa, sb, _d(fsa), _d(fsb)), lp_target)
        stats = torch.stack([support_value, mean_cos, kl0]).detach()
    delta = functional_call(net, g_params, (stats,))

    def loss(p: Params) -> Tensor:
        za, zb = pc.method.embed(p, sa, fsa), pc.method.embed(p, sb, fsb)  # shared by both terms
        gap = pc.kl(pc.log_pi_of(za, zb), lp_target)
        # a smooth hinge: its θ-gradient sigmoid(β(gap − δ))·∇gap depends on δ, so g receives a
        # gradient through the inner steps (a hard relu's would not: its slope is a step)
        hinge = F.softplus(gap - delta, beta=cfg.threshold_sharpness)
        return pc.method.loss_from_projections(p, za, zb, ts).loss + cfg.sigma_weight * hinge

    return loss
