"""Running claims in worker processes, with results identical for any number of workers.

Claims are grouped (``Claim.group``: claims of a group share cached work and run one after the
other in one process), the groups are started costliest first (``Claim.cost``), and each
claim's record (and, unless it is a reproduction claim, its figure) comes back as soon as its
group has finished. Every check runs with one thread and with the global generators reseeded
from the run's seed (:mod:`experiments.parallel`), so the numbers do not depend on ``jobs`` or on
which claims ran before in the same process.

No Sacred here: :mod:`experiments.bounds` passes a callback that logs each record.
"""

from __future__ import annotations

import os
import time
import traceback
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

from experiments.parallel import in_workers, reseed
from theory.claims import Claim, get_claim

__all__ = ["error_record", "power_units", "run_claims", "run_power", "save_figure"]

Record = dict[str, Any]
OnRecord = Callable[[Record, "str | None"], None]


def error_record(
    claim: Claim, exc: BaseException, seconds: float, profile: str, seed: int
) -> Record:
    """The record of a check that raised: verdict ``error``, the exception and its traceback."""
    return {
        "claim_id": claim.id,
        "kind": claim.kind,
        "verdict": "error",
        "reason": f"the check raised {type(exc).__name__}: {exc}",
        "summary": f"check raised {type(exc).__name__}",
        "measured": [],
        "bounds": [],
        "details": {"traceback": "".join(traceback.format_exception(exc))},
        "seconds": seconds,
        "budget": profile,
        "seed": seed,
        "statement": claim.statement,
        "source": claim.source,
        "provenance": claim.provenance,
    }


def _check(
    claim_id: str, profile: str, seed: int, figure_dir: str | None, device: str | None = None
) -> tuple[Record, str | None]:
    """One claim's record; its figure saved under ``figure_dir`` (not for reproduction claims,
    whose verdicts are final only after the run-wide correction)."""
    c = get_claim(claim_id)
    reseed(seed)
    start = time.perf_counter()
    try:
        result = c.check(budget=profile, seed=seed, device=device)
    except Exception as exc:  # one broken check must not cost the other verdicts
        return error_record(c, exc, time.perf_counter() - start, profile, seed), None
    rec = result.to_dict()
    rec.update(statement=c.statement, source=c.source, provenance=c.provenance)
    figure = None
    if figure_dir is not None and c.kind != "reproduction":
        figure = save_figure(rec, figure_dir)
    return rec, figure


def save_figure(record: Record, folder: str) -> str:
    """The claim's panel as ``<folder>/<claim>.png``."""
    import matplotlib.pyplot as plt

    from paper_figures.panels import plot_claim  # matplotlib only when figures are wanted

    fig = plot_claim(record)
    path = os.path.join(folder, f"{record['claim_id']}.png")
    fig.savefig(path, metadata={"Software": None})
    plt.close(fig)
    return path


def _check_group(
    ids: Sequence[str], profile: str, seed: int, figure_dir: str | None, device: str | None = None
) -> list[tuple[Record, str | None]]:
    return [_check(i, profile, seed, figure_dir, device) for i in ids]


def _groups(selected: Sequence[Claim]) -> list[tuple[str, ...]]:
    """Claims grouped by ``Claim.group`` (registry order inside a group), costliest first."""
    groups: dict[str, list[Claim]] = {}
    for c in selected:
        groups.setdefault(c.group or c.id, []).append(c)
    ordered = sorted(groups.values(), key=lambda g: -sum(c.cost for c in g))
    return [tuple(c.id for c in g) for g in ordered]


def run_claims(
    selected: Sequence[Claim],
    profile: str,
    seed: int,
    jobs: int,
    figure_dir: str | None,
    on_record: OnRecord,
    device: str | None = None,
) -> None:
    """Check ``selected`` with ``jobs`` processes (1: in this process), calling
    ``on_record(record, figure_path)`` for each claim as soon as its record exists; the claims
    that train do so on ``device``."""

    def done(_ids: tuple[str, ...], pairs: list[tuple[Record, str | None]]) -> None:
        for rec, fig in pairs:
            on_record(rec, fig)

    check = partial(_check_group, profile=profile, seed=seed, figure_dir=figure_dir, device=device)
    in_workers(check, _groups(selected), jobs, done)


def power_units(selected: Sequence[Claim]) -> list[tuple[str, str | None]]:
    """For each of ``selected`` that declares alternatives: ``(claim, None)`` (the statement
    itself) and ``(claim, alternative)`` for each alternative; costliest claims first."""
    ordered = sorted((c for c in selected if c.alternatives), key=lambda c: -c.cost)
    return [(c.id, name) for c in ordered for name in (None, *(a.name for a in c.alternatives))]


def _check_alternative(unit: tuple[str, str | None], profile: str, seed: int) -> Record:
    """One power record. For an alternative: the check's verdict under the wrong variant,
    whether it rejected it (a verdict of ``rejected_when``) and whether the claim declares it
    rejectable on ``profile``. For the statement itself (``None``): its verdict and resolution."""
    claim_id, name = unit
    c = get_claim(claim_id)
    reseed(seed)
    start = time.perf_counter()
    details: dict[str, Any] = {}
    try:
        result = c.check(budget=profile, seed=seed, alternative=name)
        verdict, reason, details = result.verdict, result.reason, result.details
    except Exception as exc:  # an alternative that breaks the check is not a rejection
        verdict, reason = "error", f"the check raised {type(exc).__name__}: {exc}"
    if name is None:
        return {
            "claim_id": claim_id,
            "kind": c.kind,
            "alternative": None,
            "verdict": verdict,
            "reason": reason,
            "resolution": details.get("resolution"),
            "seconds": time.perf_counter() - start,
            "profile": profile,
            "seed": seed,
        }
    alt = c.alternative(name)
    return {
        "claim_id": claim_id,
        "kind": c.kind,
        "alternative": name,
        "description": alt.description,
        "verdict": verdict,
        "rejected": verdict in alt.rejected_when,
        "expected": profile in alt.rejects_on,
        "reason": reason,
        "seconds": time.perf_counter() - start,
        "profile": profile,
        "seed": seed,
    }


def run_power(
    selected: Sequence[Claim],
    profile: str,
    seed: int,
    jobs: int,
    on_record: Callable[[Record], None],
) -> None:
    """Check every declared alternative of ``selected`` on ``profile`` with ``jobs``
    processes, calling ``on_record(record)`` as each comes in."""
    check = partial(_check_alternative, profile=profile, seed=seed)
    in_workers(check, power_units(selected), jobs, lambda _unit, rec: on_record(rec))
