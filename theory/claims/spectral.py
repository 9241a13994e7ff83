"""Claims on the spectral contrastive loss and linear-Gaussian optima (settings A1, A2)."""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy.optimize import minimize

from gessl.losses import spectral, vicreg
from theory.claims.base import (
    ClaimResult,
    Series,
    combine,
    fit_slope,
    judge_close,
    judge_le,
    judge_slope,
)
from theory.claims.registry import claim
from theory.graphs import block_graph, clump_grid_graph, random_graph
from theory.linear_gaussian import random_instance, subspace_sin2


def _t(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(x))


@claim(
    "spectral_identity",
    "On an augmentation graph, ‖Ā − FFᵀ‖²_F = L(f) + ‖Ā‖²_F for every f (rows u_x = √w_x f(x)), "
    "and the minimum of the spectral loss over k-dim features is −Σ_{i≤k} γ_i², attained by the "
    "top-k eigenvectors of Ā.",
    "HaoChen et al. 2021 (arXiv 2106.04156), Lemma 3.2 and the Eckart–Young optimum; the additive "
    "constant derived in docs/settings.md §3",
    "[S]",
    "exact",
    setting="random augmentation graphs (docs/settings.md §3)",
)
def spectral_identity(budget: str, seed: int) -> ClaimResult:
    rng = np.random.default_rng(seed)
    ks = [1, 2, 4, 8]
    graphs = 3 if budget == "tiny" else 10
    resid, gap, grad = [], [], []
    for _ in range(graphs):
        g = random_graph(rng, n_nat=30, n_aug=60)
        a2 = float(np.sum(g.normalized_adjacency**2))
        for k in ks:
            f = rng.standard_normal((60, k))
            resid.append(abs(g.mf_loss(f) - (g.population_loss(f) + a2)) / max(1.0, a2))
            fs = g.optimal_features(k)
            gap.append(g.population_loss(fs) + float(np.sum(g.gammas[:k] ** 2)))
            h, e = 1e-6, rng.standard_normal(fs.shape)  # directional derivative at the optimum
            grad.append(
                abs(g.population_loss(fs + h * e) - g.population_loss(fs - h * e)) / (2 * h)
            )
    checks = [
        judge_close("identity residual (relative)", max(resid), 0.0, atol=1e-12),
        judge_close("L(f*) + Σγ²", max(abs(x) for x in gap), 0.0, atol=1e-12),
        judge_close("directional derivative at f*", max(grad), 0.0, atol=1e-6),
    ]
    c = combine(checks)
    per_k = [max(abs(x) for x in gap[i :: len(ks)]) for i in range(len(ks))]
    return ClaimResult(
        c.verdict,
        c.reason,
        f"max identity residual {max(resid):.1e}; max |L(f*) + Σγ²| {max(abs(x) for x in gap):.1e}",
        [Series("max |L(f*) + Σγ²| over graphs", ks, per_k)],
        [Series("float64 tolerance", ks, [1e-12] * len(ks))],
        x_label="feature dimension k",
        y_label="absolute error",
        log_y=True,
        details={"graphs": graphs, "max_residual": max(resid), "max_gradient": max(grad)},
    )


@claim(
    "spectral_unbiased",
    "The batch spectral loss −(2/B)Σ z1ᵢᵀz2ᵢ + Σ_{i≠j}(z1ᵢᵀz2ⱼ)²/(B(B−1)) (gessl.losses.spectral) "
    "is an unbiased estimate of the population loss L(f) on an augmentation graph.",
    "HaoChen et al. 2021 (arXiv 2106.04156), §4 empirical loss",
    "[S]",
    "exact",
    setting="random augmentation graphs (docs/settings.md §3)",
)
def spectral_unbiased(budget: str, seed: int) -> ClaimResult:
    batches = {"tiny": 300, "quick": 2000, "full": 20000}[budget]
    rng = np.random.default_rng(seed + 7)
    g = random_graph(rng, n_nat=30, n_aug=60)
    sizes = [4, 16, 64]
    meas, ses, pops, checks = [], [], [], []
    for b in sizes:
        f = rng.standard_normal((60, 3))
        pop = g.population_loss(f)
        vals = np.empty(batches)
        ft = _t(f)
        for i in range(batches):
            a, c = g.sample_pairs(rng, b)
            vals[i] = float(spectral(ft[a], ft[c]).loss)
        m, s = float(vals.mean()), float(vals.std() / math.sqrt(batches))
        meas.append(m)
        ses.append(s)
        pops.append(pop)
        checks.append(judge_close(f"B={b}", m, pop, se=s))
    c = combine(checks)
    return ClaimResult(
        c.verdict,
        c.reason,
        f"B={sizes[0]}: batch mean {meas[0]:.4f} ± {ses[0]:.4f} vs L(f) {pops[0]:.4f}",
        [Series("mean batch loss", sizes, meas, ses)],
        [Series("population L(f)", sizes, pops)],
        x_label="batch size B",
        y_label="spectral loss",
        log_x=True,
        se=max(ses),
        details={"batches": batches},
    )


@claim(
    "spectral_probe_bound",
    "The linear-probe error of the spectral optimum obeys E(f*) ≤ 4δ/λ_{k+1} + 8δ (δ the label-"
    "recovery error, λ_{k+1} the (k+1)-th smallest Laplacian eigenvalue); the error drops once k "
    "reaches the number of clusters.",
    "HaoChen et al. 2021 (arXiv 2106.04156) Thm 3.7 in the eigenvalue form restated by Zhang et al."
    " 2025 (arXiv 2501.01317) Thm 3.3",
    "[S2]",
    "exact",
    setting="block and clump-grid augmentation graphs (docs/settings.md §3)",
)
def spectral_probe_bound(budget: str, seed: int) -> ClaimResult:
    graphs = {
        "block": block_graph(n_per_class=20, classes=3, stay=0.5, cross=0.01),
        "clump grid": clump_grid_graph(h=0.06),
    }
    ks = list(range(1, 8))
    measured, bounds, checks = [], [], []
    for name, g in graphs.items():
        err = [g.probe_error(g.optimal_features(k)) for k in ks]
        bnd = [g.eigenvalue_bound(k) for k in ks]
        for k, e, b in zip(ks, err, bnd):
            # the least-squares probe upper-bounds E(f*): below the bound proves the bound holds
            checks.append(judge_le(f"{name} k={k}", e, b, atol=1e-12))
        measured.append(Series(f"{name}: LS-probe error", ks, err))
        bounds.append(Series(f"{name}: 4δ/λ_(k+1) + 8δ", ks, [min(b, 10.0) for b in bnd]))
    grid = graphs["clump grid"]
    grid_err = measured[1].y
    checks.append(judge_le("clump grid: error at k = 4 clumps", grid_err[3], 1e-9))
    checks.append(judge_le("clump grid: error before k = 4 (must be > 0)", -grid_err[2], -0.05))
    c = combine(checks)
    nonvacuous = [(n, k, b) for n, s in zip(graphs, bounds) for k, b in zip(s.x, s.y) if b < 1]
    return ClaimResult(
        c.verdict,
        c.reason,
        f"error ≤ bound at all {2 * len(ks)} (graph, k); non-vacuous (<1) at {len(nonvacuous)}; "
        f"grid error 0 from k = 4",
        measured,
        bounds,
        x_label="feature dimension k",
        y_label="probe error (bounds capped at 10)",
        details={
            "delta": {n: g.delta for n, g in graphs.items()},
            "lambda": {n: g.laplacian_eigenvalues[1:9].tolist() for n, g in graphs.items()},
            "grid_delta": grid.delta,
        },
    )


@claim(
    "linear_gaussian_optima",
    "In the linear-Gaussian two-view model the spectral population loss is minimised at "
    "W* = diag(√κ)U_kᵀS^{-1/2} with value −Σκ_i², the hard-constraint VICReg optimum spans the "
    "same (generalised-eigenvector) subspace, and the library's batch losses estimate the closed "
    "forms.",
    "docs/settings.md §4 (derived, verified); Balestriero & LeCun 2022 (arXiv 2205.11508) [S2] "
    "for the spectral-embedding view",
    "[R]",
    "exact",
    setting="linear-Gaussian joint embedding (docs/settings.md §4)",
)
def linear_gaussian_optima(budget: str, seed: int) -> ClaimResult:
    rng = np.random.default_rng(seed + 11)
    model, k = random_instance(rng, d=6), 2
    kap = model.kappas()
    ws, wv = model.spectral_optimum(k), model.vicreg_hard_optimum(k)
    target = -float(np.sum(kap[:k] ** 2))
    starts = 3 if budget == "tiny" else 8
    found = [
        minimize(
            lambda v: model.spectral_population_loss(v.reshape(k, -1)),
            0.3 * rng.standard_normal(k * model.d),
            method="L-BFGS-B",
            options={"maxiter": 5000, "gtol": 1e-12, "ftol": 1e-15},
        )
        for _ in range(starts)
    ]
    best = min(found, key=lambda r: r.fun)
    cons = {
        "type": "eq",
        "fun": lambda v: (v.reshape(k, -1) @ model.S @ v.reshape(k, -1).T - np.eye(k))[
            np.triu_indices(k)
        ],
    }
    hard = minimize(
        lambda v: 2 * np.trace(v.reshape(k, -1) @ model.sigma_xi @ v.reshape(k, -1).T),
        wv.ravel() + 0.3 * rng.standard_normal(k * model.d),
        method="SLSQP",
        constraints=[cons],
        options={"maxiter": 2000, "ftol": 1e-14},
    )
    n = {"tiny": 4000, "quick": 40000, "full": 400000}[budget]
    x1, x2 = model.sample(rng, n)
    batches = np.array_split(np.arange(n), max(20, n // 1000))  # ≥ 20 batches for the SE
    vals = [float(spectral(_t(x1[b] @ ws.T), _t(x2[b] @ ws.T)).loss) for b in batches]
    inv = [float(vicreg(_t(x1[b] @ wv.T), _t(x2[b] @ wv.T)).terms["invariance"]) for b in batches]
    inv_target = 2 * np.trace(wv @ model.sigma_xi @ wv.T) / k
    sin2 = {
        "numerical spectral minimiser": subspace_sin2(best.x.reshape(k, -1), ws),
        "VICReg hard optimum": subspace_sin2(wv, ws),
        "numerical VICReg (SLSQP)": subspace_sin2(hard.x.reshape(k, -1), ws),
        "generalised eigenvectors": subspace_sin2(model.generalized_eigvecs(k), ws),
    }
    se_l, se_i = np.std(vals) / math.sqrt(len(vals)), np.std(inv) / math.sqrt(len(inv))
    checks = [
        judge_close("L(W*) = −Σκ²", model.spectral_population_loss(ws), target, atol=1e-12),
        judge_close("numerical min", best.fun, target, atol=1e-9),
        judge_close("batch spectral loss at W*", float(np.mean(vals)), target, se=se_l),
        judge_close(
            "VICReg invariance at the hard optimum", float(np.mean(inv)), inv_target, se=se_i
        ),
    ]
    checks += [judge_close(f"sin²θ({name}, W*)", v, 0.0, atol=1e-6) for name, v in sin2.items()]
    c = combine(checks)
    names = list(sin2)
    return ClaimResult(
        c.verdict,
        c.reason,
        f"min L = {best.fun:.8f} vs −Σκ² = {target:.8f}; max sin²θ {max(sin2.values()):.1e}",
        [
            Series(
                "sin²θ to the spectral optimum",
                list(range(len(names))),
                [max(v, 1e-18) for v in sin2.values()],
            )
        ],
        [Series("tolerance", list(range(len(names))), [1e-6] * len(names))],
        x_label="estimate (" + "; ".join(f"{i}: {nm}" for i, nm in enumerate(names)) + ")",
        y_label="sin²θ",
        log_y=True,
        se=float(max(se_l, se_i)),
        details={"kappa": kap.tolist(), "sin2": sin2, "samples": n},
    )


@claim(
    "linear_gaussian_subspace_rate",
    "The plug-in estimate of the optimal subspace from n view pairs has sin²θ error decaying as "
    "n^{-1} (Davis–Kahan: sinθ ≲ ‖Σ̂ − Σ‖/eigengap).",
    "docs/settings.md §4 expected curve; Davis–Kahan sin θ theorem",
    "[R]",
    "rate",
    setting="linear-Gaussian joint embedding, finite samples (docs/settings.md §4)",
)
def linear_gaussian_subspace_rate(budget: str, seed: int) -> ClaimResult:
    rng = np.random.default_rng(seed + 13)
    model, k = random_instance(rng, d=6), 2
    ns = [250, 1000, 4000, 16000] if budget != "full" else [250, 1000, 4000, 16000, 64000]
    reps = {"tiny": 6, "quick": 30, "full": 100}[budget]
    ws = model.spectral_optimum(k)
    err = np.array(
        [
            [subspace_sin2(model.plugin_subspace(*model.sample(rng, n), k), ws) for n in ns]
            for _ in range(reps)
        ]
    )
    slope, se = fit_slope(ns, err)
    c = combine([judge_slope("sin²θ vs n", slope, se, -1.0, 0.2)])
    m = err.mean(0)
    return ClaimResult(
        c.verdict,
        c.reason,
        f"slope {slope:.3f} ± {se:.3f} (expected −1)",
        [Series("mean sin²θ", ns, m, err.std(0) / math.sqrt(reps))],
        [Series("∝ 1/n (through the first point)", ns, [m[0] * ns[0] / n for n in ns])],
        x_label="view pairs n",
        y_label="sin²θ",
        log_x=True,
        log_y=True,
        slope=slope,
        slope_se=se,
        expected_slope=-1.0,
        details={"kappa": model.kappas().tolist(), "replicates": reps},
    )
