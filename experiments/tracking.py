"""Sacred experiment factory and observers: a file record under ``runs/`` and a W&B forwarder.

Every experiment module builds its ``Experiment`` with :func:`make_experiment` and runs through
:func:`main_entry` (command line) or :func:`run_experiment` (tests, notebooks). The file-storage
observer under ``runs/`` (or ``$GESSL_RUNS_DIR``) is the record of truth: ``runs/<id>/`` holds
``config.json``, ``run.json``, ``metrics.json``, ``info.json``, ``cout.txt`` and the artifacts.
"""

from __future__ import annotations

import os
import sys
import warnings
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

with warnings.catch_warnings():  # sacred 0.8.7 imports pkg_resources (deprecated)
    warnings.filterwarnings("ignore", message="pkg_resources is deprecated")
    from sacred import SETTINGS, Experiment
    from sacred.host_info import host_info_gatherer
    from sacred.observers import FileStorageObserver
    from sacred.utils import apply_backspaces_and_linefeeds

from experiments.wandb_forwarder import WandbForwarder

__all__ = [
    "default_runs_dir",
    "main_entry",
    "make_experiment",
    "observers_attached",
    "run_experiment",
]

SETTINGS.CAPTURE_MODE = "sys"  # no tee subprocess; works under pytest and with progress bars


def default_runs_dir() -> str:
    """``$GESSL_RUNS_DIR`` or ``runs`` (relative to the working directory)."""
    return os.environ.get("GESSL_RUNS_DIR", "runs")


@host_info_gatherer("gessl_version")
def _gessl_version() -> str:
    """The installed project version (``run.json → host.gessl_version``)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("gessl-lab")
    except PackageNotFoundError:
        return "unknown"


@host_info_gatherer("gessl_commit")
def _gessl_commit() -> str | None:
    """The project's git commit (``+dirty`` when the work tree has changes), or ``None``."""
    import subprocess

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
        sha = subprocess.run(
            ["git", "-C", root, "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10
        )
        if sha.returncode != 0:
            return None
        dirty = subprocess.run(
            ["git", "-C", root, "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return sha.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def make_experiment(name: str) -> Experiment:
    """A Sacred experiment whose captured output is cleaned of progress-bar redraws.

    Its records name the project version and git commit in ``run.json → host``.
    """
    ex = Experiment(name, save_git_info=False, additional_host_info=[_gessl_version, _gessl_commit])
    ex.captured_out_filter = apply_backspaces_and_linefeeds
    return ex


@contextmanager
def observers_attached(
    ex: Experiment, runs_dir: str | None = None, wandb: bool = True
) -> Iterator[FileStorageObserver]:
    """Attach the file observer (and the W&B forwarder) for the duration of one run."""
    runs_dir = runs_dir or default_runs_dir()
    added: list[Any] = [FileStorageObserver(runs_dir)]
    if wandb:
        added.append(WandbForwarder(directory=runs_dir))
    ex.observers.extend(added)
    try:
        yield added[0]
    finally:
        for obs in added:
            if obs in ex.observers:
                ex.observers.remove(obs)


def add_text_artifacts(run: Any, files: Mapping[str, str]) -> None:
    """Save each ``name → text`` as an artifact of the Sacred ``run``."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        for name, text in files.items():
            path = os.path.join(tmp, name)
            with open(path, "w") as fh:
                fh.write(text)
            run.add_artifact(path, name)


def run_experiment(
    ex: Experiment,
    config_updates: Mapping[str, Any] | None = None,
    runs_dir: str | None = None,
    wandb: bool = True,
    **options: Any,
) -> Any:
    """Run ``ex`` programmatically with the default observers; returns the Sacred ``Run``."""
    with observers_attached(ex, runs_dir, wandb):
        return ex.run(config_updates=dict(config_updates or {}), options=options)


def main_entry(ex: Experiment, exit_code: Callable[[Any], int] | None = None) -> None:
    """Command-line entry: Sacred's CLI with the default observers; exit with ``exit_code(run)``.

    Sacred exits 1 by itself when the run raises. ``print_config`` and other commands that
    produce no run exit 0.
    """
    os.environ.setdefault("WANDB_MODE", "offline")
    commands = {"print_config", "print_dependencies", "save_config", "print_named_configs", "help"}
    is_run = not any(a in commands for a in sys.argv[1:]) and "--help" not in sys.argv[1:]
    if is_run:
        with observers_attached(ex):
            run = ex.run_commandline()
    else:
        run = ex.run_commandline()
    code = exit_code(run) if (exit_code and run is not None and is_run) else 0
    sys.exit(code)
