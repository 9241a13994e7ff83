"""``experiments.bounds``: records, figures, verdict table, exit status, offline W&B."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from experiments.bounds import ex, exit_code, verdict_table
from experiments.tracking import run_experiment
from tests.conftest import needs_signal
from tests.experiments.fake_wandb import make_fake_wandb
from theory.claims.reproduction import PRIMARY_FAMILY

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
                {
                    "profile": "tiny",
                    "claims": ["collapse_values", "ctrl_c", "spectral_identity"],
                    "jobs": 1,  # in order: the first claim is reached, the third is not
                },
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


def test_any_number_of_workers_gives_the_same_records(tmp_path, monkeypatch):
    """Claims run with one torch thread and reseeded generators, in the parent or in a worker:
    the numbers do not depend on ``jobs`` (random, torch- and numpy-based claims included)."""
    monkeypatch.setitem(sys.modules, "wandb", make_fake_wandb())
    ids = ["wang_isola_limit", "sigma_excess_identity", "arora_class_collision", "collapse_values"]
    records = {}
    for jobs in (1, 2, 3):
        run = run_experiment(
            ex,
            {"profile": "tiny", "claims": ids, "jobs": jobs, "figures": False},
            runs_dir=str(tmp_path / str(jobs)),
        )
        assert run.result["jobs"] == jobs
        saved = json.loads((tmp_path / str(jobs) / str(run._id) / "claims.json").read_text())
        records[jobs] = [
            {k: r[k] for k in ("claim_id", "verdict", "measured", "bounds", "summary")}
            for r in saved["claims"]
        ]
    assert [r["claim_id"] for r in records[1]] == ids  # registry order, whatever finished first
    assert records[1] == records[2] == records[3]


def test_the_whole_catalogue_gives_the_same_records_with_one_or_two_workers(tmp_path, monkeypatch):
    """Every registered claim on the tiny budget: the same verdicts and numbers in one process
    and in two workers (each claim seeds its own generators from the run's seed)."""
    from theory.claims import all_claims

    monkeypatch.setitem(sys.modules, "wandb", make_fake_wandb())
    keys = ("claim_id", "kind", "verdict", "measured", "bounds", "summary", "slope", "slope_se")
    records, full = {}, {}
    for jobs in (1, 2):
        run = run_experiment(
            ex,
            {"profile": "tiny", "jobs": jobs, "figures": False},
            runs_dir=str(tmp_path / str(jobs)),
        )
        saved = json.loads((tmp_path / str(jobs) / str(run._id) / "claims.json").read_text())
        assert saved["complete"] is True
        records[jobs] = [{k: r.get(k) for k in keys} for r in saved["claims"]]
        full[jobs] = {r["claim_id"]: r for r in saved["claims"]}
    assert [r["claim_id"] for r in records[1]] == [c.id for c in all_claims()]
    assert len(records[1]) >= 25
    for one, two in zip(records[1], records[2]):
        assert one == two, one["claim_id"]
    # a reproduction claim of the fixed Holm family selected alone: the whole family runs, and
    # its verdict and corrected p-values are those of the catalogue
    run = run_experiment(
        ex,
        {"profile": "tiny", "claims": ["gessl_sigma_subspace"], "figures": False},
        runs_dir=str(tmp_path / "alone"),
    )
    saved = json.loads((tmp_path / "alone" / str(run._id) / "claims.json").read_text())
    alone = {r["claim_id"]: r for r in saved["claims"]}
    assert set(alone) == set(PRIMARY_FAMILY)
    for cid in PRIMARY_FAMILY:
        assert alone[cid]["verdict"] == full[1][cid]["verdict"], cid
        got = [(t["key"], t["p_holm"]) for t in alone[cid]["details"]["tests"]]
        want = [(t["key"], t["p_holm"]) for t in full[1][cid]["details"]["tests"]]
        assert got == want, cid


def test_reproduction_claims_have_their_own_section_and_count_only_when_strict(
    tmp_path, monkeypatch, capsys
):
    from tests.theory.false_claims import contradicted_reproduction
    from theory.claims import Claim, register, unregister

    register(
        Claim(
            "contradicted_repro",
            "GeSSL lowers σ",
            "test",
            "RECON",
            "reproduction",
            contradicted_reproduction,
        )
    )
    try:
        monkeypatch.setitem(sys.modules, "wandb", make_fake_wandb())
        config = {"profile": "tiny", "claims": ["collapse_values", "contradicted_repro"]}
        run = run_experiment(ex, config, runs_dir=str(tmp_path))
        strict = run_experiment(ex, {**config, "strict": True}, runs_dir=str(tmp_path))
    finally:
        unregister("contradicted_repro")
    assert run.result["reproduction"] == {"contradicted_repro": "not reproduced"}
    assert exit_code(run) == 0  # the theorem holds; a reproduction verdict is a finding
    assert exit_code(strict) == 1 and strict.result["not_reproduced"] == ["contradicted_repro"]
    out = capsys.readouterr().out
    assert "1 claims: 1 hold, 0 violated, 0 inconclusive" in out
    assert (
        "Reproduction claims (paired seeds; 95% t-intervals; * primary tests, Holm-corrected over "
        "the 1 primary tests of contradicted_repro;" in out
    )
    assert "NOT REPRODUCED" in out and "* σ: GeSSL − plain: +0.4763, 95% CI" in out
    assert (
        "1 reproduction claims: 0 reproduced, 1 not reproduced, 0 mixed, "
        "0 no practical difference, 0 inconclusive" in out
    )
    d = tmp_path / str(run._id)
    rec = json.loads((d / "claims.json").read_text())["claims"][1]
    assert (
        rec["details"]["tests"][0]["direction"] == "higher"
        and (d / "contradicted_repro.png").is_file()
    )


def test_unknown_claim_is_refused_before_a_record_exists(tmp_path, monkeypatch):
    from experiments.validation import UsageError

    monkeypatch.setitem(sys.modules, "wandb", make_fake_wandb())
    with pytest.raises(UsageError, match="claims: unknown value 'no_such_claim' \\(allowed: "):
        run_experiment(ex, {"profile": "tiny", "claims": ["no_such_claim"]}, runs_dir=str(tmp_path))
    assert not any(p.name.isdigit() for p in tmp_path.iterdir())


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


def test_command_line_strict_makes_a_failed_reproduction_exit_1(tmp_path):
    body = (
        "import sys\n"
        "from tests.theory.false_claims import contradicted_reproduction\n"
        "from theory.claims import Claim, register\n"
        "register(Claim('contradicted_repro', 'x', 'test', 'RECON', 'reproduction',\n"
        "               contradicted_reproduction))\n"
        "from experiments.bounds import ex, exit_code\n"
        "from experiments.tracking import main_entry\n"
        "sys.argv = ['bounds', 'with', 'profile=tiny', 'figures=False',\n"
        "            \"claims=['collapse_values', 'contradicted_repro']\", *sys.argv[1:]]\n"
        "main_entry(ex, exit_code)\n"
    )
    env = {**os.environ, "GESSL_RUNS_DIR": str(tmp_path), "PYTHONPATH": str(REPO)}
    for extra, code in (([], 0), (["strict=True"], 1)):
        proc = subprocess.run(
            [*_script(body), *extra], capture_output=True, text=True, cwd=REPO, env=env, timeout=300
        )
        assert proc.returncode == code, proc.stderr[-2000:]
        assert "NOT REPRODUCED" in proc.stdout and "1 claims: 1 hold" in proc.stdout


def _processes_with(marker: str) -> list[int]:
    pids = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if marker in (d / "cmdline").read_bytes().decode(errors="ignore"):
                    pids.append(int(d.name))
            except OSError:
                continue
    return pids


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="needs /proc to find worker processes")
@needs_signal("SIGINT")
def test_ctrl_c_during_a_parallel_run_keeps_finished_verdicts_and_stops_the_workers(tmp_path):
    marker = f"gessl-ctrl-c-{os.getpid()}"
    body = (
        f"# {marker}\n"
        "import sys, time\n"
        "from theory.claims import Claim, register\n"
        "def slow(budget, seed):\n"
        "    time.sleep(120)\n"
        "register(Claim('slow_claim', 'sleeps', 'test', '[R]', 'rate', slow, cost=100.0))\n"
        "from experiments.bounds import ex, exit_code\n"
        "from experiments.tracking import main_entry\n"
        "sys.argv = ['bounds', 'with', 'profile=tiny', 'jobs=2', 'figures=False',\n"
        "            \"claims=['slow_claim', 'collapse_values', 'spectral_identity']\"]\n"
        "main_entry(ex, exit_code)\n"
    )
    env = {**os.environ, "GESSL_RUNS_DIR": str(tmp_path), "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        _script(body), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO, env=env
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # both fast claims are in when the parent reports them
        info = tmp_path / "1" / "metrics.json"
        if (
            info.is_file()
            and "spectral_identity" in info.read_text()
            and "collapse" in info.read_text()
        ):
            break
        time.sleep(0.2)
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=60)
    assert proc.returncode != 0
    d = tmp_path / "1"
    assert json.loads((d / "run.json").read_text())["status"] == "INTERRUPTED"
    saved = json.loads((d / "claims.json").read_text())
    assert saved["complete"] is False
    assert [r["claim_id"] for r in saved["claims"]] == ["collapse_values", "spectral_identity"]
    time.sleep(1.0)
    assert _processes_with(marker) == []  # no worker left sleeping
