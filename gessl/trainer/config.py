"""Every GeSSL option, named, documented and validated in one place.

The algorithm is our **reconstruction** of GeSSL (arXiv 2405.01053, v4, with the v5 threshold
network as an option; every gap and the option that names it: ``docs/reconstruction.md``). Nothing
here was read from the paper's code or tables: K, α, λ, γ, M and the rest are ours to ablate.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from gessl.adapt import BATCHINGS
from gessl.devices import PRECISIONS
from gessl.methods.base import CRITIC_CHOICES
from gessl.sigma import DIRECTIONS, check_direction

__all__ = ["ALGORITHM_KEYS", "GeSSLConfig"]

_CHOICES = {
    "sigma_critic": CRITIC_CHOICES,
    "order": ("first", "second"),
    "adapt": ("all", "projector"),
    "kl_direction": DIRECTIONS,
    "threshold": ("none", "learned"),
    "batching": BATCHINGS,
    "optimizer": ("adam", "sgd"),
    "precision": PRECISIONS,
}


#: the options of the GeSSL algorithm itself (what an experiment's ``gessl`` dictionary holds);
#: the others — mode, M, the outer optimiser, batching, seed, precision — are the experiment's
ALGORITHM_KEYS = (
    "inner_steps",
    "inner_lr",
    "lookahead_steps",
    "sigma_weight",
    "sigma_critic",
    "sigma_temperature",
    "kl_direction",
    "order",
    "adapt",
    "threshold",
    "threshold_hidden",
    "threshold_sharpness",
)


@dataclass(frozen=True)
class GeSSLConfig:
    """Options of :class:`gessl.trainer.Trainer`.

    Attributes:
        mode: ``"gessl"`` or ``"plain"`` (the base method trained on the same samples).
        inner_steps: K, task-specific SGD steps on the support views (paper: "learn
            task-specific models"; value not recovered — ours).
        inner_lr: α, the inner SGD step size.
        lookahead_steps: λ, the "future updates": extra steps from the adapted model, taken
            without a graph, giving the target θ̃ (the bootstrapped target of Flennerhag et
            al., ICLR 2022, arXiv 2109.04504).
        sigma_weight: γ, weight of the σ-term ``KL(π_θ ‖ π_θ̃)`` on the query views.
        sigma_critic: the critic of the N-way task classifier π in the σ-term (query-view
            embeddings against the other query view's): a name of :data:`gessl.tasks.CRITICS`,
            or ``"method"`` — the method's own critic (``Method.task_critic``). Default
            ``"cosine"``.
        sigma_temperature: temperature of that critic (unused with ``"method"``, whose critic
            carries its own).
        kl_direction: the σ-term's KL direction, named as everywhere in the library
            (:data:`gessl.sigma.DIRECTIONS`): ``"sigma"`` = KL(π_θ ‖ π_θ̃), the direction of
            :func:`gessl.sigma.sigma` (default); ``"sigma_excess"`` the reverse. The names of
            earlier releases (``"model_target"``, ``"target_model"``) are refused with the new
            name.
        order: ``"first"`` (FOMAML-style: the outer gradient at the adapted parameters is used
            for φ) or ``"second"`` (exact hypergradient through the K inner steps).
        adapt: ``"all"`` parameters, or ``"projector"`` — the head only (projector, predictor,
            prototypes; ANIL-style), with backbone features computed once per task.
        threshold: ``"none"`` (v4) or ``"learned"``: a small network g maps task statistics to a
            tolerance δ and the inner loss becomes ``ℓ + γ·h(KL_support − δ)`` with ``h`` a
            smooth hinge; g is trained through the inner steps by the outer loss (our reading of
            v5, ``docs/reconstruction.md``).
        threshold_hidden: width of g's hidden layer.
        threshold_sharpness: β of the smooth hinge ``softplus(x, β)``; large β approaches
            ``relu``, whose δ-gradient through an SGD step is zero almost everywhere.
        tasks_per_step: M, tasks per outer step (the sampler sets N).
        outer_lr, optimizer, weight_decay: the outer optimiser of φ (and g).
        batching: ``"vmap"`` (tasks batched with ``torch.func.vmap``) or ``"loop"``.
        use_support_in_plain: in ``mode="plain"``, train on support *and* query views (matched
            samples); ``False`` uses the query views only.
        seed: seeds model initialisation (by the caller) and the task sampler.
        precision: ``"float32"`` or ``"bf16"`` — bfloat16 autocast for the forward passes of
            the inner steps, the look-ahead, the outer loss and the momentum targets;
            parameters, gradients, the optimiser, the inner SGD updates and the σ-term's
            softmax/KL stay float32 (:mod:`gessl.devices`).
    """

    mode: str = "gessl"
    inner_steps: int = 1
    inner_lr: float = 0.05
    lookahead_steps: int = 1
    sigma_weight: float = 1.0
    sigma_critic: str = "cosine"
    sigma_temperature: float = 0.1
    kl_direction: str = "sigma"
    order: str = "first"
    adapt: str = "all"
    threshold: str = "none"
    threshold_hidden: int = 16
    threshold_sharpness: float = 10.0
    tasks_per_step: int = 4
    outer_lr: float = 1e-3
    optimizer: str = "adam"
    weight_decay: float = 0.0
    batching: str = "vmap"
    use_support_in_plain: bool = True
    seed: int = 0
    precision: str = "float32"

    def __post_init__(self) -> None:
        if self.mode not in ("gessl", "plain"):
            raise ValueError(f"mode must be 'gessl' or 'plain', got {self.mode!r}")
        check_direction(self.kl_direction)
        for key, choices in _CHOICES.items():
            if getattr(self, key) not in choices:
                raise ValueError(f"{key} must be one of {choices}, got {getattr(self, key)!r}")
        for key in ("inner_steps", "lookahead_steps"):
            v = getattr(self, key)
            if not isinstance(v, int) or v < 0:
                raise ValueError(f"{key} must be an integer >= 0, got {v!r}")
        if not isinstance(self.tasks_per_step, int) or self.tasks_per_step < 1:
            raise ValueError(f"tasks_per_step must be an integer >= 1, got {self.tasks_per_step!r}")
        for key in ("inner_lr", "sigma_weight", "weight_decay"):
            if getattr(self, key) < 0:
                raise ValueError(f"{key} must be >= 0, got {getattr(self, key)!r}")
        for key in ("sigma_temperature", "outer_lr", "threshold_sharpness"):
            if not getattr(self, key) > 0:
                raise ValueError(f"{key} must be > 0, got {getattr(self, key)!r}")
        if self.threshold == "learned" and self.inner_steps == 0:
            raise ValueError("threshold='learned' acts through the inner steps: inner_steps >= 1")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def algorithm(self) -> dict[str, Any]:
        """The options of :data:`ALGORITHM_KEYS`, by name (the defaults every experiment's
        ``gessl`` dictionary starts from: ``GeSSLConfig().algorithm()``)."""
        return {k: getattr(self, k) for k in ALGORITHM_KEYS}

    @property
    def is_plain_equivalent(self) -> bool:
        """K = λ = γ = 0 and no threshold: GeSSL reduces to the base loss on the query views."""
        return (
            self.inner_steps == 0
            and self.lookahead_steps == 0
            and self.sigma_weight == 0
            and self.threshold == "none"
        )
