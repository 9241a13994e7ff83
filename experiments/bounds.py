"""The main job: check every registered theory claim and print a verdict table.

    python -m experiments.bounds                          # quick profile, every claim
    python -m experiments.bounds with profile=full seed=3
    python -m experiments.bounds with 'claims=["infonce_mi_bound", "barlow_stepwise"]'
    python -m experiments.bounds with 'exclude=["gessl_lowers_sigma"]'
    python -m experiments.bounds print_config
    python -m experiments.bounds -F other_runs_dir         # an extra file observer

Each claim's record (measured and bound series, slopes, standard errors, verdict and reason)
goes to ``runs/<id>/claims.json`` and its figure to ``runs/<id>/<claim>.png`` (Sacred artifacts,
also forwarded to W&B). The process exits 1 if any claim is violated (and 1 if the run crashes).
"""

from __future__ import annotations

import json
import os
import re
import sys
import tempfile
import time
import traceback
from typing import Any

from tqdm import tqdm

from experiments.tracking import main_entry, make_experiment
from theory.claims import BUDGETS, all_claims, get_claim

ex = make_experiment("bounds")

#: the ``verdict`` metric per claim; ``error``: the check raised (the run goes on with the rest)
VERDICT_CODE = {"holds": 1.0, "inconclusive": 0.0, "violated": -1.0, "error": -2.0}


def metric_name(*parts: str) -> str:
    """``claims/<id>/<series>`` with characters outside ``[A-Za-z0-9_.-]`` folded to ``_``."""
    return "/".join(re.sub(r"[^A-Za-z0-9_.-]+", "_", p).strip("_") for p in parts)


@ex.config
def config() -> None:
    profile = "quick"  # "quick" (default, < 1 min on 2 cores), "full" (tighter), "tiny" (tests)
    claims = []  # claim ids to run; empty = every registered claim
    exclude = []  # claim ids to skip
    seed = 0
    figures = True  # save one PNG per claim
    assert profile in BUDGETS, f"profile must be one of {BUDGETS}"


def _fmt(v: float | None, spec: str) -> str:
    return "—" if v is None or v != v else format(v, spec)


def verdict_table(records: list[dict[str, Any]]) -> str:
    """The printed table: claim, kind, verdict, seconds, slope, SE, measured vs bound."""
    head = (
        f"{'claim':30s} {'kind':5s} {'verdict':12s} {'sec':>6s} {'slope':>15s} {'SE':>8s}  "
        "measured vs bound"
    )
    lines = [head, "-" * len(head)]
    for r in records:
        slope = "—" if r.get("slope") is None else f"{r['slope']:.2f}"
        if r.get("slope") is not None and r.get("expected_slope") is not None:
            slope += f" (exp {r['expected_slope']:g})"
        lines.append(
            f"{r['claim_id']:30s} {r['kind']:5s} {r['verdict'].upper():12s} "
            f"{r['seconds']:6.2f} {slope:>15s} {_fmt(r.get('se'), '8.1e'):>8s}  "
            f"{r['summary']}"
        )
    counts = {v: sum(r["verdict"] == v for r in records) for v in VERDICT_CODE}
    lines.append("-" * len(head))
    lines.append(
        f"{len(records)} claims: {counts['holds']} hold, {counts['violated']} violated, "
        f"{counts['inconclusive']} inconclusive"
        + (f", {counts['error']} raised an error" if counts["error"] else "")
    )
    for r in records:
        if r["verdict"] != "holds":
            lines.append(f"  {r['claim_id']} {r['verdict']}: {r['reason']}")
    return "\n".join(lines)


def _save_figure(record: dict[str, Any], folder: str) -> str:
    import matplotlib.pyplot as plt

    from paper_figures.panels import plot_claim  # matplotlib only when figures are wanted

    fig = plot_claim(record)
    path = os.path.join(folder, f"{record['claim_id']}.png")
    fig.savefig(path, metadata={"Software": None})
    plt.close(fig)
    return path


def _check_all(
    selected: list[Any],
    profile: str,
    seed: int,
    figures: bool,
    tmp: str,
    records: list[dict[str, Any]],
    _run: Any,
) -> None:
    """Run the claims in order, appending each record as soon as it exists."""
    bar = tqdm(
        selected, desc="claims", unit="claim", file=sys.stderr, leave=False, disable=None
    )  # no bar when stderr is not a terminal
    with bar:
        for step, claim in enumerate(bar):
            bar.set_postfix_str(claim.id)
            rec = _check_one(claim, profile, seed, step, _run)
            records.append(rec)
            if figures and rec["verdict"] != "error":
                _run.add_artifact(_save_figure(rec, tmp), f"{claim.id}.png")
            done = f"{rec['verdict']} ({rec['seconds']:.2f}s)"
            if rec["verdict"] == "error":
                done = f"ERROR {rec['reason']}"
            tqdm.write(f"[{step + 1}/{len(selected)}] {claim.id}: {done}", file=sys.stderr)


def _check_one(claim: Any, profile: str, seed: int, step: int, _run: Any) -> dict[str, Any]:
    """One claim's record, its metrics logged; a check that raises gives an ``error`` record."""
    t0 = time.perf_counter()
    try:
        result = claim.check(budget=profile, seed=seed)
    except Exception as exc:  # one broken check must not cost the other verdicts
        _run.log_scalar("verdict", VERDICT_CODE["error"], step)
        return _error_record(claim, exc, time.perf_counter() - t0, profile, seed)
    rec = result.to_dict()
    rec.update(statement=claim.statement, source=claim.source, provenance=claim.provenance)
    _run.log_scalar("verdict", VERDICT_CODE[result.verdict], step)
    _run.log_scalar(metric_name("claims", claim.id, "seconds"), result.seconds, step)
    if result.slope is not None:
        _run.log_scalar(metric_name("claims", claim.id, "slope"), result.slope, step)
    for kind, group in (("measured", result.measured), ("bound", result.bounds)):
        for series in group:
            name = metric_name("claims", claim.id, kind, series.label)
            for i, y in enumerate(series.y):
                _run.log_scalar(name, y, i)
    return rec


@ex.main
def main(
    profile: str, claims: list[str], exclude: list[str], seed: int, figures: bool, _run: Any
) -> dict[str, Any]:
    selected = [get_claim(c) for c in claims] if claims else all_claims()
    skip = {get_claim(c).id for c in exclude}  # validates the ids
    selected = [c for c in selected if c.id not in skip]
    records: list[dict[str, Any]] = []
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        try:
            _check_all(selected, profile, seed, figures, tmp, records, _run)
        finally:  # also when interrupted: the verdicts reached so far are kept in the record
            path = os.path.join(tmp, "claims.json")
            with open(path, "w") as fh:
                json.dump(
                    {
                        "profile": profile,
                        "seed": seed,
                        "complete": len(records) == len(selected),
                        "claims": records,
                    },
                    fh,
                    indent=1,
                )
            _run.add_artifact(path, "claims.json")
    print(verdict_table(records))
    columns = ["claim", "kind", "verdict", "seconds", "slope", "summary"]
    _run.info["wandb_tables"] = {
        "verdicts": {
            "columns": columns,
            "data": [
                [
                    r["claim_id"],
                    r["kind"],
                    r["verdict"],
                    round(r["seconds"], 3),
                    r.get("slope"),
                    r["summary"],
                ]
                for r in records
            ],
        }
    }
    _run.info["verdicts"] = {r["claim_id"]: r["verdict"] for r in records}
    violated = [r["claim_id"] for r in records if r["verdict"] == "violated"]
    return {
        "n_claims": len(records),
        "holds": sum(r["verdict"] == "holds" for r in records),
        "violated": violated,
        "inconclusive": [r["claim_id"] for r in records if r["verdict"] == "inconclusive"],
        "errors": [r["claim_id"] for r in records if r["verdict"] == "error"],
        "seconds": round(time.perf_counter() - start, 3),
    }


def exit_code(run: Any) -> int:
    """1 if any claim is violated or its check raised, else 0."""
    result = getattr(run, "result", None) or {}
    return 1 if result.get("violated") or result.get("errors") else 0


def _error_record(claim: Any, exc: Exception, seconds: float, profile: str, seed: int) -> dict:
    """The record of a check that raised: verdict ``error``, the exception and its traceback."""
    return {
        "claim_id": claim.id,
        "kind": claim.kind,
        "verdict": "error",
        "reason": f"the check raised {type(exc).__name__}: {exc}",
        "summary": f"check raised {type(exc).__name__}",
        "measured": [],
        "bounds": [],
        "details": {"traceback": traceback.format_exc()},
        "seconds": seconds,
        "budget": profile,
        "seed": seed,
        "statement": claim.statement,
        "source": claim.source,
        "provenance": claim.provenance,
    }


if __name__ == "__main__":
    main_entry(ex, exit_code)
