"""Claim on dimensional collapse from strong augmentation in linear contrastive learning (§11)."""

from __future__ import annotations

import numpy as np
import torch

from gessl.losses import infonce
from theory.claims.base import Check, ClaimResult, Series, combine, judge_le
from theory.claims.registry import claim
from theory.collapse import CollapseSetting, lemma2_x, max_principal_angle, same_branch_infonce

DATA_VAR = np.array([1.0, 0.8, 0.6, 0.5, 0.3, 0.3])
AUG_VAR = np.array([1.0, 0.8, 0.6, 0.5, 1.2, 1.2])
TAU = 2.0  # logits −‖z_i − z_j‖²/2, the paper's eq. 2
LR = 0.5
LEMMA_STEP = 10  # Lemma 2 is checked at steps 0 and 10 (while the gradient is large)
#: an embedding-covariance eigenvalue counts as collapsed below this fraction of the largest
#: (ten orders of magnitude under it; float64 resolves about sixteen) and as retained above
#: RETAINED; in between the check is inconclusive
COLLAPSED, RETAINED = 1e-10, 1e-3
BUDGETS = {"tiny": (64, 80), "quick": (128, 100), "full": (384, 300)}


def _train(
    x: np.ndarray,
    x_pos: np.ndarray,
    w0: np.ndarray,
    negatives: str,
    steps: int,
) -> tuple[np.ndarray, np.ndarray, float]:
    """Full-batch gradient descent; returns the relative embedding-covariance spectra
    ``λ_i(C)/λ_max(C)`` per step (descending, ``C = WΣ̂Wᵀ``), the final ``W`` and the largest
    relative difference between autograd's gradient and ``−WX`` (Lemma 2) at steps 0 and
    LEMMA_STEP."""
    xt, xpt = torch.from_numpy(x), torch.from_numpy(x_pos)
    cov = np.cov(x.T)
    w = torch.tensor(w0, requires_grad=True)
    spectra, lemma_err = [], 0.0
    for step in range(steps + 1):
        z, zp = xt @ w.T, xpt @ w.T
        if negatives == "same":
            loss = same_branch_infonce(z, zp, TAU)
        else:
            loss = infonce(z, zp, temperature=TAU, critic="neg_sq_distance").loss
        (grad,) = torch.autograd.grad(loss, w)
        wn = w.detach().numpy()
        lam = np.sort(np.linalg.eigvalsh(wn @ cov @ wn.T))[::-1]
        spectra.append(lam / lam[0])
        if step in (0, LEMMA_STEP):
            g = grad.numpy()
            flow = wn @ lemma2_x(wn, x, x_pos, negatives, TAU)
            lemma_err = max(lemma_err, float(np.abs(-g - flow).max() / np.abs(g).max()))
        if step < steps:
            with torch.no_grad():
                w -= LR * grad
    return np.array(spectra), w.detach().numpy(), lemma_err


def _collapse_checks(
    name: str, spectrum: np.ndarray, w: np.ndarray, predicted: np.ndarray, basis: np.ndarray
) -> tuple[list[Check], dict[str, float]]:
    """Measured collapsed set against the predicted one: the count of collapsed eigenvalues, no
    eigenvalue left between the thresholds, and the identity of the collapsed input directions
    (largest principal angle between the null space of W and the predicted span < π/4)."""
    n_collapsed = int(np.sum(spectrum <= COLLAPSED))
    undecided = int(np.sum((spectrum > COLLAPSED) & (spectrum < RETAINED)))
    checks = [
        Check(
            "inconclusive" if undecided else "holds",
            f"{name}: {undecided} eigenvalues between {COLLAPSED:g} and {RETAINED:g} of λ_max",
        ),
        Check(
            "holds" if n_collapsed == len(predicted) else "violated",
            f"{name}: {n_collapsed} collapsed eigenvalues, {len(predicted)} predicted",
        ),
    ]
    angle = float("nan")  # measured only when the counts agree
    if len(predicted) and n_collapsed == len(predicted):
        _, sv, vt = np.linalg.svd(w)
        null = vt[len(sv) - n_collapsed :].T  # right singular vectors of the smallest σ
        angle = max_principal_angle(null, basis[:, predicted])
        checks.append(
            judge_le(f"{name}: angle(null W, predicted directions) [rad]", angle, np.pi / 4)
        )
    info = {"collapsed": n_collapsed, "undecided": undecided, "angle": angle}
    return checks, info


@claim(
    "dimensional_collapse",
    "A linear encoder z = Wx trained on InfoNCE with the distance critic −‖z_i − z_j‖²/2 and "
    "negatives from the anchor's branch (inputs x, positives x + ε) follows Ẇ = WX with "
    "X = Σ̂₀ − Σ̂₁ (weighted negative-pair minus positive-pair covariance); the directions where "
    "X is negative — at uniform weights those with augmentation variance above twice the signal "
    "variance — vanish from the embedding covariance, and exactly those. The library's "
    "cross-view InfoNCE on the same data has X₀ ∝ Cov(x, x') = Σ_d ⪰ 0 at uniform weights and "
    "collapses nothing.",
    "Jing, Vincent, LeCun & Tian, ICLR 2022 (arXiv 2110.09348), §4: Lemma 1–2, Theorem 1, "
    "Corollary 1 [S]; the uniform-weight X₀, the predicted set during training and the "
    "cross-view form derived in docs/settings.md §11 [R]",
    "[R]",
    "exact",
    setting="linear encoder, Gaussian data, additive augmentation (docs/settings.md §11)",
    cost=1.0,
)
def dimensional_collapse(budget: str, seed: int) -> ClaimResult:
    return check_collapse(budget, seed)


def check_collapse(
    budget: str,
    seed: int,
    data_var: np.ndarray = DATA_VAR,
    aug_var: np.ndarray = AUG_VAR,
    predicted: dict[str, np.ndarray] | None = None,
) -> ClaimResult:
    """The check of ``dimensional_collapse`` for given spectra; ``predicted`` overrides the
    theory's collapsed sets (indices into the basis, per ``"same"``/``"cross"``) — for the
    negative tests."""
    n, steps = BUDGETS[budget]
    d = len(data_var)
    rng = np.random.default_rng(seed + 1101)
    basis = np.linalg.qr(rng.standard_normal((d, d)))[0]
    setting = CollapseSetting(np.asarray(data_var), np.asarray(aug_var), basis)
    x, x_pos = setting.sample(n, rng, exact_moments=True)
    w0 = rng.standard_normal((d, d)) / np.sqrt(d)
    checks: list[Check] = []
    runs = {}
    for negatives, name in (("same", "eq. 2 (same-branch negatives)"), ("cross", "infonce")):
        if predicted is None:
            pred = setting.predicted_collapsed(negatives)
        else:
            pred = np.asarray(predicted[negatives], dtype=int)
        spectra, w, err = _train(x, x_pos, w0, negatives, steps)
        checks.append(judge_le(f"{name}: |autograd − (−WX)| / |grad| (Lemma 2)", err, 1e-10))
        found, info = _collapse_checks(name, spectra[-1], w, pred, basis)
        checks += found
        runs[negatives] = (spectra, pred, info, err)
    c = combine(checks)
    keep = np.unique(np.linspace(0, steps, 41).astype(int))
    floor = 1e-16  # float64 resolution relative to λ_max: smaller values are drawn at it

    def curves(negatives: str, label: str, which: range) -> list[Series]:
        spectra, pred = runs[negatives][0], runs[negatives][1]
        return [
            Series(
                f"{label}: λ_{i + 1}/λ_max"
                + (" (predicted collapsed)" if i >= d - len(pred) else ""),
                keep,
                np.maximum(spectra[keep, i], floor),
            )
            for i in which
        ]

    def describe(negatives: str) -> str:
        spectra, pred, info, _ = runs[negatives]
        final = spectra[-1]
        kept = final[final > COLLAPSED]
        text = f"{info['collapsed']} of {d} collapsed, {len(pred)} predicted"
        text += f", smallest retained λ/λ_max {kept.min():.2g}" if len(kept) else ""
        return text + (f", angle {info['angle']:.2g} rad" if np.isfinite(info["angle"]) else "")

    return ClaimResult(
        c.verdict,
        c.reason,
        f"eq. 2 (same-branch negatives): {describe('same')}; gessl infonce (cross-view): "
        f"{describe('cross')}",
        curves("same", "eq. 2", range(d)),
        curves("cross", "gessl infonce", range(d - 2, d)),
        x_label=f"gradient step (lr {LR:g}, N = {n} fixed samples, d = k = {d})",
        y_label="eigenvalue of C = WΣ̂Wᵀ / largest",
        log_y=True,
        details={
            "n": n,
            "steps": steps,
            **{
                f"{key}_{neg}": val
                for neg in ("same", "cross")
                for key, val in (
                    ("predicted", runs[neg][1]),
                    ("final_spectrum", runs[neg][0][-1]),
                    ("lemma2_error", runs[neg][3]),
                    ("angle", runs[neg][2]["angle"]),
                    ("uniform_x_eigs", np.linalg.eigvalsh(setting.uniform_x(n, neg, TAU))),
                )
            },
        },
    )
