"""The exit-status convention shared by the project's commands: Ctrl-C exits 130, SIGTERM 143
and SIGHUP 129, a failure of the environment (an operating-system error) 3, each with one line.

SIGTERM is what a scheduler (SLURM, Kubernetes, systemd) sends on preemption or at a time limit,
and what ``kill`` sends; SIGHUP is what a closed terminal sends to its processes. Within
:func:`preemption_handled` both raise :class:`Preempted`, a ``KeyboardInterrupt``, so that every
path that handles Ctrl-C — Sacred marking the record INTERRUPTED, worker pools stopping their
workers, ``finally`` blocks writing what finished — handles them too.
"""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

__all__ = [
    "ENVIRONMENT",
    "Preempted",
    "environment_error",
    "exit_status",
    "preemption_handled",
    "run_main",
]


class Preempted(KeyboardInterrupt):
    """SIGTERM or SIGHUP, raised in the main thread; ``signum`` names the signal (its name is
    ``args[0]``) and gives the exit status ``128 + signum``."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def exit_status(stop: KeyboardInterrupt) -> int:
    """130 for Ctrl-C, ``128 + signum`` for a :class:`Preempted`."""
    return 128 + stop.signum if isinstance(stop, Preempted) else 130


@contextmanager
def preemption_handled() -> Iterator[None]:
    """Within the block, SIGTERM and SIGHUP raise :class:`Preempted` in the main thread (the
    previous handlers come back after it); a signal already ignored (``nohup`` ignores SIGHUP)
    stays ignored. Off the main thread, a no-op."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        raise Preempted(signum)

    wanted = [getattr(signal, s) for s in ("SIGTERM", "SIGHUP") if hasattr(signal, s)]
    # a signal the process was started ignoring stays ignored (`nohup` ignores SIGHUP)
    before = {s: signal.signal(s, handler) for s in wanted if signal.getsignal(s) != signal.SIG_IGN}
    try:
        yield
    finally:
        for s, old in before.items():
            signal.signal(s, old)


#: the exit status of a failure of the environment (a folder that cannot be written, a full
#: disk, a missing data folder): not a usage error (2), not a finding (1)
ENVIRONMENT = 3


def environment_error(err: OSError) -> str:
    """One line for an operating-system error: what failed, on which path."""
    what = err.strerror or str(err) or type(err).__name__
    paths = [p for p in (err.filename, getattr(err, "filename2", None)) if p]
    return f"{what}: {' → '.join(str(p) for p in paths)}" if paths else what


def run_main(main: Callable[[], int], interrupted: str) -> None:
    """``sys.exit(main())``; Ctrl-C prints ``interrupted; <interrupted>`` and exits 130, SIGTERM
    and SIGHUP ``interrupted by SIGTERM; <interrupted>`` and exit 143 / 129; an
    operating-system error (a folder that cannot be written, a full disk) one line and exit 3."""
    try:
        with preemption_handled():
            sys.exit(main())
    except OSError as err:
        print(f"error: {environment_error(err)}", file=sys.stderr)
        sys.exit(ENVIRONMENT)
    except KeyboardInterrupt as stop:
        by = f" by {stop.args[0]}" if isinstance(stop, Preempted) else ""
        print(f"interrupted{by}; {interrupted}", file=sys.stderr)
        sys.exit(exit_status(stop))
