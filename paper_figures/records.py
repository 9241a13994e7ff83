"""The run records, read one way for every reader: the figures, ``python -m experiments.runs``
and the PostgreSQL store (:mod:`experiments.records_db`).

:class:`RunRecord` and :func:`find_runs` read Sacred file records (``runs/<id>/``), the only
input of the figures; :class:`RunView` is one run as both stores present it (:class:`FileRuns`
loads the file records into it, ``experiments.records_db.DatabaseRuns`` the database rows), so
the same runs print the same text from either.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

__all__ = [
    "STALE_AFTER",
    "AmbiguousRun",
    "Coverage",
    "FileRuns",
    "RunRecord",
    "RunView",
    "claim_coverage",
    "find_runs",
    "latest",
    "live_status",
    "read_json",
]

#: seconds without a heartbeat after which a RUNNING record counts as dead (``STALE``); Sacred
#: beats every 10 s. ``$GESSL_STALE_AFTER`` overrides it.
STALE_AFTER = 120.0


def live_status(status: str, heartbeat: Any, start_time: Any = None, now: Any = None) -> str:
    """``STALE`` for a RUNNING record whose last heartbeat (or start, before the first beat) is
    older than :data:`STALE_AFTER` seconds — its process died without saying so (SIGKILL, power
    loss) — else ``status``. Times are Sacred's naive UTC datetimes or their ISO strings."""
    from datetime import UTC, datetime

    if status != "RUNNING":
        return status
    last = heartbeat or start_time
    if isinstance(last, str):
        try:
            last = datetime.fromisoformat(last)
        except ValueError:
            return status
    if not isinstance(last, datetime):
        return status
    now = now or datetime.now(UTC).replace(tzinfo=None)
    limit = float(os.environ.get("GESSL_STALE_AFTER", STALE_AFTER))
    return "STALE" if (now - last).total_seconds() > limit else status


@dataclass(frozen=True)
class RunRecord:
    """One completed Sacred run: its id, experiment name, config, info, result and folder."""

    run_id: str
    experiment: str
    status: str
    start_time: str
    path: Path
    config: dict[str, Any] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)
    result: Any = None

    def artifact(self, name: str) -> Path:
        return self.path / name

    def source(self) -> dict[str, str]:
        """How an output names the run it came from."""
        return {
            "experiment": self.experiment,
            "run_id": self.run_id,
            "path": str(self.path),
            "start_time": self.start_time,
        }


def read_json(path: Path) -> Any:
    """The JSON in ``path``, or ``None`` when it is missing or not (yet) whole."""
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def _read_run(d: Path) -> tuple[dict[str, Any], str | None]:
    """The record in folder ``d`` — its ``run.json`` with its ``config.json`` and ``info.json``
    (``{}`` when absent) under the keys ``"config"`` and ``"info"`` — and why the record cannot
    be read (``None``: it can)."""
    path = d / "run.json"
    if not path.is_file():
        return {}, "no run.json (a run that never started, or one being created)"
    try:
        run = json.loads(path.read_text())
    except OSError as err:
        return {}, f"run.json cannot be read ({err.strerror or err})"
    except (json.JSONDecodeError, UnicodeDecodeError):
        return {}, "run.json is not valid JSON (truncated?)"
    if not isinstance(run, dict):
        return {}, f"run.json holds a JSON {type(run).__name__}, not an object"
    if not isinstance(run.get("experiment", {}), dict):
        return {}, "run.json: 'experiment' is not an object"
    parts = {}
    for name in ("config", "info"):
        part = read_json(d / f"{name}.json") if (d / f"{name}.json").is_file() else None
        if not isinstance(part, dict | None):
            return {}, f"{name}.json is not a JSON object"
        parts[name] = part or {}
    return {**run, **parts}, None


def find_runs(
    runs_dir: str | Path, skipped: list[tuple[Path, str]] | None = None
) -> list[RunRecord]:
    """Every readable run under ``runs_dir`` (ids are the numeric folder names); each record
    that cannot be read is left out, and, with ``skipped``, appended to it as ``(folder,
    reason)``."""
    root = Path(runs_dir)
    out: list[RunRecord] = []
    if not root.is_dir():
        return out
    for d in sorted(
        (p for p in root.iterdir() if p.is_dir() and p.name.isdigit()), key=lambda p: int(p.name)
    ):
        run, reason = _read_run(d)
        if reason is not None:
            if skipped is not None:
                skipped.append((d, reason))
            continue
        out.append(
            RunRecord(
                run_id=d.name,
                experiment=run.get("experiment", {}).get("name", "?"),
                status=live_status(
                    run.get("status", "?"), run.get("heartbeat"), run.get("start_time")
                ),
                start_time=str(run.get("start_time", "")),
                path=d,
                config=run["config"],
                info=run["info"],
                result=run.get("result"),
            )
        )
    return out


def latest(
    runs: list[RunRecord], experiment: str, where: Callable[[RunRecord], bool] | None = None
) -> RunRecord | None:
    """The most recent COMPLETED run of ``experiment`` (optionally satisfying ``where``)."""
    done = [
        r
        for r in runs
        if r.experiment == experiment and r.status == "COMPLETED" and (where is None or where(r))
    ]
    return max(done, key=lambda r: (r.start_time, int(r.run_id)), default=None)


@dataclass(frozen=True)
class Coverage:
    """Which registered claims a ``bounds`` run checked, and, for each one it did not, the
    latest verdict a completed ``bounds`` run of the folder reached (``None``: none did)."""

    run_id: str
    checked: int
    registered: int
    elsewhere: dict[str, tuple[str, str, str] | None]  # claim → (run id, verdict, profile)

    def line(self) -> str:
        """One plain sentence (empty when the run checked every registered claim)."""
        if not self.elsewhere:
            return ""
        parts = [
            f"{cid} (no completed run checked it)"
            if got is None
            else f"{cid} ({got[1]} in run {got[0]}, {got[2]} profile)"
            for cid, got in self.elsewhere.items()
        ]
        return (
            f"run {self.run_id} checked {self.checked} of the {self.registered} registered claims; "
            f"not in it: {'; '.join(parts)}"
        )


def claim_coverage(runs: list[RunRecord], run: RunRecord, checked: list[str]) -> Coverage:
    """:class:`Coverage` of ``run`` (whose records name the claims in ``checked``) among the
    claims registered now (:func:`theory.claims.all_claims`), with the latest verdict of each
    missing claim in the other completed ``bounds`` runs of ``runs`` (newest first)."""
    from theory.claims import all_claims

    registered = [c.id for c in all_claims()]
    missing = [c for c in registered if c not in set(checked)]
    others = sorted(
        (r for r in runs if r.experiment == "bounds" and r.status == "COMPLETED" and r is not run),
        key=lambda r: (r.start_time, int(r.run_id)),
        reverse=True,
    )
    found: dict[str, tuple[str, str, str] | None] = {c: None for c in missing}
    for other in others:
        if all(v is not None for v in found.values()):
            break
        data = read_json(other.artifact("claims.json"))
        if not isinstance(data, dict) or not data.get("complete", True):
            continue
        for rec in data.get("claims", []):
            cid = rec.get("claim_id") if isinstance(rec, dict) else None
            if cid in found and found[cid] is None and rec.get("verdict") != "provisional":
                found[cid] = (other.run_id, str(rec.get("verdict")), str(data.get("profile", "?")))
    return Coverage(run.run_id, len(set(checked) & set(registered)), len(registered), found)


# ----------------------------------------------------------------------------- run views
class AmbiguousRun(LookupError):
    """A file id recorded more than once in one database (several runs folders feeding it)."""

    def __init__(self, run_id: str, choices: list[str]) -> None:
        super().__init__(run_id, choices)
        self.run_id = run_id
        self.choices = choices


@dataclass
class RunView:
    """One run as both stores present it (times are Sacred's naive UTC datetimes)."""

    run_id: str
    experiment: str
    status: str
    start_time: datetime | None
    stop_time: datetime | None
    command: str | None = None
    config: dict[str, Any] = field(default_factory=dict)
    result: Any = None
    info: dict[str, Any] = field(default_factory=dict)
    host: dict[str, Any] = field(default_factory=dict)
    fail_trace: str | None = None
    artifacts: list[tuple[str, int | None]] = field(default_factory=list)  # (name, bytes)
    metrics: dict[str, list[tuple[Any, Any]]] | None = None  # name → [(step, value)]; show only

    @property
    def sort_key(self) -> tuple:
        head, _, row = self.run_id.partition("#")
        rank = (0, int(head), "") if head.isdigit() else (1, 0, head)
        return (*rank, int(row) if row.isdigit() else 0)

    @property
    def seconds(self) -> float | None:
        if self.start_time is None or self.stop_time is None:
            return None
        return (self.stop_time - self.start_time).total_seconds()


def _time(value: Any) -> datetime | None:
    if isinstance(value, datetime) or value is None:
        return value
    try:
        return datetime.fromisoformat(str(value))
    except ValueError:
        return None


class FileRuns:
    """The file records under one runs folder (found by :func:`find_runs`)."""

    def __init__(self, runs_dir: str | Path) -> None:
        self.root = Path(runs_dir)
        self.where = str(runs_dir)

    def exists(self) -> bool:
        return self.root.is_dir()

    def load_runs(self) -> list[RunView]:
        self.unreadable: list[tuple[Path, str]] = []
        return [self._view(rec) for rec in find_runs(self.root, self.unreadable)]

    def load_run(self, run_id: str) -> RunView | None:
        view = next((v for v in self.load_runs() if v.run_id == run_id), None)
        if view is not None:
            metrics = read_json(self.root / run_id / "metrics.json") or {}
            view.metrics = {
                name: list(zip(m.get("steps", []), m.get("values", []), strict=False))
                for name, m in metrics.items()
            }
        return view

    @staticmethod
    def _view(rec: Any) -> RunView:
        run = read_json(rec.path / "run.json") or {}
        trace = run.get("fail_trace")
        sizes = []
        for name in run.get("artifacts", []):
            try:
                sizes.append((name, (rec.path / name).stat().st_size))
            except OSError:
                sizes.append((name, None))
        return RunView(
            run_id=rec.run_id,
            experiment=rec.experiment,
            status=rec.status,
            start_time=_time(run.get("start_time")),
            stop_time=_time(run.get("stop_time")),
            command=run.get("command"),
            config=rec.config,
            result=rec.result,
            info=rec.info,
            host=run.get("host") or {},
            fail_trace="".join(trace) if isinstance(trace, list) else trace,
            artifacts=sizes,
        )
