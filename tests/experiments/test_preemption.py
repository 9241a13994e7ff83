"""SIGTERM (a scheduler's preemption, ``kill``) and SIGHUP (the terminal closed) are handled as
Ctrl-C is, through the real commands: one line naming the signal, exit 143 / 129, the record
INTERRUPTED, the finished work kept, and no worker process left behind."""

from __future__ import annotations

import contextlib
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

pytestmark = pytest.mark.skipif(
    not hasattr(signal, "SIGHUP") or not Path("/proc").is_dir(), reason="POSIX with /proc only"
)


def _env(tmp_path: Path) -> dict[str, str]:
    return {
        **os.environ,
        "GESSL_RUNS_DIR": str(tmp_path / "runs"),
        "WANDB_MODE": "disabled",
        "GESSL_PROGRESS": "0",
    }


_STARTED: list[subprocess.Popen] = []


@pytest.fixture(autouse=True)
def _no_leftovers():
    """After each test (passed or failed), nothing of a started command's process group runs
    on: its group is killed."""
    yield
    while _STARTED:
        proc = _STARTED.pop()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def _start(tmp_path: Path, *args: str) -> subprocess.Popen:
    """The command in a session of its own (its process group is what a terminal would hang
    up), its signal handlers at their defaults; its group is killed after the test."""
    proc = subprocess.Popen(
        [sys.executable, "-m", *args],
        cwd=REPO,
        env=_env(tmp_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    _STARTED.append(proc)
    return proc


def _children(pid: int) -> set[int]:
    out: set[int] = set()
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(OSError):  # the task ended meanwhile
            out |= {int(c) for c in (task / "children").read_text().split()}
    return out


def _alive(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return "\nState:\tZ" not in status


def _wait_for(what, proc: subprocess.Popen, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while not what():
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        assert time.monotonic() < deadline, "the run did not get there in time"
        time.sleep(0.1)


def _stop(proc: subprocess.Popen, sig: int, group: bool) -> tuple[str, set[int]]:
    """Send ``sig`` to the command (or its whole process group); its stderr and the worker
    processes it had."""
    workers = _children(proc.pid)
    try:
        if group:
            os.killpg(proc.pid, sig)
        else:
            proc.send_signal(sig)
        _, err = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        err = "(no exit within 60 s)"
    return err, workers


def _no_worker_left(workers: set[int]) -> None:
    deadline = time.monotonic() + 5
    while any(_alive(w) for w in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [w for w in workers if _alive(w)], "a worker outlived its run"


def _claims_done(tmp_path: Path) -> bool:
    try:
        return bool(json.loads((tmp_path / "runs/1/claims.json").read_text())["claims"])
    except (OSError, ValueError, KeyError):
        return False


@pytest.mark.parametrize(
    ("sig", "group", "code"),
    [
        pytest.param(signal.SIGTERM, False, 143, marks=needs_signal("SIGTERM")),
        pytest.param(signal.SIGHUP, True, 129, marks=needs_signal("SIGHUP")),
    ],
    ids=["SIGTERM to the command", "SIGHUP to its process group"],
)
def test_bounds_preempted_keeps_its_claims_and_stops_its_workers(tmp_path, sig, group, code):
    proc = _start(tmp_path, "experiments.bounds", "with", "profile=tiny", "jobs=2")
    _wait_for(lambda: _claims_done(tmp_path), proc)
    assert _children(proc.pid), "the run has worker processes"
    err, workers = _stop(proc, sig, group)
    assert proc.returncode == code, err[-3000:]
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    name = signal.Signals(sig).name
    assert last.startswith(f"interrupted by {name} at claim "), last
    assert last.endswith(f"{tmp_path / 'runs' / '1'} (INTERRUPTED)"), last
    record = tmp_path / "runs" / "1"
    assert json.loads((record / "run.json").read_text())["status"] == "INTERRUPTED"
    claims = json.loads((record / "claims.json").read_text())
    assert claims["complete"] is False and claims["claims"]
    _no_worker_left(workers)


@needs_signal("SIGTERM")
def test_the_map_preempted_keeps_its_jobs_and_stops_its_workers(tmp_path):
    proc = _start(tmp_path, "experiments.gessl_map", "with", "profile=tiny", "steps=400", "jobs=2")
    record = tmp_path / "runs" / "1"
    _wait_for(lambda: (record / "run.json").is_file() and len(_children(proc.pid)) >= 2, proc)
    time.sleep(2)
    err, workers = _stop(proc, signal.SIGTERM, group=False)
    assert proc.returncode == 143, err[-3000:]
    assert err.strip().splitlines()[-1].startswith("interrupted by SIGTERM"), err[-500:]
    assert json.loads((record / "run.json").read_text())["status"] == "INTERRUPTED"
    kept = json.loads((record / "map.json").read_text())  # what finished, marked incomplete
    assert kept["complete"] is False and kept["jobs_total"] == 20
    _no_worker_left(workers)


def test_a_sigkilled_command_leaves_no_worker(tmp_path):
    """SIGKILL cannot be handled: the workers die with the command all the same (Linux's
    parent-death signal), rather than run on as orphans."""
    if not sys.platform.startswith("linux"):
        pytest.skip("the parent-death signal is Linux's")
    proc = _start(tmp_path, "experiments.bounds", "with", "profile=tiny", "jobs=2")
    _wait_for(lambda: _claims_done(tmp_path), proc)
    _, workers = _stop(proc, signal.SIGKILL, group=False)
    assert workers and proc.returncode == -signal.SIGKILL
    _no_worker_left(workers)
    assert json.loads((tmp_path / "runs/1/run.json").read_text())["status"] == "RUNNING"
