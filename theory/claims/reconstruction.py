"""Claim on reconstruction SSL under conditional independence (setting §15).

In the linear-Gaussian model of theory/reconstruction.py a linear probe is trained by least
squares on n labelled samples and its population excess risk over the Bayes regressor E[t | X₁]
is computed exactly from the covariances (no test set). Three probes share each labelled draw:
on the pretext optimum ψ = E[X₂ | X₁] (k features), on the raw input (d₁ features), and on ψ̂
learned from m unlabelled pairs (its top-k principal directions).

Two regimes are measured. Over n = 64 … 4096 the log-log slope of the ψ probe's excess is
judged against −1 and the excess pooled over the grid against its closed form; there the two
candidate constants p/(n − p − 1) and p/(n − p) differ by under 2%, below what a few hundred
draws resolve. So the closed-form constant is also judged where it is sharp: at n = p + 7
(n − p − 1 = 6), where p/(n − p) is 1/7 below p/(n − p − 1), with thousands of cheap draws of
each probe (:func:`theory.reconstruction.batched_probe_excess`); the excess has finite variance
there (n − p − 3 > 0). The statement's formula (:func:`closed_form_excess`), the dimension it
names for ψ (``PSI_DIM``) and the exponent (``EXPECTED_SLOPE``) are read at call time, so the
declared wrong variants — p/(n − p), the ψ probe counted in d₂ coordinates, a n^{-1/2} decay —
are judged by the same check.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np

from theory.claims.base import (
    N_SE,
    Alternative,
    ClaimResult,
    Series,
    combine,
    fit_slope,
    judge_close,
    judge_le,
    judge_slope,
)
from theory.claims.registry import claim
from theory.reconstruction import (
    batched_probe_excess,
    nested_probe_excess,
    ols_expected_excess,
    random_instance,
)

#: label dimension, input dimension, pretext-target dimension
K, D1, D2 = 3, 24, 8
#: tolerance on the fitted slope, fixed before the first run
SLOPE_TOL = 0.15
GRIDS = {"tiny": 7, "quick": 7, "full": 9}  # n = 64·2^i
REPLICATES = {"tiny": 64, "quick": 150, "full": 1000}
UNLABELLED = {"tiny": 4000, "quick": 20000, "full": 100000}
#: the sharp regime of the constant: every probe is fitted on n = p + 1 + SMALL_GAP samples,
#: where p/(n − p − 1) and p/(n − p) differ by a factor 1 + 1/SMALL_GAP; independent draws
SMALL_GAP = 6
SMALL_REPLICATES = {"tiny": 1500, "quick": 4000, "full": 20000}
#: the dimension the statement says sets the constant of the probe on ψ: the label dimension k
PSI_DIM = K
#: the exponent of n in the statement's decay of the excess
EXPECTED_SLOPE = -1.0


def closed_form_excess(noise_var: float, p: int, n: int) -> float:
    """The statement's expected excess of least squares on p Gaussian features over the best
    probe on them (residual variance ``noise_var``): ``noise_var · p/(n − p − 1)``."""
    return ols_expected_excess(noise_var, p, n)


def _no_minus_one(noise_var: float, p: int, n: int) -> float:
    """The alternative ``noise_var · p/(n − p)`` (the inverse-Wishart mean's −1 dropped)."""
    return noise_var * p / (n - p)


def _small_sample(model, feats: dict[str, np.ndarray], rng: np.random.Generator, reps: int):
    """Excess over Bayes of each probe fitted on ``n = p + 1 + SMALL_GAP`` samples, ``reps``
    independent draws: ``{name: (n, excess [reps, 1])}``."""
    out = {}
    for name, f in feats.items():
        n = f.shape[0] + 1 + SMALL_GAP
        x1, t = model.sample_labelled(rng, reps * n)
        ex = batched_probe_excess(model, f, x1.reshape(reps, n, -1), t.reshape(reps, n), [n])
        out[name] = (n, ex)
    return out


@lru_cache(maxsize=8)
def sweep(budget: str, seed: int, leak: float = 0.0, unlabelled: int | None = None) -> dict:
    """Excess over Bayes of the three probes, ``[R, len(ns)]`` each, and the closed forms.

    ``leak > 0`` breaks conditional independence (X₁'s noise leaks into X₂); ``unlabelled``
    overrides the number m of unlabelled pairs ψ̂ is learned from.
    """
    rng = np.random.default_rng(seed + 1501)
    model = random_instance(rng, k=K, d1=D1, d2=D2, leak=leak)
    m = unlabelled or UNLABELLED[budget]
    ns = [64 * 2**i for i in range(GRIDS[budget])]
    feats = {
        "psi": model.psi_features(),
        "raw": np.eye(D1),
        "learned": model.learned_psi_features(rng, m, K),
    }
    reps = REPLICATES[budget]
    excess = {name: np.empty((reps, len(ns))) for name in feats}
    for r in range(reps):
        x1, t = model.sample_labelled(rng, ns[-1])
        for name, f in feats.items():
            excess[name][r] = nested_probe_excess(model, f, x1, t, ns)
    bayes = model.bayes_risk()
    risk_best = {name: model.best_probe(f)[1] for name, f in feats.items()}
    small = _small_sample(
        model, feats, np.random.default_rng([seed, 1502]), SMALL_REPLICATES[budget]
    )
    return {
        "ns": ns,
        "excess": excess,
        "bayes": bayes,
        "risk_best": risk_best,
        "p": {name: f.shape[0] for name, f in feats.items()},
        "unlabelled": m,
        "small": small,
    }


def predicted(s: dict, name: str) -> list[float]:
    """Closed-form expected excess over Bayes: ``(R_M − R*) + R_M p/(n − p − 1)``."""
    r, p = s["risk_best"][name], s["p"][name]
    return [r - s["bayes"] + closed_form_excess(r, p, n) for n in s["ns"]]


def calibration(
    excess: np.ndarray, ns: list[int], offset: float, noise_var: float, p: int
) -> tuple[float, float]:
    """Measured over closed-form excess, pooled over n: mean and SE over replicates.

    Per replicate, ``(excess_n − offset) / (noise_var · p/(n − p − 1))`` averaged over the grid;
    when the closed form is right its expectation is exactly 1.
    """
    est = np.array([closed_form_excess(noise_var, p, n) for n in ns])
    per_rep = ((excess - offset) / est).mean(axis=1)
    return float(per_rep.mean()), float(per_rep.std(ddof=1) / math.sqrt(len(per_rep)))


def run_check(
    budget: str, seed: int, leak: float = 0.0, unlabelled: int | None = None
) -> ClaimResult:
    """The claim's check; ``leak`` and ``unlabelled`` change the setting (for negative tests)."""
    s = sweep(budget, seed, leak, unlabelled)
    ns, ex, bayes = s["ns"], s["excess"], s["bayes"]
    approx = s["risk_best"]["learned"] - bayes  # a_m: approximation error of the learned ψ̂
    slope, se = fit_slope(ns, ex["psi"])
    # the learned probe's excess over its own best weights is ≥ 0 draw by draw
    slope_l, se_l = fit_slope(ns, np.clip(ex["learned"] - approx, 1e-300, None))
    theory_k = [closed_form_excess(bayes, PSI_DIM, n) for n in ns]
    theory_d1 = [closed_form_excess(bayes, D1, n) for n in ns]
    mean = {name: ex[name].mean(axis=0) for name in ex}
    r_learned = s["risk_best"]["learned"]
    cal = {  # the theorem's constants for ψ and X₁; for ψ̂ the accounting a_m + R_M k/(n−k−1)
        "ψ, R*k/(n−k−1)": calibration(ex["psi"], ns, 0.0, bayes, PSI_DIM),
        "raw X₁, R*d₁/(n−d₁−1)": calibration(ex["raw"], ns, 0.0, bayes, D1),
        "ψ̂, a_m + R_M k/(n−k−1)": calibration(ex["learned"], ns, approx, r_learned, PSI_DIM),
    }
    # the sharp regime n = p + 1 + SMALL_GAP: the same three accountings, many draws
    small = s["small"]
    sharp = {
        "ψ": calibration(small["psi"][1], [small["psi"][0]], 0.0, bayes, PSI_DIM),
        "raw X₁": calibration(small["raw"][1], [small["raw"][0]], 0.0, bayes, D1),
        "ψ̂": calibration(small["learned"][1], [small["learned"][0]], approx, r_learned, PSI_DIM),
    }
    checks = [
        judge_close(
            "probe on ψ reaches Bayes: R_ψ − R*",
            s["risk_best"]["psi"] - bayes,
            0.0,
            atol=1e-12 * bayes,
        ),
        judge_slope("probe on ψ: excess vs n", slope, se, EXPECTED_SLOPE, SLOPE_TOL),
        judge_slope(
            "probe on learned ψ̂: excess − a_m vs n", slope_l, se_l, EXPECTED_SLOPE, SLOPE_TOL
        ),
        *[
            judge_close(f"{label}: measured / closed-form excess (pooled over n)", v, 1.0, se=e)
            for label, (v, e) in cal.items()
        ],
        *[
            judge_close(
                f"{label} at n = p + {1 + SMALL_GAP} (n={small[key][0]}): measured / closed-form "
                "excess",
                v,
                1.0,
                se=e,
            )
            for (label, (v, e)), key in zip(sharp.items(), ("psi", "raw", "learned"))
        ],
        *[
            judge_le(f"ψ below raw X₁ at n={n}", float(a), float(b))
            for n, a, b in zip(ns, mean["psi"], mean["raw"])
        ],
    ]
    c = combine(checks)
    ratio = float(mean["psi"][-1] / mean["raw"][-1])
    ratio_pred = theory_k[-1] / theory_d1[-1]
    sem = {name: ex[name].std(axis=0, ddof=1) / math.sqrt(len(ex[name])) for name in ex}
    return ClaimResult(
        c.verdict,
        c.reason,
        f"slope {slope:.3f} ± {se:.3f} (ψ̂: {slope_l:.3f} ± {se_l:.3f}); excess ψ/raw at "
        f"n={ns[-1]}: {ratio:.3f} vs closed form {ratio_pred:.3f} (k/d₁ = {K / D1:.3f}); "
        f"a_m = {approx:.1e} from m = {s['unlabelled']}",
        [
            Series("probe on ψ (k features)", ns, mean["psi"], sem["psi"]),
            Series("probe on raw X₁ (d₁ features)", ns, mean["raw"], sem["raw"]),
            Series("probe on learned ψ̂ (top-k)", ns, mean["learned"], sem["learned"]),
        ],
        [
            Series("R*k/(n−k−1)", ns, theory_k),
            Series("R*d₁/(n−d₁−1)", ns, theory_d1),
            Series("a_m + R_M k/(n−k−1)", ns, predicted(s, "learned")),
        ],
        x_label="labelled samples n",
        y_label="excess risk over Bayes",
        log_x=True,
        log_y=True,
        slope=slope,
        slope_se=se,
        expected_slope=EXPECTED_SLOPE,
        details={
            "k": K,
            "d1": D1,
            "d2": D2,
            "bayes_risk": bayes,
            "approximation_error_learned": approx,
            "unlabelled": s["unlabelled"],
            "replicates": len(ex["psi"]),
            "slope_learned": slope_l,
            "slope_learned_se": se_l,
            "ratio_psi_raw": ratio,
            "ratio_psi_raw_closed_form": ratio_pred,
            "leak": leak,
            "small_sample": {
                label: {"n": small[key][0], "ratio": v, "se": e}
                for (label, (v, e)), key in zip(sharp.items(), ("psi", "raw", "learned"))
            },
            "small_replicates": len(small["psi"][1]),
            "resolution": {
                "quantity": f"excess of the probe on ψ over its closed form R*k/(n−k−1) at "
                f"n − k − 1 = {SMALL_GAP}",
                "relative": N_SE * sharp["ψ"][1],
            },
            "resolution_slope": {
                "quantity": "exponent of n in the ψ probe's excess",
                "relative": (SLOPE_TOL + 2 * se) / abs(EXPECTED_SLOPE),
            },
        },
    )


@claim(
    "reconstruction_ssl_rate",
    "If X₁ ⊥ X₂ | Y (Y ∈ ℝ^k), the pretext optimum ψ = E[X₂|X₁] is linear in E[Y|X₁], so a "
    "least-squares probe on ψ from n labelled samples has excess risk over Bayes decaying as 1/n "
    "with a constant set by k, not by dim X₁: here exactly R*k/(n−k−1) against R*d₁/(n−d₁−1) for "
    "the raw input; with ψ̂ learned from m unlabelled pairs the excess is a_m + R_M k/(n−k−1).",
    "Lee, Lei, Saunshi & Zhuo, NeurIPS 2021 (arXiv 2008.01064), §3: conditional independence "
    "and the Õ(k/n₂) excess risk of the linear layer on ψ; the exact Gaussian-design OLS "
    "constants are derived in docs/settings.md §15",
    "[M]",
    "rate",
    cost=1.3,
    setting="linear-Gaussian reconstruction SSL (docs/settings.md §15)",
    alternatives=(
        Alternative(
            "no_minus_one",
            "the inverse-Wishart mean's −1 dropped: expected excess R·p/(n − p) in place of "
            "R·p/(n − p − 1) (1/7 lower at n = p + 7)",
            {"theory.claims.reconstruction.closed_form_excess": _no_minus_one},
        ),
        Alternative(
            "psi_dim_d2",
            "the ψ probe's constant counted in ψ's d₂ coordinates: R*d₂/(n − d₂ − 1) in place of "
            "R*k/(n − k − 1)",
            {"theory.claims.reconstruction.PSI_DIM": D2},
        ),
        Alternative(
            "rate_sqrt",
            "the excess decays as n^{-1/2} (a uniform-convergence rate) instead of 1/n",
            {"theory.claims.reconstruction.EXPECTED_SLOPE": -0.5},
        ),
    ),
)
def reconstruction_ssl_rate(budget: str, seed: int) -> ClaimResult:
    return run_check(budget, seed)
