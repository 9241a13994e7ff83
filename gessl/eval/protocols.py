"""Evaluation protocols whose settings are chosen per model on validation data.

A comparison of two pretrained models is fair only when each is read out at the setting that
suits it: a probe's regularisation, a kNN's neighbourhood, a few-shot head's fine-tuning steps
and rate. Every function here takes a grid of settings, picks the best on a validation split
that the reported number never sees, and returns the test number with the chosen setting.

* :func:`fit_logistic` — multinomial logistic regression, many independent problems at once
  (one L-BFGS run over stacked weights; each problem's objective is scikit-learn's
  ``C·Σ CE + ½‖W‖²`` divided by ``C·n``, so the minimiser is the same);
* :func:`tuned_probe` — a linear probe with ``C`` chosen on a validation split, refitted on the
  whole training split: accuracy on the training samples (discriminability) and on the test
  samples (generalization);
* :func:`label_efficiency` — the probe from ``k`` labels per class (the semi-supervised
  protocol), averaged over many draws of the labelled subset, ``C`` chosen on draws from the
  validation split;
* :func:`tuned_knn` — weighted cosine kNN (Wu et al. 2018, arXiv 1805.01978) with ``k`` and the
  temperature chosen on validation; leave-one-out accuracy on the training samples;
* :func:`tuned_few_shot` — N-way K-shot episodes on held-out classes: a cosine classifier
  initialised at the class prototypes (Snell et al. 2017, arXiv 1703.05175) and fine-tuned on
  the support set (Chen et al. 2019, arXiv 1904.04232), steps and rate chosen on validation
  episodes drawn from other samples of the same classes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from gessl.eval.probes import knn_predict

__all__ = [
    "FEW_SHOT_GRID",
    "KNN_GRID",
    "PROBE_C",
    "fit_logistic",
    "label_efficiency",
    "stratified_split",
    "tuned_few_shot",
    "tuned_knn",
    "tuned_probe",
]

#: the inverse regularisation strengths a probe is tuned over
PROBE_C = (0.01, 0.1, 1.0, 10.0)
#: (k, temperature) settings of the kNN
KNN_GRID = tuple((k, t) for k in (1, 5, 20, 50) for t in (0.07, 0.5))
#: (fine-tuning steps, learning rate) of the few-shot head; 0 steps is the prototype classifier
FEW_SHOT_GRID = ((0, 0.0), (10, 0.1), (10, 1.0), (50, 0.1), (50, 1.0))
#: the cosine classifier's logit scale
FEW_SHOT_SCALE = 10.0


def stratified_split(labels: Tensor, fraction: float, seed: int) -> tuple[Tensor, Tensor]:
    """Indices ``(fit, val)``: ``fraction`` of each class (at least one sample) to ``val``."""
    gen = torch.Generator().manual_seed(seed)
    fit, val = [], []
    for c in torch.unique(labels):
        idx = torch.nonzero(labels == c).flatten()
        idx = idx[torch.randperm(len(idx), generator=gen)]
        n_val = min(len(idx) - 1, max(1, round(fraction * len(idx))))
        val.append(idx[:n_val])
        fit.append(idx[n_val:])
    return torch.cat(fit), torch.cat(val)


def _standardise(train: Tensor, *others: Tensor) -> list[Tensor]:
    """Features centred and scaled by the training features' per-dimension statistics (over
    the last-but-one axis), float64."""
    train = train.double()
    mean = train.mean(-2, keepdim=True)
    std = train.std(-2, keepdim=True).clamp_min(1e-8)
    return [(t.double() - mean) / std for t in (train, *others)]


def fit_logistic(
    x: Tensor, y: Tensor, c: Tensor, classes: int, max_iter: int = 300
) -> tuple[Tensor, Tensor]:
    """Multinomial logistic regression for B independent problems.

    Args:
        x: features ``[B, n, d]`` (standardise them first), ``y``: labels ``[B, n]`` in
            ``0 … classes − 1``, ``c``: each problem's inverse regularisation ``[B]``.

    Returns ``(W [B, d, classes], b [B, classes])`` minimising, per problem,
    ``mean_i CE + ‖W‖² / (2·C·n)`` (scikit-learn's objective divided by ``C·n``: the same
    minimiser; the bias is not penalised), each by its own L-BFGS run with strong-Wolfe line
    search in float64 (one joint run over the stacked problems converges slower: its line
    search couples them).
    """
    ws, bs = [], []
    for xi, yi, ci in zip(x.double(), y.long(), c.double()):
        n, d = xi.shape
        w = torch.zeros(d, classes, dtype=torch.float64, requires_grad=True)
        b = torch.zeros(classes, dtype=torch.float64, requires_grad=True)
        penalty = float(1.0 / (2.0 * ci * n))
        opt = torch.optim.LBFGS(
            [w, b],
            lr=1.0,
            max_iter=max_iter,
            tolerance_grad=1e-6,
            tolerance_change=1e-10,
            history_size=20,
            line_search_fn="strong_wolfe",
        )

        def closure(xi: Tensor = xi, yi: Tensor = yi, w: Tensor = w, b: Tensor = b,
                    opt: Any = opt, penalty: float = penalty) -> Tensor:  # fmt: skip
            opt.zero_grad()
            loss = F.cross_entropy(xi @ w + b, yi) + penalty * (w * w).sum()
            loss.backward()
            return loss

        opt.step(closure)
        ws.append(w.detach())
        bs.append(b.detach())
    return torch.stack(ws), torch.stack(bs)


def _accuracy(x: Tensor, y: Tensor, w: Tensor, b: Tensor) -> Tensor:
    """Accuracy of each problem's classifier: ``x [B, n, d]`` (or ``[n, d]``, shared)."""
    xb = x.double() if x.dim() == 3 else x.double().expand(w.shape[0], -1, -1)
    pred = (torch.bmm(xb, w) + b[:, None, :]).argmax(-1)
    yb = y if y.dim() == 2 else y.expand(w.shape[0], -1)
    return (pred == yb.long()).double().mean(-1)


def _relabel(*labels: Tensor) -> tuple[list[Tensor], int]:
    """Labels mapped to ``0 … k − 1`` (the classes of the first tensor, in order)."""
    classes = torch.unique(labels[0])
    lut = {int(v): i for i, v in enumerate(classes)}
    out = []
    for lab in labels:
        if not all(int(v) in lut for v in torch.unique(lab)):
            raise ValueError("the evaluation split has classes the training split lacks")
        out.append(torch.tensor([lut[int(v)] for v in lab.tolist()], dtype=torch.long))
    return out, len(classes)


def tuned_probe(
    train_x: Tensor,
    train_y: Tensor,
    test_x: Tensor,
    test_y: Tensor,
    grid: Sequence[float] = PROBE_C,
    val_fraction: float = 0.2,
    seed: int = 0,
) -> dict[str, Any]:
    """A linear probe with ``C`` chosen on a stratified validation split of the training
    samples, refitted on all of them: accuracy on the training samples (``train``) and on the
    test samples (``test``), the chosen ``C`` and every setting's validation accuracy."""
    (ytr, yte), k = _relabel(train_y, test_y)
    fit, val = stratified_split(ytr, val_fraction, seed)
    xf, xv = _standardise(train_x[fit], train_x[val])
    g = torch.tensor(list(grid), dtype=torch.float64)
    w, b = fit_logistic(xf.expand(len(g), -1, -1), ytr[fit].expand(len(g), -1), g, k)
    val_acc = _accuracy(xv, ytr[val], w, b)
    best = int(torch.argmax(val_acc))  # ties: the strongest regularisation (first in the grid)
    xa, xt = _standardise(train_x, test_x)
    w, b = fit_logistic(xa[None], ytr[None], g[best : best + 1], k)
    return {
        "train": float(_accuracy(xa, ytr, w, b)[0]),
        "test": float(_accuracy(xt, yte, w, b)[0]),
        "C": float(g[best]),
        "validation": {str(float(v)): float(a) for v, a in zip(g, val_acc)},
    }


def _draw_labelled(y: Tensor, shots: int, draws: int, gen: torch.Generator) -> Tensor:
    """``[draws, classes·shots]`` indices: ``shots`` samples of every class per draw."""
    picks = []
    for _ in range(draws):
        one = []
        for c in torch.unique(y):
            idx = torch.nonzero(y == c).flatten()
            if len(idx) < shots:
                raise ValueError(f"class {int(c)} has {len(idx)} samples, fewer than {shots}")
            one.append(idx[torch.randperm(len(idx), generator=gen)[:shots]])
        picks.append(torch.cat(one))
    return torch.stack(picks)


def label_efficiency(
    train_x: Tensor,
    train_y: Tensor,
    test_x: Tensor,
    test_y: Tensor,
    shots: Sequence[int] = (1, 5, 10),
    draws: int = 20,
    val_draws: int = 5,
    grid: Sequence[float] = PROBE_C,
    seed: int = 0,
) -> dict[str, Any]:
    """The linear probe from ``k`` labels per class, for each ``k`` in ``shots``: mean test
    accuracy over ``draws`` labelled subsets of the training samples (with its standard
    error), ``C`` chosen per ``k`` on ``val_draws`` subsets of a validation split scored on
    the rest of that split."""
    (ytr, yte), k = _relabel(train_y, test_y)
    gen = torch.Generator().manual_seed(seed)
    fit, val = stratified_split(ytr, 0.3, seed)
    g = torch.tensor(list(grid), dtype=torch.float64)
    out: dict[str, Any] = {}
    for s in shots:
        # validation: subsets of `fit`, scored on `val`
        idx = fit[_draw_labelled(ytr[fit], s, val_draws, gen)]  # [V, k·s]
        xs = train_x[idx]  # [V, k·s, d]
        ys = ytr[idx]
        xs_std, xv_std = _standardise(xs, train_x[val][None].expand(len(idx), -1, -1))
        rep = len(g)
        w, b = fit_logistic(
            xs_std.repeat_interleave(rep, 0),
            ys.repeat_interleave(rep, 0),
            g.repeat(len(idx)),
            k,
        )
        acc = _accuracy(xv_std.repeat_interleave(rep, 0), ytr[val], w, b).view(len(idx), rep)
        per_c = acc.mean(0)
        best = int(torch.argmax(per_c))
        # test: subsets of every training sample, scored on the test samples
        idx = _draw_labelled(ytr, s, draws, gen)
        xs_std, xt_std = _standardise(train_x[idx], test_x[None].expand(draws, -1, -1))
        w, b = fit_logistic(xs_std, ytr[idx], g[best].repeat(draws), k)
        accs = _accuracy(xt_std, yte, w, b).numpy()
        out[str(s)] = {
            "accuracy": float(accs.mean()),
            "se": float(accs.std(ddof=1) / math.sqrt(draws)) if draws > 1 else float("nan"),
            "C": float(g[best]),
            "draws": draws,
        }
    return out


def tuned_knn(
    train_x: Tensor,
    train_y: Tensor,
    test_x: Tensor,
    test_y: Tensor,
    grid: Sequence[tuple[int, float]] = KNN_GRID,
    val_fraction: float = 0.2,
    seed: int = 0,
) -> dict[str, Any]:
    """Weighted cosine kNN with ``(k, temperature)`` chosen on a validation split of the
    training samples (the rest as the memory bank); then with every training sample in the
    bank: leave-one-out accuracy on the training samples (``train``) and accuracy on the test
    samples (``test``)."""
    (ytr, yte), ncls = _relabel(train_y, test_y)
    fit, val = stratified_split(ytr, val_fraction, seed)
    scores = []
    for k, t in grid:
        pred = knn_predict(train_x[val], train_x[fit], ytr[fit], k, t, ncls)
        scores.append(float((pred == ytr[val]).float().mean()))
    best = int(np.argmax(scores))
    k, t = grid[best]
    train_pred = knn_predict(train_x, train_x, ytr, k, t, ncls, leave_one_out=True)
    test_pred = knn_predict(test_x, train_x, ytr, k, t, ncls)
    return {
        "train": float((train_pred == ytr).float().mean()),
        "test": float((test_pred == yte).float().mean()),
        "k": k,
        "temperature": t,
        "validation": {f"k={kk},T={tt}": s for (kk, tt), s in zip(grid, scores)},
    }


def _episodes(
    y: Tensor, way: int, shot: int, queries: int, episodes: int, gen: torch.Generator
) -> tuple[Tensor, Tensor]:
    """Indices ``support [E, way·shot]`` and ``query [E, way·queries]`` (class j of an episode
    is label j: support and query rows are ordered by class)."""
    classes = torch.unique(y)
    if len(classes) < way:
        raise ValueError(f"{way}-way episodes need {way} classes, the samples have {len(classes)}")
    sup, qry = [], []
    for _ in range(episodes):
        chosen = classes[torch.randperm(len(classes), generator=gen)[:way]]
        s, q = [], []
        for c in chosen:
            idx = torch.nonzero(y == c).flatten()
            if len(idx) < shot + queries:
                raise ValueError(
                    f"class {int(c)} has {len(idx)} samples; {shot}-shot episodes with "
                    f"{queries} queries need {shot + queries}"
                )
            idx = idx[torch.randperm(len(idx), generator=gen)]
            s.append(idx[:shot])
            q.append(idx[shot : shot + queries])
        sup.append(torch.cat(s))
        qry.append(torch.cat(q))
    return torch.stack(sup), torch.stack(qry)


def _few_shot_accuracy(
    x: Tensor, sup: Tensor, qry: Tensor, way: int, shot: int, steps: int, lr: float
) -> Tensor:
    """Per-episode accuracy of the prototype-initialised cosine head after ``steps`` full-batch
    SGD steps at ``lr`` on the support set's cross-entropy."""
    xn = F.normalize(x.float(), dim=1)
    s, q = xn[sup], xn[qry]  # [E, way·shot, d], [E, way·queries, d]
    e = s.shape[0]
    s_lab = torch.arange(way).repeat_interleave(shot).expand(e, -1)
    q_lab = torch.arange(way).repeat_interleave(qry.shape[1] // way).expand(e, -1)
    w = s.view(e, way, shot, -1).mean(2).clone().requires_grad_(True)  # the prototypes
    for _ in range(steps):
        logits = FEW_SHOT_SCALE * torch.bmm(s, F.normalize(w, dim=-1).transpose(1, 2))
        loss = (
            F.cross_entropy(logits.reshape(-1, way), s_lab.reshape(-1), reduction="sum")
            / (s.shape[1])
        )
        (g,) = torch.autograd.grad(loss, w)
        w = (w - lr * g).detach().requires_grad_(True)
    with torch.no_grad():
        pred = torch.bmm(q, F.normalize(w, dim=-1).transpose(1, 2)).argmax(-1)
    return (pred == q_lab).float().mean(-1)


def tuned_few_shot(
    val_x: Tensor,
    val_y: Tensor,
    test_x: Tensor,
    test_y: Tensor,
    way: int,
    shot: int,
    queries: int = 10,
    episodes: int = 300,
    val_episodes: int = 100,
    grid: Sequence[tuple[int, float]] = FEW_SHOT_GRID,
    seed: int = 0,
) -> dict[str, Any]:
    """N-way K-shot accuracy on episodes of ``test_x`` (held-out classes), the head's
    fine-tuning ``(steps, lr)`` chosen on episodes of ``val_x`` (other samples of the same
    classes): mean accuracy, its 95% half-width over episodes, the chosen setting."""
    gen = torch.Generator().manual_seed(seed)
    sup, qry = _episodes(val_y, way, shot, queries, val_episodes, gen)
    scores = [
        float(_few_shot_accuracy(val_x, sup, qry, way, shot, st, lr).mean()) for st, lr in grid
    ]
    best = int(np.argmax(scores))
    steps, lr = grid[best]
    sup, qry = _episodes(test_y, way, shot, queries, episodes, gen)
    acc = _few_shot_accuracy(test_x, sup, qry, way, shot, steps, lr).numpy()
    return {
        "accuracy": float(acc.mean()),
        "ci95": float(1.96 * acc.std(ddof=1) / math.sqrt(len(acc))),
        "way": way,
        "shot": shot,
        "steps": steps,
        "lr": lr,
        "episodes": episodes,
        "validation": {f"steps={st},lr={lr_}": v for (st, lr_), v in zip(grid, scores)},
    }
