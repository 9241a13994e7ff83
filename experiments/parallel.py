"""Work in worker processes, with results identical for any number of workers.

Each unit runs with one torch thread and one BLAS thread, in the parent (``jobs=1``) as in a
worker, so the numbers do not depend on ``jobs``; callers reseed the generators per unit
(:func:`reseed`). Workers are forked where the platform allows (they see what was registered
at run time) and ignore Ctrl-C, SIGTERM and SIGHUP, which the parent handles: it stops the
workers and re-raises, so that the caller can keep what came back. On Linux a worker dies with
the process that started it, also when that one is SIGKILLed (no orphans).
"""

from __future__ import annotations

import ctypes
import multiprocessing as mp
import os
import random
import signal
import sys
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from threadpoolctl import threadpool_limits

__all__ = ["default_jobs", "in_workers", "one_thread", "reseed"]


def default_jobs() -> int:
    """One worker per CPU core this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


@contextmanager
def one_thread() -> Iterator[None]:
    """One torch thread and one BLAS/OpenMP thread (numpy's OpenBLAS too)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with threadpool_limits(limits=1):
            yield
    finally:
        torch.set_num_threads(before)


def reseed(seed: int) -> None:
    """Seed torch's, numpy's and Python's global generators."""
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


def _die_with_parent(parent: int) -> None:
    """Ask Linux to SIGKILL this worker when the process that forked it dies (``prctl``'s
    ``PR_SET_PDEATHSIG``), so that a command killed with SIGKILL leaves no orphaned worker; a
    no-op elsewhere. A parent already gone before the request took effect: exit now."""
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:
        os._exit(1)


def _worker_init(parent: int | None = None) -> None:
    if parent is not None:
        _die_with_parent(parent)
    # the parent handles Ctrl-C, SIGTERM and SIGHUP (a closed terminal sends SIGHUP to every
    # process of the group): it stops the workers and keeps what came back
    for name in ("SIGINT", "SIGTERM", "SIGHUP"):
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), signal.SIG_IGN)
    torch.set_num_threads(1)


def _single_threaded(fn: Callable[[Any], Any], unit: Any) -> Any:
    with one_thread():
        return fn(unit)


def in_workers(
    fn: Callable[[Any], Any],
    units: Sequence[Any],
    jobs: int,
    on_result: Callable[[Any, Any], None],
) -> None:
    """``on_result(unit, fn(unit))`` for every unit, as results come in; ``jobs`` processes
    (1: this process, in order). ``fn`` must be a module-level function."""
    if jobs <= 1 or len(units) <= 1:
        for unit in units:
            on_result(unit, _single_threaded(fn, unit))
        return
    ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
    pool = ProcessPoolExecutor(
        max_workers=min(jobs, len(units)),
        mp_context=ctx,
        initializer=_worker_init,
        initargs=(os.getpid(),),
    )
    pending: dict[Future, Any] = {}
    try:
        pending = {pool.submit(_single_threaded, fn, unit): unit for unit in units}
        while pending:
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for fut in done:
                on_result(pending.pop(fut), fut.result())
    except BaseException:
        for fut in pending:
            fut.cancel()
        for proc in list(getattr(pool, "_processes", {}).values()):
            proc.kill()  # SIGKILL: the workers ignore SIGTERM
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown()
