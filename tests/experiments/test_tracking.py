"""Sacred records and the W&B forwarder: steps kept, runs finished, nothing lost on a crash."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from experiments.tracking import make_experiment, run_experiment
from tests.experiments.fake_wandb import make_fake_wandb


def _toy(fail: bool):
    ex = make_experiment("toy")

    @ex.config
    def config():
        n = 3  # noqa: F841

    @ex.main
    def main(n, _run):
        for i in range(n):
            _run.log_scalar("a", float(i), 10 * (i + 1))  # Sacred steps 10, 20, 30
            _run.log_scalar("b", float(-i), 5 + i)
        _run.info["wandb_tables"] = {"t": {"columns": ["x"], "data": [[1], [2]]}}
        if fail:
            raise RuntimeError("boom after logging")
        return {"total": float(n)}

    return ex


def _read(run_dir: Path, name: str):
    return json.loads((run_dir / name).read_text())


def test_forwarder_keeps_steps_and_finishes(tmp_path, monkeypatch):
    fake = make_fake_wandb()
    monkeypatch.setitem(sys.modules, "wandb", fake)
    run = run_experiment(_toy(False), {"n": 3}, runs_dir=str(tmp_path))
    assert run.status == "COMPLETED"
    (wb,) = fake.runs
    assert wb.finished == 0 and wb.summary["sacred_status"] == "COMPLETED"
    assert wb.summary["result/total"] == 3.0
    assert wb.kwargs["config"]["n"] == 3 and wb.kwargs["dir"] == str(tmp_path)
    assert wb.defined["a"] == "sacred_step" and wb.defined["b"] == "sacred_step"
    steps_a = [r["sacred_step"] for r in wb.logged if "a" in r]
    steps_b = [r["sacred_step"] for r in wb.logged if "b" in r]
    assert steps_a == [10, 20, 30] and steps_b == [5, 6, 7]
    assert [r["a"] for r in wb.logged if "a" in r] == [0.0, 1.0, 2.0]
    assert any(r.get("t") == ("table", ["x"], [[1], [2]]) for r in wb.logged)
    # the file record agrees
    metrics = _read(tmp_path / str(run._id), "metrics.json")
    assert metrics["a"]["steps"] == [10, 20, 30]


def test_crash_keeps_a_complete_record_and_finishes_wandb(tmp_path, monkeypatch):
    fake = make_fake_wandb()
    monkeypatch.setitem(sys.modules, "wandb", fake)
    with pytest.raises(RuntimeError, match="boom"):
        run_experiment(_toy(True), {"n": 2}, runs_dir=str(tmp_path))
    run_dir = next(p for p in tmp_path.iterdir() if p.name.isdigit())
    record = _read(run_dir, "run.json")
    assert record["status"] == "FAILED" and "boom after logging" in "".join(record["fail_trace"])
    assert _read(run_dir, "config.json")["n"] == 2
    assert _read(run_dir, "metrics.json")["a"]["values"] == [0.0, 1.0]
    assert fake.runs[0].finished == 1 and fake.runs[0].summary["sacred_status"] == "FAILED"


def test_wandb_outage_never_loses_the_run(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "wandb", make_fake_wandb(fail_on="log"))
    run = run_experiment(_toy(False), {"n": 3}, runs_dir=str(tmp_path))
    assert run.status == "COMPLETED"
    assert _read(tmp_path / str(run._id), "metrics.json")["a"]["values"] == [0.0, 1.0, 2.0]
    assert "W&B forwarding is off" in capsys.readouterr().err


def test_forwarder_refuses_hard_coded_mode():
    from experiments.wandb_forwarder import WandbForwarder

    with pytest.raises(ValueError, match="WANDB_MODE"):
        WandbForwarder(mode="online")
