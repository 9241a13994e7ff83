"""The inner SGD step of task-specific adaptation, written once for both backends.

A task-specific model starts from the shared parameters φ and takes K steps
``θ ← θ − α ∇ℓ(θ)`` on the task's support views (MAML's inner loop, Finn et al. 2017, arXiv
1703.03400). :class:`Adapter` holds where its parameters live:

* **dense** — the moving parameters are per-task tensors (``state["dense"]``); the step is the
  gradient of ``−α·ℓ`` with respect to them, added to them;
* **factored** — the linear weights named by a :class:`~gessl.adapt.linear.FactoredPlan` stay
  the shared W and the step records its low-rank update (``state["X"]``, ``state["G"]``: the
  layers' inputs and ``−α`` times their output gradients, :mod:`gessl.adapt.linear`); every
  other moving parameter is dense, as above.

The two are one step: the gradient of ``−α·ℓ`` with respect to the dense parameters and (when
weights are factored) to zero probes on the factored layers' outputs. With nothing factored the
probes and the function mode are skipped, which *is* the dense backend. :meth:`Adapter.sgd` is
the loop every adaptation in the library runs: GeSSL's K inner steps and λ look-ahead steps
(:mod:`gessl.adapt.objective`), test-time adaptation and the evaluation's task models
(:mod:`gessl.adapt.evaluate`), the reachable floors (:mod:`theory.floors`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import Tensor
from torch.func import grad

from gessl.adapt.linear import Entry, FactoredPlan, Linears, NotFactorableError

__all__ = ["Adapter", "State", "detach_params", "detach_state"]

Params = dict[str, Tensor]
#: a task-specific model: its dense moving parameters, and per factored weight the pieces of its
#: update (one per call of the layer in each step)
State = dict[str, Any]
LossOf = Callable[[Params], Tensor]


def detach_params(p: Params) -> Params:
    return {k: v.detach() for k, v in p.items()}


def detach_state(s: State) -> State:
    return {
        "dense": detach_params(s["dense"]),
        "X": {k: tuple(t.detach() for t in v) for k, v in s["X"].items()},
        "G": {k: tuple(t.detach() for t in v) for k, v in s["G"].items()},
    }


class Adapter:
    """Parameters of a task-specific model and the SGD step that moves them.

    Args:
        fixed: parameters that do not move (shared by the task's model and φ).
        weights: linear weights kept in factored form (the live shared W; registered by
            identity, so pass the tensors the loss will see); empty: the dense backend.
        plan: the :class:`FactoredPlan` whose dry runs :meth:`step` reads (needed with
            ``weights``).
        key: the shape signature of the task (one dry run per key and loss).
    """

    def __init__(
        self,
        fixed: Params,
        weights: Params | None = None,
        plan: FactoredPlan | None = None,
        key: Any = None,
    ) -> None:
        self.fixed, self.weights = fixed, dict(weights or {})
        if self.weights and plan is None:
            raise ValueError("factored weights need the FactoredPlan that holds their dry runs")
        self.plan, self.key = plan, key

    @property
    def backend(self) -> str:
        """``"factored"`` when weights are factored, else ``"dense"``."""
        return "factored" if self.weights else "dense"

    @staticmethod
    def start(moving: Params) -> State:
        """The state of the task's model before any step: ``moving`` are its dense parameters."""
        return {"dense": dict(moving), "X": {}, "G": {}}

    def params(self, state: State) -> Params:
        """Every parameter of the task's model by name (factored weights: W itself; the
        update enters through :meth:`call`)."""
        return {**self.fixed, **self.weights, **state["dense"]}

    def _layers(self, state: State) -> dict[int, Entry]:
        return {
            id(w): (n, state["X"].get(n, ()), state["G"].get(n, ()))
            for n, w in self.weights.items()
        }

    def call(self, state: State, fn: Callable[[Params], Any]) -> Any:
        """``fn(params)`` evaluated at the task's model (``x θᵀ`` of a factored layer is
        ``x Wᵀ`` plus its update)."""
        if not self.weights:
            return fn(self.params(state))
        with Linears(self._layers(state)):
            return fn(self.params(state))

    @staticmethod
    def merged(state: State) -> State:
        """``state`` with each layer's pieces stacked into one (a model used several times:
        one product with R rows beats several with fewer)."""

        def one(pieces: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
            return pieces if len(pieces) < 2 else (torch.cat(pieces),)

        return {
            "dense": state["dense"],
            "X": {k: one(v) for k, v in state["X"].items()},
            "G": {k: one(v) for k, v in state["G"].items()},
        }

    # ------------------------------------------------------------------ the step
    def step(
        self, state: State, loss_of: LossOf, lr: float, detach: bool, name: str = "support"
    ) -> tuple[State, Tensor]:
        """One SGD step of ``loss_of`` (a function of the parameters by name) from ``state``;
        also the loss before the step. ``detach`` drops the step's graph (first order,
        look-ahead); otherwise the new state is differentiable in the old one (second order).
        ``name`` labels the loss for the factored backend's dry run."""
        dense = state["dense"]
        if not self.weights:
            if not dense:  # nothing moves
                return state, loss_of(self.params(state)).detach()

            def scaled(d: Params) -> tuple[Tensor, Tensor]:
                loss = loss_of({**self.fixed, **d})
                return loss * -lr, loss.detach()  # −α·ℓ: its gradient is the update itself

            upd, value = grad(scaled, has_aux=True)(dense)
            new = {k: dense[k] + upd[k] for k in dense}
            new = detach_params(new) if detach else new
            return {"dense": new, "X": state["X"], "G": state["G"]}, value
        return self._factored_step(state, loss_of, lr, detach, name)

    def _factored_step(
        self, state: State, loss_of: LossOf, lr: float, detach: bool, name: str
    ) -> tuple[State, Tensor]:
        layers = self._layers(state)
        assert self.plan is not None
        expected = self.plan.calls((self.key, name), layers, lambda: loss_of(self.params(state)))
        device = next(iter(self.weights.values())).device
        probes = [torch.zeros(s, dtype=d, device=device) for _, s, d in expected]

        def scaled(dense: Params, probes: list[Tensor]) -> tuple[Tensor, Any]:
            mode = Linears(layers, probes, expected)
            with mode:
                loss = loss_of({**self.fixed, **self.weights, **dense})
            if len(mode.calls) != len(expected):
                raise NotFactorableError("the factored layers' calls differ from the dry run's")
            return loss * -lr, (loss.detach(), mode.inputs)

        (upd, out_grads), (value, inputs) = grad(scaled, argnums=(0, 1), has_aux=True)(
            state["dense"], probes
        )
        xs, gs = dict(state["X"]), dict(state["G"])
        for (layer, _, _), x, g in zip(expected, inputs, out_grads):  # one piece per call
            x, g = x.reshape(-1, x.shape[-1]), g.reshape(-1, g.shape[-1])
            if detach:
                x, g = x.detach(), g.detach()
            xs[layer], gs[layer] = (*xs.get(layer, ()), x), (*gs.get(layer, ()), g)
        dense = {k: v + upd[k] for k, v in state["dense"].items()}
        return {"X": xs, "G": gs, "dense": detach_params(dense) if detach else dense}, value

    # ------------------------------------------------------------------ the loop
    def iterate(
        self, state: State, steps: int, loss_of: LossOf, lr: float, detach: bool
    ) -> Iterator[tuple[State, Tensor]]:
        """The states after each of ``steps`` SGD steps, with the loss before each step."""
        for _ in range(steps):
            state, value = self.step(state, loss_of, lr, detach)
            yield state, value

    def sgd(
        self, state: State, steps: int, loss_of: LossOf, lr: float, detach: bool
    ) -> tuple[State, Tensor | None]:
        """``steps`` SGD steps from ``state``; also the loss at the start (``None`` without a
        step)."""
        first = None
        for i in range(steps):
            state, value = self.step(state, loss_of, lr, detach)
            if i == 0:
                first = value
        return state, first
