"""``experiments.bounds``: records, figures, verdict table, exit status, offline W&B."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from experiments.bounds import ex, exit_code, verdict_table
from experiments.tracking import run_experiment
from tests.experiments.fake_wandb import make_fake_wandb

REPO = Path(__file__).resolve().parents[2]
FAST = ["collapse_values", "spectral_probe_bound", "sigma_zero_at_bayes"]


def test_bounds_run_leaves_a_complete_record(tmp_path, monkeypatch, capsys):
    fake = make_fake_wandb()
    monkeypatch.setitem(sys.modules, "wandb", fake)
    run = run_experiment(ex, {"profile": "tiny", "claims": FAST}, runs_dir=str(tmp_path))
    assert run.status == "COMPLETED" and exit_code(run) == 0
    assert run.result["n_claims"] == 3 and run.result["holds"] == 3
    d = tmp_path / str(run._id)
    for f in ("config.json", "run.json", "metrics.json", "info.json", "cout.txt", "claims.json"):
        assert (d / f).is_file(), f
    assert json.loads((d / "run.json").read_text())["status"] == "COMPLETED"
    assert json.loads((d / "config.json").read_text())["profile"] == "tiny"
    saved = json.loads((d / "claims.json").read_text())
    records = saved["claims"]
    assert saved["complete"] is True and [r["claim_id"] for r in records] == FAST
    for c in FAST:
        assert (d / f"{c}.png").stat().st_size > 5000
    out = capsys.readouterr().out
    assert "3 claims: 3 hold, 0 violated" in out and "spectral_probe_bound" in out
    wb = fake.runs[0]
    images = [k for r in wb.logged for k in r if k.startswith("figures/")]
    assert sorted(images) == sorted(f"figures/{c}" for c in FAST)
    assert any("verdicts" in r for r in wb.logged) and wb.finished == 0


def test_violated_claim_makes_exit_code_1(tmp_path, monkeypatch, false_claim):
    monkeypatch.setitem(sys.modules, "wandb", make_fake_wandb())
    run = run_experiment(
        ex,
        {"profile": "tiny", "claims": ["collapse_values", "false_mi_bound"]},
        runs_dir=str(tmp_path),
    )
    assert run.result["violated"] == ["false_mi_bound"]
    assert exit_code(run) == 1


def test_a_check_that_raises_is_recorded_and_the_other_claims_still_run(
    tmp_path, monkeypatch, capsys
):
    from theory.claims import Claim, register, unregister

    def broken(budget: str, seed: int):
        raise ZeroDivisionError("a bug in a new claim")

    register(Claim("broken_claim", "raises", "test", "[R]", "rate", broken))
    try:
        monkeypatch.setitem(sys.modules, "wandb", make_fake_wandb())
        run = run_experiment(
            ex,
            {"profile": "tiny", "claims": ["broken_claim", "collapse_values"]},
            runs_dir=str(tmp_path),
        )
    finally:
        unregister("broken_claim")
    assert run.status == "COMPLETED" and exit_code(run) == 1
    assert run.result["errors"] == ["broken_claim"] and run.result["holds"] == 1
    records = json.loads((tmp_path / str(run._id) / "claims.json").read_text())["claims"]
    err = records[0]
    assert err["verdict"] == "error" and "ZeroDivisionError: a bug" in err["reason"]
    assert "raise ZeroDivisionError" in err["details"]["traceback"]
    assert records[1]["verdict"] == "holds"
    out = capsys.readouterr().out
    assert "2 claims: 1 hold, 0 violated, 0 inconclusive, 1 raised an error" in out
    assert "broken_claim error: the check raised ZeroDivisionError" in out
    from paper_figures.__main__ import main as figures

    figs = tmp_path / "figs"
    for name in ("claims", "claims_summary"):  # the figures take the error record too
        assert figures(["--runs", str(tmp_path), "--out", str(figs), "--only", name]) == 0
    assert (figs / "claims" / "broken_claim.png").is_file()


def test_an_interrupted_run_keeps_the_verdicts_it_reached(tmp_path, monkeypatch):
    from theory.claims import Claim, register, unregister

    def interrupted(budget: str, seed: int):
        raise KeyboardInterrupt

    register(Claim("ctrl_c", "the user presses Ctrl-C here", "test", "[R]", "rate", interrupted))
    try:
        monkeypatch.setitem(sys.modules, "wandb", make_fake_wandb())
        with pytest.raises(KeyboardInterrupt):
            run_experiment(
                ex,
                {"profile": "tiny", "claims": ["collapse_values", "ctrl_c", "spectral_identity"]},
                runs_dir=str(tmp_path),
            )
    finally:
        unregister("ctrl_c")
    (d,) = [p for p in tmp_path.iterdir() if (p / "run.json").is_file()]
    assert json.loads((d / "run.json").read_text())["status"] == "INTERRUPTED"
    record = json.loads((d / "claims.json").read_text())
    assert record["complete"] is False
    assert [r["claim_id"] for r in record["claims"]] == ["collapse_values"]
    assert record["claims"][0]["verdict"] == "holds" and (d / "collapse_values.png").is_file()


def test_unknown_claim_fails_the_run(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", make_fake_wandb())
    with pytest.raises(ValueError, match="unknown claim 'no_such_claim'"):
        run_experiment(ex, {"profile": "tiny", "claims": ["no_such_claim"]}, runs_dir=str(tmp_path))


def test_verdict_table_lists_reasons_of_non_holding_claims():
    rec = {
        "claim_id": "x",
        "kind": "rate",
        "verdict": "inconclusive",
        "seconds": 1.0,
        "slope": -0.7,
        "expected_slope": -1.0,
        "se": None,
        "summary": "s",
        "reason": "why",
    }
    table = verdict_table([rec])
    assert "INCONCLUSIVE" in table and "x inconclusive: why" in table and "-0.70 (exp -1)" in table


def _script(body: str) -> list[str]:
    return [sys.executable, "-c", body]


def test_command_line_exits_nonzero_on_a_violated_claim(tmp_path):
    body = (
        "import sys\n"
        "from tests.theory.false_claims import false_mi_claim\n"
        "from theory.claims import Claim, register\n"
        "register(Claim('false_mi_bound', 'false', 'test', '[R]', 'exact', false_mi_claim))\n"
        "from experiments.bounds import ex, exit_code\n"
        "from experiments.tracking import main_entry\n"
        "sys.argv = ['bounds', 'with', 'profile=tiny', \"claims=['false_mi_bound']\"]\n"
        "main_entry(ex, exit_code)\n"
    )
    env = {
        **os.environ,
        "GESSL_RUNS_DIR": str(tmp_path),
        "WANDB_MODE": "disabled",
        "PYTHONPATH": str(REPO),
    }
    proc = subprocess.run(
        _script(body), capture_output=True, text=True, cwd=REPO, env=env, timeout=300
    )
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "false_mi_bound" in proc.stdout and "VIOLATED" in proc.stdout


def test_module_cli_print_config_and_offline_run_without_network(tmp_path):
    env = {**os.environ, "GESSL_RUNS_DIR": str(tmp_path), "WANDB_MODE": "offline"}
    proc = subprocess.run(
        [sys.executable, "-m", "experiments.bounds", "print_config"],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 0 and "profile = 'quick'" in proc.stdout
    assert not (tmp_path / "1").exists()  # print_config makes no run record
    cmd = [
        sys.executable,
        "-m",
        "experiments.bounds",
        "with",
        "profile=tiny",
        "claims=['collapse_values']",
    ]
    strace = shutil.which("strace")
    trace = tmp_path / "connect.txt"
    if strace:  # record every connect() of the process tree, W&B's own helper included
        cmd = [strace, "-f", "-e", "trace=connect", "-o", str(trace), *cmd]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "1 claims: 1 hold" in proc.stdout
    offline = list((tmp_path / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(offline) == 1 and offline[0].stat().st_size > 0
    assert json.loads((tmp_path / "1" / "run.json").read_text())["status"] == "COMPLETED"
    if strace:
        calls = trace.read_text()
        assert "AF_INET" not in calls, calls  # only local unix sockets, no network at all
