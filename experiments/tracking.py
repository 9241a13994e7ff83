"""Sacred experiment factory and observers: a file record under ``runs/`` and a W&B forwarder.

Every experiment module builds its ``Experiment`` with :func:`make_experiment` and runs through
:func:`main_entry` (command line) or :func:`run_experiment` (tests, notebooks). The file-storage
observer under ``runs/`` (or ``$GESSL_RUNS_DIR``) is the record of truth: ``runs/<id>/`` holds
``config.json``, ``run.json``, ``metrics.json``, ``info.json``, ``cout.txt`` and the artifacts.

A team database is a second record beside it (:mod:`experiments.records_db`): ``--sql URL`` on
the command line (Sacred's own ``-s/--sql`` is replaced: its ``SqlObserver`` cannot store our
runs), ``$GESSL_DB_URL``, or ``run_experiment(..., sql=URL)``. The database is reached before
the run starts; when it cannot be, nothing is recorded and the command exits 3 (one line on
stderr, password masked), unless ``--sql-optional`` / ``$GESSL_DB_OPTIONAL=1`` /
``sql_optional=True`` asks to go ahead with the file record only.
"""

from __future__ import annotations

import os
import sys
import warnings
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from typing import Any

with warnings.catch_warnings():  # sacred 0.8.7 imports pkg_resources (deprecated)
    warnings.filterwarnings("ignore", message="pkg_resources is deprecated")
    from sacred import SETTINGS, Experiment
    from sacred.commandline_options import cli_option
    from sacred.host_info import host_info_gatherer
    from sacred.observers import FileStorageObserver
    from sacred.utils import apply_backspaces_and_linefeeds

from experiments.records_db import DatabaseUnavailable, connect, mask_url
from experiments.validation import UsageError, validate
from experiments.wandb_forwarder import WandbForwarder
from gessl.cli import ENVIRONMENT, Preempted, environment_error, exit_status, preemption_handled
from gessl.progress import current_progress, set_progress

__all__ = [
    "AtomicFileStorageObserver",
    "add_text_artifacts",
    "default_runs_dir",
    "main_entry",
    "make_experiment",
    "mask_db_args",
    "observers_attached",
    "open_record_store",
    "record_dir",
    "run_experiment",
    "set_progress",
    "split_db_args",
    "write_json_atomic",
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

    The database is reached before the run starts; if it cannot be, the command exits 3 (2 for
    missing drivers or an invalid URL) and nothing is recorded. Default: $GESSL_DB_URL. A plain
    postgresql:// URL uses psycopg 3.
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


#: appended to every experiment's ``--help`` (``bounds`` documents its own 0/1 policy above it)
EXIT_CODES = """Exit status: 0 the run completed (bounds: every theorem claim holds or is
inconclusive); 1 the run failed (bounds: a theorem claim is violated or a check raised);
2 usage error — a bad configuration value, an unknown key, a bad command line, an invalid --sql
URL — reported in one line before any record exists; 130 interrupted (Ctrl-C),
143 terminated (SIGTERM: a scheduler's preemption or time limit, `kill`), 129 hung up (SIGHUP:
the terminal closed): the workers are stopped, the finished work kept and the record kept as
INTERRUPTED, naming the signal; 3 the environment failed — a runs folder that cannot be
written, a full disk, a missing data folder, an unreachable --sql database — in one line naming
the path, before any record."""


#: the project's packages: their modules are saved as sources of every record
PROJECT_PACKAGES = ("gessl", "theory", "experiments", "paper_figures")
#: always listed among a record's dependencies (with the installed versions)
CORE_DEPENDENCIES = ("torch", "numpy", "scipy", "sacred", "wandb", "gessl-lab")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _project_sources() -> list[str]:
    """The files of every imported module of this project (what the experiment runs)."""
    out = []
    for name, module in list(sys.modules.items()):
        path = getattr(module, "__file__", None)
        if (
            name.split(".")[0] in PROJECT_PACKAGES
            and path
            and path.endswith(".py")
            and os.path.abspath(path).startswith(ROOT + os.sep)
        ):
            out.append(os.path.abspath(path))
    return sorted(set(out))


def make_experiment(name: str) -> Experiment:
    """A Sacred experiment for the calling module, validated before each run.

    * its ``--help`` shows the calling module's docstring and :data:`EXIT_CODES`;
    * its records name the calling module as the main file, save every module of this project
      imported so far (claims included) as sources, list torch, numpy, scipy, sacred, wandb and
      this project's version among the dependencies, and the git commit in ``run.json → host``;
    * one config hook validates the whole configuration before the run starts
      (:mod:`experiments.validation`; the experiment's own checks are added with
      :func:`experiments.validation.validates`);
    * its captured output is cleaned of progress-bar redraws.
    """
    import inspect
    from importlib.metadata import PackageNotFoundError, version

    from sacred.dependencies import PackageDependency, Source

    caller = inspect.stack()[1][0].f_globals
    ex = Experiment(name, save_git_info=False, additional_host_info=[_gessl_version, _gessl_commit])
    ex.captured_out_filter = apply_backspaces_and_linefeeds
    ex.doc = ((caller.get("__doc__") or "").rstrip() + "\n\n" + EXIT_CODES).lstrip()
    if caller.get("__file__"):
        ex.mainfile = Source.create(os.path.abspath(caller["__file__"]), save_git_info=False)
        ex.base_dir = ROOT
    ex.sources = {ex.mainfile} if ex.mainfile else set()
    for path in _project_sources():
        ex.sources.add(Source.create(path, save_git_info=False))
    for package in CORE_DEPENDENCIES:
        with suppress(PackageNotFoundError):
            ex.dependencies.add(PackageDependency(package, version(package)))
    # --help lists our --sql/--sql-optional in place of Sacred's -s/--sql (main_entry takes them
    # out of argv before Sacred parses it); any --sql that still reaches Sacred is refused
    ex.all_cli_options = [o for o in ex.all_cli_options if o.get_flag() != "--sql"]
    ex.all_cli_options += [_sql_option, _sql_optional_option]
    ex.option_hook(_refuse_sacred_sql)

    @ex.config_hook
    def _validate(config: dict, command_name: str, logger: Any) -> dict:

        known = declared_keys(ex) | {"seed"}
        for key in sorted(config):  # before any value check: a key it does not have is named
            if key not in known:
                raise UsageError(unknown_key(ex, key))
        validate(name, config)
        return {}

    return ex


def check_writable(folder: str) -> None:
    """Create ``folder`` if needed and write (then remove) a small file in it: an
    :class:`OSError` names what fails — not a folder, no permission, a read-only or full disk —
    before a run starts."""
    import errno
    import tempfile

    if os.path.exists(folder) and not os.path.isdir(folder):
        raise NotADirectoryError(errno.ENOTDIR, "not a folder", folder)
    made = os.path.abspath(folder)  # the top-most folder this check creates (removed after it)
    while not os.path.exists(os.path.dirname(made)) and os.path.dirname(made) != made:
        made = os.path.dirname(made)
    created = not os.path.exists(made)
    os.makedirs(folder, exist_ok=True)
    try:
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".probe-") as fh:
            fh.write(b"\0" * 4096)
            fh.flush()
            os.fsync(fh.fileno())
    except OSError as err:
        if err.filename:
            raise
        raise OSError(err.errno, err.strerror, folder) from None  # name the folder
    finally:
        if created:  # a usage error found later leaves no folder behind; Sacred makes it again
            level = os.path.abspath(folder)
            while True:  # only empty folders: never what another run wrote meanwhile
                try:
                    os.rmdir(level)
                except OSError:
                    break
                if level == made:
                    break
                level = os.path.dirname(level)


def declared_keys(ex: Experiment) -> set[str]:
    """The configuration keys ``ex``'s config functions declare (Sacred adds ``seed`` to every
    experiment; it is here only where declared)."""
    return {k for scope in ex.configurations for k in scope()}


def unknown_key(ex: Experiment, key: str) -> str:
    """The one-line message for a configuration key ``ex`` does not have: the closest key it
    has, and all of them."""
    import difflib

    known = sorted(declared_keys(ex) | {"seed"})
    close = difflib.get_close_matches(key.split(".")[0], known, n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    return f"unknown configuration key {key!r} ({hint}allowed: {', '.join(known)})"


class AtomicFileStorageObserver(FileStorageObserver):
    """Sacred's file observer with its JSON files (``run.json``, ``config.json``,
    ``info.json``, ``metrics.json``) replaced atomically: Sacred rewrites them in place, so a
    full disk or a crash mid-write left a truncated ``run.json`` and the record vanished from
    every listing; here the previous version stays whole."""

    def save_json(self, obj: Any, filename: str) -> None:
        import json

        from sacred.serializer import flatten

        data = flatten(obj)
        _replace_atomically(
            os.path.join(self.dir, filename),
            lambda fh: json.dump(data, fh, sort_keys=True, indent=2),
        )


@contextmanager
def observers_attached(
    ex: Experiment, runs_dir: str | None = None, wandb: bool = True, store: Any = None
) -> Iterator[FileStorageObserver]:
    """Attach the file observer (the database observer of an open ``store`` from
    :func:`open_record_store`, and the W&B forwarder) for the duration of one run."""
    runs_dir = runs_dir or default_runs_dir()
    added: list[Any] = [AtomicFileStorageObserver(runs_dir)]
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


def mask_db_args(argv: list[str], url: str) -> list[str]:
    """``argv`` with the database ``url`` (``--sql URL``, ``-s URL``, ``--sql=URL``) shown with
    its password masked (:func:`experiments.records_db.mask_url`)."""

    masked = mask_url(url)
    return [masked if a == url else f"--sql={masked}" if a == f"--sql={url}" else a for a in argv]


def record_dir(run: Any) -> str | None:
    """The folder of ``run``'s file record (``runs/<id>``), or ``None`` when it has none."""
    for obs in getattr(run, "observers", []):
        if isinstance(obs, FileStorageObserver) and getattr(obs, "dir", None):
            return obs.dir
    return None


def write_json_atomic(path: str, obj: Any) -> None:
    """Write ``obj`` as JSON to ``path`` through a temporary file and ``os.replace``: a reader
    (or a crash, SIGKILL included, or a full disk) sees the old file or the new one, never half
    of one."""
    import json

    _replace_atomically(path, lambda fh: json.dump(obj, fh, indent=1))


def _replace_atomically(path: str, write: Callable[[Any], None]) -> None:
    """``write(fh)`` into a temporary file beside ``path``, flushed to the disk, then renamed
    over ``path``: a full disk or a crash leaves the previous version whole."""
    import tempfile

    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".json", dir=folder)
    try:
        with os.fdopen(fd, "w") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _same_folder(a: str, b: str) -> bool:
    return os.path.realpath(a) == os.path.realpath(b)


def _drop_duplicate_file_observers(argv: list[str], runs_dir: str) -> list[str]:
    """``-F DIR`` / ``--file_storage=DIR`` naming the default record folder would attach a second
    observer on the same folder (Sacred then fails with ``FileExistsError``): it is the same
    record, so the option is dropped."""
    out: list[str] = []
    args = iter(argv)
    for a in args:
        if a in ("-F", "--file_storage"):
            folder = next(args, None)
            if folder is not None and _same_folder(folder, runs_dir):
                continue
            out += [a] if folder is None else [a, folder]
        elif a.startswith("--file_storage=") and _same_folder(a.split("=", 1)[1], runs_dir):
            continue
        else:
            out.append(a)
    return out


def _run_cli(ex: Experiment, argv: list[str]) -> Any:
    """Sacred's ``run_commandline`` with this project's error handling: usage errors (a bad
    configuration value, an unknown key, a bad command line) print one line and exit 2 before
    any record exists; Ctrl-C prints one line and exits 130; a failing run prints Sacred's
    filtered traceback and exits 1."""
    from docopt import DocoptExit, docopt
    from sacred.arg_parser import get_config_updates
    from sacred.utils import ConfigAddedError

    short_usage, usage, internal_usage = ex.get_usage()
    try:
        args = docopt(internal_usage, [str(a) for a in argv[1:]], default_help=False)
    except DocoptExit:
        print(f"error: bad command line {' '.join(argv[1:])!r}\n{short_usage}", file=sys.stderr)
        sys.exit(2)
    cmd_name = args.get("COMMAND") or ex.default_command
    err = ex._check_command(cmd_name)
    if not args["help"] and err:
        print(
            f"error: unknown command {cmd_name!r} (allowed: {', '.join(ex.commands)})",
            file=sys.stderr,
        )
        sys.exit(2)
    if ex._handle_help(args, usage):
        sys.exit(0)
    try:
        config_updates, named_configs = get_config_updates(args["UPDATE"])
    except Exception as parse_err:  # a malformed `with` value
        print(f"error: {parse_err}", file=sys.stderr)
        sys.exit(2)
    if "seed" in config_updates and "seed" not in declared_keys(ex):
        print(
            f"error: seed: python -m experiments.{ex.path} has no seed (its runs are seeded "
            "by its own settings); it would be recorded and ignored",
            file=sys.stderr,
        )
        sys.exit(2)
    set_progress(None)
    try:
        return ex.run(cmd_name, config_updates, named_configs, info={}, meta_info={}, options=args)
    except UsageError as usage_err:
        print(f"error: {usage_err}", file=sys.stderr)
        sys.exit(2)
    except ValueError as config_err:
        if ex.current_run is not None:  # the run had started: a failure of the run (exit 1)
            raise_failure = config_err
        else:  # raised while the configuration was built: a usage error, no record exists
            print(f"error: {str(config_err).splitlines()[0]}", file=sys.stderr)
            sys.exit(2)
        _report_failure(raise_failure, args, short_usage)
    except ConfigAddedError as added:
        for key in sorted(getattr(added, "__conflicting_configs__", ())):
            print(f"error: {unknown_key(ex, key)}", file=sys.stderr)
            break
        sys.exit(2)
    except KeyboardInterrupt as stop:
        where = current_progress()
        record = record_dir(ex.current_run) if ex.current_run is not None else None
        msg = f"interrupted by {stop.args[0]}" if isinstance(stop, Preempted) else "interrupted"
        msg += f" at {where}" if where else ""
        msg += f"; record {record} (INTERRUPTED)" if record else "; no record was written"
        print(msg, file=sys.stderr)
        sys.exit(exit_status(stop))
    except OSError as env_err:  # the disk, a folder, a permission: not the run's settings
        if args.get("--debug"):
            raise
        record = record_dir(ex.current_run) if ex.current_run is not None else None
        kept = (
            f"record {record} (FAILED)"
            if record and os.path.isfile(os.path.join(record, "run.json"))
            else "no record was written"
        )
        print(f"error: {environment_error(env_err)}; {kept}", file=sys.stderr)
        sys.exit(ENVIRONMENT)
    except Exception as run_err:
        _report_failure(run_err, args, short_usage)


def _report_failure(err: BaseException, args: dict, short_usage: str) -> None:
    """A run that raised: Sacred's filtered traceback, exit 1 (``--debug`` re-raises)."""
    from sacred.utils import SacredError, format_sacred_error, print_filtered_stacktrace

    if args.get("--debug"):
        raise err
    if isinstance(err, SacredError):
        print(format_sacred_error(err, short_usage), file=sys.stderr)
        sys.exit(2 if err.print_usage else 1)
    print_filtered_stacktrace()
    sys.exit(1)


def main_entry(ex: Experiment, exit_code: Callable[[Any], int] | None = None) -> None:
    """Command-line entry: Sacred's CLI with the default observers; exit with ``exit_code(run)``.

    Exit status (also in every command's ``--help``, :data:`EXIT_CODES`): 0 the run completed
    (or ``exit_code(run)`` when given); 1 the run raised; 2 a usage error — a bad configuration
    value, an unknown key, a bad command line, or an unreachable ``--sql`` database (unless
    ``--sql-optional`` or ``$GESSL_DB_OPTIONAL=1``) — printed as one line before any record
    exists; 130 interrupted. ``print_config`` and the other commands that make no run exit 0.
    """
    os.environ.setdefault("WANDB_MODE", "offline")
    try:
        argv, sql, optional = split_db_args(sys.argv)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    if sql:  # whatever reads the command line later (W&B's run metadata) sees no password
        sys.argv[:] = mask_db_args(sys.argv, sql)
    argv = _drop_duplicate_file_observers(argv, default_runs_dir())
    commands = {"print_config", "print_dependencies", "save_config", "print_named_configs", "help"}
    args = argv[1:]
    is_run = not any(a in commands for a in args) and not {"--help", "-h"} & set(args)
    if is_run:
        store = None
        observed = not {"-u", "--unobserved"} & set(args)
        if observed:
            try:
                store = open_record_store(sql, optional or None)
            except DatabaseUnavailable as err:  # unreachable: the environment's (3)
                print(f"error: {err}", file=sys.stderr)
                sys.exit(ENVIRONMENT if err.unreachable else 2)
        try:
            if observed:
                try:  # the runs folder must take a record: else one line, exit 3, nothing written
                    check_writable(default_runs_dir())
                except OSError as err:
                    print(f"error: runs folder: {environment_error(err)}", file=sys.stderr)
                    sys.exit(ENVIRONMENT)
            with observers_attached(ex, store=store), preemption_handled():
                run = _run_cli(ex, argv)
        finally:
            if store is not None:
                store.dispose()
    else:
        run = _run_cli(ex, argv)
    code = exit_code(run) if (exit_code and run is not None and is_run) else 0
    sys.exit(code)
