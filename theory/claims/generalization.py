"""Claims on generalisation across tasks and class collision (settings A3, A4, A5).

Each check reads the statement under test through module-level names, so that the wrong
variants each claim declares (:class:`~theory.claims.base.Alternative`) can be put in its place:

* ``task_generalization_rate`` — the exponent :data:`EXCESS_RATE` and the critic's training
  budget :data:`FIT_ITERATIONS`; the exponent is judged by the ±2 SE interval of the fitted
  slope against ``EXCESS_RATE ± 0.25``, so an exponent within about ``0.25 + 2 SE`` of the
  measured slope (−3/4, say) cannot be told apart — the slow rate −1/2 and an under-trained
  critic can.
* ``task_rademacher_bound`` — the complexity step of the derivation, :func:`complexity_bound`.
  The generalisation gap of the fitted critic lies 10³–10⁴ times below the final bound, so no
  constant of that bound is tested by the gap; the last two steps (a norm of a Rademacher sum and
  two Jensen steps) are nearly tight, and the check measures their left side by Monte Carlo over
  tasks and signs, which rejects a halved constant or a dropped dimension factor.
* ``multitask_fast_rate`` — the exponent :data:`FAST_RATE` and where the grid of task counts
  starts, :data:`REGIME_START` (in units of dk).
* ``arora_class_collision`` — the per-anchor lower bound :func:`collision_bound`; the check is
  anchor by anchor at float precision, so any inflation of the bound beyond its smallest
  relative slack (reported) is caught.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import torch
from scipy.optimize import minimize

from gessl.losses import infonce, no_value_checks
from theory.arora import LatentClassMixture
from theory.claims.base import (
    N_SE,
    Alternative,
    ClaimResult,
    Series,
    combine,
    fit_slope,
    judge_le,
    judge_slope,
)
from theory.claims.registry import claim
from theory.gaussian_task import SphereTasks
from theory.linear_gaussian import subspace_sin2
from theory.multitask import MultiTaskLinear

f64 = torch.float64
#: the generalisation claims' task model: d = 4, s = 0.8, R = 2, N = m = 8 (docs/settings.md §2)
TASKS = SphereTasks(n_classes=8, dim=4, noise=0.8, radius=2.0)
#: norm budget of the bilinear critic class: twice the Bayes critic's ‖I/s²‖_F
NORM_BOUND = 2 * math.sqrt(TASKS.dim) / TASKS.noise**2
#: L-BFGS iteration cap of the critic's ERM (it converges in 13–17; the claims need a fitted one)
FIT_ITERATIONS = 200
#: the exponent of n in the test excess of the fitted critic (p/(2nm))
EXCESS_RATE = -1.0
#: tasks per sample size n drawn for the Monte-Carlo complexity of task_rademacher_bound
COMPLEXITY_TASKS = {"tiny": 10000, "quick": 20000, "full": 100000}


def _task_loss(m: torch.Tensor, q: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """Mean InfoNCE over tasks of the bilinear critic ``logit_ij = q_iᵀ M p_j`` (library loss)."""
    return infonce(q @ m, p, temperature=1.0, critic="dot").loss


def _fit(q: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """ERM of the critic on the training tasks (L-BFGS: SciPy's ``L-BFGS-B`` with torch's
    gradient), projected onto ‖M‖_F ≤ NORM_BOUND."""
    d = TASKS.dim

    def fun(x: np.ndarray) -> tuple[float, np.ndarray]:
        leaf = torch.from_numpy(x).reshape(d, d).requires_grad_(True)
        with no_value_checks():  # the fitted critic is checked where it is evaluated
            loss = _task_loss(leaf, q, p)
        (g,) = torch.autograd.grad(loss, leaf)
        return float(loss.detach()), g.flatten().numpy()

    res = minimize(
        fun,
        np.zeros(d * d),
        jac=True,
        method="L-BFGS-B",
        options={"maxiter": FIT_ITERATIONS, "gtol": 1e-10, "ftol": 1e-14},
    )
    m = torch.from_numpy(res.x).reshape(d, d)
    norm = float(m.norm())
    return m * min(1.0, NORM_BOUND / norm) if norm > 0 else m


@lru_cache(maxsize=8)
def _sweep(budget: str, seed: int) -> dict[str, np.ndarray]:
    """Fit the critic on n training tasks, replicate, and measure on fresh tasks."""
    ns = {  # from n·m = 400 samples for p = 16 parameters: the asymptotic regime
        "tiny": [50, 200, 800],
        "quick": [50, 200, 800, 3200],
        "full": [50, 200, 800, 3200, 12800],
    }[budget]
    reps = {"tiny": 6, "quick": 12, "full": 40}[budget]
    fresh = {"tiny": 1000, "quick": 3000, "full": 10000}[budget]
    g = torch.Generator().manual_seed(seed * 7919 + 17)
    bayes = torch.eye(TASKS.dim, dtype=f64) / TASKS.noise**2
    excess, gap = np.zeros((reps, len(ns))), np.zeros((reps, len(ns)))
    for r in range(reps):
        qt, pt = TASKS.sample(g, fresh)
        bayes_test = float(_task_loss(bayes, qt, pt))
        for j, n in enumerate(ns):
            q, p = TASKS.sample(g, n)
            m = _fit(q, p)
            excess[r, j] = float(_task_loss(m, qt, pt)) - bayes_test
            # E[test − train] of the fitted critic, estimated without the noise of a finite
            # test set: E L̂_train(M*) = L(M*) exactly, so
            # E[L(M̂) − L̂(M̂)] = E[L(M̂) − L(M*)] + E[L̂(M*) − L̂(M̂)], both terms paired.
            gap[r, j] = excess[r, j] + float(_task_loss(bayes, q, p)) - float(_task_loss(m, q, p))
    return {"n": np.array(ns), "excess": excess, "gap": gap}


@claim(
    "task_generalization_rate",
    "In the Gaussian task model with a free bilinear critic (p = d² parameters) fitted on n tasks "
    "of m queries, the test excess InfoNCE on unseen tasks decays like p/(2nm) (slope −1), faster "
    "than the n^{-1/2} of uniform-convergence bounds.",
    "docs/settings.md §2 (verified); classical MLE asymptotics (Akaike; White 1982)",
    "[R]",
    "rate",
    group="task_sweep",
    cost=3.5,
    setting="bilinear critic on prototypes on a sphere, `SphereTasks` (docs/settings.md §2)",
    alternatives=(
        Alternative(
            "slow_rate",
            "the excess decays like the uniform-convergence rate n^{-1/2} (exponent −1/2)",
            {"theory.claims.generalization.EXCESS_RATE": -0.5},
            rejects_on=("quick", "full"),
        ),
        Alternative(
            "undertrained",
            "the critic under-trained: L-BFGS stopped after 5 iterations, so the optimisation "
            "error, not the estimation error, sets the excess",
            {"theory.claims.generalization.FIT_ITERATIONS": 5},
            rejects_on=("quick", "full"),
        ),
    ),
)
def task_generalization_rate(budget: str, seed: int) -> ClaimResult:
    s = _sweep(budget, seed)
    ns, ex = s["n"].tolist(), s["excess"]
    slope, se = fit_slope(ns, np.clip(ex, 1e-12, None))
    p, m = TASKS.dim**2, TASKS.n_classes
    pred = [p / (2 * n * m) for n in ns]
    tolerance = 0.25
    c = combine([judge_slope("test excess vs n", slope, se, EXCESS_RATE, tolerance)])
    ratio = float(ex.mean(0)[-1] / pred[-1])
    return ClaimResult(
        c.verdict,
        c.reason,
        f"slope {slope:.3f} ± {se:.3f}; excess/(p/2nm) = {ratio:.2f} at n={ns[-1]}",
        [Series("test excess InfoNCE", ns, ex.mean(0), ex.std(0) / math.sqrt(len(ex)))],
        [Series("p/(2nm)", ns, pred)],
        x_label="training tasks n",
        y_label="excess loss (nats)",
        log_x=True,
        log_y=True,
        slope=slope,
        slope_se=se,
        expected_slope=EXCESS_RATE,
        details={
            "p": p,
            "m": m,
            "ratio_at_max_n": ratio,
            "replicates": len(ex),
            # an exponent is told apart from the measured slope beyond tolerance + 2 SE
            "resolution": {
                "quantity": "exponent of n in the test excess",
                "relative": (tolerance + 2 * se) / abs(EXCESS_RATE),
            },
        },
    )


def complexity_bound(n: int) -> float:
    """Steps 3–4 of :func:`task_rademacher_bound`'s derivation: the Rademacher complexity of the
    bilinear logits over ``‖M‖_F ≤ B``, ``E (B/n) ‖Σ_{i,j,k} σ_ijk q_ij p_ikᵀ‖_F``, is at most
    ``B R N √((R² + d s²)/n)`` (two Jensen steps; nearly an equality here)."""
    r, d, s, big_n = TASKS.radius, TASKS.dim, TASKS.noise, TASKS.n_classes
    return NORM_BOUND * r * big_n * math.sqrt((r**2 + d * s**2) / n)


def _gap_bound(n: int) -> float:
    """The bound on the expected gap: symmetrisation (×2) and Maurer's contraction
    (×√2·√(2/N)) on top of :func:`complexity_bound` — ``4 B R √(N (R² + d s²)/n)``."""
    return 2 * math.sqrt(2) * math.sqrt(2 / TASKS.n_classes) * complexity_bound(n)


def _half_complexity(n: int) -> float:
    """Alternative: the complexity step with its constant halved (so the gap bound is
    ``2 B R √(N (R² + d s²)/n)``)."""
    r, d, s, big_n = TASKS.radius, TASKS.dim, TASKS.noise, TASKS.n_classes
    return 0.5 * NORM_BOUND * r * big_n * math.sqrt((r**2 + d * s**2) / n)


def _one_dim_noise_complexity(n: int) -> float:
    """Alternative: ``E‖q‖² = R² + s²`` (the noise counted in one dimension instead of d)."""
    r, s, big_n = TASKS.radius, TASKS.noise, TASKS.n_classes
    return NORM_BOUND * r * big_n * math.sqrt((r**2 + s**2) / n)


def _linear_complexity(ns: list[int], budget: str, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Monte-Carlo mean and SE of ``(B/n) ‖Σ_{i,j,k} σ_ijk q_ij p_ikᵀ‖_F`` at each n, over
    independent draws of n tasks and the signs (at least 16 draws, about
    ``COMPLEXITY_TASKS[budget]`` tasks per n)."""
    g = torch.Generator().manual_seed(seed * 7919 + 31)
    big_n, mean, se = TASKS.n_classes, [], []
    for n in ns:
        draws = max(16, math.ceil(COMPLEXITY_TASKS[budget] / n))
        q, p = TASKS.sample(g, draws * n)
        q, p = q.reshape(draws, n, big_n, -1), p.reshape(draws, n, big_n, -1)
        bits = torch.randint(0, 2, (draws, n, big_n, big_n), generator=g, dtype=torch.int8)
        signs = bits.to(f64).mul_(2).sub_(1)
        summed = torch.einsum("rijd,rije->rde", q, torch.einsum("rijk,rike->rije", signs, p))
        value = NORM_BOUND / n * torch.linalg.matrix_norm(summed)  # Frobenius, [draws]
        mean.append(float(value.mean()))
        se.append(float(value.std() / math.sqrt(draws)))
    return np.array(mean), np.array(se)


@claim(
    "task_rademacher_bound",
    "For tasks drawn i.i.d., the bilinear critics ‖M‖_F ≤ B and the task loss (1/N)Σ_j CE_j, "
    "E[test − train loss of the fitted critic] ≤ 4 B R √(N (R² + d s²) / n) (explicit constants; "
    "derivation in the docstring); its last step, E (B/n)‖Σ σ_ijk q_ij p_ikᵀ‖_F ≤ "
    "B R N √((R² + d s²)/n), is measured by Monte Carlo (nearly tight, so its constant is tested).",
    "derived here: symmetrisation + Maurer 2016 vector contraction (arXiv 1605.00251) + Jensen",
    "[R]",
    "exact",
    group="task_sweep",
    cost=0.4,
    setting="bilinear critic on prototypes on a sphere, `SphereTasks` (docs/settings.md §2)",
    alternatives=(
        Alternative(
            "complexity_half",
            "the constant of the complexity step halved: E(B/n)‖Σσ q pᵀ‖_F ≤ (B R N/2)"
            "√((R²+ds²)/n), hence a gap bound 2BR√(N(R²+ds²)/n)",
            {"theory.claims.generalization.complexity_bound": _half_complexity},
        ),
        Alternative(
            "noise_one_dim",
            "E‖q‖² taken as R² + s² (the query noise counted in one dimension, not d): "
            "the complexity step and the gap bound √((R²+s²)/(R²+ds²)) ≈ 0.84 times too small",
            {"theory.claims.generalization.complexity_bound": _one_dim_noise_complexity},
        ),
    ),
)
def task_rademacher_bound(budget: str, seed: int) -> ClaimResult:
    """Derivation. Let ``ℓ(M; task) = (1/N) Σ_j CE(z_j, j)`` with logits ``z_jk = q_jᵀ M p_k``.

    1. Symmetrisation: ``E sup_M (L(M) − L̂(M)) ≤ 2 E R̂_n``, ``R̂_n = E_σ sup_M (1/n)Σ_i σ_i ℓ_i``
       (needs no bounded loss).
    2. ``CE(·, y)`` has gradient ``softmax − e_y`` with ``‖·‖₂ ≤ √2``; ℓ as a function of the
       N² logits is therefore ``√(2/N)``-Lipschitz. Maurer's vector contraction:
       ``E sup Σ_i σ_i ℓ_i ≤ √2·√(2/N)·E sup_M Σ_{i,j,k} σ_ijk ⟨M, q_ij p_ikᵀ⟩``.
    3. The sup over ``‖M‖_F ≤ B`` is ``B‖Σ σ_ijk q_ij p_ikᵀ‖_F ≤ B √(Σ ‖q_ij‖²‖p_ik‖²)``
       (Jensen) ``= B R √N √(Σ_ij ‖q_ij‖²)`` since ``‖p‖ = R``.
    4. ``E‖q‖² = R² + d s²`` and Jensen again: ``E (B/n)‖Σ σ q pᵀ‖_F ≤ B R N √((R² + d s²)/n)``
       (:func:`complexity_bound`), so ``E R̂_n ≤ 2 B R √(N (R² + d s²)/n)``.

    The fitted critic lies in the ball (it is projected onto it), so its expected gap is at most
    ``E sup`` ≤ ``4 B R √(N (R² + d s²)/n)``.

    Two things are judged: the gap of the fitted critic against that bound at every n (true with
    a slack of 10³–10⁴, so it cannot tell a constant off by a small factor), and steps 3–4, whose
    left side ``(B/n)‖Σ σ q pᵀ‖_F`` is averaged over fresh tasks and signs: it sits about 2%
    below :func:`complexity_bound` (the Jensen gaps of a norm in d² = 16 dimensions and of a sum
    over nN queries), judged at every n and pooled over n (the inverse-variance mean of
    measured/bound ≤ 1 within N_SE standard errors).
    """
    s = _sweep(budget, seed)
    ns, gap = s["n"].tolist(), s["gap"]
    bound = [_gap_bound(n) for n in ns]
    mean, se = gap.mean(0), gap.std(0) / math.sqrt(len(gap))
    checks = [judge_le(f"n={n}", mi, bi, se=si) for n, mi, si, bi in zip(ns, mean, se, bound)]
    cx, cx_se = _linear_complexity(ns, budget, seed)
    cx_bound = np.array([complexity_bound(n) for n in ns])
    checks += [
        judge_le(f"complexity step, n={n}", mi, bi, se=si)
        for n, mi, si, bi in zip(ns, cx, cx_se, cx_bound)
    ]
    weights = (cx_bound / cx_se) ** 2  # inverse variances of the ratios measured/bound
    ratio = float(np.sum(weights * cx / cx_bound) / weights.sum())
    ratio_se = float(1 / math.sqrt(weights.sum()))
    checks.append(judge_le("complexity step pooled: measured/bound", ratio, 1.0, se=ratio_se))
    c = combine(checks)
    slope, slope_se = fit_slope(ns, gap) if np.all(mean > 0) else (float("nan"), float("nan"))
    return ClaimResult(
        c.verdict,
        c.reason,
        f"gap {mean[-1]:.4f} ± {se[-1]:.4f} ≤ bound {bound[-1]:.2f} at n={ns[-1]} "
        f"(gap slope {slope:.2f}, bound slope −0.5); complexity step measured/bound "
        f"{ratio:.3f} ± {ratio_se:.3f}",
        [
            Series("E[test − train] (fitted critic)", ns, mean, se),
            Series("E (B/n)‖Σσ q pᵀ‖_F (Monte Carlo)", ns, cx, cx_se),
        ],
        [
            Series("4BR√(N(R²+ds²)/n)", ns, bound),
            Series("BRN√((R²+ds²)/n) (complexity step)", ns, cx_bound),
        ],
        x_label="training tasks n",
        y_label="generalisation gap (nats)",
        log_x=True,
        log_y=True,
        slope=slope,
        slope_se=slope_se,
        se=float(se.max()),
        details={
            "B": NORM_BOUND,
            "bound_over_gap_at_max_n": float(bound[-1] / max(mean[-1], 1e-12)),
            "complexity_ratio": ratio,
            "complexity_ratio_se": ratio_se,
            # a bound smaller by more than its slack plus N_SE SE would be flagged
            "resolution": {
                "quantity": "complexity step's bound (and the gap bound built on it)",
                "relative": 1.0 - ratio + N_SE * ratio_se,
            },
        },
    )


#: the exponent of nT in AltMin's sin²θ (Du et al.'s fast rate)
FAST_RATE = -1.0
#: the grid of task counts starts at nT = REGIME_START·dk (and grows ×4 per point)
REGIME_START = 50
#: independent replicates of the nested design per profile (10 on quick: with 6 the ±2 SE
#: interval was too wide on some seeds to reject the slow rate −1/2 against a ±0.3 tolerance)
MULTITASK_REPLICATES = {"tiny": 3, "quick": 10, "full": 12}


@claim(
    "multitask_fast_rate",
    "Learning a shared k-dim linear representation from T tasks × n samples by alternating "
    "minimisation (initialised by the method of moments) reaches the fast rate sin²θ ∝ dk/(nT) "
    "(slope −1) from nT = 50dk on (the range checked), strictly faster than the slow-rate "
    "(nT)^{-1/2} of Maurer-type bounds.",
    "Du, Hu, Kakade, Lee & Lei, ICLR 2021 (arXiv 2002.09434) [S2]; Maurer, Pontil & "
    "Romera-Paredes, JMLR 2016 [M]; setting docs/settings.md §6",
    "[S2]",
    "rate",
    setting="linear multi-task regression with a shared k-dim subspace (docs/settings.md §6)",
    alternatives=(
        Alternative(
            "slow_rate",
            "AltMin only reaches the slow rate (nT)^{-1/2} of Maurer-type bounds (exponent −1/2)",
            {"theory.claims.generalization.FAST_RATE": -0.5},
            rejects_on=("quick", "full"),
        ),
        Alternative(
            "early_regime",
            "the fast rate claimed from nT = 5dk (a samples-per-parameter rule of thumb) "
            "instead of 50dk: there sin²θ still falls from near saturation, much faster than "
            "1/(nT)",
            {"theory.claims.generalization.REGIME_START": 5},
            rejects_on=("quick", "full"),
        ),
    ),
)
def multitask_fast_rate(budget: str, seed: int) -> ClaimResult:
    """The grid starts at nT = 50dk (as it always did; the statement used to say 25dk, which was
    not checked). At 25dk the method of moments' start is at times nearly orthogonal to B
    (sin²θ up to 0.99) and AltMin (10 iterations) stays stuck in some replicates (sin²θ ≈ 0.2–0.4
    where the others reach 0.01), so the slope's interval straddles the tolerance on some seeds
    (seed 5 with 6 replicates, seed 0 on full). From 5dk (the ``early_regime`` alternative) the
    curve still falls from near saturation, with slope ≈ −1.9."""
    model = MultiTaskLinear(d=20, k=2, noise=0.5, n=5)
    first = round(REGIME_START * model.d * model.k / model.n)  # T at nT = REGIME_START·dk
    ts = [first * 4**j for j in range({"tiny": 3, "quick": 3, "full": 4}[budget])]
    reps = MULTITASK_REPLICATES[budget]
    tolerance = 0.3
    rng = np.random.default_rng(seed + 23)
    alt, mom = np.zeros((reps, len(ts))), np.zeros((reps, len(ts)))
    for r in range(reps):
        # nested designs: the first T tasks of one draw (common random numbers across T make
        # the within-replicate curve, hence the slope, much less noisy); replicates independent
        b, _, x_all, y_all = model.sample(rng, ts[-1])
        for j, t in enumerate(ts):
            x, y = x_all[:t], y_all[:t]
            alt[r, j] = subspace_sin2(model.alt_min(x, y).T, b.T)
            mom[r, j] = subspace_sin2(model.method_of_moments(x, y).T, b.T)
    nt = [model.n * t for t in ts]
    slope, se = fit_slope(nt, alt)
    checks = [
        judge_slope("AltMin sin²θ vs nT", slope, se, FAST_RATE, tolerance),
        judge_le("AltMin slope vs the slow rate −0.5", slope + 2 * se, -0.5),
    ]
    c = combine(checks)
    fast = [model.fast_rate(t) for t in ts]
    return ClaimResult(
        c.verdict,
        c.reason,
        f"AltMin slope {slope:.3f} ± {se:.3f}; AltMin/(σ²dk/nT) = {alt.mean(0)[-1] / fast[-1]:.2f}",
        [
            Series("AltMin sin²θ", nt, alt.mean(0), alt.std(0) / math.sqrt(reps)),
            Series("method of moments sin²θ", nt, mom.mean(0), mom.std(0) / math.sqrt(reps)),
        ],
        [
            Series("σ²dk/(nT) (Du et al. shape)", nt, fast),
            Series(
                "∝ (nT)^{-1/2} (slow rate, through AltMin's first point)",
                nt,
                [alt.mean(0)[0] * math.sqrt(nt[0] / v) for v in nt],
            ),
        ],
        x_label="total samples nT",
        y_label="sin²θ(B̂, B)",
        log_x=True,
        log_y=True,
        slope=slope,
        slope_se=se,
        expected_slope=FAST_RATE,
        details={
            "d": model.d,
            "k": model.k,
            "n": model.n,
            "replicates": reps,
            "tasks": ts,
            "resolution": {
                "quantity": "exponent of nT in AltMin's sin²θ",
                "relative": (tolerance + 2 * se) / abs(FAST_RATE),
            },
        },
    )


def collision_bound(l_sup: np.ndarray, tau: np.ndarray) -> np.ndarray:
    """The lower bound on ``L_un`` given the anchor: ``(1 − τ) L_sup^μ + τ ℓ(0)``, ``ℓ(0) = 1``
    bit, with ``τ`` and ``L_sup^μ`` per anchor (:meth:`LatentClassMixture.per_anchor_parts`)."""
    return (1.0 - tau) * l_sup + tau * 1.0


def _no_collision_bound(l_sup: np.ndarray, tau: np.ndarray) -> np.ndarray:
    """Alternative: the class-collision term dropped, ``L_sup^μ ≤ L_un``."""
    return l_sup


def _unweighted_bound(l_sup: np.ndarray, tau: np.ndarray) -> np.ndarray:
    """Alternative: the weight ``1 − τ`` of the supervised loss dropped, ``L_sup^μ + τ ℓ(0)``."""
    return l_sup + tau


@claim(
    "arora_class_collision",
    "For the latent-class mixture and any encoder, (1 − τ) L_sup^μ(f) + τ ℓ(0) ≤ L_un(f), with τ "
    "the class-collision probability — here anchor by anchor, for random and well-aligned "
    "encoders, at float precision (so a bound larger by more than its smallest relative slack, "
    "reported, is rejected).",
    "Arora et al., ICML 2019 (arXiv 1902.09229), Lemma 4.3 form; derivation docs/settings.md §5",
    "[M]",
    "exact",
    setting="latent-class Gaussian mixture (docs/settings.md §5)",
    alternatives=(
        Alternative(
            "no_collision_term",
            "the class-collision term dropped: L_sup^μ(f) ≤ L_un(f)",
            {"theory.claims.generalization.collision_bound": _no_collision_bound},
        ),
        Alternative(
            "unweighted_sup",
            "the weight (1 − τ) of the supervised loss dropped: L_sup^μ(f) + τ ℓ(0) ≤ L_un(f)",
            {"theory.claims.generalization.collision_bound": _unweighted_bound},
        ),
    ),
)
def arora_class_collision(budget: str, seed: int) -> ClaimResult:
    rng = np.random.default_rng(seed + 29)
    anchors = {"tiny": 500, "quick": 4000, "full": 40000}[budget]
    scales = [0.1, 0.3, 1.0, 3.0]
    checks, measured, bounds, slack = [], [], [], []
    for n_cls in (2, 4, 8):
        mix = LatentClassMixture(2.0 * rng.standard_normal((n_cls, 6)), np.full(n_cls, 1 / n_cls))
        u = np.linalg.qr((mix.mu - mix.mu.mean(0)).T)[0][:, :3].T  # the class-mean subspace
        x, c = mix.sample_anchors(rng, anchors)
        lu, lb = [], []
        for a in scales:
            for name, w in (("aligned", a * u), ("random", a * rng.standard_normal((3, 6)))):
                l_un, l_sup, tau = mix.per_anchor_parts(w, x, c)
                low = collision_bound(l_sup, tau)
                checks.append(
                    judge_le(
                        f"C={n_cls} {name} scale {a}: max(bound − L_un)",
                        float(np.max(low - l_un)),
                        0.0,
                        atol=1e-9,
                    )
                )
                # the smallest relative inflation of the bound that an anchor would flag
                pos = low > 1e-12  # (only an alternative bound can vanish)
                slack.append(float(np.min((l_un - low + 1e-9)[pos] / low[pos])))
                if name == "aligned":
                    lu.append(float(l_un.mean()))
                    lb.append(float(low.mean()))
        measured.append(Series(f"L_un, C={n_cls} (τ={mix.collision:.3f})", scales, lu))
        bounds.append(Series(f"(1−τ)L_sup^μ + τ, C={n_cls}", scales, lb))
    c = combine(checks)
    tight = min(m.y[-1] - b.y[-1] for m, b in zip(measured, bounds))
    failed = sum(ch.verdict != "holds" for ch in checks)
    where = f"fails in {failed} of" if failed else "holds for every anchor in"
    return ClaimResult(
        c.verdict,
        c.reason,
        f"{where} {len(checks)} encoder/class settings; smallest mean slack {tight:.3f} "
        f"(aligned encoder, scale {scales[-1]}); smallest relative slack of an anchor "
        f"{min(slack):.2g}",
        measured,
        bounds,
        x_label="encoder scale (aligned with the class means)",
        y_label="loss (bits)",
        log_x=True,
        details={
            "anchors": anchors,
            # a bound inflated by a factor 1 + δ is flagged at some anchor once δ exceeds this
            "resolution": {
                "quantity": "the per-anchor lower bound (1 − τ)L_sup^μ + τℓ(0)",
                "relative": max(min(slack), 0.0),
            },
        },
    )
