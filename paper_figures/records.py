"""Reading Sacred file records (``runs/<id>/``): the only input of the figures."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["STALE_AFTER", "RunRecord", "find_runs", "latest", "live_status", "read_json"]

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


def find_runs(runs_dir: str | Path) -> list[RunRecord]:
    """Every readable run under ``runs_dir`` (ids are the numeric folder names)."""
    root = Path(runs_dir)
    out = []
    if not root.is_dir():
        return out
    for d in sorted(
        (p for p in root.iterdir() if p.is_dir() and p.name.isdigit()), key=lambda p: int(p.name)
    ):
        run = read_json(d / "run.json")
        if not isinstance(run, dict):
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
                config=read_json(d / "config.json") or {},
                info=read_json(d / "info.json") or {},
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
