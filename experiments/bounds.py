"""The main job: check every registered theory claim and print a verdict table.

    python -m experiments.bounds                          # quick profile, every claim
    python -m experiments.bounds with profile=full seed=3
    python -m experiments.bounds with 'claims=["infonce_mi_bound", "barlow_stepwise"]'
    python -m experiments.bounds with 'exclude=["gessl_task_generalization"]'
    python -m experiments.bounds with jobs=1               # one process (same numbers)
    python -m experiments.bounds with strict=True          # reproduction verdicts count too
    python -m experiments.bounds print_config
    python -m experiments.bounds -F other_runs_dir         # an extra file observer
    python -m experiments.bounds --list                    # the catalogue (docs/claims.md)
    python -m experiments.bounds --power                   # the power run (= with power=True)

Each claim's record (measured and bound series, slopes, standard errors, verdict and reason)
goes to ``runs/<id>/claims.json`` and its figure to ``runs/<id>/<claim>.png`` (Sacred artifacts,
also forwarded to W&B). Theorem claims (``exact``, ``rate``) and ``reproduction`` claims are
printed in separate sections; the reproduction tests are Holm-corrected across every
reproduction claim of the run. Exit status: 0 when every theorem claim holds (or is
inconclusive), 1 when one is violated or any check raised; with ``strict=True`` also 1 when a
reproduction claim is *not reproduced*; 2 when the ``--sql`` database cannot be reached (nothing
is recorded; ``--sql-optional`` goes ahead with the file record only).

**The power run** (``--power`` or ``with power=True``) checks each selected claim that declares
wrong alternatives (:class:`theory.claims.Alternative`) as stated and against each alternative
on the chosen profile, and prints claim | alternative | verdict | rejected | seconds. An
alternative is *rejected* when the check reaches one of its ``rejected_when`` verdicts
(``violated`` for a theorem claim); a theorem claim as stated must *hold*. Its record is
``runs/<id>/power.json`` (with each claim's resolution); ``python -m experiments.docs --power
runs/<id>/power.json`` puts it into the catalogue (docs/claims.md). Exit status: 0 when every
alternative declared rejectable on the profile is rejected and every theorem claim holds as
stated, 1 otherwise (also for a check that raised).
"""

from __future__ import annotations

import os
import re
import sys
import tempfile
import time
from typing import Any

from tqdm import tqdm

from experiments.claim_runner import power_units, run_claims, run_power, save_figure
from experiments.parallel import DaskEngine, engine
from experiments.tracking import (
    main_entry,
    make_experiment,
    record_dir,
    set_progress,
    write_json_atomic,
)
from experiments.validation import UsageError, check_choice, check_choices, validates
from gessl.progress import progress
from theory.claims import BUDGETS, THEOREM_KINDS, all_claims, get_claim
from theory.claims.reproduction import correct_across, family_missing, tests_of

ex = make_experiment("bounds")

#: the ``verdict`` metric per claim; ``error``: the check raised (the run goes on with the rest)
VERDICT_CODE = {
    "holds": 1.0,
    "reproduced": 1.0,
    "inconclusive": 0.0,
    "violated": -1.0,
    "not reproduced": -1.0,
    "mixed": 0.0,
    "no practical difference": 0.0,
    "error": -2.0,
}  # a provisional reproduction verdict (before the correction across the run) is not logged
#: the reproduction verdicts, in the order the summary counts them
REPRO_ORDER = ("reproduced", "not reproduced", "mixed", "no practical difference", "inconclusive")


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
    jobs = 0  # worker processes; 0 = one per CPU core (the numbers are the same for any value)
    scheduler = None  # a running Dask scheduler, "tcp://host:8786" (else $GESSL_DASK_SCHEDULER)
    cluster = None  # start a Dask cluster: "local" (jobs workers here) or "slurm" (dask-jobqueue)
    cluster_options = None  # the cluster's options, e.g. {"queue": "cpu", "walltime": "01:00:00"}
    strict = False  # True: a reproduction claim that is 'not reproduced' also makes the exit 1
    device = "auto"  # where the claims that train do: "auto" (CUDA if available), "cpu", "cuda"
    power = False  # True: check each claim's declared wrong alternatives instead (--power)


@validates(ex)
def _check(config: dict[str, Any]) -> None:
    ids = [c.id for c in all_claims()]
    check_choice("profile", config["profile"], BUDGETS)
    check_choices("claims", config["claims"], ids)
    check_choices("exclude", config["exclude"], ids)
    selected = set(config["claims"] or ids) - set(config["exclude"])
    if not selected:
        raise UsageError("claims: every selected claim is excluded (nothing to run)")
    if config["power"] and not any(get_claim(c).alternatives for c in selected):
        raise UsageError("power: none of the selected claims declares an alternative")
    split = set(family_missing(sorted(selected))) & set(config["exclude"])
    if split:
        raise UsageError(
            f"exclude: {sorted(split)[0]} is judged together with the other GeSSL reproduction "
            "claims (Holm over their primary tests): exclude all of them or none"
        )


def _fmt(v: float | None, spec: str) -> str:
    return "—" if v is None or v != v else format(v, spec)


def _row(r: dict[str, Any]) -> str:
    number = isinstance(r.get("slope"), (int, float))  # a record keeps nan as the text "nan"
    slope = f"{r['slope']:.2f}" if number else "—"
    if number and r.get("expected_slope") is not None:
        bound = r.get("details", {}).get("slope_is_bound")
        slope += f" ({'≤' if bound else 'exp'} {r['expected_slope']:g})"
    return (
        f"{r['claim_id']:30s} {r['kind']:12s} {r['verdict'].upper():14s} "
        f"{r['seconds']:6.2f} {slope:>15s} {_fmt(r.get('se'), '8.1e'):>8s}  {r['summary']}"
    )


def _counts(records: list[dict[str, Any]], verdicts: tuple[str, ...]) -> str:
    parts = [f"{sum(r['verdict'] == v for r in records)} {v}" for v in verdicts]
    errors = sum(r["verdict"] == "error" for r in records)
    return ", ".join(parts) + (f", {errors} raised an error" if errors else "")


def verdict_table(records: list[dict[str, Any]]) -> str:
    """The printed table: theorem claims (claim, kind, verdict, seconds, slope, SE, measured
    vs bound), then reproduction claims with each paired test on its own line."""
    head = (
        f"{'claim':30s} {'kind':12s} {'verdict':14s} {'sec':>6s} {'slope':>15s} {'SE':>8s}  "
        "measured vs bound"
    )
    theorems = [r for r in records if r["kind"] != "reproduction"]
    repro = [r for r in records if r["kind"] == "reproduction"]
    lines = [head, "-" * len(head)]
    lines += [_row(r) for r in theorems]
    lines.append("-" * len(head))
    held = sum(r["verdict"] == "holds" for r in theorems)
    lines.append(
        f"{len(theorems)} claims: {held} hold, " + _counts(theorems, ("violated", "inconclusive"))
    )
    for r in theorems:
        if r["verdict"] != "holds":
            lines.append(f"  {r['claim_id']} {r['verdict']}: {r['reason']}")
    if repro:
        holm = next((r["details"].get("holm", {}) for r in repro if "details" in r), {})
        family = holm.get("primary_family", [])
        lines += [
            "",
            "Reproduction claims (paired seeds; 95% t-intervals; * primary tests, Holm-corrected "
            f"over the {holm.get('primary_tests', '?')} primary tests of "
            f"{', '.join(family) or 'the claim'}; the others Holm-corrected within each claim; "
            "rules fixed in advance: docs/reproduction.md; they change the exit status only with "
            "strict=True)",
            "-" * len(head),
        ]
        for r in repro:
            lines.append(_row(r))
            tests, primary = tests_of(r)
            for t, p in zip(tests, primary):
                lines.append(f"    {'*' if p else ' '} {t.describe()}")
            if r["verdict"] == "error":
                lines.append(f"    {r['reason']}")
        lines.append("-" * len(head))
        lines.append(
            f"{len(repro)} reproduction claims: "
            + _counts(repro, REPRO_ORDER)
            + "   (* = primary test: the paper's direction σ = KL(π_model ‖ π*), each model at "
            "its calibrated scale and tuned (K, α))"
        )
    lines.append(_final_line(theorems))
    return "\n".join(lines)


def _final_line(theorems: list[dict[str, Any]]) -> str:
    """The last line: theorem claims held, and by name those violated, inconclusive or raised
    (an inconclusive claim leaves the exit status 0 but is never passed over in silence)."""
    held = sum(r["verdict"] == "holds" for r in theorems)
    text = f"summary: {held}/{len(theorems)} theorem claims hold"
    for verdict, label in (
        ("violated", "violated"),
        ("error", "raised"),
        ("inconclusive", "inconclusive (no verdict; exit status unaffected)"),
    ):
        ids = [r["claim_id"] for r in theorems if r["verdict"] == verdict]
        if ids:
            text += f"; {label}: {', '.join(ids)}"
    return text


def pending(rec: dict[str, Any]) -> bool:
    """Whether a reproduction record's verdict is still provisional: judged within its claim,
    before the Holm correction across the run's reproduction claims
    (:func:`theory.claims.reproduction.correct_across`) makes it final."""
    holm = rec.get("details", {}).get("holm", {}) if rec.get("kind") == "reproduction" else {}
    return bool(holm.get("provisional")) and rec.get("verdict") != "error"


def as_written(rec: dict[str, Any]) -> dict[str, Any]:
    """A record as ``claims.json`` holds it: a provisional verdict is not written as a verdict
    (``"verdict": "provisional"``; the within-claim one under ``provisional_verdict``)."""
    if not pending(rec):
        return rec
    return {**rec, "verdict": "provisional", "provisional_verdict": rec["verdict"]}


def _log_record(rec: dict[str, Any], step: int, _run: Any) -> None:
    """The claim's metrics: its verdict code (once final), seconds, slope and every series
    point."""
    if not pending(rec):
        _run.log_scalar("verdict", VERDICT_CODE[rec["verdict"]], step)
    if rec["verdict"] == "error":
        return
    _run.log_scalar(metric_name("claims", rec["claim_id"], "seconds"), rec["seconds"], step)
    if rec.get("slope") is not None:
        _run.log_scalar(metric_name("claims", rec["claim_id"], "slope"), rec["slope"], step)
    for kind, group in (("measured", rec["measured"]), ("bound", rec["bounds"])):
        for series in group:
            name = metric_name("claims", rec["claim_id"], kind, series["label"])
            for i, y in enumerate(series["y"]):
                if isinstance(y, (int, float)):
                    _run.log_scalar(name, y, i)


def _write_claims(path: str, profile: str, seed: int, complete: bool, records: list) -> None:
    """``claims.json``, written atomically (a crash leaves the previous version whole)."""
    ordered = sorted(records, key=lambda r: r.get("_order", 0))
    write_json_atomic(
        path,
        {
            "profile": profile,
            "seed": seed,
            "complete": complete,
            "claims": [{k: v for k, v in as_written(r).items() if k != "_order"} for r in ordered],
        },
    )


@ex.main
def main(
    profile: str,
    claims: list[str],
    exclude: list[str],
    seed: int,
    figures: bool,
    jobs: int,
    scheduler: str | None,
    cluster: str | None,
    cluster_options: dict[str, Any] | None,
    strict: bool,
    device: str,
    power: bool,
    _run: Any,
) -> dict[str, Any]:
    selected = [get_claim(c) for c in claims] if claims else all_claims()
    skip = {get_claim(c).id for c in exclude}  # validates the ids
    selected = [c for c in selected if c.id not in skip]
    if power:
        return _power(
            selected, profile, seed, engine(jobs, scheduler, cluster, cluster_options), _run
        )
    # a reproduction claim of the fixed Holm family is judged with the family's primary tests:
    # the whole family runs (the same verdict alone as in the catalogue)
    companions = family_missing([c.id for c in selected])
    if companions:
        print(
            "the GeSSL reproduction claims are judged together (Holm over their primary tests): "
            f"also running {', '.join(companions)}",
            file=sys.stderr,
        )
        selected += [get_claim(c) for c in companions]
    order = {c.id: i for i, c in enumerate(selected)}
    workers = engine(jobs, scheduler, cluster, cluster_options)
    records: list[dict[str, Any]] = []
    start = time.perf_counter()
    bar = progress(total=len(selected), desc="claims", unit="claim")  # on a terminal only

    live = record_dir(_run)  # claims.json in the record folder after every claim (SIGKILL-safe)

    # the reproduction claims' verdicts are final once every one of them is in (Holm over the
    # fixed family): then they are corrected and their figures drawn here, in this otherwise
    # idle process, while the workers go on with the other claims
    waiting = {c.id for c in selected if c.kind == "reproduction"}
    figure_dir: list[str] = []  # the run's temporary folder, once it exists

    def reproduction_done() -> None:
        tests = correct_across(records)  # Holm over the fixed family, then the verdicts
        final = []
        for r in records:
            if r["kind"] == "reproduction" and r["verdict"] != "error":
                _run.log_scalar("verdict", VERDICT_CODE[r["verdict"]], order[r["claim_id"]])
                final.append(f"{r['claim_id']}: {r['verdict']}")
                if figure_dir:
                    path = save_figure(r, figure_dir[0])
                    _run.add_artifact(path, f"{r['claim_id']}.png")
        if final:
            tqdm.write(
                f"reproduction verdicts (Holm over {tests} primary tests): " + ", ".join(final),
                file=sys.stderr,
            )

    def on_record(rec: dict[str, Any], figure: str | None) -> None:
        records.append(rec)
        set_progress(f"claim {len(records)}/{len(selected)} ({rec['claim_id']} done)")
        _log_record(rec, order[rec["claim_id"]], _run)  # a provisional verdict is not logged
        done = f"{rec['verdict']} ({rec['seconds']:.2f}s)"
        if pending(rec):  # its verdict is known only after the correction across the run
            done = f"done ({rec['seconds']:.2f}s; verdict after the Holm correction)"
        if rec["verdict"] == "error":
            done = f"ERROR {rec['reason']}"
        bar.update(1)
        tqdm.write(f"[{len(records)}/{len(selected)}] {rec['claim_id']}: {done}", file=sys.stderr)
        if rec["claim_id"] in waiting:
            waiting.discard(rec["claim_id"])
            if not waiting:
                reproduction_done()
        if live is not None:
            written = [{**r, "_order": order[r["claim_id"]]} for r in records]
            _write_claims(os.path.join(live, "claims.json"), profile, seed, False, written)
        if figure is not None:
            _run.add_artifact(figure, f"{rec['claim_id']}.png")

    with tempfile.TemporaryDirectory() as tmp, bar:
        complete = False
        if figures:
            figure_dir.append(tmp)
        try:
            run_claims(
                selected, profile, seed, workers, tmp if figures else None, on_record, device
            )
            records.sort(key=lambda r: order[r["claim_id"]])
            complete = len(records) == len(selected)
        finally:  # also when interrupted: the verdicts reached so far are kept in the record
            records.sort(key=lambda r: order[r["claim_id"]])
            path = os.path.join(tmp, "claims.json")
            _write_claims(path, profile, seed, complete, records)
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
                    r.get("slope") if isinstance(r.get("slope"), int | float) else None,
                    r["summary"],
                ]
                for r in records
            ],
        }
    }
    _run.info["verdicts"] = {r["claim_id"]: r["verdict"] for r in records}
    theorems = [r for r in records if r["kind"] in THEOREM_KINDS]
    repro = [r for r in records if r["kind"] == "reproduction"]
    return {
        "n_claims": len(records),
        "holds": sum(r["verdict"] == "holds" for r in theorems),
        "violated": [r["claim_id"] for r in theorems if r["verdict"] == "violated"],
        "inconclusive": [r["claim_id"] for r in theorems if r["verdict"] == "inconclusive"],
        "errors": [r["claim_id"] for r in records if r["verdict"] == "error"],
        "reproduction": {r["claim_id"]: r["verdict"] for r in repro},
        "not_reproduced": [r["claim_id"] for r in repro if r["verdict"] == "not reproduced"],
        "strict": strict,
        "jobs": workers if isinstance(workers, int) else workers.describe(),
        "seconds": round(time.perf_counter() - start, 3),
    }


def power_table(records: list[dict[str, Any]]) -> str:
    """The power run's table: per claim the statement itself (which must hold) and each
    alternative (which must be rejected), then the counts."""
    lines = [f"{'claim':<32} {'alternative':<30} {'verdict':<13} {'rejected':<9} seconds"]
    for r in records:
        if r["alternative"] is None:
            mark = "THE CLAIM ITSELF DOES NOT HOLD" if _not_holding(r) else "—"
            name = "(the claim as stated)"
        else:
            name = r["alternative"]
            mark = "yes" if r["rejected"] else ("NO" if r["expected"] else "no (not declared)")
        lines.append(
            f"{r['claim_id']:<32} {name:<30} {r['verdict']:<13} {mark:<9} {r['seconds']:.2f}"
        )
    due, missed, theorems, false = _power_outcome(records)
    lines.append(
        f"{len(due) - len(missed)}/{len(due)} alternatives declared rejectable on this "
        "profile were rejected" + (f"; NOT rejected: {', '.join(missed)}" if missed else "")
    )
    lines.append(
        f"{len(theorems) - len(false)}/{len(theorems)} theorem claims hold as stated"
        + (f"; not holding: {', '.join(false)}" if false else "")
    )
    return "\n".join(lines)


def _not_holding(r: dict[str, Any]) -> bool:
    """A theorem claim, as stated, that its check does not call *holds* (a reproduction
    claim's own verdict is a finding, not a failure of its check)."""
    return r["kind"] in THEOREM_KINDS and r["verdict"] != "holds"


def _power_outcome(
    records: list[dict[str, Any]],
) -> tuple[list[dict[str, Any]], list[str], list[dict[str, Any]], list[str]]:
    """The alternatives declared rejectable on the profile, those of them not rejected
    (``claim/alternative``), the theorem claims as stated, and those of them not holding."""
    due = [r for r in records if r["alternative"] is not None and r["expected"]]
    missed = [f"{r['claim_id']}/{r['alternative']}" for r in due if not r["rejected"]]
    theorems = [r for r in records if r["alternative"] is None and r["kind"] in THEOREM_KINDS]
    return due, missed, theorems, [r["claim_id"] for r in theorems if _not_holding(r)]


def _power(
    selected: list, profile: str, seed: int, workers: int | DaskEngine, _run: Any
) -> dict[str, Any]:
    """The power run: every selected claim that declares alternatives, as stated and against
    each alternative, on ``profile``."""
    units = power_units(selected)
    order = {u: i for i, u in enumerate(units)}
    records: list[dict[str, Any]] = []
    start = time.perf_counter()
    live = record_dir(_run)
    bar = progress(total=len(units), desc="power", unit="check")

    def key(r: dict[str, Any]) -> int:
        return order[(r["claim_id"], r["alternative"])]

    def write(path: str, complete: bool) -> None:
        ordered = sorted(records, key=key)
        payload = {
            "profile": profile,
            "seed": seed,
            "complete": complete,
            "claims": [r for r in ordered if r["alternative"] is None],
            "power": [r for r in ordered if r["alternative"] is not None],
        }
        write_json_atomic(path, payload)

    def on_record(rec: dict[str, Any]) -> None:
        records.append(rec)
        if live is not None:
            write(os.path.join(live, "power.json"), False)
        set_progress(f"power check {len(records)}/{len(units)}")
        bar.update(1)
        if rec["alternative"] is None:
            what, mark = "as stated", rec["verdict"]
        else:
            what = rec["alternative"]
            mark = "rejected" if rec["rejected"] else f"NOT rejected ({rec['verdict']})"
        tqdm.write(
            f"[{len(records)}/{len(units)}] {rec['claim_id']} / {what}: {mark}", file=sys.stderr
        )

    with tempfile.TemporaryDirectory() as tmp, bar:
        complete = False
        try:
            run_power(selected, profile, seed, workers, on_record)
            complete = len(records) == len(units)
        finally:
            path = os.path.join(tmp, "power.json")
            write(path, complete)
            _run.add_artifact(path, "power.json")
    records.sort(key=key)
    print(power_table(records))
    _run.info["wandb_tables"] = {
        "power": {
            "columns": ["claim", "alternative", "verdict", "rejected", "seconds"],
            "data": [
                [
                    r["claim_id"],
                    r["alternative"] or "(as stated)",
                    r["verdict"],
                    r.get("rejected"),
                    r["seconds"],
                ]
                for r in records
            ],
        }
    }
    alts = [r for r in records if r["alternative"] is not None]
    _, missed, _, false = _power_outcome(records)
    return {
        "power": True,
        "alternatives": len(alts),
        "rejected": sum(r["rejected"] for r in alts),
        "not_rejected": missed,
        "not_holding": false,
        "without_alternatives": [c.id for c in selected if not c.alternatives],
        "jobs": workers if isinstance(workers, int) else workers.describe(),
        "seconds": round(time.perf_counter() - start, 3),
    }


def exit_code(run: Any) -> int:
    """1 if a theorem claim is violated or a check raised (with ``strict``, also if a
    reproduction claim is not reproduced), else 0; for the power run, 1 if an alternative
    declared rejectable on the profile was not rejected or a claim as stated did not hold."""
    result = getattr(run, "result", None) or {}
    if result.get("power"):
        return 1 if result.get("not_rejected") or result.get("not_holding") else 0
    if result.get("violated") or result.get("errors"):
        return 1
    return 1 if result.get("strict") and result.get("not_reproduced") else 0


if __name__ == "__main__":
    if sys.argv[1:] == ["--list"]:  # the catalogue; no run, no record
        from experiments.docs import catalogue_lines

        print("\n".join(catalogue_lines()))
        sys.exit(0)
    if "--power" in sys.argv[1:]:  # the power run: the same as `with power=True`
        args = [a for a in sys.argv[1:] if a != "--power"]
        if "with" in args:
            args.insert(args.index("with") + 1, "power=True")
        else:
            args = ["with", "power=True", *args]
        sys.argv = [sys.argv[0], *args]
    main_entry(ex, exit_code)
