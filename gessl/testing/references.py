"""Independent float64 NumPy references of the built-in losses, written from the papers' equations.

They share no code with :mod:`gessl.losses` (NumPy and explicit loops over samples where that is
how the paper writes the sum), so agreement between the two is evidence, not tautology. Each takes
NumPy arrays (or anything ``np.asarray`` accepts) plus the same keyword options as the torch loss
and returns a float. Point a card's ``reference`` at one of these to check your own
implementation of a standard loss.
"""

from __future__ import annotations

import numpy as np
from scipy.special import logsumexp

__all__ = [
    "barlow_twins",
    "byol",
    "dino",
    "infonce",
    "moco",
    "nt_xent",
    "simsiam",
    "spectral",
    "swav",
    "vicreg",
]


def _a(x) -> np.ndarray:
    return np.asarray(x, dtype=np.float64)


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def infonce(z1, z2, temperature=0.07, critic="cosine", symmetric=False) -> float:
    """Mean over anchors i of ``−log( e^{s_ii/τ} / Σ_j e^{s_ij/τ} )``, ``s`` the named critic:
    cosine, dot, ``−‖a − b‖²`` (``neg_sq_distance``) or ``−‖a[:h] − b[h:]‖²`` (``two_headed``)."""
    z1, z2 = _a(z1), _a(z2)

    def sim(a, b):
        if critic == "cosine":
            return a @ b / (np.linalg.norm(a) * np.linalg.norm(b))
        if critic == "dot":
            return a @ b
        if critic == "neg_sq_distance":
            return -np.sum((a - b) ** 2)
        if critic == "two_headed":
            h = a.shape[0] // 2
            return -np.sum((a[:h] - b[h:]) ** 2)
        raise ValueError(f"unknown critic {critic!r}")

    def one(a, b):
        total = 0.0
        for i in range(a.shape[0]):
            s = np.array([sim(a[i], b[j]) for j in range(b.shape[0])]) / temperature
            total += logsumexp(s) - s[i]
        return total / a.shape[0]

    return (one(z1, z2) + one(z2, z1)) / 2 if symmetric else one(z1, z2)


def nt_xent(z1, z2, temperature=0.5) -> float:
    """SimCLR eq. 1: ``ℓ(i, j) = −log e^{s_ij/τ} / Σ_{k≠i} e^{s_ik/τ}`` over all 2N anchors."""
    z = _unit(np.concatenate([_a(z1), _a(z2)]))
    n2 = z.shape[0]
    n = n2 // 2
    total = 0.0
    for i in range(n2):
        j = (i + n) % n2
        s = np.array([z[i] @ z[k] / temperature for k in range(n2) if k != i])
        total += logsumexp(s) - z[i] @ z[j] / temperature
    return total / n2


def moco(z1, z2, queue=None, temperature=0.2) -> float:
    """MoCo eq. 1: ``−log e^{q·k+/τ} / (e^{q·k+/τ} + Σ_queue e^{q·k/τ})``."""
    q, k = _unit(_a(z1)), _unit(_a(z2))
    if queue is None:
        return infonce(q, k, temperature=temperature)
    neg = _unit(_a(queue))
    total = 0.0
    for i in range(q.shape[0]):
        logits = np.concatenate([[q[i] @ k[i]], neg @ q[i]]) / temperature
        total += logsumexp(logits) - logits[0]
    return total / q.shape[0]


def byol(z1, z2, stop_gradient=True) -> float:
    """BYOL eq. 2: ``‖p/‖p‖ − z/‖z‖‖²`` averaged over the batch."""
    d = _unit(_a(z1)) - _unit(_a(z2))
    return float(np.mean(np.sum(d * d, axis=1)))


def simsiam(z1, z2, stop_gradient=True) -> float:
    """SimSiam eq. 1: ``−(p/‖p‖)·(z/‖z‖)`` averaged over the batch."""
    return float(-np.mean(np.sum(_unit(_a(z1)) * _unit(_a(z2)), axis=1)))


def barlow_twins(
    z1, z2, lambda_offdiag=5e-3, scale=1.0, eps=1e-5, check_rank=False, batchnorm=True
) -> float:
    """Barlow Twins eq. 2: ``C_ij = Σ_b ẑ1_bi ẑ2_bj / N`` (standardised), loss
    ``Σ(1−C_ii)² + λΣ_{i≠j}C_ij²``."""
    z1, z2 = _a(z1), _a(z2)
    n, d = z1.shape

    def standardise(z):
        mu = z.sum(axis=0) / n
        var = ((z - mu) ** 2).sum(axis=0) / n
        return (z - mu) / np.sqrt(var + eps)

    a, b = (standardise(z1), standardise(z2)) if batchnorm else (z1, z2)
    c = np.zeros((d, d))
    for i in range(d):
        for j in range(d):
            c[i, j] = np.dot(a[:, i], b[:, j]) / n
    on = sum((1 - c[i, i]) ** 2 for i in range(d))
    off = sum(c[i, j] ** 2 for i in range(d) for j in range(d) if i != j)
    return float(scale * (on + lambda_offdiag * off))


def vicreg(
    z1,
    z2,
    sim_weight=25.0,
    var_weight=25.0,
    cov_weight=1.0,
    gamma=1.0,
    eps=1e-4,
    variance_halving=False,
    check_rank=False,
) -> float:
    """VICReg eqs. 1–6, with unbiased variance/covariance (N − 1)."""
    z1, z2 = _a(z1), _a(z2)
    d = z1.shape[1]

    def v(z):
        std = np.sqrt(np.var(z, axis=0, ddof=1) + eps)
        return np.mean(np.maximum(0.0, gamma - std))

    def c(z):
        cov = np.cov(z, rowvar=False, ddof=1)
        return (np.sum(cov**2) - np.sum(np.diag(cov) ** 2)) / d

    s = np.mean((z1 - z2) ** 2)
    var = v(z1) + v(z2)
    if variance_halving:
        var /= 2
    return float(sim_weight * s + var_weight * var + cov_weight * (c(z1) + c(z2)))


def spectral(z1, z2, mu=1.0, projection=False) -> float:
    """HaoChen et al. §4 batch form ``−(2/B)Σ z1_i·z2_i + Σ_{i≠j}(z1_i·z2_j)²/(B(B−1))``."""
    z1, z2 = _a(z1), _a(z2)
    if projection:
        r = np.sqrt(mu)
        z1 = np.array([z if np.linalg.norm(z) <= r else r * z / np.linalg.norm(z) for z in z1])
        z2 = np.array([z if np.linalg.norm(z) <= r else r * z / np.linalg.norm(z) for z in z2])
    b = z1.shape[0]
    pos = -2.0 * sum(z1[i] @ z2[i] for i in range(b)) / b
    neg = sum((z1[i] @ z2[j]) ** 2 for i in range(b) for j in range(b) if i != j) / (b * (b - 1))
    out = pos + neg
    return float(out / mu if projection else out)


def _sinkhorn(scores, epsilon, iterations):
    """SwAV Algorithm 1 in the probability domain, prototypes × samples as in the paper."""
    q = np.exp((scores / epsilon).T)
    q /= q.sum()
    k, b = q.shape
    for _ in range(iterations):
        q /= q.sum(axis=1, keepdims=True)
        q /= k
        q /= q.sum(axis=0, keepdims=True)
        q /= b
    return (q * b).T


def swav(
    z1, z2, prototypes=None, temperature=0.1, epsilon=0.05, sinkhorn_iterations=3, queue=None
) -> float:
    """SwAV eqs. 1–3: ``½[ℓ(z1, q2) + ℓ(z2, q1)]``, ``ℓ(z, q) = −Σ_k q_k log softmax(z·c_k/τ)``."""
    c = _unit(_a(prototypes))
    s1, s2 = _unit(_a(z1)) @ c.T, _unit(_a(z2)) @ c.T
    n = s1.shape[0]

    def codes(s):
        if queue is None:
            return _sinkhorn(s, epsilon, sinkhorn_iterations)
        sq = _unit(_a(queue)) @ c.T
        return _sinkhorn(np.concatenate([s, sq]), epsilon, sinkhorn_iterations)[:n]

    def ce(q, s):
        logp = s / temperature - logsumexp(s / temperature, axis=1, keepdims=True)
        return -np.mean(np.sum(q * logp, axis=1))

    return float((ce(codes(s2), s1) + ce(codes(s1), s2)) / 2)


def dino(z1, z2, center=None, student_temperature=0.1, teacher_temperature=0.04) -> float:
    """DINO eq. 1 with centering: ``−Σ_k P_t(k) log P_s(k)``, batch mean."""
    s, t = _a(z1), _a(z2)
    c = np.zeros(s.shape[1]) if center is None else _a(center)
    lt = (t - c) / teacher_temperature
    pt = np.exp(lt - logsumexp(lt, axis=1, keepdims=True))
    ls = s / student_temperature
    log_ps = ls - logsumexp(ls, axis=1, keepdims=True)
    return float(-np.mean(np.sum(pt * log_ps, axis=1)))
