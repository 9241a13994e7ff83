"""Variational lower bounds on mutual information between two jointly Gaussian views.

Setting (docs/settings.md §10): ``U ~ N(0, I_d)``, ``V = ρU + √(1−ρ²) ε`` with ``ε ~ N(0, I_d)``,
so ``I(U; V) = −(d/2) log(1 − ρ²)`` and the density ratio is, exactly,

    log r(u, v) = log p(u, v)/(p(u)p(v))
                = −(d/2) log(1−ρ²) + (2ρ uᵀv − ρ²(‖u‖² + ‖v‖²)) / (2(1−ρ²)).

The bounds, for a critic ``f`` (Poole, Ozair, van den Oord, Alemi & Tucker 2019, "On Variational
Bounds of Mutual Information", arXiv 1905.06922, §2, as restated in the authors' companion
notebook and TensorFlow Probability's ``tfp.vi.mutual_information``):

* **NWJ** (f-divergence / MINE-f): ``I ≥ E_p[f] − e^{−1} E_{p(u)p(v)}[e^f]``; equality at
  ``f = 1 + log r``.
* **TUBA**: ``I ≥ 1 + E_p[f − log a(v)] − E_{p(u)p(v)}[e^f / a(v)]`` for any baseline
  ``a(v) > 0``; NWJ is ``a ≡ e``. The best baseline is ``a*(v) = E_{p(u)} e^{f(u, v)}``, which
  gives ``E_p[f(u, v) − log a*(v)]``; equality at ``f = log r + h(v)`` for any ``h``.
* **InfoNCE** over K pairs: ``I ≥ E[(1/K) Σ_i log(e^{f(u_i, v_i)} / ((1/K) Σ_j e^{f(u_i, v_j)}))]``;
  each term is ``log K + log softmax ≤ log K``, so the bound saturates at ``log K``.

Closed forms (derived here [R]) for the **quadratic critics**
``f(u, v) = α uᵀWv + β‖u‖² + vᵀGv + δ`` (which contain ``log r``, its multiples, shifts and
misspecified-ρ versions, and random bilinear critics): with ``E_p[vuᵀ] = ρI``,

    E_p f = αρ tr W + βd + tr G + δ,
    log a*(v) = log E_{u~N(0,I)} e^{f(u,v)} = −(d/2) log(1 − 2β) + δ + vᵀBv,
        B = α² WᵀW / (2(1 − 2β)) + G            (finite iff β < 1/2),
    log E_{p(u)p(v)} e^f = −(d/2) log(1 − 2β) + δ − ½ log det(I − 2B)   (finite iff I − 2B ≻ 0),

so NWJ(f) and TUBA*(f) = E_p f + (d/2) log(1 − 2β) − δ − tr B are exact. **Variance of NWJ at its
optimum** [R]: the per-sample estimator ``1 + log r(u, v) − r(u', v')`` (a joint pair and an
independent pair) has variance ``Var_p log r + Var_{p(u)p(v)} r = dρ² + e^{2I} − 1`` — per
dimension ``log r`` under the joint is ``(ρ/2)(χ²₁ − χ²₁')`` (variance ρ²) and
``E_{p(u)p(v)} r² = E_p r = (1 − ρ²)^{−d} = e^{2I}``. This exceeds the ``e^I − 1`` lower bound of
Song & Ermon (2020, arXiv 1910.06222): the NWJ variance grows like ``e^{2I}`` here. The moments
``E_{p(u)p(v)} r^k = [(1−ρ²)^{−k/2} det(I₂ + kA)^{−1/2}]^d``,
``A = [[ρ², −ρ], [−ρ, ρ²]] / (1 − ρ²)``, are finite iff ``k < (1 + ρ)/ρ``.

Samples are float64 numpy arrays ``[n, d]`` drawn from ``numpy.random.Generator``; InfoNCE values
come from the library's task classifier (:func:`gessl.tasks.task_log_probs`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from gessl.tasks import task_log_probs

__all__ = [
    "GaussianViews",
    "Pairs",
    "QuadraticCritic",
    "infonce_values",
    "marginal_variance_rel_se",
    "nwj_bound",
    "nwj_values",
    "tuba_bound",
    "tuba_values",
]


def _is_scaled_identity(m: np.ndarray) -> bool:
    diag = np.diagonal(m)
    return bool(np.all(diag == diag[0])) and not np.any(m - np.diag(diag))


@dataclass(frozen=True)
class Pairs:
    """Paired rows ``u, v [n, d]`` with their inner products ``uᵀv``, ``‖u‖²``, ``‖v‖²``
    (computed once: every isotropic critic is a function of these three)."""

    u: np.ndarray
    v: np.ndarray
    uv: np.ndarray = field(init=False, repr=False)
    uu: np.ndarray = field(init=False, repr=False)
    vv: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.u.ndim != 2 or self.u.shape != self.v.shape:
            raise ValueError(
                f"u and v must be [n, d] of equal shape, got {self.u.shape}, {self.v.shape}"
            )
        object.__setattr__(self, "uv", np.einsum("nd,nd->n", self.u, self.v))
        object.__setattr__(self, "uu", np.einsum("nd,nd->n", self.u, self.u))
        object.__setattr__(self, "vv", np.einsum("nd,nd->n", self.v, self.v))


@dataclass(frozen=True)
class QuadraticCritic:
    """``f(u, v) = α uᵀWv + β‖u‖² + vᵀGv + δ`` (W, G ``[d, d]``; G symmetric)."""

    alpha: float
    weight: np.ndarray
    beta: float
    gram: np.ndarray
    delta: float
    name: str = field(default="critic", compare=False)

    def __post_init__(self) -> None:
        w, g = np.asarray(self.weight, dtype=float), np.asarray(self.gram, dtype=float)
        if w.ndim != 2 or w.shape[0] != w.shape[1] or g.shape != w.shape:
            raise ValueError(
                f"weight and gram must be square [d, d] of equal shape, got {w.shape}, {g.shape}"
            )
        if not np.allclose(g, g.T):
            raise ValueError("gram must be symmetric")
        object.__setattr__(self, "weight", w)
        object.__setattr__(self, "gram", g)
        # W = w·I and G = g·I: f needs only uᵀv, ‖u‖², ‖v‖² (O(nd) instead of O(nd²))
        iso = _is_scaled_identity(w) and _is_scaled_identity(g)
        object.__setattr__(self, "_iso", (float(w[0, 0]), float(g[0, 0])) if iso else None)

    @property
    def dim(self) -> int:
        return int(self.weight.shape[0])

    def __call__(self, pairs: Pairs) -> np.ndarray:
        """``f(u_i, v_i)`` for the rows of ``pairs`` → ``[n]``."""
        if self._iso is not None:
            w, g = self._iso
            cross, quad_v = w * pairs.uv, g * pairs.vv
        else:
            cross = np.einsum("nd,nd->n", pairs.u @ self.weight, pairs.v)
            quad_v = np.einsum("nd,nd->n", pairs.v @ self.gram, pairs.v)
        return self.alpha * cross + self.beta * pairs.uu + quad_v + self.delta

    def scaled(self, s: float, name: str | None = None) -> QuadraticCritic:
        """``s·f``."""
        return QuadraticCritic(
            s * self.alpha,
            self.weight,
            s * self.beta,
            s * self.gram,
            s * self.delta,
            name or f"{s:g}·{self.name}",
        )

    def shifted(
        self, const: float, v_quad: float = 0.0, name: str | None = None
    ) -> QuadraticCritic:
        """``f + const + v_quad·‖v‖²`` (a function of v only: TUBA's optimum is unchanged)."""
        return QuadraticCritic(
            self.alpha,
            self.weight,
            self.beta,
            self.gram + v_quad * np.eye(self.dim),
            self.delta + const,
            name or f"{self.name} + {const:g} + {v_quad:g}‖v‖²",
        )

    def _b(self) -> np.ndarray:
        if not self.beta < 0.5:
            raise ValueError(f"E_u e^f is infinite for β = {self.beta} >= 1/2")
        w = self.weight
        return self.alpha**2 * (w.T @ w) / (2 * (1 - 2 * self.beta)) + self.gram

    def log_partition(self, v: np.ndarray) -> np.ndarray:
        """``log a*(v) = log E_{u~N(0,I)} e^{f(u, v)}`` for rows ``v [n, d]``."""
        b = self._b()
        const = -0.5 * self.dim * math.log1p(-2 * self.beta) + self.delta
        return const + np.einsum("nd,nd->n", v @ b, v)

    def normalised(self) -> QuadraticCritic:
        """``f − log a*(v)``: the critic TUBA with its optimal baseline evaluates
        (``E_u e^{g(u, v)} = 1`` for every v)."""
        b = self._b()
        return QuadraticCritic(
            self.alpha,
            self.weight,
            self.beta,
            self.gram - b,
            0.5 * self.dim * math.log1p(-2 * self.beta),
            f"{self.name} − log a*(v)",
        )

    def embeddings(self, u: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(z_u, z_v)`` with ``z_uᵀz_v = f(u, v) − β‖u‖² − δ``: ``z_u = [α uW, 1]``,
        ``z_v = [v, vᵀGv]`` (the dropped terms are constant per anchor, so InfoNCE with a dot
        critic on them is InfoNCE of f). Tensors ``[..., d]``."""
        w = torch.as_tensor(self.weight, dtype=u.dtype)
        g = torch.as_tensor(self.gram, dtype=v.dtype)
        ones = torch.ones(*u.shape[:-1], 1, dtype=u.dtype)
        zu = torch.cat([self.alpha * u @ w, ones], dim=-1)
        zv = torch.cat([v, ((v @ g) * v).sum(-1, keepdim=True)], dim=-1)
        return zu, zv


@dataclass(frozen=True)
class GaussianViews:
    """``U ~ N(0, I_d)``, ``V = ρU + √(1−ρ²)ε``: ``dim`` ≥ 1, ``0 ≤ rho < 1``."""

    dim: int
    rho: float

    def __post_init__(self) -> None:
        if isinstance(self.dim, bool) or not isinstance(self.dim, int) or self.dim < 1:
            raise ValueError(f"dim must be an integer >= 1, got {self.dim!r}")
        if not 0 <= self.rho < 1:
            raise ValueError(f"rho must be in [0, 1), got {self.rho!r}")

    @classmethod
    def with_information(cls, dim: int, information: float) -> GaussianViews:
        """The views with ``I(U; V) = information`` nats (> 0) in ``dim`` dimensions."""
        if not information > 0:
            raise ValueError(f"information must be > 0, got {information!r}")
        return cls(dim, math.sqrt(-math.expm1(-2 * information / dim)))

    @property
    def information(self) -> float:
        """``I(U; V) = −(d/2) log(1 − ρ²)``."""
        return -0.5 * self.dim * math.log1p(-(self.rho**2))

    def sample(self, gen: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
        """n joint pairs ``(u, v)``, each ``[n, d]``."""
        u = gen.standard_normal((n, self.dim))
        v = self.rho * u + math.sqrt(1 - self.rho**2) * gen.standard_normal((n, self.dim))
        return u, v

    def sample_pairs(self, gen: np.random.Generator, n: int) -> tuple[Pairs, Pairs]:
        """n joint pairs and n independent pairs from ``p(u)p(v)``."""
        joint = Pairs(*self.sample(gen, n))
        shape = (n, self.dim)
        return joint, Pairs(gen.standard_normal(shape), gen.standard_normal(shape))

    def log_ratio_critic(self) -> QuadraticCritic:
        """``log r = log p(u, v)/(p(u)p(v))`` as a quadratic critic (exact)."""
        r2 = self.rho**2
        eye = np.eye(self.dim)
        beta = -r2 / (2 * (1 - r2))
        return QuadraticCritic(
            self.rho / (1 - r2), eye, beta, beta * eye, self.information, f"log r(ρ={self.rho:.3g})"
        )

    def expected_critic(self, critic: QuadraticCritic) -> float:
        """``E_p f = αρ tr W + βd + tr G + δ``."""
        self._check(critic)
        return float(
            critic.alpha * self.rho * np.trace(critic.weight)
            + critic.beta * self.dim
            + np.trace(critic.gram)
            + critic.delta
        )

    def log_mean_exp_marginal(self, critic: QuadraticCritic) -> float:
        """``log E_{p(u)p(v)} e^{f}`` (``inf`` where the integral diverges)."""
        self._check(critic)
        if not critic.beta < 0.5:
            return math.inf
        b = critic._b()
        sign, logdet = np.linalg.slogdet(np.eye(self.dim) - 2 * b)
        if sign <= 0 or np.linalg.eigvalsh(np.eye(self.dim) - 2 * b).min() <= 0:
            return math.inf
        return -0.5 * self.dim * math.log1p(-2 * critic.beta) + critic.delta - 0.5 * logdet

    def ratio_moment(self, k: float) -> float:
        """``E_{p(u)p(v)} r^k`` (``inf`` where it diverges, i.e. ``k ≥ (1+ρ)/ρ``)."""
        r, r2 = self.rho, self.rho**2
        a = 1 - r2
        smallest = 1 + k * (r2 - r) / a  # smallest eigenvalue of I + kA
        if smallest <= 0:
            return math.inf
        det = ((a + k * r2) ** 2 - (k * r) ** 2) / a**2
        return float((a ** (-k / 2) / math.sqrt(det)) ** self.dim)

    def nwj_variance(self) -> float:
        """Exact variance of the per-sample NWJ estimator ``1 + log r(u, v) − r(u', v')`` at its
        optimal critic: ``dρ² + e^{2I} − 1``."""
        return self.dim * self.rho**2 + math.expm1(2 * self.information)

    def _check(self, critic: QuadraticCritic) -> None:
        if critic.dim != self.dim:
            raise ValueError(f"critic has dim {critic.dim}, the views {self.dim}")


def nwj_bound(views: GaussianViews, critic: QuadraticCritic) -> float:
    """Closed-form NWJ bound ``E_p f − e^{−1} E_{p(u)p(v)} e^f`` (``−inf`` if it diverges)."""
    lme = views.log_mean_exp_marginal(critic)
    return views.expected_critic(critic) - (math.inf if math.isinf(lme) else math.exp(lme - 1))


def tuba_bound(views: GaussianViews, critic: QuadraticCritic) -> float:
    """Closed-form TUBA bound with the optimal baseline ``a*(v) = E_{p(u)} e^{f(u, v)}``:
    ``E_p[f − log a*(v)]`` (``−inf`` for β ≥ 1/2)."""
    if not critic.beta < 0.5:
        return -math.inf
    return views.expected_critic(critic.normalised())


def nwj_values(critic: QuadraticCritic, joint: Pairs, independent: Pairs) -> np.ndarray:
    """Per-sample NWJ estimates ``f(u, v) − e^{f(u', v') − 1}`` from joint pairs ``(u, v)`` and
    independent pairs ``(u', v')``; their mean estimates the bound without bias."""
    return critic(joint) - np.exp(critic(independent) - 1)


def tuba_values(critic: QuadraticCritic, joint: Pairs, independent: Pairs) -> np.ndarray:
    """Per-sample TUBA estimates with the optimal baseline:
    ``1 + f(u, v) − log a*(v) − e^{f(u', v')}/a*(v')``."""
    g = critic.normalised()
    return 1 + g(joint) - np.exp(g(independent))


def infonce_values(critic: QuadraticCritic, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Per-anchor InfoNCE terms ``log K + log softmax_j f(u_i, v_j)|_{j=i}`` for batches
    ``u, v [B, K, d]`` of K joint pairs → ``[B, K]``; each is ≤ log K. The log-softmax is the
    library's task classifier (dot critic on :meth:`QuadraticCritic.embeddings`)."""
    if u.ndim != 3 or u.shape != v.shape:
        raise ValueError(f"u and v must be [B, K, d] of equal shape, got {u.shape}, {v.shape}")
    zu, zv = critic.embeddings(torch.from_numpy(u), torch.from_numpy(v))
    lp = task_log_probs(zu, zv, 1.0, "dot")
    return (math.log(u.shape[1]) + lp.diagonal(dim1=-2, dim2=-1)).numpy()


def marginal_variance_rel_se(views: GaussianViews, critic: QuadraticCritic, n: int) -> float:
    """Relative standard error of the sample variance of ``e^{f(u', v')}`` over n independent
    pairs, from its exact moments ``m_k = E_{p(u)p(v)} e^{kf}``: ``√((μ₄ − σ⁴)/n)/σ²``
    (``inf`` where the fourth moment diverges). It says whether a Monte-Carlo NWJ or TUBA mean's
    own standard error can be trusted at this n."""
    lm = [views.log_mean_exp_marginal(critic.scaled(k)) for k in (1, 2, 3, 4)]
    if any(math.isinf(x) for x in lm):
        return math.inf
    m = [math.exp(x - k * lm[0]) for k, x in zip((1, 2, 3, 4), lm)]  # moments of e^f / E e^f
    var = m[1] - 1
    if var <= 0:
        return 0.0
    mu4 = m[3] - 4 * m[2] + 6 * m[1] - 3
    return math.sqrt(max(mu4 - var**2, 0.0) / n) / var
