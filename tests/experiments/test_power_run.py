"""The power run (``python -m experiments.bounds --power``) and the catalogue's "rejects" column
(``python -m experiments.docs --power``), run as a user runs them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from experiments.bounds import power_table, verdict_table

REPO = Path(__file__).resolve().parents[2]


def _env(tmp_path: Path) -> dict[str, str]:
    return {
        **os.environ,
        "GESSL_RUNS_DIR": str(tmp_path),
        "WANDB_MODE": "disabled",
        "PYTHONPATH": str(REPO),
    }


def _run(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=_env(tmp_path),
        timeout=600,
    )


def test_power_run_rejects_the_declared_alternatives_and_leaves_a_record(tmp_path):
    r = _run(
        tmp_path,
        "-m",
        "experiments.bounds",
        "--power",
        "with",
        "profile=tiny",
        "claims=['sigma_accuracy_bound']",
    )
    assert r.returncode == 0, r.stderr[-2000:]
    assert "2/2 alternatives declared rejectable on this profile were rejected" in r.stdout
    assert "1/1 theorem claims hold as stated" in r.stdout
    record = json.loads((tmp_path / "1" / "power.json").read_text())
    assert record["complete"] and record["profile"] == "tiny"
    (itself,) = record["claims"]
    assert itself["verdict"] == "holds" and 0 < itself["resolution"]["relative"] < 0.5
    rows = {x["alternative"]: x for x in record["power"]}
    assert set(rows) == {"bound_half", "no_square_root"}
    assert all(x["verdict"] == "violated" and x["rejected"] for x in rows.values())
    assert json.loads((tmp_path / "1" / "run.json").read_text())["status"] == "COMPLETED"
    # the record goes into the catalogue of a checkout (here a copy's root)
    root = tmp_path / "root"
    d = _run(
        tmp_path,
        "-m",
        "experiments.docs",
        "--root",
        str(root),
        "--power",
        str(tmp_path / "1" / "power.json"),
    )
    assert d.returncode == 0, d.stderr
    kept = json.loads((root / "docs" / "power.json").read_text())
    assert kept["profile"] == "tiny" and len(kept["power"]) == 2 and len(kept["claims"]) == 1


def test_an_alternative_the_check_does_not_reject_makes_the_power_run_exit_1(tmp_path):
    body = (
        "import sys\n"
        "from tests.theory.false_claims import blunt_claim\n"
        "from theory.claims import Alternative, Claim, register\n"
        "register(Claim('blunt', 's', 'test', '[R]', 'exact', blunt_claim, alternatives=(\n"
        "    Alternative('doubled', 'the constant doubled',\n"
        "                {'tests.theory.false_claims.BLUNT_CONSTANT': 2.0}),)))\n"
        "from experiments.bounds import ex, exit_code\n"
        "from experiments.tracking import main_entry\n"
        "sys.argv = ['bounds', 'with', 'profile=tiny', 'power=True', \"claims=['blunt']\"]\n"
        "main_entry(ex, exit_code)\n"
    )
    r = _run(tmp_path, "-c", body)
    assert r.returncode == 1, r.stderr[-2000:]
    assert (
        "NOT rejected: blunt/doubled" in r.stdout
        and "1/1 theorem claims hold as stated" in r.stdout
    )
    row = json.loads((tmp_path / "1" / "power.json").read_text())["power"][0]
    assert row["verdict"] == "holds" and not row["rejected"] and row["expected"]


def test_a_power_run_without_alternatives_is_a_usage_error(tmp_path):
    body = (
        "import sys\n"
        "from tests.theory.false_claims import blunt_claim\n"
        "from theory.claims import Claim, register\n"
        "register(Claim('bare', 's', 'test', '[R]', 'exact', blunt_claim))\n"
        "from experiments.bounds import ex, exit_code\n"
        "from experiments.tracking import main_entry\n"
        "sys.argv = ['bounds', 'with', 'profile=tiny', 'power=True', \"claims=['bare']\"]\n"
        "main_entry(ex, exit_code)\n"
    )
    r = _run(tmp_path, "-c", body)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines()[-1] == (
        "error: power: none of the selected claims declares an alternative"
    )
    assert not (tmp_path / "1").exists()


def test_every_registered_claim_declares_alternatives():
    from theory.claims import all_claims

    assert [c.id for c in all_claims() if not c.alternatives] == []


def test_docs_refuses_a_file_that_is_not_a_finished_power_record(tmp_path):
    bad = tmp_path / "x.json"
    bad.write_text(json.dumps({"profile": "quick", "claims": []}))
    r = _run(tmp_path, "-m", "experiments.docs", "--root", str(tmp_path), "--power", str(bad))
    assert r.returncode == 2
    assert r.stderr.strip() == f"error: --power: {bad} is not a power run's record (power.json)"
    bad.write_text(json.dumps({"profile": "quick", "complete": False, "power": [], "claims": []}))
    r = _run(tmp_path, "-m", "experiments.docs", "--root", str(tmp_path), "--power", str(bad))
    assert r.returncode == 2 and "unfinished power run" in r.stderr
    assert not (tmp_path / "docs" / "power.json").exists()


def _theorem(claim_id: str, verdict: str) -> dict:
    return {
        "claim_id": claim_id,
        "kind": "exact",
        "verdict": verdict,
        "seconds": 0.1,
        "summary": "s",
        "reason": "r",
    }


def test_the_last_line_names_every_claim_without_a_holds():
    table = verdict_table(
        [_theorem("a", "holds"), _theorem("b", "inconclusive"), _theorem("c", "violated")]
    )
    assert table.splitlines()[-1] == (
        "summary: 1/3 theorem claims hold; violated: c; "
        "inconclusive (no verdict; exit status unaffected): b"
    )
    assert verdict_table([_theorem("a", "holds")]).splitlines()[-1] == (
        "summary: 1/1 theorem claims hold"
    )


def test_power_table_marks_what_was_not_rejected():
    rows = [
        {
            "claim_id": "a",
            "kind": "exact",
            "alternative": None,
            "verdict": "inconclusive",
            "seconds": 1.0,
        },
        {
            "claim_id": "a",
            "alternative": "x",
            "verdict": "violated",
            "rejected": True,
            "expected": True,
            "seconds": 1.0,
        },
        {
            "claim_id": "a",
            "alternative": "y",
            "verdict": "holds",
            "rejected": False,
            "expected": True,
            "seconds": 2.0,
        },
        {
            "claim_id": "b",
            "alternative": "z",
            "verdict": "holds",
            "rejected": False,
            "expected": False,
            "seconds": 0.5,
        },
    ]
    lines = power_table(rows).splitlines()
    assert "THE CLAIM ITSELF DOES NOT HOLD" in lines[1]
    assert "NO" in lines[3] and "not declared" in lines[4]
    assert lines[-2] == (
        "1/2 alternatives declared rejectable on this profile were rejected; NOT rejected: a/y"
    )
    assert lines[-1] == "0/1 theorem claims hold as stated; not holding: a"
