"""Progress bars: shown on a terminal (training and evaluation), absent from pipes and records."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
TINY = [
    "with",
    "encoder=mlp",
    "width=8",
    "steps=4",
    "n_samples=8",
    "tasks_per_step=2",
    "evaluation.few_shot_episodes=5",
    "evaluation.provider_steps=2",
    "evaluation.report_tasks=1",
]


def _env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "GESSL_PROGRESS")}
    return {**env, "GESSL_RUNS_DIR": str(tmp_path / "runs"), "WANDB_MODE": "disabled"}


def test_pretrain_shows_training_and_evaluation_progress_on_a_terminal(tmp_path):
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    proc = subprocess.Popen(
        [sys.executable, "-m", "experiments.pretrain", *TINY],
        cwd=REPO,
        env=_env(tmp_path),
        stdin=slave,
        stdout=slave,
        stderr=slave,
    )
    os.close(slave)
    chunks = []
    deadline = time.monotonic() + 280
    while time.monotonic() < deadline:
        try:
            data = os.read(master, 65536)
        except OSError:  # the terminal closed: the process ended
            break
        if not data:
            break
        chunks.append(data)
    proc.wait(timeout=60)
    os.close(master)
    screen = b"".join(chunks).decode("utf-8", "replace")
    assert proc.returncode == 0, screen[-2000:]
    # the training bar (its last frames are cleared, leave=False) and the evaluation phases
    assert re.search(r"gessl: +\d+%\|.*\| [0-4]/4 \[", screen), screen[-2000:]
    assert re.search(r"evaluation: +\d+%\|.*\| [0-5]/5 \[", screen), screen[-2000:]
    cout = (tmp_path / "runs" / "1" / "cout.txt").read_text()
    assert "gessl:" not in cout and "evaluation:" not in cout  # bars stay out of the record


def test_no_progress_bar_when_not_a_terminal(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "experiments.pretrain", *TINY],
        cwd=REPO,
        env=_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "it/s" not in proc.stderr and "step/s" not in proc.stderr and "%|" not in proc.stderr
