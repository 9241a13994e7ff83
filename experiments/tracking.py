"""Sacred experiment factory and observers: a file record under ``runs/`` and a W&B forwarder.

Every experiment module builds its ``Experiment`` with :func:`make_experiment` and runs through
:func:`main_entry` (command line) or :func:`run_experiment` (tests, notebooks). The file-storage
observer under ``runs/`` (or ``$GESSL_RUNS_DIR``) is the record of truth: ``runs/<id>/`` holds
``config.json``, ``run.json``, ``metrics.json``, ``info.json``, ``cout.txt`` and the artifacts.

A team database is a second record beside it (:mod:`experiments.records_db`): ``--sql URL`` on
the command line (Sacred's own ``-s/--sql`` is replaced: its ``SqlObserver`` cannot store our
runs), ``$GESSL_DB_URL``, or ``run_experiment(..., sql=URL)``. The database is reached before
the run starts; when it cannot be, nothing is recorded and the command exits 2 (one line on
stderr, password masked), unless ``--sql-optional`` / ``$GESSL_DB_OPTIONAL=1`` /
``sql_optional=True`` asks to go ahead with the file record only.
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
    from sacred.commandline_options import cli_option
    from sacred.host_info import host_info_gatherer
    from sacred.observers import FileStorageObserver
    from sacred.utils import apply_backspaces_and_linefeeds

from experiments.wandb_forwarder import WandbForwarder

__all__ = [
    "add_text_artifacts",
    "default_runs_dir",
    "main_entry",
    "make_experiment",
    "observers_attached",
    "open_record_store",
    "run_experiment",
    "split_db_args",
]

SETTINGS.CAPTURE_MODE = "sys"  # no tee subprocess; works under pytest and with progress bars


def default_runs_dir() -> str:
    """``$GESSL_RUNS_DIR`` or ``runs`` (relative to the working directory)."""
    return os.environ.get("GESSL_RUNS_DIR", "runs")


_TRUE = {"1", "true", "yes", "on"}


def open_record_store(url: str | None = None, optional: bool | None = None) -> Any:
    """Connect to the team database before a run; ``None`` when none is asked for.

    ``url`` defaults to ``$GESSL_DB_URL``, ``optional`` to ``$GESSL_DB_OPTIONAL``. When the
    database cannot be used (unreachable, invalid URL, SQLAlchemy/psycopg missing) this raises
    :class:`experiments.records_db.DatabaseUnavailable`, or with ``optional`` prints one warning
    line on stderr and returns ``None`` (the run then has the file record only).
    """
    from experiments.records_db import DatabaseUnavailable, connect

    url = url or os.environ.get("GESSL_DB_URL") or None
    if optional is None:
        optional = os.environ.get("GESSL_DB_OPTIONAL", "").strip().lower() in _TRUE
    if not url:
        return None
    try:
        return connect(url)
    except DatabaseUnavailable as err:
        if not optional:
            raise
        print(f"warning: {err}; running with the file record only", file=sys.stderr)
        return None


@cli_option("-s", "--sql")
def _sql_option(args: str, run: Any) -> None:
    """Also record the run in a SQL database (GeSSL's store, experiments/records_db.py).

    The database is reached before the run starts; if it cannot be, the command exits 2 and
    nothing is recorded. Default: $GESSL_DB_URL. A plain postgresql:// URL uses psycopg 3.
    """
    raise RuntimeError("--sql is handled by experiments.tracking.main_entry")  # never reached


@cli_option("-O", "--sql-optional", is_flag=True)
def _sql_optional_option(args: bool, run: Any) -> None:
    """Go ahead with the file record only when the --sql database cannot be reached (also
    $GESSL_DB_OPTIONAL=1).
    """
    raise RuntimeError("--sql-optional is handled by experiments.tracking.main_entry")


def _refuse_sacred_sql(options: dict) -> None:
    """Sacred would attach its own ``SqlObserver`` for ``--sql``: refuse it (see records_db)."""
    if options.get("--sql") or options.get("--sql-optional"):
        raise ValueError(
            "pass sql=URL to experiments.tracking.run_experiment (or --sql URL to the command "
            "line) instead of Sacred's --sql option: its SqlObserver cannot store these runs"
        )


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
    # --help lists our --sql/--sql-optional in place of Sacred's -s/--sql (main_entry takes them
    # out of argv before Sacred parses it); any --sql that still reaches Sacred is refused
    ex.all_cli_options = [o for o in ex.all_cli_options if o.get_flag() != "--sql"]
    ex.all_cli_options += [_sql_option, _sql_optional_option]
    ex.option_hook(_refuse_sacred_sql)
    return ex


@contextmanager
def observers_attached(
    ex: Experiment, runs_dir: str | None = None, wandb: bool = True, store: Any = None
) -> Iterator[FileStorageObserver]:
    """Attach the file observer (the database observer of an open ``store`` from
    :func:`open_record_store`, and the W&B forwarder) for the duration of one run."""
    runs_dir = runs_dir or default_runs_dir()
    added: list[Any] = [FileStorageObserver(runs_dir)]
    if store is not None:
        added.append(store.observer(runs_dir))
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
    sql: str | None = None,
    sql_optional: bool | None = None,
    **options: Any,
) -> Any:
    """Run ``ex`` programmatically with the default observers; returns the Sacred ``Run``.

    ``sql``: also record the run in this database (default ``$GESSL_DB_URL``); it is reached
    before the run starts and :class:`experiments.records_db.DatabaseUnavailable` is raised
    when it cannot be, unless ``sql_optional`` (default ``$GESSL_DB_OPTIONAL``) lets the run go
    ahead with the file record only.
    """
    sql_option, optional_option = options.pop("--sql", None), options.pop("--sql-optional", None)
    sql = sql or sql_option
    if sql_optional is None and optional_option:
        sql_optional = True
    store = open_record_store(sql, sql_optional)
    try:
        with observers_attached(ex, runs_dir, wandb, store):
            return ex.run(config_updates=dict(config_updates or {}), options=options)
    finally:
        if store is not None:
            store.dispose()


def split_db_args(argv: list[str]) -> tuple[list[str], str | None, bool]:
    """Take ``--sql URL`` (``-s URL``, ``--sql=URL``) and ``--sql-optional`` (``-O``) out of
    ``argv``; returns the rest, the URL (or ``None``) and the flag.

    Raises:
        ValueError: ``--sql`` without a URL.
    """
    rest: list[str] = []
    url: str | None = None
    optional = False
    args = iter(argv)
    for a in args:
        if a in ("--sql", "-s"):
            url = next(args, None)
            if not url or url.startswith("-"):
                raise ValueError(f"{a} needs a database URL")
        elif a.startswith("--sql="):
            url = a.split("=", 1)[1]
            if not url:
                raise ValueError("--sql needs a database URL")
        elif a in ("--sql-optional", "-O"):
            optional = True
        else:
            rest.append(a)
    return rest, url, optional


def main_entry(ex: Experiment, exit_code: Callable[[Any], int] | None = None) -> None:
    """Command-line entry: Sacred's CLI with the default observers; exit with ``exit_code(run)``.

    Sacred exits 1 by itself when the run raises. ``print_config`` and other commands that
    produce no run exit 0. With ``--sql URL`` or ``$GESSL_DB_URL`` the database is reached
    first: exit 2 with one line on stderr when it cannot be (nothing is recorded), unless
    ``--sql-optional`` or ``$GESSL_DB_OPTIONAL=1``.
    """
    os.environ.setdefault("WANDB_MODE", "offline")
    try:
        argv, sql, optional = split_db_args(sys.argv)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    commands = {"print_config", "print_dependencies", "save_config", "print_named_configs", "help"}
    args = argv[1:]
    is_run = not any(a in commands for a in args) and not {"--help", "-h"} & set(args)
    if is_run:
        store = None
        if not {"-u", "--unobserved"} & set(args):
            from experiments.records_db import DatabaseUnavailable

            try:
                store = open_record_store(sql, optional or None)
            except DatabaseUnavailable as err:
                print(f"error: {err}", file=sys.stderr)
                sys.exit(2)
        try:
            with observers_attached(ex, store=store):
                run = ex.run_commandline(argv)
        finally:
            if store is not None:
                store.dispose()
    else:
        run = ex.run_commandline(argv)
    code = exit_code(run) if (exit_code and run is not None and is_run) else 0
    sys.exit(code)
