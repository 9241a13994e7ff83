"""Evaluation of frozen features: linear probe, weighted cosine kNN, few-shot episodes, rank.

Every function takes features as tensors ``[n, d]`` (extract them once with :func:`features`)
and returns plain numbers, with the protocol's settings recorded in the result.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from gessl.data.datasets import ImageSet

__all__ = [
    "FewShotResult",
    "effective_rank",
    "features",
    "few_shot",
    "knn_accuracy",
    "knn_predict",
    "linear_probe",
]


@torch.no_grad()
def features(
    fn: Callable[[Tensor], Tensor],
    images: Tensor | ImageSet,
    batch_size: int = 512,
    device: str | torch.device | None = None,
) -> Tensor:
    """Apply ``fn`` (e.g. a backbone) to ``images`` in batches, without gradients; the result is
    float32 on the CPU (where scikit-learn and the probes read it).

    ``images``: a tensor, or an :class:`~gessl.data.ImageSet` (uint8), converted to float in
    [0, 1] one batch at a time on the device. ``device``: where ``fn`` runs (default: the device
    of ``fn``'s parameters when it is a module that has any, else the images'). Backbones with
    batch-statistics normalisation see batches of ``batch_size``; the default backbones use
    GroupNorm, which is batch independent.
    """
    if device is None:
        first = next(fn.parameters(), None) if isinstance(fn, torch.nn.Module) else None
        device = first.device if first is not None else images.device
    device = torch.device(device)

    def batch(i: int) -> Tensor:
        rows = slice(i, i + batch_size)
        if isinstance(images, ImageSet):
            return images.as_float(rows, device=device)
        return images[rows].to(device)

    out = [fn(batch(i)).float().cpu() for i in range(0, len(images), batch_size)]
    return torch.cat(out)


def linear_probe(
    train_x: Tensor,
    train_y: Tensor,
    test_x: Tensor,
    test_y: Tensor,
    c: float = 1.0,
    max_iter: int = 2000,
) -> dict[str, float]:
    """Multinomial logistic regression (L-BFGS, L2 penalty ``1/c``) on standardised features.

    The standardisation is fitted on the training features only. Returns train and test
    accuracy and the settings.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(train_x.numpy())
    clf = LogisticRegression(C=c, max_iter=max_iter)
    clf.fit(scaler.transform(train_x.numpy()), train_y.numpy())
    acc = float(clf.score(scaler.transform(test_x.numpy()), test_y.numpy()))
    train_acc = float(clf.score(scaler.transform(train_x.numpy()), train_y.numpy()))
    return {"accuracy": acc, "train_accuracy": train_acc, "C": c}


def knn_accuracy(
    train_x: Tensor,
    train_y: Tensor,
    test_x: Tensor,
    test_y: Tensor,
    k: int = 20,
    temperature: float = 0.07,
) -> dict[str, float]:
    """Weighted cosine kNN (Wu et al. 2018): each of the k nearest training features votes for
    its class with weight ``exp(cos / temperature)``."""
    if k < 1 or temperature <= 0:
        raise ValueError("k must be >= 1 and temperature > 0")
    k = min(k, len(train_x))
    n_cls = int(max(train_y.max(), test_y.max())) + 1
    pred = knn_predict(test_x, train_x, train_y, k, temperature, n_cls)
    acc = float((pred == test_y).float().mean())
    return {"accuracy": acc, "k": k, "temperature": temperature}


def knn_predict(
    queries: Tensor,
    bank: Tensor,
    bank_y: Tensor,
    k: int,
    temperature: float,
    classes: int,
    leave_one_out: bool = False,
) -> Tensor:
    """The class each query gets from its ``k`` nearest ``bank`` features by cosine, each
    voting with weight ``exp(cos / temperature)`` (Wu et al. 2018). ``leave_one_out``: the
    queries are the bank itself and a sample is not its own neighbour."""
    a, b = F.normalize(queries, dim=1), F.normalize(bank, dim=1)
    sim = a @ b.T
    if leave_one_out:
        sim.fill_diagonal_(-float("inf"))
    k = min(k, len(bank) - (1 if leave_one_out else 0))
    top, idx = sim.topk(k, dim=1)
    votes = torch.zeros(len(queries), classes)
    votes.scatter_add_(1, bank_y.long()[idx], torch.exp(top / temperature))
    return votes.argmax(1)


@dataclass(frozen=True)
class FewShotResult:
    """Mean accuracy over episodes and its 95% interval half-width (1.96 SE)."""

    accuracy: float
    ci95: float
    n_way: int
    k_shot: int
    episodes: int

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def few_shot(
    x: Tensor,
    y: Tensor,
    n_way: int = 5,
    k_shot: int = 5,
    n_query: int = 15,
    episodes: int = 200,
    seed: int = 0,
) -> FewShotResult:
    """N-way K-shot episodes with a prototype classifier (nearest class mean, cosine).

    Classes are drawn from those present in ``y`` (pass held-out classes' features).
    """
    classes = torch.unique(y)
    if len(classes) < n_way:
        raise ValueError(
            f"{n_way}-way episodes need {n_way} classes, the features have {len(classes)}"
        )
    gen = torch.Generator().manual_seed(seed)
    xn = F.normalize(x, dim=1)
    accs = []
    for _ in range(episodes):
        chosen = classes[torch.randperm(len(classes), generator=gen)[:n_way]]
        protos, queries, labels = [], [], []
        for j, c in enumerate(chosen):
            idx = torch.nonzero(y == c).flatten()
            if len(idx) < k_shot + 1:
                raise ValueError(f"class {int(c)} has {len(idx)} samples; need > k_shot")
            idx = idx[torch.randperm(len(idx), generator=gen)]
            protos.append(xn[idx[:k_shot]].mean(0))
            q = idx[k_shot : k_shot + n_query]
            queries.append(xn[q])
            labels.append(torch.full((len(q),), j))
        pred = (torch.cat(queries) @ F.normalize(torch.stack(protos), dim=1).T).argmax(1)
        accs.append(float((pred == torch.cat(labels)).float().mean()))
    a = np.asarray(accs)
    return FewShotResult(
        float(a.mean()), float(1.96 * a.std(ddof=1) / math.sqrt(len(a))), n_way, k_shot, episodes
    )


def effective_rank(x: Tensor) -> float:
    """Roy & Vetterli (2007): ``exp(H(p))`` with ``p`` the normalised singular values of the
    centred features; between 1 (collapse to a line) and ``min(n, d)``."""
    s = torch.linalg.svdvals(x - x.mean(0))
    p = s / s.sum()
    p = p[p > 0]
    return float(torch.exp(-(p * p.log()).sum()))
