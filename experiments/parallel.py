"""Work in worker processes — a local pool or a Dask cluster — with results identical for any
number of workers.

Each unit runs with one torch thread and one BLAS thread, in the parent (``jobs=1``) as in a
worker, so the numbers do not depend on ``jobs``; callers reseed the generators per unit
(:func:`reseed`). Workers are forked where the platform allows (they see what was registered
at run time) and ignore Ctrl-C, SIGTERM and SIGHUP, which the parent handles: it stops the
workers and re-raises, so that the caller can keep what came back. On Linux a worker dies with
the process that started it, also when that one is SIGKILLed (no orphans).

The engine is chosen in one place, :func:`engine`: ``jobs=N`` keeps the local process pool;
``scheduler="tcp://host:8786"`` (or ``$GESSL_DASK_SCHEDULER``) sends the same units to a running
Dask cluster (``distributed``, Rocklin 2015); ``cluster="local"`` starts one on this machine and
``cluster="slurm"`` one through ``dask-jobqueue``'s ``SLURMCluster``. The units and their seeds
are the same on every engine; only the client (this process) receives results and writes
records. Dask re-runs a unit whose worker died on another worker.
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

__all__ = [
    "CLUSTERS",
    "DaskEngine",
    "default_jobs",
    "engine",
    "in_workers",
    "one_thread",
    "reseed",
    "slurm_cluster",
]

#: the clusters the suite can start itself
CLUSTERS = ("local", "slurm")
#: the environment variable naming a running Dask scheduler (the ``scheduler`` key wins)
SCHEDULER_ENV = "GESSL_DASK_SCHEDULER"


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
    jobs: int | DaskEngine,
    on_result: Callable[[Any, Any], None],
) -> None:
    """``on_result(unit, fn(unit))`` for every unit, as results come in; ``jobs`` processes
    (1: this process, in order), or a :class:`DaskEngine` (:func:`engine`). ``fn`` must be a
    module-level function (or a ``partial`` of one)."""
    if isinstance(jobs, DaskEngine):
        jobs.map(fn, units, on_result)
        return
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


# ----------------------------------------------------------------------------- Dask
def _dask_missing(what: str) -> ValueError:
    return ValueError(
        f"{what} needs the 'dask' extra (distributed, dask-jobqueue): pip install -e '.[dask]'"
    )


def check_reachable(address: str, timeout: float = 5.0) -> None:
    """``ValueError`` (one line) unless a TCP connection to the scheduler ``address``
    (``tcp://host:port``) opens within ``timeout`` seconds."""
    import socket
    from urllib.parse import urlsplit

    parts = urlsplit(address if "://" in address else f"tcp://{address}")
    if parts.scheme != "tcp" or not parts.hostname or not parts.port:
        raise ValueError(f"scheduler: expected 'tcp://host:port', got {address!r}")
    try:
        with socket.create_connection((parts.hostname, parts.port), timeout=timeout):
            pass
    except OSError as err:
        raise ValueError(f"scheduler {address}: cannot connect: {err}") from None


def engine(
    jobs: int,
    scheduler: str | None = None,
    cluster: str | None = None,
    cluster_options: dict[str, Any] | None = None,
) -> int | DaskEngine:
    """The engine of an experiment's ``jobs``/``scheduler``/``cluster`` keys: the number of
    local worker processes (``jobs``; 0 = one per core), or a :class:`DaskEngine` when a
    scheduler (the key, else ``$GESSL_DASK_SCHEDULER``) or a cluster is named. ``ValueError``
    (one line) for both at once, an unknown cluster, or a missing ``dask`` extra."""
    if scheduler is None and cluster is None:
        scheduler = os.environ.get(SCHEDULER_ENV) or None
    if scheduler is not None and cluster is not None:
        raise ValueError("scheduler and cluster: name a running scheduler or a cluster, not both")
    if cluster is not None and cluster not in CLUSTERS:
        raise ValueError(f"cluster must be one of {CLUSTERS} or None, got {cluster!r}")
    workers = default_jobs() if jobs == 0 else jobs
    if scheduler is None and cluster is None:
        return workers
    try:
        import distributed  # noqa: F401
    except ImportError:
        what = f"scheduler={scheduler}" if scheduler else f"cluster={cluster}"
        raise _dask_missing(what) from None
    if cluster == "slurm":
        try:
            import dask_jobqueue  # noqa: F401
        except ImportError:
            raise _dask_missing("cluster=slurm") from None
    return DaskEngine(scheduler, cluster, dict(cluster_options or {}), workers)


#: the SLURM job of one worker unless ``cluster_options`` says otherwise: one single-threaded
#: worker per job (the units are single-threaded; one process per core)
SLURM_DEFAULTS: dict[str, Any] = {
    "cores": 1,
    "processes": 1,
    "memory": "2GB",
    "walltime": "01:00:00",
    "scheduler_options": {"dashboard_address": ":0"},  # any free port
}


def slurm_cluster(options: dict[str, Any]) -> Any:
    """``dask_jobqueue.SLURMCluster`` with :data:`SLURM_DEFAULTS` updated by ``options``
    (``queue``, ``account``, ``walltime``, ``memory``, ``cores``, ``job_extra_directives``, …;
    dask-jobqueue's documentation lists them). No job is submitted until it is scaled; its
    ``job_script()`` shows what ``sbatch`` will receive."""
    from dask_jobqueue import SLURMCluster

    return SLURMCluster(**{**SLURM_DEFAULTS, **options})


class DaskEngine:
    """Units sent to a Dask cluster: a running one (``scheduler``), or one this process starts
    (``cluster="local"``: ``workers`` worker processes of one thread each on this machine, which
    end with this process; ``cluster="slurm"``: ``dask_jobqueue.SLURMCluster(**options)``
    scaled to ``workers`` workers). Each unit runs single-threaded in a worker, as in the
    local pool; results come back to this process in the order they finish."""

    def __init__(
        self,
        scheduler: str | None,
        cluster: str | None,
        options: dict[str, Any],
        workers: int,
    ) -> None:
        self.scheduler, self.cluster, self.options, self.workers = (
            scheduler,
            cluster,
            options,
            workers,
        )

    def describe(self) -> str:
        if self.scheduler:
            return f"dask scheduler {self.scheduler}"
        return f"dask {self.cluster} cluster, {self.workers} workers"

    def make_cluster(self) -> Any:
        """The cluster this engine starts (``None`` with a running scheduler)."""
        if self.cluster == "local":
            from distributed import LocalCluster

            return LocalCluster(
                n_workers=self.workers,
                threads_per_worker=1,
                processes=True,
                dashboard_address=None,
                # the nannies live in this process and its worker processes watch it: they end
                # with it, SIGKILL included (tests/experiments/test_cluster.py)
                **self.options,
            )
        if self.cluster == "slurm":
            cluster = slurm_cluster(self.options)
            cluster.scale(self.workers)
            return cluster
        return None

    def map(
        self,
        fn: Callable[[Any], Any],
        units: Sequence[Any],
        on_result: Callable[[Any, Any], None],
    ) -> None:
        from distributed import Client, as_completed

        cluster = self.make_cluster()
        client = Client(cluster if cluster is not None else self.scheduler, timeout="30s")
        futures: list[Any] = []
        try:
            futures = [client.submit(_single_threaded, fn, u, pure=False) for u in units]
            unit_of = {f.key: u for f, u in zip(futures, units)}
            for fut in as_completed(futures):
                on_result(unit_of[fut.key], fut.result())
        except BaseException:
            client.cancel(futures, force=True)
            raise
        finally:
            client.close()
            if cluster is not None:
                cluster.close()
