"""Runs from the file record or the team database: ``list``, ``show ID``, ``compare ID ID``.

    python -m experiments.runs list                                  # runs/ or $GESSL_RUNS_DIR
    python -m experiments.runs list --experiment bounds --status completed
    python -m experiments.runs show 3 --runs other_runs
    python -m experiments.runs compare 3 4 --db postgresql://gessl@db-host:5432/gessl

Both stores load into the same :class:`RunView` objects and go through the same formatting, so
the same runs print the same text from either; ids are the file-record ids (``runs/<id>``).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from collections.abc import Callable
from datetime import datetime
from typing import Any

from experiments.records_db import DatabaseUnavailable, connect
from paper_figures.records import AmbiguousRun, FileRuns, RunView

__all__ = [
    "AmbiguousRun",
    "FileRuns",
    "RunView",
    "format_compare",
    "format_list",
    "format_show",
    "headline",
    "main",
]

WHERE_FROM = """\
where the runs come from:
  --db URL wins over --runs DIR when both are given; with neither, $GESSL_DB_URL (a database)
  wins over $GESSL_RUNS_DIR (a folder, default ./runs). A plain postgresql:// URL uses psycopg 3.
"""
EXIT_CODES = """\
exit status:
  0    ok
  2    usage error, unknown run id, no runs folder, or SQLAlchemy/psycopg missing
       (pip install 'gessl-lab[db]')
  3    the environment failed (an unreachable database, a folder that cannot be read)
  130  interrupted (Ctrl-C); 143 terminated (SIGTERM); 129 hung up (SIGHUP)
"""


# ---------------------------------------------------------------------------------- records


# ---------------------------------------------------------------------------------- headlines


def _num(v: Any) -> str:
    if isinstance(v, float):
        return format(v, ".4g")
    return str(v)


def _scalar(v: Any) -> bool:
    return isinstance(v, (int, float, str, bool))


def _pick(*keys: str) -> Callable[[dict[str, Any]], str]:
    return lambda r: ", ".join(f"{k} {_num(r[k])}" for k in keys if _scalar(r.get(k)))


def _bounds(r: dict[str, Any]) -> str:
    repro = r.get("reproduction") or {}
    parts = [f"holds {r['holds']}/{r['n_claims'] - len(repro)}"]
    for key in ("violated", "inconclusive", "errors"):
        if r.get(key):
            parts.append(f"{key} {len(r[key])}")
    if repro:
        done = sum(v == "reproduced" for v in repro.values())
        parts.append(f"reproduced {done}/{len(repro)}")
    return ", ".join(parts)


def _sigma(r: dict[str, Any]) -> str:
    final = r["final"]
    plain, gessl = final["sigma/held_out/plain"], final["sigma/held_out/gessl"]
    return f"sigma held_out plain {_num(plain)} gessl {_num(gessl)}, steps {r['steps']}"


def _gessl_map(r: dict[str, Any]) -> str:
    if "cells" in r:
        return _pick("cells", "lower_than_plain", "diverged_seeds")(r)
    return f"shard {r['shard']}: jobs {r['jobs']}/{r['jobs_total']}"


#: experiment name → the short headline of its result in ``list`` (others: ``_generic``)
HEADLINES: dict[str, Callable[[dict[str, Any]], str]] = {
    "bounds": _bounds,
    "sigma": _sigma,
    "pretrain": _pick("steps", "linear_probe", "knn", "few_shot"),
    "ablation": lambda r: f"{r['parameter']}: {len(r['rows'])} values",
    "study": lambda r: f"{len(r['rows'])} rows, steps {r['steps']}",
    "benchmark": lambda r: _pick(
        "vmap_min_speedup", "projector_worst_ratio_to_plain", "sigma_worst_ratio_to_floor"
    )(r["summary"]),
    "gessl_map": _gessl_map,
}


def _generic(r: dict[str, Any]) -> str:
    return ", ".join([f"{k} {_num(r[k])}" for k in sorted(r) if _scalar(r[k])][:3])


def headline(run: RunView, width: int = 70) -> str:
    """A short summary of the run's result (see :data:`HEADLINES`)."""
    r = run.result
    if r is None:
        text = ""
    elif not isinstance(r, dict):
        text = _num(r) if _scalar(r) else _value(r)
    else:
        try:
            text = HEADLINES.get(run.experiment, _generic)(r)
        except (KeyError, TypeError, ValueError, AttributeError):
            text = _generic(r)
    return _clip(text, width)


# ---------------------------------------------------------------------------------- formatting


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def _value(v: Any) -> str:
    """Exact display of a config/result value (strings bare, the rest as JSON)."""
    if isinstance(v, str):
        return v
    return json.dumps(v, sort_keys=True, ensure_ascii=False)


def _flat(d: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(d, dict):
        return {prefix.rstrip(".") or "value": d}
    out: dict[str, Any] = {}
    for k in sorted(d, key=str):
        v = d[k]
        if isinstance(v, dict) and v:
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _when(t: datetime | None) -> str:
    return "—" if t is None else t.strftime("%Y-%m-%d %H:%M:%S")


def _duration(run: RunView) -> str:
    s = run.seconds
    if s is None:
        return "—"
    if s < 60:
        return f"{s:.1f}s"
    if s < 3600:
        return f"{int(s // 60)}m{int(s % 60):02d}s"
    return f"{int(s // 3600)}h{int(s % 3600 // 60):02d}m"


def _table(rows: list[list[str]], right: set[int] = frozenset()) -> list[str]:
    """Left-aligned columns (``right``: right-aligned); the last column is not padded."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    out = []
    for r in rows:
        cells = [
            c.rjust(w) if i in right else (c if i == len(r) - 1 else c.ljust(w))
            for i, (c, w) in enumerate(zip(r, widths, strict=True))
        ]
        out.append("  ".join(cells).rstrip())
    return out


def format_list(runs: list[RunView]) -> str:
    """The ``list`` table: id, experiment, status, start (UTC), duration, headline."""
    rows = [["id", "experiment", "status", "start (UTC)", "duration", "headline"]]
    rows += [
        [r.run_id, r.experiment, r.status, _when(r.start_time), _duration(r), headline(r)]
        for r in runs
    ]
    lines = _table(rows, right={4})
    lines.insert(1, "-" * max(len(line) for line in lines))
    lines.append(f"{len(runs)} run{'s' if len(runs) != 1 else ''}")
    return "\n".join(lines)


def _section(title: str, pairs: list[tuple[str, str]]) -> list[str]:
    if not pairs:
        return [f"{title}: —"]
    return [f"{title}:", *("  " + line for line in _table([[k, v] for k, v in pairs]))]


def _last_line(trace: str | None) -> str | None:
    lines = [line.strip() for line in (trace or "").splitlines() if line.strip()]
    return lines[-1] if lines else None


def _fmt_metric(v: Any) -> str:
    if isinstance(v, float):
        return "nan" if math.isnan(v) else format(v, ".6g")
    if isinstance(v, int) and not isinstance(v, bool):
        return format(float(v), ".6g")
    return str(v)


def format_show(run: RunView) -> str:
    """The ``show`` text: identity, host and commit, config, result, metrics summary, artifacts."""
    host = run.host or {}
    os_info = host.get("os")
    os_name = os_info[1] if isinstance(os_info, list) and len(os_info) > 1 else os_info
    head = [
        ("experiment", run.experiment),
        ("status", run.status),
        ("command", run.command or "—"),
        ("start (UTC)", _when(run.start_time)),
        ("stop (UTC)", _when(run.stop_time)),
        ("duration", _duration(run)),
        ("host", ", ".join(str(x) for x in (host.get("hostname"), os_name) if x) or "—"),
        ("python", str(host.get("python_version", "—"))),
        ("commit", str(host.get("gessl_commit") or "—")),
        ("version", str(host.get("gessl_version") or "—")),
    ]
    failure = _last_line(run.fail_trace)
    if failure:
        head.append(("failure", failure))
    lines = [f"run {run.run_id}", *("  " + line for line in _table([[k, v] for k, v in head]))]
    lines += _section("config", [(k, _clip(_value(v), 100)) for k, v in _flat(run.config).items()])
    result = [] if run.result is None else _flat(run.result).items()
    lines += _section("result", [(k, _clip(_value(v), 100)) for k, v in result])
    metrics = run.metrics or {}
    rows = []
    for name in sorted(metrics):
        points = metrics[name]
        step, value = points[-1] if points else (None, None)
        count = f"{len(points)} point{'s' if len(points) != 1 else ''}"
        rows.append((name, f"{count}, last {_fmt_metric(value)} at step {step}"))
    lines += _section("metrics", rows)
    lines += _section(
        "artifacts", [(n, "?" if s is None else f"{s} bytes") for n, s in run.artifacts]
    )
    return "\n".join(lines)


def _side_by_side(title: str, a: dict[str, Any], b: dict[str, Any], width: int) -> list[str]:
    keys = sorted(set(a) | set(b))
    missing = object()
    differ = [k for k in keys if a.get(k, missing) != b.get(k, missing)]
    same = [k for k in keys if k not in differ]
    lines = [f"{title}: {len(differ)} of {len(keys)} differ"]
    if not keys:
        return lines

    def cell(d: dict[str, Any], k: str) -> str:
        return _clip(_value(d[k]), width) if k in d else "—"

    rows = [[f"* {k}", cell(a, k), cell(b, k)] for k in differ]
    rows += [[f"  {k}", cell(a, k), cell(b, k)] for k in same]
    return lines + ["  " + line for line in _table(rows)]


def format_compare(a: RunView, b: RunView, width: int = 40) -> str:
    """The ``compare`` text: the two runs side by side; differing keys first, marked ``*``."""
    head = [
        ["run", a.run_id, b.run_id],
        ["experiment", a.experiment, b.experiment],
        ["status", a.status, b.status],
        ["start (UTC)", _when(a.start_time), _when(b.start_time)],
        ["duration", _duration(a), _duration(b)],
        ["commit", str(a.host.get("gessl_commit") or "—"), str(b.host.get("gessl_commit") or "—")],
        ["headline", headline(a, width), headline(b, width)],
    ]
    lines = _table(head)
    lines += _side_by_side("config", _flat(a.config), _flat(b.config), width)
    ra = {} if a.result is None else _flat(a.result)
    rb = {} if b.result is None else _flat(b.result)
    lines += _side_by_side("result", ra, rb, width)
    return "\n".join(lines)


# ---------------------------------------------------------------------------------- command line


class _Stop(Exception):
    """A one-line error for stderr; exit status ``code`` (2, or 3 for the environment)."""

    def __init__(self, message: str, code: int = 2) -> None:
        super().__init__(message)
        self.code = code


def _open(args: argparse.Namespace) -> Any:
    url = args.db or (None if args.runs else os.environ.get("GESSL_DB_URL") or None)
    if url:
        try:
            return connect(url, create=False)
        except DatabaseUnavailable as err:
            raise _Stop(str(err), 3 if err.unreachable else 2) from None
    return FileRuns(args.runs or os.environ.get("GESSL_RUNS_DIR", "runs"))


def _one(store: Any, run_id: str) -> RunView:
    try:
        run = store.load_run(run_id)
    except AmbiguousRun as err:
        raise _Stop(
            f"run {run_id} is ambiguous in {store.where}: one of {', '.join(err.choices)}"
        ) from None
    if run is None:
        bad = dict((p.name, why) for p, why in getattr(store, "unreadable", []))
        if run_id in bad:
            raise _Stop(f"run {run_id} in {store.where} is unreadable: {bad[run_id]}")
        raise _Stop(f"no run {run_id} in {store.where}")
    return run


#: the statuses a record can have: Sacred's, and STALE (a RUNNING record whose process died)
STATUSES = ("COMPLETED", "FAILED", "INTERRUPTED", "RUNNING", "STALE", "QUEUED", "TIMEOUT")


def build_parser() -> argparse.ArgumentParser:
    where = argparse.ArgumentParser(add_help=False)
    group = where.add_argument_group("where the runs come from (--db wins over --runs)")
    group.add_argument(
        "--runs", metavar="DIR", help="runs folder (default $GESSL_RUNS_DIR or runs)"
    )
    group.add_argument("--db", metavar="URL", help="database URL (default $GESSL_DB_URL)")
    fmt = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(
        prog="python -m experiments.runs",
        description="List, show and compare runs from the file record (runs/) or the team "
        "database; the same runs print the same text from either.",
        epilog=WHERE_FROM + "\n" + EXIT_CODES,
        formatter_class=fmt,
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    ls = sub.add_parser(
        "list", parents=[where], help="a table of runs", epilog=EXIT_CODES, formatter_class=fmt
    )
    ls.add_argument("--experiment", metavar="NAME", help="only this experiment")
    ls.add_argument(
        "--status",
        metavar="STATUS",
        type=str.upper,
        choices=STATUSES,
        help=f"only this status, any case ({', '.join(s.lower() for s in STATUSES)})",
    )
    show = sub.add_parser(
        "show",
        parents=[where],
        help="one run: config, result, host/commit, metrics, artifacts",
        epilog=EXIT_CODES,
        formatter_class=fmt,
    )
    show.add_argument("run_id", metavar="ID", help="the file-record id (runs/<ID>)")
    cmp_ = sub.add_parser(
        "compare",
        parents=[where],
        help="two runs side by side (differing keys first)",
        epilog=EXIT_CODES,
        formatter_class=fmt,
    )
    cmp_.add_argument("run_ids", metavar="ID", nargs=2, help="two file-record ids")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)  # usage errors: argparse exits 2
    try:
        store = _open(args)
        if isinstance(store, FileRuns) and not store.exists():
            raise _Stop(f"no runs folder {store.where}")
        try:
            if args.command == "list":
                runs = store.load_runs()
                if args.experiment:
                    runs = [r for r in runs if r.experiment == args.experiment]
                if args.status:
                    runs = [r for r in runs if r.status.lower() == args.status.lower()]
                text = format_list(runs)
                for folder, why in getattr(store, "unreadable", []):  # listed, not hidden
                    text += f"\nUNREADABLE {folder}: {why}"
            elif args.command == "show":
                text = format_show(_one(store, args.run_id))
            else:
                a, b = (_one(store, i) for i in args.run_ids)
                text = format_compare(a, b)
        finally:
            if hasattr(store, "dispose"):
                store.dispose()
    except _Stop as err:
        print(f"error: {err}", file=sys.stderr)
        return err.code
    try:
        print(text)
        sys.stdout.flush()
    except BrokenPipeError:  # `... | head`: the reader left; not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0


if __name__ == "__main__":
    from gessl.cli import run_main

    run_main(main, "nothing was changed")
