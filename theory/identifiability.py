"""Setting A14: contrastive learning inverts an injective generator of latents on the sphere.

Zimmermann, Sharma, Schneider, Bethge & Brendel, "Contrastive Learning Inverts the Data
Generating Process", ICML 2021 (arXiv 2102.08850), Theorem 2 as restated on the authors' project
page (brendel-group/cl-ica, ``index.html``) and in a secondary summary: latents ``z`` uniform on
the sphere ``S^{d−1}``, a positive ``z̃ ~ vMF(z, κ)`` (density ∝ ``exp(κ zᵀz̃)``), observations
``x = g(z)`` with ``g`` injective; an encoder ``f`` with outputs on the sphere that minimises the
InfoNCE loss (critic ``f(x)ᵀf(x̃)/τ``, infinitely many negatives) satisfies ``f∘g = A``, an
orthogonal linear map ("up to an orthogonal linear transformation and a constant scaling
factor"). The proof matches the model conditional ``∝ exp(h(z)ᵀh(z̃)/τ)`` to the vMF one, which
for unit-norm ``h`` is exact at ``τ = 1/κ``; we train at that temperature.

Here ``d = 3``. Closed forms and constructions (docs/settings.md §14) [R]:

* vMF on S² by inverse CDF: the cosine ``w = μᵀz̃`` has density ``κ e^{κw} / (2 sinh κ)`` on
  [−1, 1], so ``w = 1 + log(u + (1 − u) e^{−2κ}) / κ`` for ``u ~ U(0, 1)``; the direction
  orthogonal to ``μ`` is uniform on the circle. Mean resultant length
  ``A(κ) = E[w] = coth κ − 1/κ``.
* The generator ``g(z) = σ(W₂ σ(W₁ z))`` with ``W₁ ∈ ℝ^{10×3}`` of rank 3, ``W₂ ∈ ℝ^{10×10}``
  invertible (random orthonormal columns times singular values in [0.5, 1.5]) and σ the leaky
  ReLU (slope 0.2): a rank-3 linear map is injective, σ is strictly
  increasing in each coordinate hence a bijection of ℝ^{10}, and an invertible square map is a
  bijection, so ``g`` is injective. ``fold`` (``z₃ → |z₃|`` before ``g``) makes it 2-to-1.
* The encoder is an MLP 10 → H → H → 3 followed by an affine-free batch standardisation of each
  output (BatchNorm without affine parameters); the InfoNCE cosine critic then puts it on the
  sphere. The standardisation is an architecture choice that lets training leave the folded
  (degree-0) maps a random initialisation often starts in.
* Linear identifiability: the R² of each latent coordinate from the encoder output, by least
  squares with intercept fitted on one half of a fresh sample and evaluated on the other; the
  singular values of the fitted 3 × 3 map are all 1 when ``f∘g`` is orthogonal.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from gessl.losses import infonce
from theory.sphere import sample_sphere

__all__ = [
    "EncoderEnsemble",
    "InjectiveGenerator",
    "fold",
    "linear_identifiability",
    "sample_marginal",
    "sample_vmf_s2",
    "train_encoders",
    "vmf_mean_resultant_length",
]

f64 = torch.float64
#: leaky-ReLU slope of the generator and the encoder
SLOPE = 0.2
ADAM_BETAS = (0.9, 0.999)


def vmf_mean_resultant_length(kappa: float) -> float:
    """``A(κ) = E[μᵀz̃] = coth κ − 1/κ`` for the vMF distribution on S² (κ > 0).

    Uses the series ``κ/3 − κ³/45 + 2κ⁵/945`` for κ < 1e-3, where the closed form cancels.
    """
    if not kappa > 0:
        raise ValueError(f"kappa must be > 0, got {kappa!r}")
    if kappa < 1e-3:
        return kappa / 3 - kappa**3 / 45 + 2 * kappa**5 / 945
    return 1 / math.tanh(kappa) - 1 / kappa


def sample_vmf_s2(gen: torch.Generator, mu: Tensor, kappa: float) -> Tensor:
    """One draw from ``vMF(μ_i, κ)`` on S² per row of ``mu`` (``[n, 3]`` unit vectors).

    Inverse CDF of the cosine ``w`` (module docstring), computed as
    ``1 + logaddexp(log u, log(1 − u) − 2κ)/κ`` so that it stays finite for large κ.
    """
    if mu.dim() != 2 or mu.shape[1] != 3:
        raise ValueError(f"mu must be [n, 3], got {tuple(mu.shape)}")
    if not kappa > 0:
        raise ValueError(f"kappa must be > 0, got {kappa!r}")
    mu = mu.to(f64)
    if not torch.allclose(mu.norm(dim=1), torch.ones(mu.shape[0], dtype=f64), atol=1e-9):
        raise ValueError("rows of mu must be unit vectors")
    n = mu.shape[0]
    u = torch.rand(n, generator=gen, dtype=f64)
    w = 1 + torch.logaddexp(torch.log(u), torch.log1p(-u) - 2 * kappa) / kappa
    w = w.clamp(-1.0, 1.0)
    phi = 2 * math.pi * torch.rand(n, generator=gen, dtype=f64)
    # an orthonormal basis (e1, e2) of the plane orthogonal to each μ
    axis = torch.zeros_like(mu)
    axis[torch.arange(n), mu.abs().argmin(dim=1)] = 1.0
    e1 = F.normalize(axis - (axis * mu).sum(1, keepdim=True) * mu, dim=1)
    e2 = torch.linalg.cross(mu, e1, dim=1)
    radial = torch.sqrt(1 - w**2)[:, None]
    return w[:, None] * mu + radial * (torch.cos(phi)[:, None] * e1 + torch.sin(phi)[:, None] * e2)


def fold(z: Tensor) -> Tensor:
    """``(z₁, z₂, |z₃|)``: glues each point to its mirror image across the equator."""
    return torch.cat([z[..., :2], z[..., 2:].abs()], dim=-1)


@dataclass
class InjectiveGenerator:
    """``g(z) = σ(W₂ σ(W₁ z))`` applied per replicate: ``w1`` ``[R, 10, 3]``, ``w2``
    ``[R, 10, 10]``; injective when every ``W₁`` has rank 3 and every ``W₂`` is invertible.
    Replicates with ``folded[r]`` apply :func:`fold` first (then ``g`` is 2-to-1)."""

    w1: Tensor
    w2: Tensor
    folded: Tensor

    @classmethod
    def random(cls, gen: torch.Generator, replicates: int, d_out: int = 10) -> InjectiveGenerator:
        """``W = Q S`` with ``Q`` Haar-random with orthonormal columns and ``S`` diagonal,
        entries uniform on [0.5, 1.5]: full rank with condition number ≤ 3."""

        def weights(rows: int, cols: int) -> Tensor:
            gauss = torch.randn(replicates, rows, cols, generator=gen, dtype=f64)
            q, r = torch.linalg.qr(gauss)
            q = q * torch.sign(torch.diagonal(r, dim1=1, dim2=2))[:, None, :]  # Haar
            scale = 0.5 + torch.rand(replicates, 1, cols, generator=gen, dtype=f64)
            return q * scale

        w1, w2 = weights(d_out, 3), weights(d_out, d_out)
        return cls(w1, w2, torch.zeros(replicates, dtype=torch.bool))

    def min_singular_values(self) -> tuple[float, float]:
        """The smallest singular value of any ``W₁`` and of any ``W₂`` (> 0: injective)."""
        return (
            float(torch.linalg.svdvals(self.w1).min()),
            float(torch.linalg.svdvals(self.w2).min()),
        )

    def __call__(self, z: Tensor) -> Tensor:
        """``[R, N, 3]`` latents → ``[R, N, 10]`` observations."""
        z = torch.where(self.folded[:, None, None], fold(z), z)
        h = F.leaky_relu(z @ self.w1.transpose(1, 2), SLOPE)
        return F.leaky_relu(h @ self.w2.transpose(1, 2), SLOPE)


class EncoderEnsemble(torch.nn.Module):
    """``R`` independent MLP encoders 10 → H → H → 3 evaluated in one batched pass.

    Each is followed by an affine-free standardisation of its 3 outputs: with the statistics
    of the batch in training, and with fixed statistics (:meth:`freeze_statistics`) afterwards.
    """

    def __init__(self, gen: torch.Generator, replicates: int, d_in: int = 10, hidden: int = 32):
        super().__init__()
        sizes = [d_in, hidden, hidden, 3]
        self.weights = torch.nn.ParameterList()
        self.biases = torch.nn.ParameterList()
        for a, b in itertools.pairwise(sizes):  # PyTorch's default Linear initialisation
            bound = 1 / math.sqrt(a)
            w = (2 * torch.rand(replicates, a, b, generator=gen, dtype=f64) - 1) * bound
            c = (2 * torch.rand(replicates, 1, b, generator=gen, dtype=f64) - 1) * bound
            self.weights.append(torch.nn.Parameter(w))
            self.biases.append(torch.nn.Parameter(c))
        self.stats: tuple[Tensor, Tensor] | None = None

    def raw(self, x: Tensor) -> Tensor:
        """``[R, N, d_in]`` → ``[R, N, 3]`` before the standardisation."""
        for i, (w, b) in enumerate(zip(self.weights, self.biases)):
            x = torch.baddbmm(b, x, w)
            if i < len(self.weights) - 1:
                x = F.leaky_relu(x, SLOPE)
        return x

    def freeze_statistics(self, x: Tensor) -> None:
        """Fix the standardisation to the mean and std of ``raw(x)`` (``x`` a large sample)."""
        with torch.no_grad():
            u = self.raw(x)
            self.stats = (u.mean(dim=1, keepdim=True), u.std(dim=1, keepdim=True))

    def forward(self, x: Tensor) -> Tensor:
        u = self.raw(x)
        if self.stats is None:
            return (u - u.mean(dim=1, keepdim=True)) / (u.std(dim=1, keepdim=True) + 1e-8)
        mean, std = self.stats
        return (u - mean) / (std + 1e-8)


def train_encoders(
    gen: torch.Generator,
    g: InjectiveGenerator,
    marginal_kappa: Tensor,
    kappa: float,
    temperature: float,
    steps: int,
    batch: int = 128,
    lr: float = 1e-2,
    hidden: int = 32,
) -> EncoderEnsemble:
    """Train one encoder per replicate with the library's InfoNCE (cosine critic).

    Replicate ``r`` draws latents from the uniform law on S² when ``marginal_kappa[r] == 0``,
    else from ``vMF(e₃, marginal_kappa[r])`` (a non-uniform marginal); positives are
    ``vMF(z, κ)``. Adam (β = 0.9, 0.999) with a cosine learning-rate decay; the loss is the mean
    over replicates of ``infonce`` on their ``[R, N, 3]`` batches (the replicates share no
    parameters, so each gets its own gradient). Adam is written out here: constructing
    ``torch.optim.Adam`` imports seconds' worth of modules, more than the check's budget.
    """
    reps = g.w1.shape[0]
    if marginal_kappa.shape != (reps,):
        raise ValueError(f"marginal_kappa must have shape ({reps},)")
    enc = EncoderEnsemble(gen, reps, g.w1.shape[1], hidden)
    params = list(enc.parameters())
    m1 = [torch.zeros_like(p) for p in params]
    m2 = [torch.zeros_like(p) for p in params]
    for t in range(1, steps + 1):
        z = sample_marginal(gen, marginal_kappa, batch)
        zt = sample_vmf_s2(gen, z.reshape(-1, 3), kappa).reshape(z.shape)
        loss = infonce(enc(g(z)), enc(g(zt)), temperature=temperature, critic="cosine").loss
        grads = torch.autograd.grad(loss, params)
        step = lr * 0.5 * (1 + math.cos(math.pi * (t - 1) / steps))  # cosine decay
        with torch.no_grad():
            for p, grad, a, b in zip(params, grads, m1, m2):
                a.mul_(ADAM_BETAS[0]).add_(grad, alpha=1 - ADAM_BETAS[0])
                b.mul_(ADAM_BETAS[1]).addcmul_(grad, grad, value=1 - ADAM_BETAS[1])
                a_hat = a / (1 - ADAM_BETAS[0] ** t)
                b_hat = b / (1 - ADAM_BETAS[1] ** t)
                p.sub_(step * a_hat / (b_hat.sqrt() + 1e-8))
    return enc


def sample_marginal(gen: torch.Generator, marginal_kappa: Tensor, n: int) -> Tensor:
    """``[R, n, 3]`` latents: uniform on S² where ``marginal_kappa == 0``, else vMF(e₃, ·)."""
    reps = marginal_kappa.shape[0]
    z = sample_sphere(gen, reps * n, 3).reshape(reps, n, 3)
    for r in torch.nonzero(marginal_kappa > 0).flatten().tolist():
        pole = torch.zeros(n, 3, dtype=f64)
        pole[:, 2] = 1.0
        z[r] = sample_vmf_s2(gen, pole, float(marginal_kappa[r]))
    return z


def linear_identifiability(
    z_fit: Tensor, h_fit: Tensor, z_test: Tensor, h_test: Tensor
) -> tuple[float, Tensor]:
    """Held-out linear R² of ``z`` from ``h`` (mean over the latent coordinates) and the
    singular values (descending) of the fitted linear map ``h ↦ z``.

    ``z_*``, ``h_*`` are ``[n, 3]``; the map is fitted by least squares with an intercept.
    """
    # numpy's LAPACK, not torch's (MKL): the latter's lstsq and SVD differ in the last bit with
    # the process's allocation history, and the claim's numbers must not depend on ``jobs``
    zf, hf, zt, ht = (t.detach().numpy() for t in (z_fit, h_fit, z_test, h_test))
    coef = np.linalg.lstsq(np.hstack([hf, np.ones((hf.shape[0], 1))]), zf, rcond=None)[0]
    pred = np.hstack([ht, np.ones((ht.shape[0], 1))]) @ coef
    resid = ((zt - pred) ** 2).sum(0)
    total = ((zt - zt.mean(0)) ** 2).sum(0)
    sv = np.linalg.svd(coef[:-1], compute_uv=False)
    return float((1 - resid / total).mean()), torch.from_numpy(sv)
