"""Linear layers in factored form: the low-rank backend of the inner SGD step.

For a linear layer ``y = x Wᵀ + b`` an SGD step only adds a low-rank matrix:
``∇_W ℓ = Σ_r g_rᵀ x_r`` over the rows r of every call of the layer (``x_r`` its input,
``g_r = ∂ℓ/∂y_r``), so after the steps ``s = 1..K``::

    θ_K = W − α Σ_s G_sᵀ X_s        and on new inputs x:   x θ_Kᵀ = x Wᵀ − α (x X_sᵀ) G_s

(the inner steps are MAML's, Finn et al. 2017, arXiv 1703.03400; writing a linear layer's weight
gradient from its inputs and output gradients is what per-example-gradient methods do,
Goodfellow 2015, arXiv 1510.01799). The product ``x Wᵀ`` is shared by every task, the
task-local products are ``rows × R``-sized, and no per-task weight is formed. A step needs
``G_s`` only: it differentiates ``−α·ℓ`` with respect to zero *probes* added to the layers'
outputs (``∂(−αℓ)/∂probe = −αG``), never with respect to W.

This module holds the pieces: :class:`Linears`, a :class:`torch.overrides.TorchFunctionMode`
that routes ``F.linear`` calls whose weight is registered (by identity) through the factored
form; :class:`FactoredPlan`, which decides which weights are worth factoring and remembers the
calls of each loss (a dry run per shape); and :func:`views_batchable`, which tells whether both
views of a pair may share one backbone call. :mod:`gessl.adapt.sgd` runs the step itself.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

from gessl.methods.base import Method

__all__ = [
    "WORTH",
    "FactoredPlan",
    "Linears",
    "NotFactorableError",
    "linear_weights",
    "views_batchable",
]

Params = dict[str, Tensor]
#: a registered weight's name and its update's pieces ``(X_p)``, ``(G̃_p)``: θ = W + Σ_p G̃_pᵀ X_p
Entry = tuple[str, tuple[Tensor, ...], tuple[Tensor, ...]]
#: the name, output shape and dtype of each factored layer call of a loss, in call order
Calls = list[tuple[str, torch.Size, torch.dtype]]

#: a layer is factored when its weight has at least this many times the entries of one step's
#: low-rank factors (``out·in ≥ 3·rows·(in + out)``): each use of the update costs
#: ``rows·(in + out)`` per row instead of ``out·in``, and a first-order step uses it about six
#: times (look-ahead and outer passes, forward and backward, and the σ-target), where a dense
#: per-task weight costs about two more weight gradients (one per inner step)
WORTH = 3


class NotFactorableError(RuntimeError):
    """A factored weight was used other than as ``F.linear``'s weight (the caller falls back)."""


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
    full = dict(zip(("input", "weight", "bias"), args))
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


class Linears(TorchFunctionMode):
    """Routes ``F.linear`` calls whose weight is registered (by identity) through
    ``x Wᵀ + b + Σ_p (x X_pᵀ) G̃_p``; with ``probes`` adds the next probe to each output and
    records the inputs (a step); it always records each call's name, shape and dtype (a dry
    run needs nothing else). Any other use of a registered weight raises
    :class:`NotFactorableError`."""

    def __init__(
        self,
        layers: dict[int, Entry],
        probes: list[Tensor] | None = None,
        expected: Calls | None = None,
    ) -> None:
        super().__init__()
        self.layers, self.probes, self.expected = layers, probes, expected
        self.inputs: list[Tensor] = []
        self.calls: Calls = []

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

    def _linear(self, entry: Entry, x: Tensor, w: Tensor, b: Tensor | None) -> Tensor:
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


class FactoredPlan:
    """Which linear weights a method's inner steps factor, and the calls each loss makes.

    Args:
        candidates: names of the weights that may be factored (:func:`linear_weights`).
        worth: the factor of :data:`WORTH` (0 factors every candidate that a loss uses).

    :meth:`names` picks, for tasks of one shape, the candidates with
    ``out·in ≥ worth·rows·(in + out)`` (``rows``: the rows the layer sees in one inner step,
    counted by one forward of one task without gradients); :meth:`calls` remembers the calls of
    a loss per key (a dry run per view shape). ``enabled`` turns off after a
    :class:`NotFactorableError`, with the reason in ``fallback``.
    """

    def __init__(self, candidates: list[str], worth: float = WORTH) -> None:
        self.candidates, self.worth = list(candidates), worth
        self.enabled = True
        self.fallback: str | None = None
        self._names: dict[Any, list[str]] = {}
        self._calls: dict[Any, Calls] = {}

    def disable(self, reason: str) -> None:
        self.enabled, self.fallback = False, reason

    def names(self, key: Any, weights: Params, run_one_task: Callable[[], Any]) -> list[str]:
        """The candidates worth factoring for ``key`` (a shape signature); ``run_one_task()``
        runs the support loss of one task (a recording mode is active, gradients are off)."""
        if key not in self._names:
            mode = Linears({id(weights[n]): (n, (), ()) for n in self.candidates})
            with torch.no_grad(), mode:
                run_one_task()
            rows: dict[str, int] = {}
            for name, shape, _ in mode.calls:
                rows[name] = rows.get(name, 0) + shape[:-1].numel()
            self._names[key] = [
                n
                for n in self.candidates
                if n in rows and weights[n].numel() >= self.worth * rows[n] * sum(weights[n].shape)
            ]
        return self._names[key]

    def calls(self, key: Any, layers: dict[int, Entry], run: Callable[[], Any]) -> Calls:
        """The calls of the loss that ``run()`` evaluates, for ``key`` (one dry run per key)."""
        if key not in self._calls:
            mode = Linears(layers)
            with torch.no_grad(), mode:
                run()
            self._calls[key] = mode.calls
        return self._calls[key]


#: leaf modules (of torch) that treat every sample (row) on its own
_ROWWISE_LEAVES = (
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
)


def _rowwise(module: nn.Module) -> bool:
    cls = type(module)
    if cls in _ROWWISE_LEAVES or cls is nn.Sequential:  # exact types: a subclass may differ
        return True
    return bool(cls.__dict__.get("rowwise", False))  # declared by the class itself


def views_batchable(method: Method) -> bool:
    """Whether the two views of a pair can go through the backbone in one call: the method
    uses the base class's ``loss``/``features``/``embed``/``loss_from_features`` and every
    module of its backbone treats rows on its own (torch's row-wise layers, ``nn.Sequential``,
    or a class declaring ``rowwise = True``, :mod:`gessl.models`): no batch statistics."""
    if any(
        getattr(type(method), name) is not getattr(Method, name)
        for name in ("loss", "features", "embed", "loss_from_features")
    ):
        return False
    return all(_rowwise(m) for m in method.backbone.modules())


def linear_weights(method: nn.Module, names: list[str]) -> list[str]:
    """Weights of the module's ``nn.Linear`` layers (with ``nn.Linear``'s own forward) among
    ``names``: the candidates of a :class:`FactoredPlan`."""
    found = []
    for prefix, module in method.named_modules():
        if type(module).forward is nn.Linear.forward and isinstance(module, nn.Linear):
            name = f"{prefix}.weight" if prefix else "weight"
            if name in names:
                found.append(name)
    return found
