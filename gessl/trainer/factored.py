"""Factored linear layers: the fast path of GeSSL's outer step with all parameters adapted.

With ``adapt="all"`` every task has its own weights after the inner steps, so on the reference
path each dense layer becomes M per-task products, and per-task weight gradients
``[M, out, in]`` are materialised, updated and summed. For a linear layer ``y = x Wᵀ + b`` an
SGD step only adds a low-rank matrix: ``∇_W ℓ = Σ_r g_rᵀ x_r`` over the rows r of every call of
the layer (``x_r`` its input, ``g_r = ∂ℓ/∂y_r``), so after the steps ``s = 1..K``::

    θ_K = W − α Σ_s G_sᵀ X_s        and on new inputs x:   x θ_Kᵀ = x Wᵀ − α (x X_sᵀ) G_s

(``X_s``, ``G_s``: the rows of step s; the inner steps are MAML's, Finn et al. 2017, arXiv
1703.03400; writing a linear layer's weight gradient from its inputs and output gradients is
what per-example-gradient methods do, Goodfellow 2015, arXiv 1510.01799). The product ``x Wᵀ``
is shared by every task (one matrix product over all M·N rows), the task-local products are
``rows × R``-sized, and no per-task weight is formed. The inner steps need ``G_s`` only: they
differentiate ``−α·ℓ`` with respect to zero *probes* added to the layers' outputs
(``∂(−αℓ)/∂probe = −αG``), never with respect to W, so they compute no weight gradient.
FOMAML's gradient for φ (Nichol et al. 2018, arXiv 1803.02999) is
``Σ_m ∇_θ L_m(θ_m) = ∇_W Σ_m L_m(W + Δ_m)`` with the update ``Δ_m`` held constant: the gradient
of the task sum with respect to the *shared* W, one accumulated product. Second order keeps
``X_s`` and ``G_s`` differentiable, so the same form gives the exact hypergradient (the backward
through ``G_s`` is the Hessian-vector product); it is taken per task (``vmap(grad(·))``, as on the
reference path): in torch 2.13 the gradient of the task sum through nested ``grad`` inside
``vmap`` is wrong for batch normalisation with adapted affine parameters (checked against a
loop over tasks), per-task gradients are right.

A layer is factored only where that is cheaper (:data:`_WORTH`): ``out·in ≥ 3·rows·(in + out)``
with ``rows`` the rows it sees in one inner step — for the benchmark's MLP (N = 32) the 512×512
backbone layers, not the 64→512 input layer or the heads. The others, biases, normalisation
parameters, convolution weights and any other parameter stay dense per task, as on the
reference path. Where the backbone treats every sample on its own (no batch statistics:
:func:`_views_batchable`), the two views of a pair go through it in one call of 2N rows
(the projector still sees each view alone: its batch normalisation is per view), which halves
the number of backbone calls and makes each update piece one block of rows.

Weights are recognised by identity: inside the loss the parameter tensors handed to
``functional_call`` reach ``F.linear`` unchanged, and a :class:`torch.overrides.TorchFunctionMode`
routes those calls through the factored form; ``torch.func.grad`` and ``vmap`` compose with it.

Where it applies (:func:`build_factored_path`): GeSSL with ``adapt="all"``, no threshold
network, either order, either batching. Anything else — and a model that uses a factored weight
other than as ``F.linear``'s weight (weight normalisation, tied weights, …), detected on the
first step — falls back to the reference path
(:func:`gessl.trainer.objective.build_first_order_split`,
:func:`gessl.trainer.objective.build_objective`), which gives the same gradients up to float
rounding (``tests/gessl/trainer/test_fast_paths.py``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import grad
from torch.overrides import TorchFunctionMode

from gessl.methods.base import Method, Params
from gessl.models import MLP, Flatten, ResNet18, SmallCNN, _BasicBlock
from gessl.trainer.config import GeSSLConfig
from gessl.trainer.objective import _Pieces

__all__ = ["FactoredPath", "NotFactorableError", "build_factored_path"]

Task = dict[str, Tensor]
#: a task's adapted state: per factored layer the pieces (one per call of the layer in each
#: step) of its inputs ``X[name]`` and scaled output gradients ``G[name]``, and the dense
#: parameters
State = dict[str, dict[str, Any]]
#: a registered weight's name and its update's pieces ``(X_p)``, ``(G̃_p)``: θ = W + Σ_p G̃_pᵀ X_p
_Entry = tuple[str, tuple[Tensor, ...], tuple[Tensor, ...]]


#: a layer is factored when its weight has at least this many times the entries of one step's
#: low-rank factors (``out·in ≥ 3·rows·(in + out)``): each use of the update costs
#: ``rows·(in + out)`` per row instead of ``out·in``, and a first-order step uses it about six
#: times (look-ahead and outer passes, forward and backward, and the σ-target), where a dense
#: per-task weight costs about two more weight gradients (one per inner step)
_WORTH = 3


class NotFactorableError(RuntimeError):
    """A factored weight was used other than as ``F.linear``'s weight (the caller falls back)."""


class _Linears(TorchFunctionMode):
    """Routes ``F.linear`` calls whose weight is registered (by identity) through
    ``x Wᵀ + b + (x Xᵀ) G``; optionally adds the next probe to the output, records the input,
    or records the output's shape and dtype (a dry run). Any other use of a registered weight
    raises :class:`NotFactorableError`."""

    def __init__(
        self,
        layers: dict[int, _Entry],
        probes: list[Tensor] | None = None,
        expected: list[tuple[str, torch.Size, torch.dtype]] | None = None,
    ) -> None:
        super().__init__()
        self.layers, self.probes, self.expected = layers, probes, expected
        self.inputs: list[Tensor] = []
        self.calls: list[tuple[str, torch.Size, torch.dtype]] = []

    def __torch_function__(
        self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None
    ) -> Any:
        kwargs = kwargs or {}
        if func is F.linear:
            x, w, b = _linear_args(args, kwargs)
            entry = self.layers.get(id(w))
            if entry is not None and not _touches((x, b), {}, self.layers):
                return self._linear(entry, x, w, b)
        if self.layers and func not in _METADATA and _touches(args, kwargs, self.layers):
            raise NotFactorableError(f"a factored weight reaches {func!r}, not F.linear")
        return func(*args, **kwargs)

    def _linear(self, entry: _Entry, x: Tensor, w: Tensor, b: Tensor | None) -> Tensor:
        name, xs, gs = entry
        y = F.linear(x, w, b)
        for xp, gp in zip(xs, gs):
            y = y + (x @ xp.mT) @ gp
        i = len(self.calls)
        self.calls.append((name, y.shape, y.dtype))
        if self.probes is not None:
            if (
                self.expected is None
                or i >= len(self.expected)
                or self.expected[i][:2] != self.calls[i][:2]
            ):
                raise NotFactorableError("the factored layers' calls differ from the dry run's")
            self.inputs.append(x)
            # under autocast the dry run can see another dtype than the step (torch 2.13's vmap
            # does not always autocast a linear layer with a bias): the probe follows y
            y = y.add_(self.probes[i].to(y.dtype))  # in place: y is a fresh output
        return y


#: what may read a factored weight without using its value (shape, dtype, …)
_METADATA = {
    Tensor.shape.__get__,
    Tensor.dtype.__get__,
    Tensor.device.__get__,
    Tensor.requires_grad.__get__,
    Tensor.ndim.__get__,
    Tensor.size,
    Tensor.dim,
    Tensor.numel,
}


def _linear_args(args: tuple, kwargs: dict) -> tuple[Any, Any, Any]:
    names = ("input", "weight", "bias")
    full = dict(zip(names, args))
    full.update(kwargs)
    return full.get("input"), full.get("weight"), full.get("bias")


def _touches(args: tuple, kwargs: dict, layers: dict[int, Any]) -> bool:
    """Whether a registered weight is among the arguments (or in a list/tuple argument: the
    deepest a torch function takes tensors)."""
    for a in (*args, *kwargs.values()):
        if isinstance(a, (list, tuple)):
            if any(id(t) in layers for t in a):
                return True
        elif id(a) in layers:
            return True
    return False


def _detach(p: Params) -> Params:
    return {k: v.detach() for k, v in p.items()}


def _empty_state(dense: Params) -> State:
    return {"X": {}, "G": {}, "dense": dense}


def _merged(s: State) -> State:
    """``s`` with each layer's pieces stacked into one (θ_K's update is used several times:
    one product with R rows beats several with fewer)."""

    def one(pieces: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
        return pieces if len(pieces) < 2 else (torch.cat(pieces),)

    return {
        "X": {k: one(v) for k, v in s["X"].items()},
        "G": {k: one(v) for k, v in s["G"].items()},
        "dense": s["dense"],
    }


def _detach_state(s: State) -> State:
    return {
        "X": {k: tuple(t.detach() for t in v) for k, v in s["X"].items()},
        "G": {k: tuple(t.detach() for t in v) for k, v in s["G"].items()},
        "dense": _detach(s["dense"]),
    }


class FactoredPath:
    """The per-task pieces of the factored path and :meth:`gradients`, which runs them with the
    trainer's batching (``torch.func.vmap`` or a loop). Build it with
    :func:`build_factored_path`.

    Args:
        method: the method (its parameters are φ).
        cfg: the options (``adapt="all"``, ``threshold="none"``).
        candidates: names of the weights that may be factored (``nn.Linear`` weights);
            :meth:`factored_names` picks those worth it.
    """

    def __init__(self, method: Method, cfg: GeSSLConfig, candidates: list[str]) -> None:
        self.method, self.cfg, self.candidates = method, cfg, list(candidates)
        self.pc = _Pieces(method, cfg)
        self.joint = _views_batchable(method)
        self.enabled = True
        self._calls: dict[tuple, list[tuple[str, torch.Size, torch.dtype]]] = {}
        self._plans: dict[tuple, list[str]] = {}
        self.worth = _WORTH  # 0 factors every candidate (tests)

    def _with_pairs(self, task: Task) -> Task:
        """``task`` (``[M, N, ...]`` views) with ``s_ab``/``q_ab``, each pair's views stacked
        along the samples, where both views go through the backbone in one call."""
        if not self.joint or "s_ab" in task:
            return task
        return {
            **task,
            "s_ab": torch.cat([task["sa"], task["sb"]], dim=1),
            "q_ab": torch.cat([task["qa"], task["qb"]], dim=1),
        }

    def factored_names(self, task: Task, targets: dict[str, Tensor]) -> list[str]:
        """The candidate weights worth factoring for tasks shaped like ``task`` (``[M, ...]``):
        ``out·in ≥ 3·rows·(in + out)`` (:data:`_WORTH`), with ``rows`` the rows the layer sees
        in one inner step (found by a forward of one task without gradients, once per shape).
        The others stay dense per task, like biases."""
        key = tuple(
            (k, tuple(v.shape[1:]), v.dtype) for k, v in sorted({**task, **targets}.items())
        )
        if key not in self._plans:
            task = self._with_pairs(task)
            phi = {k: v.detach() for k, v in self.method.online_params().items()}
            weights = {k: phi[k] for k in self.candidates}
            one = {k: v[0] for k, v in task.items()}
            mode = _Linears({id(w): (n, (), ()) for n, w in weights.items()})
            with torch.no_grad(), mode:
                self._support(one, {k: v[0] for k, v in targets.items()})(phi)
            rows: dict[str, int] = {}
            for name, shape, _ in mode.calls:
                rows[name] = rows.get(name, 0) + shape[:-1].numel()
            self._plans[key] = [
                n
                for n in self.candidates
                if n in rows
                and weights[n].shape.numel() >= self.worth * rows[n] * sum(weights[n].shape)
            ]
        return self._plans[key]

    # ------------------------------------------------------------------ inner SGD, factored
    def _layers(self, weights: Params, state: State) -> dict[int, _Entry]:
        return {
            id(w): (n, state["X"].get(n, ()), state["G"].get(n, ())) for n, w in weights.items()
        }

    def _sgd(
        self,
        weights: Params,
        state: State,
        steps: int,
        loss_of: Callable[[Params], Tensor],
        key: tuple,
        detach: bool,
    ) -> tuple[State, Tensor | None]:
        """``steps`` SGD steps of ``loss_of`` from ``state``; also the loss at the start
        (``None`` without a step). ``detach`` drops the steps' graph (first order, look-ahead)."""
        first = None
        lr = self.cfg.inner_lr
        for i in range(steps):
            layers = self._layers(weights, state)
            expected = self._dry_run(key, weights, state, loss_of)
            probes = [torch.zeros(s, dtype=d, device=_device(weights)) for _, s, d in expected]
            names = [n for n, _, _ in expected]

            def probed(dense: Params, probes: list[Tensor], layers=layers, expected=expected):
                mode = _Linears(layers, probes, expected)
                with mode:
                    loss = loss_of({**weights, **dense})
                if len(mode.calls) != len(expected):
                    raise NotFactorableError("the factored layers' calls differ from the dry run's")
                # −α·ℓ: its gradients are the SGD updates themselves (no scaling afterwards)
                return loss * -lr, (loss.detach(), mode.inputs)

            (step_dense, step_out), (value, inputs) = grad(probed, argnums=(0, 1), has_aux=True)(
                state["dense"], probes
            )
            if i == 0:
                first = value
            xs, gs = dict(state["X"]), dict(state["G"])
            for name, x, g in zip(names, inputs, step_out):  # one piece per call of the layer
                x, g = x.reshape(-1, x.shape[-1]), g.reshape(-1, g.shape[-1])
                if detach:
                    x, g = x.detach(), g.detach()
                xs[name], gs[name] = (*xs.get(name, ()), x), (*gs.get(name, ()), g)
            dense = {k: v + step_dense[k] for k, v in state["dense"].items()}
            state = {"X": xs, "G": gs, "dense": _detach(dense) if detach else dense}
        return state, first

    def _dry_run(
        self, key: tuple, weights: Params, state: State, loss_of: Callable[[Params], Tensor]
    ) -> list[tuple[str, torch.Size, torch.dtype]]:
        """Name, output shape and dtype of each factored layer call of ``loss_of``, in call
        order (one forward without gradients per new ``key``: view shapes and dtype)."""
        if key not in self._calls:
            mode = _Linears(self._layers(weights, state))
            with torch.no_grad(), mode:
                loss_of({**weights, **state["dense"]})
            self._calls[key] = mode.calls
        return self._calls[key]

    # ------------------------------------------------------------------ per-task pieces
    def _support(self, task: Task, targets: dict[str, Tensor]) -> Callable[[Params], Tensor]:
        ts = self.pc.targets_of(targets, "s")
        method = self.method
        if not self.joint:
            return lambda p: method.loss(p, task["sa"], task["sb"], ts).loss
        n = task["sa"].shape[0]

        def loss_of(p: Params) -> Tensor:
            fa, fb = method.features(p, task["s_ab"]).split(n)
            return method.loss_from_features(p, fa, fb, ts).loss

        return loss_of

    @staticmethod
    def _key(task: Task, targets: dict[str, Tensor]) -> tuple:
        return tuple(
            (k, tuple(v.shape), v.dtype, v.device.type)
            for k, v in sorted({**task, **targets}.items())
        )

    def inner(
        self, weights: Params, dense: Params, task: Task, targets: dict[str, Tensor]
    ) -> tuple[dict[str, State], Tensor]:
        """First order: the K inner steps and the λ look-ahead steps from φ (no graph); returns
        ``{"theta": state, "look": state}`` and ℓ(φ; support)."""
        cfg, key = self.cfg, self._key(task, targets)
        loss_of = self._support(task, targets)
        theta, first = self._sgd(
            weights, _empty_state(_detach(dense)), cfg.inner_steps, loss_of, key, True
        )
        theta = _merged(theta)
        support = first if first is not None else loss_of({**weights, **dense}).detach()
        look = theta
        if cfg.sigma_weight > 0:
            look, _ = self._sgd(weights, theta, cfg.lookahead_steps, loss_of, key, True)
        return {"theta": theta, "look": look}, support

    def outer(
        self,
        weights: Params,
        theta_dense: Params,
        task: Task,
        targets: dict[str, Tensor],
        states: dict[str, State],
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """First order: the outer objective at θ_K = W + (the inner steps' update, constant);
        differentiated with respect to ``weights`` (shared) and ``theta_dense`` (per task)."""
        theta = {**states["theta"], "dense": theta_dense}
        return self._outer(weights, theta, task, targets, states["look"])

    def objective(
        self, weights: Params, dense: Params, task: Task, targets: dict[str, Tensor]
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """Second order: the nested objective with the graph kept through the K inner steps;
        differentiated with respect to ``weights`` and ``dense`` (both shared)."""
        cfg, key = self.cfg, self._key(task, targets)
        loss_of = self._support(task, targets)
        theta, first = self._sgd(weights, _empty_state(dense), cfg.inner_steps, loss_of, key, False)
        theta = _merged(theta)
        support = (first if first is not None else loss_of({**weights, **dense})).detach()
        look = None
        if cfg.sigma_weight > 0:
            start = _detach_state(theta)
            look, _ = self._sgd(_detach(weights), start, cfg.lookahead_steps, loss_of, key, True)
        loss, aux = self._outer(weights, theta, task, targets, look)
        return loss, {**aux, "support_loss": support}

    def _nested_objective(self, *args: Any) -> tuple[Tensor, dict[str, Tensor]]:
        return self.objective(*args)

    _nested_objective.nested = True  # type: ignore[attr-defined]  # per-task gradients

    def _outer(
        self,
        weights: Params,
        theta: State,
        task: Task,
        targets: dict[str, Tensor],
        look: State | None,
    ) -> tuple[Tensor, dict[str, Tensor]]:
        layers = self._layers(weights, theta)
        target = None
        if self.cfg.sigma_weight > 0 and look is not None:
            frozen = _detach(weights)  # distinct objects: registered with the look-ahead's rows
            layers.update(self._layers(frozen, _detach_state(look)))
            target = {**frozen, **_detach(look["dense"])}
        full = {**weights, **theta["dense"]}
        feats: tuple[Tensor | None, Tensor | None] = (None, None)
        target_feats: tuple[Tensor | None, Tensor | None] = (None, None)
        with _Linears(layers):
            if self.joint:
                n = task["qa"].shape[0]
                feats = tuple(self.method.features(full, task["q_ab"]).split(n))
                if target is not None:
                    with torch.no_grad():
                        target_feats = tuple(self.method.features(target, task["q_ab"]).split(n))
            loss, query, kl_term = self.pc.outer_to(
                full, task, self.pc.targets_of(targets, "q"), target, feats, target_feats
            )
        return loss, {"ssl": query.detach(), "kl": kl_term.detach(), "loss": loss.detach()}

    # ------------------------------------------------------------------ one outer step
    def gradients(
        self,
        per_task: Callable[..., Any],
        summed_grad: Callable[..., Any],
        phi_adapt: Params,
        task: Task,
        targets: dict[str, Tensor],
    ) -> tuple[dict[str, Tensor], dict[str, Tensor]] | None:
        """Gradients of the sum of the task objectives and the per-task aux values, with the
        trainer's ``_per_task`` and ``_summed_grad`` (its batching); ``None`` if the model turns
        out not to be factorable (the path is then disabled: the caller uses the reference)."""
        if not self.enabled:
            return None
        task = self._with_pairs(task)
        try:
            weights = {k: phi_adapt[k] for k in self.factored_names(task, targets)}
            dense = {k: v for k, v in phi_adapt.items() if k not in weights}
            if self.cfg.order == "first":
                states, support = per_task(
                    self.inner, (None, None, 0, 0), weights, dense, task, targets
                )
                (gw, gd), aux = summed_grad(
                    self.outer,
                    2,
                    (None, 0, 0, 0, 0),
                    weights,
                    states["theta"]["dense"],
                    task,
                    targets,
                    states,
                )
                aux = {**aux, "support_loss": support.detach()}
            else:
                (gw, gd), aux = summed_grad(
                    self._nested_objective, 2, (None, None, 0, 0), weights, dense, task, targets
                )
        except NotFactorableError:
            self.enabled = False
            return None
        return {**gw, **gd}, aux


def _device(p: Params) -> torch.device:
    return next(iter(p.values())).device


#: modules that treat every sample (row) on its own: a backbone built only from these computes
#: the same features for two views in one call as in two
_ROWWISE = (
    nn.Linear,
    nn.Conv1d,
    nn.Conv2d,
    nn.Conv3d,
    nn.GroupNorm,
    nn.LayerNorm,
    nn.ReLU,
    nn.Tanh,
    nn.GELU,
    nn.SiLU,
    nn.Sigmoid,
    nn.Identity,
    nn.MaxPool2d,
    nn.AvgPool2d,
    nn.AdaptiveAvgPool2d,
    nn.Flatten,
    Flatten,
)
#: containers whose forward only composes their children
_CONTAINERS = (nn.Sequential, MLP, SmallCNN, ResNet18, _BasicBlock)


def _views_batchable(method: Method) -> bool:
    """Whether the two views of a pair can go through the backbone in one call: the method
    uses the base class's ``loss``/``features``/``embed`` and its backbone is built from
    :data:`_ROWWISE` modules in :data:`_CONTAINERS` (no batch statistics)."""
    base = Method
    if any(
        getattr(type(method), name) is not getattr(base, name)
        for name in ("loss", "features", "embed", "loss_from_features")
    ):
        return False
    for module in method.backbone.modules():
        leaf = next(module.children(), None) is None
        # exact types: a subclass may change forward
        if type(module) not in (_ROWWISE if leaf else _CONTAINERS):
            return False
    return True


def _factored_linears(method: Method, names: list[str]) -> list[str]:
    """Weights of the method's ``nn.Linear`` modules (with ``nn.Linear``'s own forward) among
    ``names``."""
    found = []
    for prefix, module in method.named_modules():
        if type(module).forward is nn.Linear.forward and isinstance(module, nn.Linear):
            name = f"{prefix}.weight" if prefix else "weight"
            if name in names:
                found.append(name)
    return found


def build_factored_path(
    method: Method, cfg: GeSSLConfig, adapt_names: list[str]
) -> FactoredPath | None:
    """The factored path for ``method`` under ``cfg``, or ``None`` where it does not apply
    (plain mode, ``adapt="projector"``, a threshold network, or neither a linear layer to
    factor nor a backbone whose two views can share a call): the trainer then uses the
    reference path."""
    if cfg.mode != "gessl" or cfg.adapt != "all" or cfg.threshold != "none":
        return None
    linears = _factored_linears(method, adapt_names)
    return FactoredPath(method, cfg, linears) if linears or _views_batchable(method) else None
