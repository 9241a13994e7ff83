"""Records that survive the disk: Sacred's JSON files are replaced atomically (a write that
fails leaves the previous version whole), and a record that cannot be read is named — with why —
by ``experiments.runs list`` and ``paper_figures``, while every other record still lists."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from experiments.tracking import AtomicFileStorageObserver
from tests.experiments.test_runs_cli import make_runs

REPO = Path(__file__).resolve().parents[2]


def test_a_failing_write_leaves_the_previous_run_json_whole(tmp_path, monkeypatch):
    obs = AtomicFileStorageObserver(str(tmp_path))
    obs.dir = str(tmp_path)
    obs.save_json({"status": "RUNNING", "n": 1}, "run.json")
    before = (tmp_path / "run.json").read_text()

    def full(fd):  # the disk fills up while the new version is written
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(OSError, match="No space left"):
        obs.save_json({"status": "COMPLETED", "result": "x" * 10_000}, "run.json")
    assert (tmp_path / "run.json").read_text() == before  # the previous version, whole
    assert [p.name for p in tmp_path.iterdir()] == ["run.json"]  # no temporary file left
    monkeypatch.undo()
    obs.save_json({"status": "COMPLETED"}, "run.json")
    assert json.loads((tmp_path / "run.json").read_text()) == {"status": "COMPLETED"}


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", *args],
        cwd=REPO,
        env={**os.environ, "WANDB_MODE": "disabled"},
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_unreadable_records_are_named_and_the_others_list(tmp_path):
    runs = tmp_path / "runs"
    make_runs(runs)  # 1 and 2 completed, 3 failed
    broken = {
        "4": ('{"status": "COMPLETED", "exper', "run.json is not valid JSON (truncated?)"),
        "5": ("[1, 2]", "run.json holds a JSON list, not an object"),
        "6": ('{"experiment": "toy"}', "run.json: 'experiment' is not an object"),
    }
    for rid, (text, _) in broken.items():
        (runs / rid).mkdir()
        (runs / rid / "run.json").write_text(text)
    (runs / "7").mkdir()  # a folder Sacred made, without its run.json yet
    proc = _cli("experiments.runs", "list", "--runs", str(runs))
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert "3 runs" in lines
    assert [ln.split()[0] for ln in lines[2:5]] == ["1", "2", "3"]
    for rid, (_, why) in broken.items():
        assert f"UNREADABLE {runs / rid}: {why}" in lines
    assert any(ln.startswith(f"UNREADABLE {runs / '7'}: no run.json") for ln in lines)
    shown = _cli("experiments.runs", "show", "4", "--runs", str(runs))
    assert shown.returncode == 2
    assert shown.stderr.strip() == (
        f"error: run 4 in {runs} is unreadable: run.json is not valid JSON (truncated?)"
    )
    figures = _cli("paper_figures", "--runs", str(runs), "--out", str(tmp_path / "out"))
    assert figures.returncode == 0, figures.stderr
    for rid, (_, why) in broken.items():
        assert f"skipped record {runs / rid}: {why}" in figures.stderr
