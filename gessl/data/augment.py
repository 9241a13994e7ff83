"""Batched image augmentations written in torch (no torchvision), seeded by a ``torch.Generator``.

Each function maps ``[B, C, H, W]`` (or ``[..., C, H, W]``) images in [0, 1] to augmented images
of the same shape, drawing an independent random transform per image. The random numbers are
drawn on the generator's device (``gen.device``, float32) and every tensor a transform builds
(affine matrices, blur kernels, grayscale weights) is created on ``x.device`` in ``x``'s dtype, so
a CUDA generator and CUDA images augment without touching the CPU; on the CPU the numbers are
those of ``torch.rand(..., generator=gen)``, the same for the same seed as before. Pipelines:
:func:`digits_augment` (small affine jitter and noise; no flips — digits are not mirror
symmetric) and :func:`cifar_augment` (SimCLR-style crop, flip, colour jitter, grayscale, blur).

One-dimensional signals (MNIST-1D) travel as ``[B, C, 1, L]`` "images" of height 1 whose values
are not confined to [0, 1]; :func:`random_shift`, :func:`random_scale` and
:func:`correlated_noise` (with :func:`gaussian_noise`) act along ``L``, and :func:`signal_augment`
chains them.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "Augment",
    "cifar_augment",
    "color_jitter",
    "correlated_noise",
    "digits_augment",
    "gaussian_blur",
    "gaussian_noise",
    "hflip",
    "random_affine",
    "random_grayscale",
    "random_resized_crop",
    "random_scale",
    "random_shift",
    "signal_augment",
]


def _rand(gen: torch.Generator, n: int, x: Tensor) -> Tensor:
    """``n`` uniforms in [0, 1) drawn on ``gen.device``, on ``x.device``."""
    return torch.rand(n, generator=gen, device=gen.device).to(x.device)


def _u(gen: torch.Generator, n: int, lo: float, hi: float, x: Tensor) -> Tensor:
    return lo + (hi - lo) * _rand(gen, n, x)


def _warp(x: Tensor, theta: Tensor) -> Tensor:
    grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def random_resized_crop(
    x: Tensor,
    gen: torch.Generator,
    scale: tuple[float, float] = (0.2, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
) -> Tensor:
    """Crop a random area fraction in ``scale`` with aspect ratio in ``ratio``, resize back."""
    b = x.shape[0]
    area = _u(gen, b, *scale, x)
    log_r = _u(gen, b, math.log(ratio[0]), math.log(ratio[1]), x)
    w = torch.sqrt(area * torch.exp(log_r)).clamp(max=1.0)
    h = torch.sqrt(area / torch.exp(log_r)).clamp(max=1.0)
    cx = (2 * _rand(gen, b, x) - 1) * (1 - w)
    cy = (2 * _rand(gen, b, x) - 1) * (1 - h)
    theta = torch.zeros(b, 2, 3, device=x.device)
    theta[:, 0, 0], theta[:, 1, 1], theta[:, 0, 2], theta[:, 1, 2] = w, h, cx, cy
    return _warp(x, theta)


def random_affine(
    x: Tensor,
    gen: torch.Generator,
    max_shift: float = 0.125,
    max_degrees: float = 12.0,
    scale: tuple[float, float] = (0.9, 1.1),
) -> Tensor:
    """Random rotation, isotropic scaling and shift (fractions of the half-width)."""
    b = x.shape[0]
    a = torch.deg2rad(_u(gen, b, -max_degrees, max_degrees, x))
    s = _u(gen, b, *scale, x)
    theta = torch.zeros(b, 2, 3, device=x.device)
    theta[:, 0, 0], theta[:, 0, 1] = torch.cos(a) / s, -torch.sin(a) / s
    theta[:, 1, 0], theta[:, 1, 1] = torch.sin(a) / s, torch.cos(a) / s
    theta[:, 0, 2], theta[:, 1, 2] = (
        _u(gen, b, -2 * max_shift, 2 * max_shift, x),
        _u(gen, b, -2 * max_shift, 2 * max_shift, x),
    )
    return _warp(x, theta)


def hflip(x: Tensor, gen: torch.Generator, p: float = 0.5) -> Tensor:
    flip = _rand(gen, x.shape[0], x) < p
    return torch.where(flip[:, None, None, None], x.flip(-1), x)


def _gray(x: Tensor) -> Tensor:
    if x.shape[1] == 1:
        return x
    w = torch.tensor([0.299, 0.587, 0.114], dtype=x.dtype, device=x.device)
    return (x * w[None, :, None, None]).sum(1, keepdim=True).expand_as(x)


def color_jitter(
    x: Tensor,
    gen: torch.Generator,
    brightness: float = 0.4,
    contrast: float = 0.4,
    saturation: float = 0.4,
    p: float = 0.8,
) -> Tensor:
    """Per-image brightness, contrast and saturation factors in ``[1 − s, 1 + s]``."""
    b = x.shape[0]
    apply = (_rand(gen, b, x) < p)[:, None, None, None]
    bf = _u(gen, b, 1 - brightness, 1 + brightness, x)[:, None, None, None].to(x.dtype)
    cf = _u(gen, b, 1 - contrast, 1 + contrast, x)[:, None, None, None].to(x.dtype)
    sf = _u(gen, b, 1 - saturation, 1 + saturation, x)[:, None, None, None].to(x.dtype)
    y = x * bf
    mean = _gray(y).mean(dim=(1, 2, 3), keepdim=True)
    y = (y - mean) * cf + mean
    g = _gray(y)
    y = (y - g) * sf + g
    return torch.where(apply, y.clamp(0, 1), x)


def random_grayscale(x: Tensor, gen: torch.Generator, p: float = 0.2) -> Tensor:
    apply = (_rand(gen, x.shape[0], x) < p)[:, None, None, None]
    return torch.where(apply, _gray(x), x)


def gaussian_blur(
    x: Tensor,
    gen: torch.Generator,
    sigma: tuple[float, float] = (0.1, 2.0),
    p: float = 0.5,
    kernel: int = 5,
) -> Tensor:
    """Separable Gaussian blur with a per-image σ (grouped convolution)."""
    b, c, h, w = x.shape
    s = _u(gen, b, *sigma, x)
    r = torch.arange(kernel, dtype=x.dtype, device=x.device) - kernel // 2
    k = torch.exp(-(r[None, :] ** 2) / (2 * s[:, None].to(x.dtype) ** 2))
    k = (k / k.sum(1, keepdim=True)).repeat_interleave(c, dim=0)  # [b*c, kernel]
    y = x.reshape(1, b * c, h, w)
    pad = kernel // 2
    y = F.conv2d(
        F.pad(y, (pad, pad, 0, 0), mode="reflect" if w > pad else "replicate"),
        k[:, None, None, :],
        groups=b * c,
    )
    y = F.conv2d(
        F.pad(y, (0, 0, pad, pad), mode="reflect" if h > pad else "replicate"),
        k[:, None, :, None],
        groups=b * c,
    )
    apply = (_rand(gen, b, x) < p)[:, None, None, None]
    return torch.where(apply, y.reshape(b, c, h, w), x)


def gaussian_noise(x: Tensor, gen: torch.Generator, std: float = 0.05) -> Tensor:
    return x + std * torch.randn(x.shape, generator=gen, dtype=x.dtype, device=gen.device).to(
        x.device
    )


# ------------------------------------------------------------------ one-dimensional signals
def random_shift(x: Tensor, gen: torch.Generator, max_shift: int = 8) -> Tensor:
    """Circular shift of each sample along the last axis (``L``) by an integer drawn uniformly
    in ``[−max_shift, max_shift]``: ``y[..., j] = x[..., (j − s) mod L]`` (``torch.roll`` by
    ``s``), one gather for the whole batch. MNIST-1D's own translation is circular."""
    if isinstance(max_shift, bool) or int(max_shift) != max_shift or max_shift < 0:
        raise ValueError(f"max_shift must be an integer >= 0, got {max_shift!r}")
    b, length = x.shape[0], x.shape[-1]
    m = int(max_shift)
    s = torch.randint(-m, m + 1, (b,), generator=gen, device=gen.device).to(x.device)
    idx = torch.remainder(torch.arange(length, device=x.device)[None, :] - s[:, None], length)
    idx = idx.reshape(b, *([1] * (x.dim() - 2)), length).expand_as(x)
    return torch.gather(x, -1, idx)


def random_scale(
    x: Tensor, gen: torch.Generator, scale: tuple[float, float] = (0.8, 1.2)
) -> Tensor:
    """Multiply each sample by a factor drawn uniformly in ``scale``."""
    lo, hi = scale
    if not lo <= hi:
        raise ValueError(f"scale must be (low, high) with low <= high, got {scale!r}")
    f = _u(gen, x.shape[0], lo, hi, x).to(x.dtype)
    return x * f.reshape(-1, *([1] * (x.dim() - 1)))


def correlated_noise(
    x: Tensor, gen: torch.Generator, std: float = 0.1, smoothing: float = 2.0
) -> Tensor:
    """Add Gaussian noise correlated along the last axis (``L``): white noise convolved with a
    Gaussian kernel of standard deviation ``smoothing`` samples (truncated at 4σ), the kernel
    scaled to unit L2 norm so the smoothed noise has standard deviation ``std`` exactly in
    distribution. The white noise is drawn ``4σ`` longer on each side and convolved without
    padding, so every position sees the same noise statistics (no edge effects). ``smoothing``
    0 gives white noise."""
    if not (math.isfinite(std) and std >= 0):
        raise ValueError(f"std must be finite and >= 0, got {std!r}")
    if not (math.isfinite(smoothing) and smoothing >= 0):
        raise ValueError(f"smoothing must be finite and >= 0, got {smoothing!r}")
    length = x.shape[-1]
    r = math.ceil(4 * smoothing)
    t = torch.arange(-r, r + 1, dtype=x.dtype, device=x.device)
    k = torch.exp(-(t**2) / (2 * smoothing**2)) if smoothing > 0 else torch.ones_like(t)
    k = k / k.square().sum().sqrt()
    white = torch.randn(
        (*x.shape[:-1], length + 2 * r), generator=gen, dtype=x.dtype, device=gen.device
    ).to(x.device)
    noise = F.conv1d(white.reshape(-1, 1, length + 2 * r), k[None, None, :])
    return x + std * noise.reshape(x.shape)


@dataclass(frozen=True)
class Augment:
    """A pipeline of ``(function, keyword options)`` steps applied in order."""

    steps: list[tuple[Callable[..., Tensor], dict]] = field(default_factory=list)
    name: str = "augment"

    def __call__(self, x: Tensor, gen: torch.Generator) -> Tensor:
        lead = x.shape[:-3]
        y = x.reshape(-1, *x.shape[-3:])
        for fn, kw in self.steps:
            y = fn(y, gen, **kw)
        return y.reshape(*lead, *y.shape[-3:])


def digits_augment(strength: float = 1.0) -> Augment:
    """For 8×8 digits: affine jitter (shift ≤ 1 px, ±12°, ±10% scale), light blur, noise."""
    return Augment(
        [
            (
                random_affine,
                {
                    "max_shift": 0.125 * strength,
                    "max_degrees": 12.0 * strength,
                    "scale": (1 - 0.1 * strength, 1 + 0.1 * strength),
                },
            ),
            (gaussian_blur, {"sigma": (0.1, 0.8), "p": 0.3, "kernel": 3}),
            (gaussian_noise, {"std": 0.05 * strength}),
        ],
        "digits",
    )


def cifar_augment(crop_scale: tuple[float, float] = (0.2, 1.0), blur: bool = False) -> Augment:
    """SimCLR's CIFAR recipe (Chen et al. 2020, App. B.9): crop, flip, colour jitter 0.4 with
    p = 0.8, grayscale p = 0.2; blur off for 32×32 (on for STL-10)."""
    steps: list[tuple[Callable[..., Tensor], dict]] = [
        (random_resized_crop, {"scale": crop_scale}),
        (hflip, {}),
        (color_jitter, {}),
        (random_grayscale, {}),
    ]
    if blur:
        steps.append((gaussian_blur, {}))
    return Augment(steps, "cifar")


def signal_augment(strength: float = 1.0) -> Augment:
    """For one-dimensional signals ``[B, C, 1, L]`` such as MNIST-1D: the nuisances the dataset is
    generated with (Greydanus 2020, "Scaling down deep learning", arXiv 2011.14439: circular
    translation, scaling, correlated and iid Gaussian noise) drawn again at a smaller size, so a
    view keeps its class. In order: a circular shift of at most ``round(8·s)`` samples, a scale
    factor in ``[1 − 0.2s, 1 + 0.2s]``, correlated noise of std ``0.1·s`` (smoothing 2 samples,
    as MNIST-1D's own) and iid noise of std ``0.05·s``, with ``s = strength``. Values are those of
    the standardised signal; nothing is clamped."""
    return Augment(
        [
            (random_shift, {"max_shift": round(8 * strength)}),
            (random_scale, {"scale": (1 - 0.2 * strength, 1 + 0.2 * strength)}),
            (correlated_noise, {"std": 0.1 * strength, "smoothing": 2.0}),
            (gaussian_noise, {"std": 0.05 * strength}),
        ],
        "signal",
    )
