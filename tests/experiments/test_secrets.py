"""A database password reaches no file a run writes: the file record, the W&B run, the output.

A password is planted in the ``--sql`` URL (every way of passing it), the database is
unreachable and ``-O`` lets the run go ahead with the file record, W&B is offline so that its run
file (which records the command line) is written; then every byte under the runs folder and the
W&B folder, and the command's output, is searched for the password.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from experiments.tracking import mask_db_args

REPO = Path(__file__).resolve().parents[2]
PASSWORD = "s3cretPW-planted"
URL = f"postgresql://me:{PASSWORD}@127.0.0.1:1/gessl"
MASKED = "postgresql://me:***@127.0.0.1:1/gessl"


def _files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()]


@pytest.mark.parametrize(
    "how",
    [["--sql", URL, "-O"], [f"--sql={URL}", "-O"], ["-s", URL, "-O"], ["-O"]],
    ids=["--sql URL", "--sql=URL", "-s URL", "GESSL_DB_URL"],
)
def test_a_planted_password_is_in_no_file_the_run_writes(tmp_path, how):
    env = {
        **os.environ,
        "GESSL_RUNS_DIR": str(tmp_path / "runs"),
        "WANDB_MODE": "offline",
        "WANDB_DIR": str(tmp_path / "wandb-home"),
        "GESSL_PROGRESS": "0",
    }
    if how == ["-O"]:
        env["GESSL_DB_URL"] = URL
    proc = subprocess.run(
        [sys.executable, "-m", "experiments.bounds", "with", "claims=['collapse_values']", *how],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert PASSWORD not in proc.stdout + proc.stderr
    assert MASKED in proc.stderr  # the warning names the database, masked
    files = _files(tmp_path)
    names = {p.name for p in files}
    assert {"run.json", "config.json", "cout.txt", "claims.json"} <= names
    wandb_runs = [p for p in files if p.suffix == ".wandb"]
    assert wandb_runs  # the W&B run file exists, so the search below covers it
    for path in files:
        assert PASSWORD.encode() not in path.read_bytes(), path
    if how != ["-O"]:  # W&B records the command line: it holds the masked URL, not the real one
        assert any(b"me:***@127.0.0.1" in p.read_bytes() for p in wandb_runs)


def test_the_command_line_is_masked_in_every_form():
    argv = ["x", "--sql", URL, f"--sql={URL}", "-s", URL, "with", "seed=1"]
    assert mask_db_args(argv, URL) == [
        "x",
        "--sql",
        MASKED,
        f"--sql={MASKED}",
        "-s",
        MASKED,
        "with",
        "seed=1",
    ]
    assert mask_db_args(["x", "--sql", "sqlite:///a.db"], "sqlite:///a.db") == [
        "x",
        "--sql",
        "sqlite:///a.db",
    ]
