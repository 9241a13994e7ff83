"""A method is backbone + head (+ momentum copy, queue, prototypes, center) + loss.

Methods are written *functionally* so the GeSSL inner loop can adapt a copy of the parameters
without touching the module: every computation takes a ``params`` dict (names as in
``named_parameters()``) and runs the submodules with :func:`torch.func.functional_call`.

* ``features(params, x)`` — backbone output;
* ``loss_from_projections(params, za, zb, targets)`` — the method's loss from the two views'
  projections (what a method implements; ``loss_from_features`` projects then calls it, so
  projector-only adaptation can reuse backbone features and the σ-term can reuse projections);
* ``targets(a, b)`` — inputs that do not depend on the adapted parameters (a momentum encoder's
  outputs), computed once per outer step under ``no_grad``;
* ``embed(params, x)`` — the embedding whose N-way softmax defines the task classifier π (for
  the σ-term and the σ-measurement);
* ``task_critic()`` — the critic of π the method itself trains with (:mod:`gessl.tasks`), or
  ``None``; :func:`resolve_critic` turns a critic name, or ``"method"``, into a critic this
  method's embeddings can use;
* ``update_state(a, b, targets)`` — momentum, queue and center updates, once per outer step and
  never inside the inner loop (``docs/reconstruction.md``).
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor, nn
from torch.func import functional_call

from gessl.losses import LossOutput
from gessl.models import mlp_head
from gessl.tasks import CRITICS, Critic, make_critic

__all__ = [
    "METHODS",
    "Method",
    "available_methods",
    "build_method",
    "pair_mean",
    "register_method",
    "resolve_critic",
]

Params = dict[str, Tensor]
Targets = dict[str, Tensor]


def _sub(params: Params, prefix: str) -> Params:
    n = len(prefix) + 1
    return {k[n:]: v for k, v in params.items() if k.startswith(prefix + ".")}


def pair_mean(out_a: LossOutput, out_b: LossOutput) -> LossOutput:
    """The mean of two loss outputs, term by term (the symmetrised loss of a method)."""
    terms = {k: (out_a.terms[k] + out_b.terms[k]) / 2 for k in out_a.terms}
    return LossOutput((out_a.loss + out_b.loss) / 2, terms)


class Method(nn.Module):
    """Base class: a backbone and a projector; subclasses add a predictor, state and the loss.

    Args:
        backbone: an ``nn.Module`` with an ``out_dim`` attribute.
        proj_dims: projector layer sizes (the last is the embedding dimension).
        **options: the method's own options (loss constants, momentum, queue size, ...);
            unknown options raise ``ValueError``. ``head_activation`` (default ``"relu"``; also
            ``"tanh"``, ``"gelu"``) sets the activation inside projector and predictor.
    """

    name: ClassVar[str] = "base"
    defaults: ClassVar[dict[str, Any]] = {}

    def __init__(
        self, backbone: nn.Module, proj_dims: tuple[int, ...] = (64, 32), **options: Any
    ) -> None:
        super().__init__()
        self.head_activation = options.pop("head_activation", "relu")
        unknown = sorted(set(options) - set(self.defaults))
        if unknown:
            raise ValueError(
                f"{self.name}: unknown option {unknown[0]!r}; valid options: "
                f"{', '.join(sorted(self.defaults)) or 'none'}"
            )
        self.options = {**self.defaults, **options}
        self.backbone = backbone
        self.projector = mlp_head(backbone.out_dim, proj_dims, activation=self.head_activation)
        self.embed_dim = proj_dims[-1]

    # ------------------------------------------------------------------ parameters
    def online_params(self) -> Params:
        """The trainable parameters (the φ of GeSSL), by name."""
        return {k: v for k, v in self.named_parameters() if v.requires_grad}

    def head_names(self) -> list[str]:
        """Names of the parameters adapted with ``adapt="projector"`` (everything but the
        backbone: projector, predictor, prototypes)."""
        return [k for k in self.online_params() if not k.startswith("backbone.")]

    # ------------------------------------------------------------------ functional pieces
    def features(self, params: Params, x: Tensor) -> Tensor:
        return functional_call(self.backbone, _sub(params, "backbone"), (x,))

    def project(self, params: Params, feats: Tensor) -> Tensor:
        return functional_call(self.projector, _sub(params, "projector"), (feats,))

    def embed(self, params: Params, x: Tensor, feats: Tensor | None = None) -> Tensor:
        """Embedding used for the task classifier π (the projection)."""
        return self.project(params, self.features(params, x) if feats is None else feats)

    def loss_from_projections(
        self, params: Params, za: Tensor, zb: Tensor, targets: Targets | None
    ) -> LossOutput:
        """The method's loss from the two views' projections (``project`` outputs)."""
        raise NotImplementedError

    def loss_from_features(
        self, params: Params, fa: Tensor, fb: Tensor, targets: Targets | None
    ) -> LossOutput:
        """The method's loss from the two views' backbone features."""
        return self.loss_from_projections(
            params, self.project(params, fa), self.project(params, fb), targets
        )

    def loss(
        self, params: Params, a: Tensor, b: Tensor, targets: Targets | None = None
    ) -> LossOutput:
        """The method's loss on one batch (one task) of two views."""
        return self.loss_from_features(
            params, self.features(params, a), self.features(params, b), targets
        )

    @torch.no_grad()
    def targets(self, a: Tensor, b: Tensor, batched: bool = False) -> Targets | None:
        """Per-view targets from state (momentum encoders); ``None`` for stateless methods.

        With ``batched``, ``a`` and ``b`` are ``[M, N, ...]`` and each task is processed on its
        own (batch statistics never mix tasks).
        """
        return None

    @torch.no_grad()
    def update_state(self, a: Tensor, b: Tensor, targets: Targets | None) -> None:
        """Once per outer step, after the optimiser step: momentum, queue, center."""

    def state_summary(self) -> dict[str, float]:
        """Scalars describing the non-gradient state, for logging (e.g. the momentum)."""
        return {}

    def task_critic(self) -> Critic | None:
        """The critic of the task classifier π that the method's own loss uses, if it has one
        (SimCLR and MoCo: cosine at their temperature; InfoNCE: its configured critic)."""
        return None


#: the critic choices of every option that takes one: a named critic, or the method's own
CRITIC_CHOICES = (*CRITICS, "method")


def resolve_critic(
    method: Method, critic: str | Critic, temperature: float = 1.0, argument: str = "critic"
) -> Critic:
    """The critic ``critic`` names for ``method``'s embeddings.

    ``critic`` is a name in :data:`gessl.tasks.CRITICS` (with ``temperature``), a
    :class:`~gessl.tasks.Critic`, or ``"method"``: the method's own :meth:`Method.task_critic`.
    Raises ``ValueError`` naming ``argument`` and the allowed values when the name is unknown,
    when the method declares no critic of its own, or when the method's embeddings cannot be used
    with the critic (the two-headed critic needs an even embedding dimension).
    """
    if isinstance(critic, str) and critic not in CRITIC_CHOICES:
        raise ValueError(f"{argument} must be one of {CRITIC_CHOICES}, got {critic!r}")
    if critic == "method":
        own = method.task_critic()
        if own is None:
            raise ValueError(
                f"{argument}='method': method {method.name!r} declares no critic of its own; "
                f"choose one of {CRITICS}"
            )
        resolved = own
    else:
        resolved = make_critic(critic, temperature)
    try:
        resolved.check_dim(method.embed_dim)
    except ValueError as err:
        raise ValueError(f"{argument}: method {method.name!r} cannot use it: {err}") from None
    return resolved


METHODS: dict[str, type[Method]] = {}


def register_method(cls: type[Method]) -> type[Method]:
    """Class decorator adding ``cls`` to :data:`METHODS` under ``cls.name``."""
    if cls.name in METHODS:
        raise ValueError(f"method {cls.name!r} is registered twice")
    METHODS[cls.name] = cls
    return cls


def available_methods() -> list[str]:
    return sorted(METHODS)


def build_method(
    name: str, backbone: nn.Module, proj_dims: tuple[int, ...] = (64, 32), **options: Any
) -> Method:
    """Instantiate the registered method ``name`` on ``backbone``."""
    try:
        cls = METHODS[name]
    except KeyError:
        raise ValueError(
            f"unknown method {name!r}; available: {', '.join(available_methods())}"
        ) from None
    return cls(backbone, proj_dims, **options)
