"""Usage errors, interruptions and crashes, as a user meets them: each through the real command.

Usage errors exit 2 with one line and leave nothing behind (no file record, no W&B run);
Ctrl-C exits 130 with one line and keeps an INTERRUPTED record; after SIGKILL the claims that
finished are in ``claims.json`` and the listing shows the dead record as STALE.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import needs_signal

REPO = Path(__file__).resolve().parents[2]


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    wandb_dir = tmp_path / "wandb-home"
    return {
        **os.environ,
        "GESSL_RUNS_DIR": str(tmp_path / "runs"),
        "WANDB_MODE": "offline",  # offline runs would appear under WANDB_DIR if one started
        "WANDB_DIR": str(wandb_dir),
        "GESSL_PROGRESS": "0",
        **extra,
    }


def _run(tmp_path: Path, *args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", *args],
        cwd=REPO,
        env=_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _nothing_left(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    assert not runs.exists() or not any(p.name.isdigit() for p in runs.iterdir())
    assert not list((tmp_path / "wandb-home").rglob("offline-run-*"))


def _error_lines(proc: subprocess.CompletedProcess) -> list[str]:
    return [ln for ln in proc.stderr.splitlines() if ln.strip()]


@pytest.mark.parametrize(
    ("module", "setting", "message"),
    [
        ("experiments.bounds", "claims=['no_such_claim']", "claims: unknown value 'no_such_claim'"),
        ("experiments.bounds", "profil=full", "unknown configuration key 'profil' (did you mean"),
        ("experiments.bounds", "profile=huge", "profile: unknown value 'huge' (allowed: tiny"),
        ("experiments.bounds", "seed=abc", "seed: expected an integer, got 'abc'"),
        (
            "experiments.bounds",
            "exclude=['gessl_sigma_homogeneous']",
            "exclude: gessl_sigma_homogeneous is judged together with the other GeSSL "
            "reproduction claims (Holm over their primary tests): exclude all of them or none",
        ),
        ("experiments.pretrain", "method=nope", "method: unknown value 'nope' (allowed: "),
        ("experiments.pretrain", "dataset=imagenet", "dataset: unknown value 'imagenet'"),
        ("experiments.pretrain", "encoder=vit", "encoder: unknown value 'vit'"),
        ("experiments.pretrain", "mode=meta", "mode: unknown value 'meta' (allowed: gessl, plain)"),
        ("experiments.pretrain", "method_options={'tau': 1}", "method_options: unknown key 'tau'"),
        ("experiments.pretrain", "gessl.order=third", "gessl: order must be one of"),
        ("experiments.pretrain", "evaluation.nope=1", "evaluation: unknown key 'nope'"),
        # renamed keys and values (one vocabulary): refused with the new name
        (
            "experiments.pretrain",
            "evaluation.report_critic=dot",
            "evaluation.report_critic was renamed: use evaluation.sigma_critic",
        ),
        (
            "experiments.study",
            "evaluation.report_temperature=0.5",
            "evaluation.report_temperature was renamed: use evaluation.sigma_temperature",
        ),
        (
            "experiments.pretrain",
            "gessl.kl_direction=model_target",
            "gessl: kl_direction='model_target' was renamed: use 'sigma'",
        ),
        (
            "experiments.gessl_map",
            "sweep={'kl_direction': ['target_model']}",
            "kl_direction='target_model' was renamed: use 'sigma_excess'",
        ),
        ("experiments.pretrain", "tasks_per_step=0", "tasks_per_step: must be >= 1, got 0"),
        ("experiments.pretrain", "n_samples=1", "n_samples: must be >= 2, got 1"),
        ("experiments.pretrain", "steps=-5", "steps: must be >= 1, got -5"),
        ("experiments.sigma", "eval_every=0", "eval_every: must be >= 1"),
        ("experiments.ablation", "parameter=nope", "parameter: unknown value 'nope'"),
        ("experiments.study", "profile=huge", "profile: unknown value 'huge'"),
        ("experiments.benchmark", "methods=['nope']", "methods: unknown value 'nope'"),
        # values that passed validation and failed later, and misleading messages
        ("experiments.pretrain", "seed=4294967296", "seed: must be <= 4294967295, got 4294967296"),
        ("experiments.bounds", "seed=-1", "seed: must be >= 0, got -1"),
        ("experiments.pretrain", "outer_lr=1e999", "outer_lr: expected a finite number, got inf"),
        ("experiments.pretrain", "gessl.inner_lr=abc", "gessl.inner_lr: expected a number, got"),
        ("experiments.gessl_map", "seed=3", "seed: python -m experiments.gessl_map has no seed"),
        ("experiments.bounds", "precision=fp16", "unknown configuration key 'precision' ("),
        (
            "experiments.bounds",
            "claims=['sigma_acuracy_bound']",
            "claims: unknown value 'sigma_acuracy_bound' (did you mean 'sigma_accuracy_bound'?",
        ),
        ("experiments.pretrain", "method=simclrr", "(did you mean 'simclr'? allowed: "),
        ("experiments.pretrain", "seen_classes=[0, 99]", "seen_classes[1]: must be <= 9, got 99"),
        (
            "experiments.pretrain",
            "method_options={'temperature': -1}",
            "method_options: temperature must be finite and > 0, got -1",
        ),
    ],
)
def test_usage_error_is_one_line_exit_2_and_leaves_nothing(tmp_path, module, setting, message):
    proc = _run(tmp_path, module, "with", setting)
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = _error_lines(proc)
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], lines
    assert "Traceback" not in proc.stderr
    _nothing_left(tmp_path)


def test_bad_command_and_malformed_value_are_usage_errors(tmp_path):
    for args, message in (
        (["experiments.bounds", "nosuchcommand"], "error: unknown command 'nosuchcommand'"),
        (["experiments.bounds", "with", "claims=["], "error: claims: expected a list"),
    ):
        proc = _run(tmp_path, *args)
        assert proc.returncode == 2 and _error_lines(proc)[0].startswith(message), proc.stderr
    _nothing_left(tmp_path)


def test_help_documents_the_exit_codes(tmp_path):
    for module in ("experiments.bounds", "experiments.pretrain", "experiments.gessl_map"):
        proc = _run(tmp_path, module, "--help")
        assert proc.returncode == 0 and "Exit status: 0" in proc.stdout and "130" in proc.stdout
    proc = _run(tmp_path, "paper_figures", "--help")
    assert proc.returncode == 0 and "exit status: 0" in proc.stdout and "130" in proc.stdout


def test_paper_figures_refuses_a_missing_runs_folder(tmp_path):
    proc = _run(tmp_path, "paper_figures", "--runs", "/nonexistent", "--out", str(tmp_path / "f"))
    assert proc.returncode == 2
    assert _error_lines(proc) == [
        "error: --runs /nonexistent: no such folder of run records "
        "(run an experiment first, or pass --run-missing)"
    ]
    assert not (tmp_path / "f").exists()


def test_an_extra_file_observer_on_the_default_folder_is_the_same_record(tmp_path):
    runs = tmp_path / "runs"
    proc = _run(
        tmp_path,
        "experiments.bounds",
        "with",
        "profile=tiny",
        "claims=['collapse_values']",
        "-F",
        str(runs),
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert sorted(p.name for p in runs.iterdir() if p.name.isdigit()) == ["1"]


def test_the_record_names_its_sources_dependencies_and_commit(tmp_path):
    proc = _run(
        tmp_path, "experiments.bounds", "with", "profile=tiny", "claims=['collapse_values']"
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    run = json.loads((tmp_path / "runs" / "1" / "run.json").read_text())
    exp = run["experiment"]
    assert exp["mainfile"] == "experiments/bounds.py"
    sources = {s[0] for s in exp["sources"]}
    assert {"experiments/bounds.py", "theory/claims/contrastive.py", "gessl/tasks.py"} <= sources
    deps = {d.split("==")[0] for d in exp["dependencies"]}
    assert {"torch", "numpy", "scipy", "sacred", "wandb", "gessl-lab"} <= deps
    assert "gessl_commit" in run["host"] and run["host"]["gessl_version"]


def _start_bounds(tmp_path: Path) -> subprocess.Popen:
    """Every claim on the tiny budget, in this process (jobs=1), so signals reach the run."""
    return subprocess.Popen(
        [sys.executable, "-m", "experiments.bounds", "with", "profile=tiny", "jobs=1"],
        cwd=REPO,
        env=_env(tmp_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_for_claims(tmp_path: Path, proc: subprocess.Popen, at_least: int = 1) -> list[str]:
    path = tmp_path / "runs" / "1" / "claims.json"
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the run ended before it could be interrupted"
        try:
            done = [c["claim_id"] for c in json.loads(path.read_text())["claims"]]
        except (OSError, json.JSONDecodeError, KeyError):
            done = []
        if len(done) >= at_least:
            return done
        time.sleep(0.2)
    raise AssertionError("no claim finished in time")


@needs_signal("SIGINT")
def test_ctrl_c_is_one_line_exit_130_and_an_interrupted_record(tmp_path):
    proc = _start_bounds(tmp_path)
    try:
        _wait_for_claims(tmp_path, proc)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 130, err[-2000:]
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    record = str(tmp_path / "runs" / "1")
    assert last.startswith("interrupted at claim ") and last.endswith(f"{record} (INTERRUPTED)")
    assert json.loads((tmp_path / "runs" / "1" / "run.json").read_text())["status"] == (
        "INTERRUPTED"
    )
    claims = json.loads((tmp_path / "runs" / "1" / "claims.json").read_text())
    assert claims["complete"] is False and claims["claims"]


def test_sigkill_keeps_the_finished_claims_and_the_listing_shows_stale(tmp_path):
    proc = _start_bounds(tmp_path)
    try:
        done = _wait_for_claims(tmp_path, proc)
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=60)
    finally:
        proc.kill()
    record = tmp_path / "runs" / "1"
    claims = json.loads((record / "claims.json").read_text())  # valid JSON, never half-written
    kept = [c["claim_id"] for c in claims["claims"]]
    assert claims["complete"] is False and set(done) <= set(kept)
    # a reproduction claim's verdict is final only after the correction across the run
    allowed = ("holds", "violated", "inconclusive", "provisional")
    assert all(c["verdict"] in allowed for c in claims["claims"])
    assert json.loads((record / "run.json").read_text())["status"] == "RUNNING"
    time.sleep(1.5)
    listing = subprocess.run(
        [sys.executable, "-m", "experiments.runs", "list", "--runs", str(tmp_path / "runs")],
        cwd=REPO,
        env={**_env(tmp_path), "GESSL_STALE_AFTER": "1"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert listing.returncode == 0, listing.stderr
    row = next(ln for ln in listing.stdout.splitlines() if ln.startswith("1 "))
    assert "STALE" in row and "bounds" in row
    fresh = subprocess.run(  # with the default threshold (120 s) the same record is RUNNING
        [sys.executable, "-m", "experiments.runs", "list", "--runs", str(tmp_path / "runs")],
        cwd=REPO,
        env=_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "RUNNING" in next(ln for ln in fresh.stdout.splitlines() if ln.startswith("1 "))


def test_a_reproduction_verdict_is_shown_and_kept_only_once_final(tmp_path):
    """Before the Holm correction across the reproduction claims, the progress line says the
    verdict comes after it, and a run killed then keeps the claim as provisional (its
    within-claim verdict under its own key), never as a verdict."""
    proc = subprocess.Popen(
        [  # the claim's Holm family comes along
            *(sys.executable, "-m", "experiments.bounds", "with", "profile=tiny", "jobs=1"),
            "claims=['gessl_sigma_homogeneous']",
        ],
        cwd=REPO,
        env=_env(tmp_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        done = _wait_for_claims(tmp_path, proc)
        proc.send_signal(signal.SIGKILL)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    claims = json.loads((tmp_path / "runs" / "1" / "claims.json").read_text())
    assert claims["complete"] is False and len(done) < 3
    for c in claims["claims"]:
        assert c["kind"] == "reproduction" and c["verdict"] == "provisional", c["verdict"]
        assert c["provisional_verdict"] in ("reproduced", "not reproduced", "inconclusive",
                                            "mixed", "no practical difference")  # fmt: skip
        assert c["details"]["holm"]["provisional"] is True
    first = next(ln for ln in err.splitlines() if ln.startswith("[1/3]"))
    assert first.endswith("verdict after the Holm correction)"), first
    # a whole run: the final verdicts, announced once the family's three are in
    whole = _run(tmp_path, "experiments.bounds", "with", "profile=tiny", "jobs=1",
                 "claims=['gessl_sigma_homogeneous']", "figures=False")  # fmt: skip
    assert whole.returncode == 0, whole.stderr[-2000:]
    line = next(ln for ln in whole.stderr.splitlines() if ln.startswith("reproduction verdicts"))
    final = json.loads((tmp_path / "runs" / "2" / "claims.json").read_text())
    assert final["complete"] is True and len(final["claims"]) == 3
    for c in final["claims"]:
        assert c["verdict"] != "provisional" and "provisional_verdict" not in c
        assert f"{c['claim_id']}: {c['verdict']}" in line
        assert c["details"]["holm"]["provisional"] is False


def test_more_jobs_than_cores_is_one_warning_line(tmp_path):
    from experiments.parallel import default_jobs

    jobs = default_jobs() + 2
    proc = _run(
        tmp_path, "experiments.bounds", "with", "claims=['collapse_values']", f"jobs={jobs}"
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    warnings = [ln for ln in proc.stderr.splitlines() if ln.startswith("warning: jobs=")]
    assert warnings == [
        f"warning: jobs={jobs} on {default_jobs()} usable core{'s' if default_jobs() != 1 else ''}"
        f": the workers share them (no faster) and take about {jobs * 420 / 1024:.1f} GiB "
        "(420 MB each); jobs=0 uses one per core"
    ]


def test_runs_list_refuses_an_unknown_status(tmp_path):
    (tmp_path / "runs").mkdir()
    proc = _run(
        tmp_path, "experiments.runs", "list", "--status", "BOGUS", "--runs", str(tmp_path / "runs")
    )
    assert proc.returncode == 2 and "invalid choice: 'BOGUS'" in proc.stderr
    ok = _run(
        tmp_path,
        "experiments.runs",
        "list",
        "--status",
        "completed",
        "--runs",
        str(tmp_path / "runs"),
    )
    assert ok.returncode == 0 and ok.stdout.strip().endswith("0 runs")


def test_a_missing_data_folder_is_the_environments_failure_before_any_record(tmp_path):
    env = {k: v for k, v in _env(tmp_path).items() if k != "GESSL_DATA_DIR"}
    proc = subprocess.run(
        [sys.executable, "-m", "experiments.pretrain", "with", "dataset=cifar10", "steps=1"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 3, proc.stderr[-2000:]
    assert _error_lines(proc)[-1].startswith("error: no folder given for cifar10: ")
    assert _error_lines(proc)[-1].endswith("; no record was written")
    _nothing_left(tmp_path)


def test_checkpoints_without_a_record_are_a_usage_error(tmp_path):
    proc = _run(tmp_path, "experiments.pretrain", "-u", "with", "checkpoint_every=2", "steps=3")
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert _error_lines(proc)[-1] == (
        "error: checkpoint_every: checkpoints are kept in the run's record folder and this run "
        "has none (run it observed, without -u/--unobserved)"
    )
    assert "Traceback" not in proc.stderr
