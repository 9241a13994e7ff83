"""pretrain's checkpoints live in the run's own record; ``resume=runs/<id>`` continues a killed
run into a new record, bit for bit the uninterrupted run; bad resume paths fail before training."""

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
import torch

from experiments import pretrain
from experiments.tracking import run_experiment
from gessl.trainer.checkpoint import UnsafeCheckpointError, load_checkpoint
from tests.conftest import needs_signal

ROOT = Path(__file__).resolve().parents[2]
TINY = {
    "method": "byol",
    "dataset": "digits",
    "encoder": "mlp",
    "width": 16,
    "n_samples": 8,
    "tasks_per_step": 2,
    "evaluation": {
        "few_shot_way": 3,
        "few_shot_episodes": 5,
        "provider_steps": 2,
        "report_tasks": 2,
        "report_samples": 8,
    },
}


def _cli(config: dict) -> list[str]:
    """``python -m experiments.pretrain with key=value ...`` (dotted keys for the dicts)."""
    args = []
    for k, v in config.items():
        if isinstance(v, dict):
            args += [f"{k}.{kk}={json.dumps(vv)}" for kk, vv in v.items()]
        else:
            args.append(f"{k}={v}" if isinstance(v, str) else f"{k}={json.dumps(v)}")
    return [sys.executable, "-m", "experiments.pretrain", "with", *args]


def _env(runs_dir: Path) -> dict[str, str]:
    return {**os.environ, "GESSL_RUNS_DIR": str(runs_dir), "WANDB_MODE": "disabled"}


def _records(runs_dir: Path) -> list[str]:
    return sorted(p.name for p in runs_dir.iterdir() if p.name.isdigit())


def _interrupted(runs: Path, sig: signal.Signals) -> tuple[subprocess.Popen, Path, int, str]:
    """A pretrain run on the real command line with checkpoint_every=4, sent ``sig`` once its
    first checkpoint exists: ``(process, its record, the checkpoint's step, its output)``."""
    with open(runs / "interrupted.log", "w") as log:
        proc = subprocess.Popen(
            _cli({**TINY, "steps": 100_000, "checkpoint_every": 4}),
            cwd=ROOT,
            env=_env(runs),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.monotonic() + 240
            while not list(runs.glob("*/checkpoint.pt")):
                assert proc.poll() is None, (runs / "interrupted.log").read_text()[-3000:]
                assert time.monotonic() < deadline, "no checkpoint within 240 s"
                time.sleep(0.05)
            proc.send_signal(sig)
            proc.wait(timeout=120)
        finally:
            proc.kill()
            proc.wait()
    (record,) = [p.parent for p in runs.glob("*/checkpoint.pt")]
    step = load_checkpoint(str(record / "checkpoint.pt"))["step"]
    assert step % 4 == 0 and step >= 4
    return proc, record, step, (runs / "interrupted.log").read_text()


@pytest.fixture(scope="module")
def killed(tmp_path_factory):
    """A pretrain run SIGKILLed once its first checkpoint exists: ``(runs dir, its record, the
    checkpoint's step)``; no handler runs, so the record stays RUNNING."""
    runs = tmp_path_factory.mktemp("runs")
    _, record, step, _ = _interrupted(runs, signal.SIGKILL)
    assert json.loads((record / "run.json").read_text())["status"] == "RUNNING"
    return runs, record, step


def test_a_killed_run_resumed_on_the_command_line_equals_the_uninterrupted_run(killed):
    full, resumed = _resume_beside_uninterrupted(*killed)
    # final weights bit for bit
    assert full.keys() == resumed.keys() and all(torch.equal(full[n], resumed[n]) for n in full)


@needs_signal("SIGTERM")
def test_a_preempted_run_is_interrupted_and_resumes_bit_for_bit(tmp_path):
    """SIGTERM (a scheduler's preemption): exit 143, one line, the record INTERRUPTED with its
    last checkpoint, and ``resume=`` continues it bit for bit."""
    proc, record, k, out = _interrupted(tmp_path, signal.SIGTERM)
    assert proc.returncode == 143, out[-3000:]
    last = out.strip().splitlines()[-1]
    assert last.startswith("interrupted by SIGTERM") and last.endswith("(INTERRUPTED)"), last
    assert json.loads((record / "run.json").read_text())["status"] == "INTERRUPTED"
    full, resumed = _resume_beside_uninterrupted(tmp_path, record, k)
    assert full.keys() == resumed.keys() and all(torch.equal(full[n], resumed[n]) for n in full)


def _resume_beside_uninterrupted(runs: Path, parent: Path, k: int) -> tuple[dict, dict]:
    """Run the uninterrupted run of k + 4 steps and resume ``parent`` (checkpoint at step k) to
    the same length on the command line; check the resumed record (its parent, configuration,
    losses, result, checkpoints) against it, and return both final weights."""
    steps = k + 4
    full = run_experiment(pretrain.ex, {**TINY, "steps": steps}, runs_dir=str(runs), wandb=False)
    assert full.status == "COMPLETED"
    before = set(_records(runs))
    proc = subprocess.run(
        [*_cli({"resume": str(parent), "steps": steps})],
        cwd=ROOT,
        env=_env(runs),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    (new,) = set(_records(runs)) - before  # a new record, naming its parent
    child = runs / new
    record = json.loads((child / "run.json").read_text())
    assert record["status"] == "COMPLETED"
    info = json.loads((child / "info.json").read_text())
    assert info["resumed_from"] == str(parent) and info["resumed_at_step"] == k
    # the parent's configuration, with the new total steps
    config, parent_config = (json.loads((d / "config.json").read_text()) for d in (child, parent))
    assert config == {**parent_config, "steps": steps, "resume": str(parent)}
    # the same losses on the resumed steps, and the same evaluation
    losses = json.loads((child / "metrics.json").read_text())["train/loss"]
    assert losses["steps"] == list(range(k + 1, steps + 1))
    full_losses = json.loads((runs / str(full._id) / "metrics.json").read_text())["train/loss"]
    assert losses["values"] == full_losses["values"][k:]
    drop = {"train_seconds"}
    assert {x: v for x, v in record["result"].items() if x not in drop} == {
        x: v for x, v in full.result.items() if x not in drop
    }
    # the child keeps its own checkpoint; the parent's is untouched
    assert load_checkpoint(str(child / "checkpoint.pt"))["step"] == steps
    assert load_checkpoint(str(parent / "checkpoint.pt"))["step"] == k
    return (
        torch.load(runs / str(full._id) / "model.pt", weights_only=True),
        torch.load(child / "model.pt", weights_only=True),
    )


def test_a_resumed_run_refuses_a_different_configuration(killed):
    runs, parent, k = killed
    before = _records(runs)
    cases = [
        ({"method": "simclr"}, r"method='simclr' \(parent: 'byol'\)"),
        ({"gessl": {"inner_steps": 3}}, r"gessl\.inner_steps=3 \(parent: 1\)"),
        ({"evaluation": {"few_shot_way": 2}}, r"evaluation\.few_shot_way=2 \(parent: 3\)"),
        ({"steps": k - 1}, rf"steps={k - 1} is below the step .* \({k}\)"),
    ]
    for updates, message in cases:
        with pytest.raises(ValueError, match=message) as err:
            run_experiment(
                pretrain.ex, {"resume": str(parent), **updates}, runs_dir=str(runs), wandb=False
            )
        assert str(parent) in str(err.value) and "\n" not in str(err.value)
    # agreeing values are fine, the rest comes from the parent (print_config: nothing runs)
    cfg = pretrain.ex.run(
        "print_config", config_updates={"resume": str(parent), "method": "byol"}
    ).config
    assert cfg["method"] == "byol" and cfg["width"] == 16 and cfg["checkpoint_every"] == 4
    parent_config = json.loads((parent / "config.json").read_text())
    assert cfg["steps"] == 100_000 and cfg["evaluation"] == parent_config["evaluation"]
    assert _records(runs) == before  # refused before any record existed


def test_check_resume_names_the_path(tmp_path, killed):
    _, parent, k = killed
    assert pretrain.check_resume(str(parent))["step"] == k
    with pytest.raises(ValueError, match=r"no run record at '.*nowhere'"):
        pretrain.check_resume(str(tmp_path / "nowhere"))
    with pytest.raises(ValueError, match="is not a run record"):
        pretrain.check_resume(str(tmp_path))
    record = tmp_path / "7"
    record.mkdir()
    shutil.copy(parent / "config.json", record / "config.json")
    with pytest.raises(ValueError, match=r"'.*7' has no checkpoint"):
        pretrain.check_resume(str(record))
    # a checkpoint that would run code when loaded is refused, unopened
    marker = tmp_path / "ran"
    torch.save({"step": 4, "x": _Payload(str(marker))}, record / "checkpoint.pt")
    with pytest.raises(UnsafeCheckpointError, match="would run code when loaded"):
        pretrain.check_resume(str(record))
    assert not marker.exists()
    (record / "run.json").write_text(json.dumps({"experiment": {"name": "study"}}))
    with pytest.raises(ValueError, match="record of 'study', not of pretrain"):
        pretrain.check_resume(str(record))


def test_checkpoints_need_a_record_folder():
    with pytest.raises(ValueError, match=r"checkpoint_every: .*record folder"):
        pretrain.ex.run(config_updates={**TINY, "steps": 2, "checkpoint_every": 1})


class _Payload:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (self.marker,))
