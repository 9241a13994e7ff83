"""The per-task GeSSL objective as a pure function of parameters (for ``torch.func``).

Reconstruction of GeSSL v4 (SPEC §2.5; paper.md §2.2), for one task with support views
``(sa, sb)`` and query views ``(qa, qb)`` of the same N samples::

    θ ← φ;  K times: θ ← θ − α ∇ℓ_ssl(θ; support)          (task-specific model)
    θ̃ ← sg(θ); λ times: θ̃ ← θ̃ − α ∇ℓ_ssl(θ̃; support)     (future updates, no graph)
    L = ℓ_ssl(θ; query) + γ · KL(π_θ ‖ π_θ̃)  on the query views

``order="first"`` runs the inner loop on detached parameters and features, then re-attaches
``θ_K + (φ − sg(φ))``, so the outer gradient with respect to φ is the gradient at θ_K (FOMAML).
``order="second"`` keeps the graph through the K steps (exact hypergradient).
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

from gessl.methods.base import Method, Params
from gessl.sigma import kl_rows
from gessl.tasks import task_logits
from gessl.trainer.config import GeSSLConfig

__all__ = ["ThresholdNet", "build_objective"]

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


def build_objective(
    method: Method,
    cfg: GeSSLConfig,
    adapt_names: list[str],
    threshold_net: ThresholdNet | None = None,
) -> Callable[..., tuple[Tensor, dict[str, Tensor]]]:
    """``objective(phi_adapt, phi_fixed, g_params, task, targets) -> (loss, aux)``.

    ``task`` holds ``sa, sb, qa, qb``; ``targets`` holds the momentum-encoder outputs
    ``s_t_a, s_t_b, q_t_a, q_t_b`` (empty for stateless methods). ``aux`` holds the scalars
    ``ssl`` (query loss of θ_K), ``kl`` (the σ-term) and ``support_loss`` (ℓ(φ; support)).
    """
    head_only = cfg.adapt == "projector"
    tau = cfg.sigma_temperature

    def targets_of(t: dict[str, Tensor], which: str) -> dict[str, Tensor] | None:
        if not t:
            return None
        return {"t_a": t[f"{which}_t_a"], "t_b": t[f"{which}_t_b"]}

    def ssl(
        params: Params,
        a: Tensor,
        b: Tensor,
        fa: Tensor | None,
        fb: Tensor | None,
        tg: dict[str, Tensor] | None,
    ) -> Tensor:
        if fa is None:
            return method.loss(params, a, b, tg).loss
        return method.loss_from_features(params, fa, fb, tg).loss

    def log_pi(
        params: Params, a: Tensor, b: Tensor, fa: Tensor | None, fb: Tensor | None
    ) -> Tensor:
        za, zb = method.embed(params, a, fa), method.embed(params, b, fb)
        return torch.log_softmax(task_logits(za, zb, tau, "cosine"), dim=-1)

    def kl(lp_model: Tensor, lp_target: Tensor) -> Tensor:
        if cfg.kl_direction == "model_target":
            return kl_rows(lp_model, lp_target).mean()
        return kl_rows(lp_target, lp_model).mean()

    def sgd(
        params: Params,
        adapt: Params,
        steps: int,
        loss_of: Callable[[Params], Tensor],
        detach_grads: bool,
    ) -> Params:
        for _ in range(steps):
            g = grad(lambda ad: loss_of({**params, **ad}))(adapt)
            if detach_grads:
                g = _detach(g)
            adapt = {k: adapt[k] - cfg.inner_lr * g[k] for k in adapt}
        return adapt

    def objective(
        phi_adapt: Params,
        phi_fixed: Params,
        g_params: Params,
        task: Task,
        targets: dict[str, Tensor],
    ) -> tuple[Tensor, dict[str, Tensor]]:
        sa, sb, qa, qb = task["sa"], task["sb"], task["qa"], task["qb"]
        ts, tq = targets_of(targets, "s"), targets_of(targets, "q")
        phi = {**phi_fixed, **phi_adapt}
        second = cfg.order == "second"
        # features of the fixed backbone, computed once per task in projector-only mode
        if head_only:
            fsa, fsb = method.features(phi, sa), method.features(phi, sb)
            fqa, fqb = method.features(phi, qa), method.features(phi, qb)
        else:
            fsa = fsb = fqa = fqb = None
        inner_fixed = phi_fixed if second else _detach(phi_fixed)
        in_fsa = fsa if (second or fsa is None) else fsa.detach()
        in_fsb = fsb if (second or fsb is None) else fsb.detach()

        def support_loss(p: Params) -> Tensor:
            return ssl(p, sa, sb, in_fsa, in_fsb, ts)

        support_value = ssl(phi, sa, sb, fsa, fsb, ts).detach()
        base = phi_adapt if second else _detach(phi_adapt)
        if threshold_net is not None and cfg.threshold == "learned":
            inner_loss = _thresholded_support_loss(
                method,
                cfg,
                threshold_net,
                g_params,
                inner_fixed,
                base,
                support_loss,
                log_pi,
                kl,
                sgd,
                (sa, sb, in_fsa, in_fsb),
                support_value,
            )
        else:
            inner_loss = support_loss
        theta = sgd(inner_fixed, base, cfg.inner_steps, inner_loss, detach_grads=False)
        if not second:  # FOMAML: θ_K + (φ − sg(φ)) has value θ_K and Jacobian I w.r.t. φ
            theta = {k: theta[k] + (phi_adapt[k] - phi_adapt[k].detach()) for k in theta}
        full = {**phi_fixed, **theta}
        query = ssl(full, qa, qb, fqa, fqb, tq)
        loss, kl_term = query, torch.zeros_like(query)
        if cfg.sigma_weight > 0:
            look = sgd(
                _detach(full), _detach(theta), cfg.lookahead_steps, support_loss, detach_grads=True
            )
            target = {**_detach(full), **_detach(look)}
            kl_term = kl(
                log_pi(full, qa, qb, fqa, fqb), log_pi(target, qa, qb, _d(fqa), _d(fqb)).detach()
            )
            loss = query + cfg.sigma_weight * kl_term
        return loss, {"ssl": query.detach(), "kl": kl_term.detach(), "support_loss": support_value}

    return objective


def _d(x: Tensor | None) -> Tensor | None:
    return None if x is None else x.detach()


def _thresholded_support_loss(
    method: Method,
    cfg: GeSSLConfig,
    net: ThresholdNet,
    g_params: Params,
    fixed: Params,
    base: Params,
    support_loss: Callable[[Params], Tensor],
    log_pi: Callable[..., Tensor],
    kl: Callable[..., Tensor],
    sgd: Callable[..., Params],
    views: tuple[Any, ...],
    support_value: Tensor,
) -> Callable[[Params], Tensor]:
    """The v5-style inner loss ``ℓ + γ·h(KL_support(π_θ ‖ π_θ̃s) − δ_g(stats))``."""
    sa, sb, fsa, fsb = views
    start = {**_detach(fixed), **_detach(base)}
    look = sgd(
        start, _detach(base), cfg.inner_steps + cfg.lookahead_steps, support_loss, detach_grads=True
    )
    target = {**start, **_detach(look)}
    lp_target = log_pi(target, sa, sb, _d(fsa), _d(fsb)).detach()
    with torch.no_grad():
        z = torch.nn.functional.normalize(method.embed(start, sa, _d(fsa)), dim=-1)
        n = z.shape[-2]
        mean_cos = ((z @ z.transpose(-1, -2)).sum() - n) / (n * (n - 1))
        kl0 = kl(log_pi(start, sa, sb, _d(fsa), _d(fsb)), lp_target)
        stats = torch.stack([support_value, mean_cos, kl0]).detach()
    delta = functional_call(net, g_params, (stats,))

    def loss(p: Params) -> Tensor:
        gap = kl(log_pi(p, sa, sb, fsa, fsb), lp_target)
        # a smooth hinge: its θ-gradient sigmoid(β(gap − δ))·∇gap depends on δ, so g receives a
        # gradient through the inner steps (a hard relu's would not: its slope is a step)
        hinge = F.softplus(gap - delta, beta=cfg.threshold_sharpness)
        return support_loss(p) + cfg.sigma_weight * hinge

    return loss
