"""Claim on dimensional collapse from strong augmentation in linear contrastive learning (§11).

Jing, Vincent, LeCun & Tian (ICLR 2022, arXiv 2110.09348), §4, with the uniform-weight threshold
derived in docs/settings.md §11: with the paper's views and same-branch negatives a direction
collapses iff its augmentation variance exceeds twice its signal variance. The data put four
augmentation/signal ratios on both sides of that threshold (1.6, 1.85 | 2.15, 2.5, besides 0.5
and 1), and each batch is trained until every eigenvalue of the embedding covariance is decided
(collapsed below 1e-10 of the largest or retained above 1e-3). So a threshold moved by more than
7.5% predicts a different collapsed set; the check's declared alternatives move it to 1.2× and
3×. A spectrum with an undecided eigenvalue is *inconclusive*, not *violated*, unless no outcome
of it could match the prediction. The collapsed input directions are compared with the predicted
eigenvectors in standard errors of one replicate's angle, estimated from independent batches
(:func:`_direction_check`); the alternative that turns them 0.6 rad away must be rejected.
"""

from __future__ import annotations

import numpy as np
import scipy.linalg
import torch

from gessl.losses import infonce
from theory.claims.base import N_SE, Alternative, Check, ClaimResult, Series, combine, judge_le
from theory.claims.registry import claim
from theory.collapse import CollapseSetting, lemma2_x, max_principal_angle, same_branch_infonce

DATA_VAR = np.array([1.0, 0.9, 1.0, 0.9, 1.0, 0.9])
#: augmentation-to-signal variance ratios σ_a,m²/σ_d,m²: two far from the threshold and four
#: straddling it (1.6, 1.85 | 2.15, 2.5), so that a threshold moved by more than 7.5% predicts a
#: different collapsed set
AUG_RATIO = np.array([0.5, 1.0, 1.6, 1.85, 2.15, 2.5])
AUG_VAR = AUG_RATIO * DATA_VAR
#: the statement's threshold: with the paper's views and same-branch negatives a direction
#: collapses iff σ_a² > COLLAPSE_RATIO·σ_d²
COLLAPSE_RATIO = 2.0
#: the angle (rad) by which the ``rotated_directions`` alternative turns the predicted directions
WRONG_ROTATION = 0.6
TAU = 2.0  # logits −‖z_i − z_j‖²/2, the paper's eq. 2
LR = 0.8
LEMMA_STEP = 10  # Lemma 2 is checked at steps 0 and 10 (while the gradient is large)
#: an embedding-covariance eigenvalue counts as collapsed below this fraction of the largest
#: (ten orders of magnitude under it; float64 resolves about sixteen) and as retained above
#: RETAINED; in between it is undecided
COLLAPSED, RETAINED = 1e-10, 1e-3
#: (batch size N, gradient steps, replicates: independent batches and initial W, trained with
#: same-branch negatives; the cross-view run uses the first) per budget. The ratio-2.15
#: direction, X ∝ −0.15σ_d², is the slowest: LR·steps = 240 puts it below 1e-12 in every replicate
#: of seeds 0–19 (200 left some at 1e-10); from LR ≈ 1.1 gradient descent no longer follows the
#: flow (retained directions fall too)
BUDGETS = {"tiny": (128, 300, 3), "quick": (128, 300, 4), "full": (384, 300, 8)}


def predicted_collapsed(data_var: np.ndarray, aug_var: np.ndarray, negatives: str) -> np.ndarray:
    """The statement's collapsed set (indices into the shared eigenbasis): with same-branch
    negatives the directions with ``σ_a² > COLLAPSE_RATIO·σ_d²``, with cross-view negatives
    none."""
    if negatives == "cross":
        return np.zeros(0, dtype=int)
    return np.flatnonzero(np.asarray(aug_var) > COLLAPSE_RATIO * np.asarray(data_var))


def predicted_directions(basis: np.ndarray, indices: np.ndarray) -> np.ndarray:
    """The predicted collapsed input directions: the shared eigenvectors ``u_m``, ``m`` in
    ``indices`` (``d × k``, orthonormal columns)."""
    return basis[:, indices]


def _rotated_directions(basis: np.ndarray, indices: np.ndarray) -> np.ndarray:
    """A wrong embedding of the prediction: each ``u_m`` turned by WRONG_ROTATION towards its own
    retained eigenvector (the retained ones nearest the threshold first); the span is then
    WRONG_ROTATION from the predicted one."""
    rest = [m for m in range(basis.shape[1]) if m not in set(indices.tolist())][::-1]
    if len(rest) < len(indices):
        raise ValueError("the rotated prediction needs as many retained as collapsed directions")
    c, s = np.cos(WRONG_ROTATION), np.sin(WRONG_ROTATION)
    cols = [c * basis[:, m] + s * basis[:, p] for m, p in zip(indices, rest)]
    return np.column_stack(cols) if cols else basis[:, :0]


def _train(
    x: np.ndarray,
    x_pos: np.ndarray,
    w0: np.ndarray,
    negatives: str,
    steps: int,
    record: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, float]:
    """Full-batch gradient descent on R independent batches at once (``x``, ``x_pos``
    ``[R, n, d]``, ``w0`` ``[R, k, d]``; each replicate descends its own batch-mean loss).
    Returns the relative embedding-covariance spectra ``λ_i(C)/λ_max(C)`` at the steps
    ``record`` (``[len(record), R, k]``, descending, ``C = WΣ̂Wᵀ``), the final ``W``
    (``[R, k, d]``) and the largest relative difference between autograd's gradient and ``−WX``
    (Lemma 2) at steps 0 and LEMMA_STEP."""
    reps = x.shape[0]
    xt, xpt = torch.from_numpy(x), torch.from_numpy(x_pos)
    cov = np.stack([np.cov(xr.T) for xr in x])
    record = set(np.asarray(record).tolist())
    w = torch.tensor(w0, requires_grad=True)
    spectra, lemma_err = [], 0.0
    for step in range(steps + 1):
        z, zp = xt @ w.transpose(1, 2), xpt @ w.transpose(1, 2)
        if negatives == "same":
            loss = same_branch_infonce(z, zp, TAU)
        else:
            loss = infonce(z, zp, temperature=TAU, critic="neg_sq_distance").loss
        # the losses are means over replicates: times R, each W gets its own batch's gradient
        (grad,) = torch.autograd.grad(reps * loss, w)
        wn = w.detach().numpy()
        if step in record:
            lam = np.linalg.eigvalsh(wn @ cov @ wn.transpose(0, 2, 1))[:, ::-1]
            spectra.append(lam / lam[:, :1])
        if step in (0, LEMMA_STEP):
            g = grad.numpy()
            for r in range(reps):
                flow = wn[r] @ lemma2_x(wn[r], x[r], x_pos[r], negatives, TAU)
                err = float(np.abs(-g[r] - flow).max() / np.abs(g[r]).max())
                lemma_err = max(lemma_err, err)
        if step < steps:
            with torch.no_grad():
                w -= LR * grad
    return np.array(spectra), w.detach().numpy(), lemma_err


def _count_check(name: str, spectra: np.ndarray, k: int) -> tuple[Check, np.ndarray, np.ndarray]:
    """The number of collapsed eigenvalues of each replicate's final spectrum (``[R, d]``)
    against the predicted ``k``. *Violated* only when no outcome of the undecided eigenvalues
    (between COLLAPSED and RETAINED) could give ``k`` — more than ``k`` collapsed, or fewer than
    ``k`` collapsed or undecided; else *inconclusive* while any is undecided."""
    collapsed = np.sum(spectra <= COLLAPSED, axis=1)
    undecided = np.sum((spectra > COLLAPSED) & (spectra < RETAINED), axis=1)
    txt = (
        f"{name}: collapsed eigenvalues per replicate {collapsed.tolist()}, {k} predicted; "
        f"{int(undecided.sum())} between {COLLAPSED:g} and {RETAINED:g} of λ_max"
    )
    if np.any(collapsed > k) or np.any(collapsed + undecided < k):
        return Check("violated", txt), collapsed, undecided
    if np.any(undecided):
        return Check("inconclusive", txt + " (undecided)"), collapsed, undecided
    return Check("holds", txt), collapsed, undecided


def _direction_check(
    name: str, w: np.ndarray, directions: np.ndarray
) -> tuple[Check, float, float]:
    """The collapsed input directions against the predicted ones (``d × k``): per replicate the
    largest principal angle θ_r between the null space of ``W_r`` (right singular vectors of the
    ``k`` smallest singular values) and the predicted span. The tolerance is N_SE standard errors
    of one replicate's angle: ``s = √(Σ_ij Var_r B_r,ij)``, the spread over replicates of the
    cross block ``B_r = Q_⊥ᵀ P_null,r Q`` (``Q`` the predicted directions, ``Q_⊥`` their
    complement; ``‖B_r‖₂ = sin(2θ_r)/2``). When the prediction is right ``B_r`` is a
    fluctuation about ≈ 0 (reflecting one eigenvector maps the Gaussian setting to itself), so
    ``E θ_r² ≈ E‖B_r‖₂² ≲ s²``; when it is off by a fixed rotation the spread ``s`` measures
    the noise about that offset, not the offset. Holds when ``mean_r θ_r ≤ N_SE·s``; the mean
    angle is not compared with ``s/√R``, since it does not tend to 0 with more replicates."""
    k = directions.shape[1]
    comp = scipy.linalg.null_space(directions.T)
    angles, blocks = [], []
    for wr in w:
        vt = np.linalg.svd(wr)[2]
        null = vt[vt.shape[0] - k :].T
        angles.append(max_principal_angle(null, directions))
        blocks.append(comp.T @ null @ null.T @ directions)
    se = float(np.sqrt(np.sum(np.var(np.array(blocks), axis=0, ddof=1))))
    angle = float(np.mean(angles))
    check = judge_le(f"{name}: mean angle(null W, predicted directions) [rad]", angle, 0.0, se=se)
    return check, angle, se


def _threshold_low(data_var: np.ndarray, aug_var: np.ndarray, negatives: str) -> np.ndarray:
    """Alternative: collapse above 1.2× the signal variance (same-branch negatives)."""
    if negatives == "cross":
        return np.zeros(0, dtype=int)
    return np.flatnonzero(np.asarray(aug_var) > 1.2 * np.asarray(data_var))


def _threshold_high(data_var: np.ndarray, aug_var: np.ndarray, negatives: str) -> np.ndarray:
    """Alternative: collapse above 3× the signal variance (same-branch negatives)."""
    if negatives == "cross":
        return np.zeros(0, dtype=int)
    return np.flatnonzero(np.asarray(aug_var) > 3.0 * np.asarray(data_var))


@claim(
    "dimensional_collapse",
    "A linear encoder z = Wx trained on InfoNCE with the distance critic −‖z_i − z_j‖²/2 and "
    "negatives from the anchor's branch (inputs x, positives x + ε) follows Ẇ = WX with "
    "X = Σ̂₀ − Σ̂₁ (weighted negative-pair minus positive-pair covariance); the directions where "
    "X is negative — at uniform weights those with augmentation variance above twice the signal "
    "variance — vanish from the embedding covariance, and exactly those. The library's "
    "cross-view InfoNCE on the same data has X₀ ∝ Cov(x, x') = Σ_d ⪰ 0 at uniform weights and "
    "collapses nothing. Checked with augmentation/signal ratios 0.5, 1, 1.6, 1.85, 2.15 and 2.5 "
    "on independent batches: the count of collapsed eigenvalues, and the collapsed directions "
    "within 4 standard errors of one batch's angle.",
    "Jing, Vincent, LeCun & Tian, ICLR 2022 (arXiv 2110.09348), §4: Lemma 1–2, Theorem 1, "
    "Corollary 1 [S]; the uniform-weight X₀, the predicted set during training and the "
    "cross-view form derived in docs/settings.md §11 [R]",
    "[R]",
    "exact",
    setting="linear encoder, Gaussian data, additive augmentation (docs/settings.md §11)",
    cost=1.0,
    alternatives=(
        Alternative(
            "threshold_1.2x",
            "the collapse threshold moved down: a direction collapses iff σ_a² > 1.2σ_d² (so the "
            "ratios 1.6 and 1.85 would collapse too)",
            {"theory.claims.collapse.predicted_collapsed": _threshold_low},
        ),
        Alternative(
            "threshold_3x",
            "the collapse threshold moved up: a direction collapses iff σ_a² > 3σ_d² (so the "
            "ratios 2.15 and 2.5 would be kept)",
            {"theory.claims.collapse.predicted_collapsed": _threshold_high},
        ),
        Alternative(
            "rotated_directions",
            f"the collapsed input directions predicted {WRONG_ROTATION:g} rad off the shared "
            "eigenvectors (each turned towards a retained one: a mis-estimated eigenbasis)",
            {"theory.claims.collapse.predicted_directions": _rotated_directions},
        ),
    ),
)
def dimensional_collapse(budget: str, seed: int) -> ClaimResult:
    return check_collapse(budget, seed)


def _threshold_resolution(data_var: np.ndarray, aug_var: np.ndarray) -> float:
    """Relative change of COLLAPSE_RATIO that changes the predicted set of these ratios: every
    threshold in ``(r_below, r_above]`` (the tested ratios nearest it) predicts the same set."""
    ratios = np.asarray(aug_var) / np.asarray(data_var)
    below, above = ratios[ratios <= COLLAPSE_RATIO], ratios[ratios > COLLAPSE_RATIO]
    if not (len(below) and len(above)):
        return float("inf")
    return float(max(COLLAPSE_RATIO - below.max(), above.min() - COLLAPSE_RATIO) / COLLAPSE_RATIO)


def check_collapse(
    budget: str,
    seed: int,
    data_var: np.ndarray = DATA_VAR,
    aug_var: np.ndarray = AUG_VAR,
    predicted: dict[str, np.ndarray] | None = None,
) -> ClaimResult:
    """The check of ``dimensional_collapse`` for given spectra; ``predicted`` overrides the
    statement's collapsed sets (indices into the basis, per ``"same"``/``"cross"``) — for the
    negative tests.

    One eigenbasis and R replicates (independent exact-moment batches and initial ``W``) per
    budget trained with same-branch negatives, the first also with cross-view ones; each final
    spectrum must have exactly the predicted number of collapsed eigenvalues and none undecided
    (:func:`_count_check`), and the null space of ``W`` must lie within N_SE standard errors of
    the predicted directions (:func:`_direction_check`)."""
    n, steps, reps = BUDGETS[budget]
    d = len(data_var)
    rng = np.random.default_rng(seed + 1101)
    basis = np.linalg.qr(rng.standard_normal((d, d)))[0]
    setting = CollapseSetting(np.asarray(data_var), np.asarray(aug_var), basis)
    batches = [setting.sample(n, rng, exact_moments=True) for _ in range(reps)]
    x, x_pos = np.stack([b[0] for b in batches]), np.stack([b[1] for b in batches])
    w0 = rng.standard_normal((reps, d, d)) / np.sqrt(d)
    checks: list[Check] = []
    runs = {}
    keep = np.unique(np.linspace(0, steps, 41).astype(int))  # recorded steps (the last included)
    for negatives, name in (("same", "eq. 2 (same-branch negatives)"), ("cross", "infonce")):
        if predicted is None:
            pred = predicted_collapsed(data_var, aug_var, negatives)
        else:
            pred = np.asarray(predicted[negatives], dtype=int)
        r = reps if negatives == "same" else 1
        spectra, w, err = _train(x[:r], x_pos[:r], w0[:r], negatives, steps, keep)
        checks.append(judge_le(f"{name}: |autograd − (−WX)| / |grad| (Lemma 2)", err, 1e-10))
        count, collapsed, undecided = _count_check(name, spectra[-1], len(pred))
        checks.append(count)
        angle = se = float("nan")  # measured only when every replicate has the predicted count
        if len(pred) and count.verdict == "holds":
            found, angle, se = _direction_check(name, w, predicted_directions(basis, pred))
            checks.append(found)
        info = {"collapsed": collapsed, "undecided": undecided, "angle": angle, "angle_se": se}
        runs[negatives] = (spectra[:, 0], pred, info, err, spectra[-1])
    c = combine(checks)
    floor = 1e-16  # float64 resolution relative to λ_max: smaller values are drawn at it

    def curves(negatives: str, label: str, which: range) -> list[Series]:
        spectra, pred = runs[negatives][0], runs[negatives][1]
        return [
            Series(
                f"{label}: λ_{i + 1}/λ_max"
                + (" (predicted collapsed)" if i >= d - len(pred) else ""),
                keep,
                np.maximum(spectra[:, i], floor),
            )
            for i in which
        ]

    def describe(negatives: str) -> str:
        _, pred, info, _, final = runs[negatives]
        kept = final[final > COLLAPSED]
        counts = info["collapsed"]
        text = (
            f"{'/'.join(str(int(v)) for v in counts)} of {d} collapsed "
            f"({len(counts)} replicate{'s' if len(counts) > 1 else ''}), {len(pred)} predicted"
        )
        text += f", smallest retained λ/λ_max {kept.min():.2g}" if len(kept) else ""
        if np.isfinite(info["angle"]):
            text += f", angle {info['angle']:.2g} rad (SE {info['angle_se']:.2g})"
        return text

    same_se = runs["same"][2]["angle_se"]
    return ClaimResult(
        c.verdict,
        c.reason,
        f"eq. 2 (same-branch negatives): {describe('same')}; gessl infonce (cross-view): "
        f"{describe('cross')}",
        curves("same", "eq. 2", range(d)),
        curves("cross", "gessl infonce", range(d - 2, d)),
        x_label=f"gradient step (lr {LR:g}, N = {n} fixed samples, d = k = {d}; replicate 1 of "
        f"{reps})",
        y_label="eigenvalue of C = WΣ̂Wᵀ / largest",
        log_y=True,
        details={
            "n": n,
            "steps": steps,
            "replicates": reps,
            "ratios": np.asarray(aug_var) / np.asarray(data_var),
            "resolution": {
                "quantity": f"collapse threshold σ_a²/σ_d² = {COLLAPSE_RATIO:g}",
                "relative": _threshold_resolution(data_var, aug_var),
            },
            "direction_resolution_rad": N_SE * same_se if np.isfinite(same_se) else same_se,
            **{
                f"{key}_{neg}": val
                for neg in ("same", "cross")
                for key, val in (
                    ("predicted", runs[neg][1]),
                    ("final_spectrum", runs[neg][0][-1]),
                    ("final_spectra", runs[neg][4]),
                    ("lemma2_error", runs[neg][3]),
                    ("angle", runs[neg][2]["angle"]),
                    ("angle_se", runs[neg][2]["angle_se"]),
                    ("uniform_x_eigs", np.linalg.eigvalsh(setting.uniform_x(n, neg, TAU))),
                    ("theory_predicted", setting.predicted_collapsed(neg)),
                )
            },
        },
    )
