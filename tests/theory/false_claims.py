"""A deliberately false claim, for tests that the registry and the main job catch one."""

from __future__ import annotations

import math

import torch

from gessl.losses import infonce
from theory.claims import ClaimResult, Series
from theory.claims.base import combine, judge_le
from theory.gaussian_task import LatentViewTasks, bayes_augmented_embeddings


def false_mi_claim(budget: str, seed: int) -> ClaimResult:
    """The InfoNCE MI bound with I(U;V) divided by 10: log N − E L* ≤ I/10 — false."""
    g = torch.Generator().manual_seed(seed)
    ns, est, ses = [8, 64], [], []
    info = 0.0
    for n in ns:
        model = LatentViewTasks(n_classes=n, dim=4)
        info = model.mutual_information
        u, v = model.sample(g, 4000 // n)
        ua, va = bayes_augmented_embeddings(model, u, v)
        vals = torch.stack(
            [
                infonce(a, b, temperature=1.0, critic="dot").loss
                for a, b in zip(ua.chunk(10), va.chunk(10))
            ]
        )
        est.append(math.log(n) - float(vals.mean()))
        ses.append(float(vals.std()) / math.sqrt(10))
    c = combine([judge_le(f"N={n}", e, info / 10, se=s) for n, e, s in zip(ns, est, ses)])
    return ClaimResult(
        c.verdict,
        c.reason,
        "bound divided by 10",
        [Series("log N − E L*", ns, est, ses)],
        [Series("I/10", ns, [info / 10] * 2)],
    )


def contradicted_reproduction(budget: str, seed: int) -> ClaimResult:
    """A reproduction claim whose primary test goes the other way (GeSSL − plain > 0 on every
    seed): *not reproduced*, from real paired statistics."""
    from theory.claims.reproduction import judge
    from theory.paired import correct, paired_test

    g = torch.Generator().manual_seed(seed)
    diffs = (0.5 + 0.05 * torch.randn(6, generator=g, dtype=torch.float64)).tolist()
    tests = [paired_test("σ: GeSSL − plain", diffs)]
    correct(tests)
    c = judge(tests, [True])
    return ClaimResult(
        c.verdict,
        c.reason,
        f"Δ {tests[0].mean:+.3f}",
        [Series("σ: GeSSL − plain", list(range(6)), diffs)],
        details={"tests": [tests[0].to_dict() | {"primary": True, "key": "sigma"}]},
    )


#: the constant :func:`blunt_claim` compares against (a power test overrides it)
BLUNT_CONSTANT = 1.0


def blunt_claim(budget: str, seed: int) -> ClaimResult:
    """A check that cannot see its constant: it holds whatever ``BLUNT_CONSTANT`` is (a claim
    without power, for the power run's exit status)."""
    measured = 0.5 * min(BLUNT_CONSTANT, 1.0)
    c = judge_le("half ≤ constant", measured, BLUNT_CONSTANT)
    return ClaimResult(c.verdict, c.reason, "blunt", [Series("m", [1], [measured])])
