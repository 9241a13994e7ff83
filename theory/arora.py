"""Setting A4: latent-class Gaussian mixture, class collision and the mean classifier.

Arora, Khandeparkar, Khodak, Plevrakis & Saunshi, "A Theoretical Analysis of Contrastive
Unsupervised Representation Learning", ICML 2019 (arXiv 1902.09229) [M]. Classes ``c ~ ρ``,
``D_c = N(μ_c, I_d)``; positive pair ``x, x⁺ ~ D_c``; negative ``x⁻ ~ D_{c'}``, ``c' ~ ρ``;
linear ``f(x) = Wx``; logistic loss in base 2, ``ℓ(v) = log₂(1 + e^{−v})`` (``ℓ(0) = 1``).

Per anchor ``x`` of class c, ``t = f(x)ᵀ(f(x⁺) − f(x⁻))`` given ``c'`` is Gaussian with mean
``f(x)ᵀW(μ_c − μ_c')`` and variance ``2‖Wᵀf(x)‖²``, so the inner expectations are 1-D Gaussian
integrals (Gauss–Hermite); only the anchor is sampled.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["LatentClassMixture", "logistic2"]

_GH_X, _GH_W = np.polynomial.hermite_e.hermegauss(80)  # probabilists' Hermite: E f(Z), Z~N(0,1)
_GH_W = _GH_W / _GH_W.sum()


def logistic2(v: np.ndarray) -> np.ndarray:
    """``log₂(1 + e^{−v})``, stable for large ``|v|``."""
    return np.logaddexp(0.0, -v) / np.log(2.0)


@dataclass
class LatentClassMixture:
    """Class means ``mu`` ``[C, d]`` and class probabilities ``rho`` ``[C]``."""

    mu: np.ndarray
    rho: np.ndarray

    @property
    def collision(self) -> float:
        """``τ = Σ_c ρ_c²``, the probability that the negative shares the anchor's class."""
        return float(np.sum(self.rho**2))

    def sample_anchors(self, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
        c = rng.choice(len(self.rho), size=n, p=self.rho)
        return self.mu[c] + rng.standard_normal((n, self.mu.shape[1])), c

    def per_anchor_parts(
        self, w: np.ndarray, x: np.ndarray, c: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per anchor: ``L_un`` given x, ``L_sup^μ`` given x (the mean-classifier loss against
        the other classes, ``c' ~ ρ`` conditioned on ``c' ≠ c``) and ``τ = ρ_c`` (the
        probability that the negative shares the anchor's class).

        ``L_un`` is exact in the positive and negative draws (quadrature);
        ``τ ℓ(0) + (1−τ) L_sup^μ`` is the lower bound of Arora et al.'s Lemma 4.3 form, anchor by
        anchor (Jensen per anchor).
        """
        z = x @ w.T  # f(x), [n, k]
        mf = self.mu @ w.T  # μ^f_c = W μ_c (exact for linear f)
        scale = np.sqrt(2.0) * np.linalg.norm(z @ w, axis=1)  # sd of t given x, c'
        mean = np.einsum("nk,nk->n", z, mf[c])[:, None] - z @ mf.T  # [n, C]: f(x)ᵀ(μ_c − μ_c')
        t = mean[:, :, None] + scale[:, None, None] * _GH_X[None, None, :]
        inner = (logistic2(t) * _GH_W).sum(-1)  # E ℓ(t) given x and c'
        l_un = inner @ self.rho
        same = np.arange(len(self.rho))[None, :] == c[:, None]
        tau = self.rho[c]
        l_sup = (np.where(same, 0.0, logistic2(mean)) @ self.rho) / (1.0 - tau)
        return l_un, l_sup, tau

    def per_anchor_terms(
        self, w: np.ndarray, x: np.ndarray, c: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Per anchor: ``L_un`` given x, and ``τ ℓ(0) + (1−τ)·L_sup^μ``'s contribution given x
        (:meth:`per_anchor_parts` combined; ``ℓ(0) = 1``)."""
        l_un, l_sup, tau = self.per_anchor_parts(w, x, c)
        return l_un, tau * 1.0 + (1.0 - tau) * l_sup
