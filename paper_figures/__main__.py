"""``python -m paper_figures [--runs DIR] [--out DIR] [--only NAME] [--run-missing] [--html DIR]``.

Regenerates every figure and table from the run records; an output whose records are missing is
skipped with a message naming the command that produces them (``--run-missing`` runs those
commands first, in their quick profile). ``--html DIR`` also writes ``DIR/index.html``: one static
page (no server, network or JavaScript; figures embedded) with the verdict table of the latest
``experiments.bounds`` run, every output built here with its run ids, config and git commit, and
the outputs whose records are missing (:mod:`paper_figures.html`). Exit status 0, or 1 when an
output named with ``--only`` could not be built; 2 on usage errors.
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from paper_figures.figures import BUILDERS, COMMANDS, MissingRecord, build
from paper_figures.html import Skipped, write_report
from paper_figures.records import find_runs


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m paper_figures",
        description=__doc__.split("\n")[0],
        epilog="exit status: 0 built (missing records are listed); 1 an output named with --only "
        "could not be built; 2 usage error (bad option, --runs folder missing); 130 interrupted "
        "(Ctrl-C), 143 terminated (SIGTERM), 129 hung up (SIGHUP); 3 the --out folder cannot be "
        "written (one line naming the path)",
    )
    p.add_argument(
        "--runs",
        default=os.environ.get("GESSL_RUNS_DIR", "runs"),
        help="folder of the Sacred file records (default: runs or $GESSL_RUNS_DIR)",
    )
    p.add_argument("--out", default="figures", help="output folder (default: figures)")
    p.add_argument(
        "--only",
        action="append",
        choices=sorted(BUILDERS),
        help="build only this output (repeatable)",
    )
    p.add_argument(
        "--run-missing",
        action="store_true",
        help="run the experiment producing a missing record, then build",
    )
    p.add_argument(
        "--html",
        metavar="DIR",
        help="also write DIR/index.html: one static page (figures embedded, no server or "
        "JavaScript) with the latest bounds verdicts, the outputs built and the missing ones",
    )
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if not Path(args.runs).is_dir() and not args.run_missing:
        print(
            f"error: --runs {args.runs}: no such folder of run records "
            "(run an experiment first, or pass --run-missing)",
            file=sys.stderr,
        )
        return 2
    names = args.only or list(BUILDERS)
    out = Path(args.out)
    skipped: list[Skipped] = []
    built: dict[str, list[Path]] = {}
    unreadable: list[tuple[Path, str]] = []
    find_runs(args.runs, unreadable)
    for folder, reason in unreadable:  # named once, and left out of every output
        print(f"skipped record {folder}: {reason}", file=sys.stderr)
    for name in names:
        runs = find_runs(args.runs)
        try:
            paths = build(name, runs, out)
        except ValueError as err:  # records exist but cannot make the output (e.g. shards)
            print(f"skipped {name}: {err}", file=sys.stderr)
            skipped.append(Skipped(name, f"{name}: {err}", COMMANDS[name]))
            continue
        except MissingRecord as err:
            if not args.run_missing:
                print(f"skipped {err}", file=sys.stderr)
                skipped.append(Skipped(name, str(err), COMMANDS[name]))
                continue
            cmd = COMMANDS[name]
            print(f"{name}: running `{cmd}` (records under {args.runs})", file=sys.stderr)
            env = {**os.environ, "GESSL_RUNS_DIR": args.runs}
            subprocess.run(shlex.split(cmd), env=env, check=False)  # bounds exits 1 on findings
            try:
                paths = build(name, find_runs(args.runs), out)
            except (MissingRecord, ValueError) as again:  # ValueError: shards still missing
                msg = f"{again} (the command did not produce it)"
                print(f"skipped {msg}", file=sys.stderr)
                skipped.append(Skipped(name, msg, COMMANDS[name]))
                continue
        built[name] = paths
        print(f"{name}: {len(paths)} files in {out}")
    if args.html:
        page = write_report(args.html, find_runs(args.runs), args.runs, built, skipped)
        print(f"report: {page}")
    return 1 if args.only and skipped else 0


if __name__ == "__main__":
    from gessl.cli import run_main

    run_main(main, "the outputs written so far are kept")
