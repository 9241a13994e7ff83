"""Progress bars that show on a terminal and stay quiet everywhere else.

Sacred captures ``sys.stderr`` while a run executes, so ``tqdm``'s own check (is the stream a
terminal?) would always say no inside an experiment. These bars look at the process's real
stderr instead and write to it: they appear when a person watches a terminal, never in CI logs,
pipes, captured output or tests. ``GESSL_PROGRESS=1`` forces them on, ``GESSL_PROGRESS=0`` (or a
set ``CI`` variable) off.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from tqdm import tqdm

__all__ = ["current_progress", "progress", "progress_enabled", "set_progress"]

_WHERE: dict[str, str | None] = {"where": None}


def set_progress(where: str | None) -> None:
    """Say where the current run is (``claim infonce_mi_bound``, ``step 120/300``): the
    one-line message of an interruption names it (``experiments.tracking``)."""
    _WHERE["where"] = where


def current_progress() -> str | None:
    """What :func:`set_progress` said last (``None``: nothing yet)."""
    return _WHERE["where"]


def progress_enabled() -> bool:
    """Whether bars are shown: ``$GESSL_PROGRESS`` if set, else off under ``$CI``, else whether
    the real stderr is a terminal."""
    forced = os.environ.get("GESSL_PROGRESS", "").strip().lower()
    if forced in ("0", "false", "no", "off"):
        return False
    if forced in ("1", "true", "yes", "on"):
        return True
    if os.environ.get("CI"):
        return False
    stream = sys.__stderr__
    return bool(stream is not None and stream.isatty())


def progress(iterable: Any = None, enabled: bool = True, **kwargs: Any) -> tqdm:
    """A ``tqdm`` bar on the real stderr, shown only when :func:`progress_enabled`."""
    kwargs.setdefault("leave", False)
    kwargs.setdefault("dynamic_ncols", True)
    return tqdm(
        iterable,
        file=sys.__stderr__,
        disable=not (enabled and progress_enabled()),
        **kwargs,
    )
