"""Team records in a SQL database: a Sacred observer beside the file record, and its reader.

``--sql URL`` (or ``$GESSL_DB_URL``) makes every experiment write its run to a database as well
as to ``runs/<id>/``; ``python -m experiments.runs --db URL`` reads it back. The database holds
what the file record holds: config, status, start/heartbeat/stop times, result, host (with
``gessl_commit``), fail trace, info, the metric series, captured output, artifacts, resources
and sources. Each database run names its file record (``file_id`` = the ``runs/<id>`` folder
name, ``runs_dir`` = that folder's parent), so the two stores can be cross-referenced.

Why our own observer instead of a subclass of Sacred's ``SqlObserver`` (sacred 0.8.7): it imports
and creates its tables under SQLAlchemy 2 (``declarative_base`` from ``sqlalchemy.ext`` only
warns, the legacy ``Query`` API still works), but its schema cannot hold our runs, so a subclass
would have to replace every table and every event:

* ``run.result`` is a ``Float`` column: every experiment here returns a dict, and psycopg refuses
  to adapt it, so the completion update fails and the run stays ``RUNNING`` in the database;
* it has no metrics table and no ``log_metrics`` (no series at all), keeps only five host fields
  (no ``gessl_commit``/``gessl_version``), and declares ``VARCHAR(16..64)`` columns (dependency
  versions, CPU names, artifact names) that PostgreSQL enforces;
* it picks the run id itself (priority 40, above the file observer), so ``runs/<id>`` would take
  the database's numbering and two runs folders feeding one database would collide on the
  ``UNIQUE`` ``run.run_id``; run below the file observer, it meets ``ex_info["sources"]`` already
  rewritten by the file observer and fails its md5 assertion.

So this module follows its schema idea (normalized tables, JSON text for config/result/info,
content-addressed sources) on SQLAlchemy 2 Core, in tables prefixed ``gessl_`` that cannot clash
with Sacred's own ``run``/``experiment``/... tables in a shared database:

* ``gessl_runs``: one row per run; ``config``, ``result``, ``info``, ``host``, ``meta`` and
  ``experiment_info`` (name, base dir, main file, dependencies, repositories, sources with md5)
  are JSON text written exactly as the file record writes its JSON (sorted keys; NaN kept);
  ``captured_out`` and ``fail_trace`` are text;
* ``gessl_metrics``: one row per logged point (run, name, step, value, timestamp);
* ``gessl_artifacts`` and ``gessl_resources``: the files' bytes;
* ``gessl_sources`` (content-addressed by md5, shared between runs) and ``gessl_run_sources``.

The connection is checked (and the tables created) before the run starts; a database failure
during the run prints one warning and stops only the database record: the file record stays the
record of truth, as with the W&B forwarder.
"""

from __future__ import annotations

import functools
import json
import os
import re
import sys
import threading
import warnings
from collections.abc import Callable, Iterable
from datetime import datetime
from types import SimpleNamespace
from typing import Any

with warnings.catch_warnings():  # sacred 0.8.7 imports pkg_resources (deprecated)
    warnings.filterwarnings("ignore", message="pkg_resources is deprecated")
    from sacred.observers.base import RunObserver

from paper_figures.records import AmbiguousRun, RunView, live_status

__all__ = [
    "PIP_HINT",
    "DatabaseUnavailable",
    "RecordStore",
    "SqlRecorder",
    "connect",
    "engine_url",
    "mask_url",
    "schema",
]

PIP_HINT = "the database store needs SQLAlchemy and psycopg: pip install 'gessl-lab[db]'"
_DRIVER_MODULES = ("sqlalchemy", "psycopg")


class DatabaseUnavailable(RuntimeError):
    """The database cannot be used; ``str(err)`` is one line with the password masked.
    ``unreachable``: the server could not be reached (the environment's failure, exit 3), as
    against a usage problem (missing drivers, an invalid URL: exit 2)."""

    def __init__(self, message: str, unreachable: bool = False) -> None:
        super().__init__(message)
        self.unreachable = unreachable


def mask_url(url: str) -> str:
    """``url`` with its password (and any ``password=`` query value) replaced by ``***``."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return re.sub(r"(password=)[^&\s]*", r"\1***", url)
    netloc, slash, path = rest.partition("/")
    if "@" in netloc:
        userinfo, _, hostport = netloc.rpartition("@")
        if ":" in userinfo:
            netloc = f"{userinfo.split(':', 1)[0]}:***@{hostport}"
    return re.sub(r"(password=)[^&\s]*", r"\1***", f"{scheme}://{netloc}{slash}{path}")


def engine_url(url: str) -> str:
    """The SQLAlchemy URL: plain ``postgresql://``/``postgres://`` use the psycopg 3 driver."""
    for plain in ("postgresql://", "postgres://"):
        if url.startswith(plain):
            return "postgresql+psycopg://" + url[len(plain) :]
    return url


def _password(url: str) -> str | None:
    netloc = url.partition("://")[2].partition("/")[0]
    userinfo = netloc.rpartition("@")[0]
    return userinfo.split(":", 1)[1] if ":" in userinfo else None


def _reason(err: BaseException, url: str) -> str:
    """A short, single-line reason from a driver error (no password in it)."""
    orig = getattr(err, "orig", None) or err
    text = str(orig).strip()
    line = text.splitlines()[0] if text else type(orig).__name__
    if "failed: " in line:
        line = line.rsplit("failed: ", 1)[1]
    line = " ".join(line.replace("FATAL:", "").split()) or type(orig).__name__
    secret = _password(url)
    if secret:
        line = line.replace(secret, "***")
    return line if len(line) <= 160 else line[:157] + "..."


def _is_driver_missing(err: ImportError) -> bool:
    name = getattr(err, "name", None) or ""
    return name.split(".")[0] in _DRIVER_MODULES


# ---------------------------------------------------------------------------------- schema


@functools.cache
def schema() -> SimpleNamespace:
    """The tables (SQLAlchemy Core), built on first use so that importing this module never
    needs SQLAlchemy."""
    import sqlalchemy as sa

    md = sa.MetaData()
    pk = sa.BigInteger().with_variant(sa.Integer(), "sqlite")  # SQLite autoincrements INTEGER

    def run_fk(**kw: Any) -> Any:
        fk = sa.ForeignKey("gessl_runs.id", ondelete="CASCADE")
        return sa.Column("run_id", sa.Integer, fk, **kw)

    runs = sa.Table(
        "gessl_runs",
        md,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("file_id", sa.String(64), index=True),  # the runs/<id> folder name
        sa.Column("runs_dir", sa.Text),  # absolute path of the file record's runs folder
        sa.Column("experiment", sa.String(200), index=True),
        sa.Column("command", sa.String(200)),
        sa.Column("status", sa.String(20)),
        sa.Column("queue_time", sa.DateTime),
        sa.Column("start_time", sa.DateTime),
        sa.Column("heartbeat", sa.DateTime),
        sa.Column("stop_time", sa.DateTime),
        sa.Column("hostname", sa.Text),
        sa.Column("gessl_commit", sa.Text),
        sa.Column("config", sa.Text),  # JSON text, as config.json
        sa.Column("result", sa.Text),  # JSON text, as run.json → result
        sa.Column("info", sa.Text),  # JSON text, as info.json
        sa.Column("host", sa.Text),  # JSON text, as run.json → host
        sa.Column("meta", sa.Text),  # JSON text, as run.json → meta
        sa.Column("experiment_info", sa.Text),  # JSON text, as run.json → experiment
        sa.Column("captured_out", sa.Text),  # as cout.txt
        sa.Column("fail_trace", sa.Text),
    )
    metrics = sa.Table(
        "gessl_metrics",
        md,
        sa.Column("id", pk, primary_key=True),
        run_fk(nullable=False),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("step", sa.BigInteger),
        sa.Column("value", sa.Float(precision=53)),
        sa.Column("timestamp", sa.DateTime),
        sa.Index("gessl_metrics_run_name_step", "run_id", "name", "step"),
    )
    artifacts = sa.Table(
        "gessl_artifacts",
        md,
        sa.Column("id", sa.Integer, primary_key=True),
        run_fk(nullable=False, index=True),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("content_type", sa.Text),
        sa.Column("size", sa.BigInteger),
        sa.Column("content", sa.LargeBinary),
    )
    resources = sa.Table(
        "gessl_resources",
        md,
        sa.Column("id", sa.Integer, primary_key=True),
        run_fk(nullable=False, index=True),
        sa.Column("filename", sa.Text, nullable=False),
        sa.Column("md5", sa.String(32)),
        sa.Column("content", sa.LargeBinary),
    )
    sources = sa.Table(
        "gessl_sources",
        md,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("md5", sa.String(32), index=True),
        sa.Column("filename", sa.Text),
        sa.Column("content", sa.Text),
    )
    run_sources = sa.Table(
        "gessl_run_sources",
        md,
        run_fk(nullable=False, index=True),
        sa.Column("source_id", sa.Integer, sa.ForeignKey("gessl_sources.id"), nullable=False),
        sa.Column("filename", sa.Text, nullable=False),
    )
    return SimpleNamespace(
        metadata=md,
        runs=runs,
        metrics=metrics,
        artifacts=artifacts,
        resources=resources,
        sources=sources,
        run_sources=run_sources,
    )


# ---------------------------------------------------------------------------------- connect


def connect(url: str, create: bool = True) -> RecordStore:
    """Open the database at ``url`` and check that it answers (and, with ``create``, that our
    tables exist or can be created).

    Raises:
        DatabaseUnavailable: SQLAlchemy or the driver is missing (the message names
            ``pip install 'gessl-lab[db]'``), the URL is invalid, or the server cannot be reached
            (``cannot reach database <url with *** for the password> (<reason>)``).
    """
    try:
        import sqlalchemy as sa
    except ImportError as err:
        if _is_driver_missing(err):
            raise DatabaseUnavailable(PIP_HINT) from None
        raise
    where = mask_url(url)
    tables = schema()
    try:
        parsed = sa.make_url(engine_url(url))
        args = {"connect_timeout": 10} if parsed.get_backend_name() == "postgresql" else {}
        engine = sa.create_engine(parsed, connect_args=args, pool_pre_ping=True)
    except ImportError as err:
        if _is_driver_missing(err):
            raise DatabaseUnavailable(PIP_HINT) from None
        raise
    except (sa.exc.ArgumentError, ValueError) as err:
        raise DatabaseUnavailable(
            f"cannot reach database {where} (invalid URL: {_reason(err, url)})"
        ) from None
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
        if create:
            _create_tables(engine, tables.metadata)
    except (sa.exc.DBAPIError, OSError) as err:
        engine.dispose()
        raise DatabaseUnavailable(
            f"cannot reach database {where} ({_reason(err, url)})", unreachable=True
        ) from None
    return RecordStore(engine, url)


def _create_tables(engine: Any, metadata: Any) -> None:
    import sqlalchemy as sa

    try:
        metadata.create_all(engine)
    except sa.exc.DBAPIError:  # two runs creating the tables at once: one of them loses
        metadata.create_all(engine)


def _json(obj: Any) -> str:
    """JSON text exactly as Sacred's file record writes it (flattened, sorted keys)."""
    from sacred.serializer import flatten

    return json.dumps(flatten(obj), sort_keys=True)


def _loads(text: str | None, default: Any = None) -> Any:
    return default if text is None else json.loads(text)


def _float(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


# ---------------------------------------------------------------------------------- store


class RecordStore:
    """An open database of run records: makes the observer and reads runs back."""

    def __init__(self, engine: Any, url: str) -> None:
        self.engine = engine
        self.url = url
        self.where = mask_url(url)

    def observer(self, runs_dir: str | None = None) -> SqlRecorder:
        """A fresh observer for one run (``runs_dir``: the file record's runs folder)."""
        return SqlRecorder(self, runs_dir)

    def dispose(self) -> None:
        self.engine.dispose()

    # ------------------------------------------------------------------ reading
    def _has_tables(self) -> bool:
        import sqlalchemy as sa

        return sa.inspect(self.engine).has_table("gessl_runs")

    def load_runs(self) -> list[RunView]:
        """Every run (without metrics), ordered as the file record orders its folders; a file
        id recorded more than once (several runs folders, one database) becomes ``<id>#<row>``."""
        import sqlalchemy as sa

        t = schema()
        if not self._has_tables():
            return []
        cols = [c for c in t.runs.c if c.name not in ("captured_out", "info")]
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(*cols)).mappings().all()
            arts = conn.execute(
                sa.select(t.artifacts.c.run_id, t.artifacts.c.name, t.artifacts.c.size).order_by(
                    t.artifacts.c.id
                )
            ).all()
        by_run: dict[int, list[tuple[str, int | None]]] = {}
        for run_id, name, size in arts:
            by_run.setdefault(run_id, []).append((name, size))
        counts: dict[str, int] = {}
        for r in rows:
            counts[str(r["file_id"])] = counts.get(str(r["file_id"]), 0) + 1
        views = [
            self._view(r, by_run.get(r["id"], []), unique=counts[str(r["file_id"])] == 1)
            for r in rows
        ]
        return sorted(views, key=lambda v: v.sort_key)

    def load_run(self, run_id: str) -> RunView | None:
        """One run with its metric series, by file id (or ``<id>#<row>``); ``None`` if absent.

        Raises:
            AmbiguousRun: the file id was recorded more than once.
        """
        import sqlalchemy as sa

        t = schema()
        if not self._has_tables():
            return None
        file_id, _, row = run_id.partition("#")
        query = sa.select(t.runs).where(t.runs.c.file_id == file_id)
        if row:
            if not row.isdigit():
                return None
            query = query.where(t.runs.c.id == int(row))
        with self.engine.connect() as conn:
            rows = conn.execute(query.order_by(t.runs.c.id)).mappings().all()
            if not row and len(rows) > 1:
                raise AmbiguousRun(run_id, [f"{file_id}#{r['id']}" for r in rows])
            if not rows:
                return None
            r = rows[0]
            arts = conn.execute(
                sa.select(t.artifacts.c.name, t.artifacts.c.size)
                .where(t.artifacts.c.run_id == r["id"])
                .order_by(t.artifacts.c.id)
            ).all()
            points = conn.execute(
                sa.select(t.metrics.c.name, t.metrics.c.step, t.metrics.c.value)
                .where(t.metrics.c.run_id == r["id"])
                .order_by(t.metrics.c.id)
            ).all()
        metrics: dict[str, list[tuple[Any, Any]]] = {}
        for name, step, value in points:
            metrics.setdefault(name, []).append((step, value))
        view = self._view(r, [tuple(a) for a in arts], unique=not row)
        view.metrics = metrics
        return view

    @staticmethod
    def _view(r: Any, artifacts: list, unique: bool) -> RunView:
        file_id = str(r["file_id"])
        return RunView(
            run_id=file_id if unique else f"{file_id}#{r['id']}",
            experiment=r["experiment"] or "?",
            status=live_status(r["status"] or "?", r["heartbeat"], r["start_time"]),
            start_time=r["start_time"],
            stop_time=r["stop_time"],
            command=r["command"],
            config=_loads(r["config"], {}),
            result=_loads(r["result"]),
            info=_loads(r.get("info"), {}),
            host=_loads(r["host"], {}),
            fail_trace=r["fail_trace"],
            artifacts=[(name, size) for name, size in artifacts],
        )


# ---------------------------------------------------------------------------------- observer


class SqlRecorder(RunObserver):
    """Sacred observer writing one run into the record store.

    Its priority (15) is below the file-storage observer's (20), so the file record picks the
    run id and this observer records it as ``file_id``; the W&B forwarder (10) comes last.
    """

    priority = 15

    def __init__(self, store: RecordStore, runs_dir: str | None = None) -> None:
        self.store = store
        self.runs_dir = os.path.abspath(runs_dir) if runs_dir else None
        self.pk: int | None = None
        self.file_id: str | None = None
        self.disabled = False
        self._lock = threading.Lock()

    def _guard(self, what: str, fn: Callable[[Any], None], needs_row: bool = True) -> None:
        """Run ``fn(connection)`` in one transaction; the first failure disables the observer."""
        if self.disabled or (needs_row and self.pk is None):
            return
        try:
            with self._lock, self.store.engine.begin() as conn:
                fn(conn)
        except Exception as err:  # the database must never break or lose the file record
            self.disabled = True
            record = os.path.join(self.runs_dir or "runs", str(self.file_id))
            print(
                f"warning: database record stopped at {what} ({type(err).__name__}: "
                f"{_reason(err, self.store.url)}); the file record {record} is unaffected",
                file=sys.stderr,
            )

    def _add_run(self, ex_info, command, host_info, config, meta_info, _id, status, **times):
        import sqlalchemy as sa

        self.file_id = None if _id is None else str(_id)
        t = schema()
        base_dir = ex_info.get("base_dir", "")
        # the file observer (run first) rewrote sources to [name, stored path]: hash them again
        sources = []
        for entry in ex_info.get("sources", []):
            name = entry[0]
            path = os.path.join(base_dir, name)
            try:
                with open(path, "rb") as fh:
                    raw = fh.read()
            except OSError:
                continue
            sources.append((name, _md5(raw), raw.decode("utf-8", errors="replace")))
        experiment_info = {
            **{k: v for k, v in ex_info.items() if k != "sources"},
            "sources": [[name, md5] for name, md5, _ in sources],
        }

        def insert(conn: Any) -> None:
            res = conn.execute(
                t.runs.insert().values(
                    file_id=self.file_id,
                    runs_dir=self.runs_dir,
                    experiment=ex_info.get("name"),
                    command=command,
                    status=status,
                    hostname=host_info.get("hostname"),
                    gessl_commit=host_info.get("gessl_commit"),
                    config=_json(config),
                    host=_json(host_info),
                    meta=_json(meta_info),
                    experiment_info=_json(experiment_info),
                    info=_json({}),
                    captured_out="",
                    **times,
                )
            )
            pk = res.inserted_primary_key[0]
            for name, md5, text in sources:
                sid = conn.execute(
                    sa.select(t.sources.c.id).where(t.sources.c.md5 == md5).limit(1)
                ).scalar()
                if sid is None:
                    sid = conn.execute(
                        t.sources.insert().values(md5=md5, filename=name, content=text)
                    ).inserted_primary_key[0]
                conn.execute(t.run_sources.insert().values(run_id=pk, source_id=sid, filename=name))
            self.pk = pk

        self._guard("start", insert, needs_row=False)
        return _id

    def _update(self, what: str, **values: Any) -> None:
        t = schema()
        self._guard(
            what,
            lambda conn: conn.execute(
                t.runs.update().where(t.runs.c.id == self.pk).values(**values)
            ),
        )

    # ------------------------------------------------------------------ events
    def queued_event(self, ex_info, command, host_info, queue_time, config, meta_info, _id):
        return self._add_run(
            ex_info, command, host_info, config, meta_info, _id, "QUEUED", queue_time=queue_time
        )

    def started_event(self, ex_info, command, host_info, start_time, config, meta_info, _id):
        return self._add_run(
            ex_info, command, host_info, config, meta_info, _id, "RUNNING", start_time=start_time
        )

    def heartbeat_event(self, info, captured_out, beat_time, result):
        self._update(
            "heartbeat",
            info=_json(info),
            captured_out=captured_out,
            heartbeat=beat_time,
            result=_json(result),
        )

    def completed_event(self, stop_time, result):
        self._update("completion", status="COMPLETED", stop_time=stop_time, result=_json(result))

    def interrupted_event(self, interrupt_time, status):
        self._update("interruption", status=status, stop_time=interrupt_time)

    def failed_event(self, fail_time, fail_trace):
        self._update(
            "failure", status="FAILED", stop_time=fail_time, fail_trace="".join(fail_trace or [])
        )

    def resource_event(self, filename):
        t = schema()

        def insert(conn: Any) -> None:
            with open(filename, "rb") as fh:
                raw = fh.read()
            conn.execute(
                t.resources.insert().values(
                    run_id=self.pk, filename=filename, md5=_md5(raw), content=raw
                )
            )

        self._guard(f"resource {filename}", insert)

    def artifact_event(self, name, filename, metadata=None, content_type=None):
        t = schema()

        def insert(conn: Any) -> None:
            with open(filename, "rb") as fh:
                raw = fh.read()
            conn.execute(
                t.artifacts.insert().values(
                    run_id=self.pk,
                    name=name,
                    content_type=content_type,
                    size=len(raw),
                    content=raw,
                )
            )

        self._guard(f"artifact {name}", insert)

    def log_metrics(self, metrics_by_name, info):
        t = schema()
        rows = list(_metric_rows(self.pk, metrics_by_name))
        if rows:
            self._guard("metrics", lambda conn: conn.execute(t.metrics.insert(), rows))


def _metric_rows(pk: int | None, metrics_by_name: dict) -> Iterable[dict[str, Any]]:
    for name, m in metrics_by_name.items():
        timestamps: list[datetime | None] = list(m.get("timestamps") or [])
        timestamps += [None] * (len(m["values"]) - len(timestamps))
        for step, value, ts in zip(m["steps"], m["values"], timestamps, strict=False):
            yield {
                "run_id": pk,
                "name": name,
                "step": None if step is None else int(step),
                "value": _float(value),
                "timestamp": ts,
            }


def _md5(raw: bytes) -> str:
    import hashlib

    return hashlib.md5(raw).hexdigest()
