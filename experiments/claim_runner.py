"""Running claims in worker processes, with results identical for any number of workers.

Claims are grouped (``Claim.group``: claims of a group share cached work and run one after the
other in one process), the groups are started costliest first (``Claim.cost``), and each
claim's record (and, unless it is a reproduction claim, its figure) comes back as soon as it
exists. Every check runs with one torch thread and with the global random number generators
reseeded from the run's seed, in the parent (``jobs=1``) as in a worker, so the numbers do not
depend on ``jobs`` or on which claims ran before in the same process. Workers are forked (they
see claims registered at run time) and ignore Ctrl-C, which the parent handles: it stops the
workers and keeps the records that came back.

No Sacred here: :mod:`experiments.bounds` passes a callback that logs each record.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import random
import signal
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from threadpoolctl import threadpool_limits

from theory.claims import Claim, get_claim

__all__ = ["default_jobs", "error_record", "run_claims"]

Record = dict[str, Any]
OnRecord = Callable[[Record, "str | None"], None]


def default_jobs() -> int:
    """One worker per CPU core this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


@contextmanager
def _one_thread() -> Iterator[None]:
    """One torch thread and one BLAS/OpenMP thread (numpy's OpenBLAS too)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with threadpool_limits(limits=1):
            yield
    finally:
        torch.set_num_threads(before)


def _reseed(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


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
    claim_id: str, profile: str, seed: int, figure_dir: str | None
) -> tuple[Record, str | None]:
    """One claim's record; its figure saved under ``figure_dir`` (not for reproduction claims,
    whose verdicts are final only after the run-wide correction)."""
    c = get_claim(claim_id)
    _reseed(seed)
    start = time.perf_counter()
    try:
        result = c.check(budget=profile, seed=seed)
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
    ids: Sequence[str], profile: str, seed: int, figure_dir: str | None
) -> list[tuple[Record, str | None]]:
    with _one_thread():
        return [_check(i, profile, seed, figure_dir) for i in ids]


def _worker_init() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C
    torch.set_num_threads(1)


def _groups(selected: Sequence[Claim]) -> list[list[str]]:
    """Claims grouped by ``Claim.group`` (registry order inside a group), costliest first."""
    groups: dict[str, list[Claim]] = {}
    for c in selected:
        groups.setdefault(c.group or c.id, []).append(c)
    ordered = sorted(groups.values(), key=lambda g: -sum(c.cost for c in g))
    return [[c.id for c in g] for g in ordered]


def run_claims(
    selected: Sequence[Claim],
    profile: str,
    seed: int,
    jobs: int,
    figure_dir: str | None,
    on_record: OnRecord,
) -> None:
    """Check ``selected`` with ``jobs`` processes (1: in this process), calling
    ``on_record(record, figure_path)`` for each claim as soon as its record exists."""
    groups = _groups(selected)
    if jobs <= 1 or len(groups) <= 1:
        for ids in groups:
            for rec, fig in _check_group(ids, profile, seed, figure_dir):
                on_record(rec, fig)
        return
    ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
    pool = ProcessPoolExecutor(
        max_workers=min(jobs, len(groups)), mp_context=ctx, initializer=_worker_init
    )
    pending: set[Future] = set()
    try:
        pending = {pool.submit(_check_group, ids, profile, seed, figure_dir) for ids in groups}
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for fut in done:
                for rec, fig in fut.result():
                    on_record(rec, fig)
    except BaseException:
        for fut in pending:
            fut.cancel()
        for proc in list(getattr(pool, "_processes", {}).values()):
            proc.terminate()
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown()
