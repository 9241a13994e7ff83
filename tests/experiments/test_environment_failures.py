"""Failures of the environment exit 3 with one line naming the path — not 1 (a finding) nor 2
(a usage error) — and leave the earlier records readable: a runs folder that is a file, and a
runs folder on a full 2 MB disk (a tmpfs, where this machine lets the tests mount one)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _run(runs: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", *args],
        cwd=REPO,
        env={**os.environ, "GESSL_RUNS_DIR": str(runs), "WANDB_MODE": "disabled"},
        capture_output=True,
        text=True,
        timeout=300,
    )


def _bounds(runs: Path) -> subprocess.CompletedProcess:
    return _run(runs, "experiments.bounds", "with", "claims=['collapse_values']", "figures=False")


def test_a_runs_folder_that_is_a_file_is_one_line_exit_3(tmp_path):
    runs = tmp_path / "runs"
    runs.write_text("not a folder")
    proc = _bounds(runs)
    assert proc.returncode == 3, proc.stderr[-2000:]
    assert proc.stderr.strip() == f"error: runs folder: not a folder: {runs}"
    proc = _bounds(runs / "sub")
    assert proc.returncode == 3 and proc.stderr.strip().startswith("error: runs folder: ")


@pytest.fixture
def small_disk(tmp_path):
    """A 2 MB tmpfs at ``tmp_path/disk`` (skipped where mounting is not allowed)."""
    mount, umount = shutil.which("mount"), shutil.which("umount")
    disk = tmp_path / "disk"
    disk.mkdir()
    if not mount or not umount or os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root and mount(8)")
    made = subprocess.run(
        [mount, "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(disk)], capture_output=True
    )
    if made.returncode != 0:
        pytest.skip(f"this machine does not let the tests mount a tmpfs: {made.stderr!r}")
    try:
        yield disk
    finally:
        subprocess.run([umount, str(disk)], check=False)


def test_a_full_disk_is_one_line_exit_3_and_the_records_stay(small_disk):
    runs = small_disk / "runs"
    first = _bounds(runs)
    assert first.returncode == 0, first.stderr[-2000:]
    with open(small_disk / "filler", "wb", buffering=0) as fh:  # fill the disk to the last block
        try:
            while True:
                fh.write(b"\0" * 4096)
        except OSError:
            pass
    proc = _bounds(runs)
    assert proc.returncode == 3, proc.stderr[-2000:]
    assert proc.stderr.strip() == f"error: runs folder: No space left on device: {runs}"
    assert sorted(p.name for p in runs.iterdir() if p.name.isdigit()) == ["1"]  # no new record
    listing = _run(runs, "experiments.runs", "list", "--runs", str(runs))
    assert listing.returncode == 0 and "1 run" in listing.stdout.splitlines()
    assert "COMPLETED" in listing.stdout and "UNREADABLE" not in listing.stdout


def test_paper_figures_with_an_out_folder_it_cannot_write_is_one_line_exit_3(tmp_path):
    out = tmp_path / "out"
    out.write_text("a file, not a folder")
    assert _bounds(tmp_path / "runs").returncode == 0  # a record to draw from
    proc = _run(tmp_path / "runs", "paper_figures", "--runs", str(tmp_path / "runs"),
                "--out", str(out), "--only", "claims")  # fmt: skip
    assert proc.returncode == 3, proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines()[-1].startswith("error: Not a directory: ")
    assert "Traceback" not in proc.stderr
