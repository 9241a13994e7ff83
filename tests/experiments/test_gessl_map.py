"""``experiments.gessl_map``: records, heat maps, identical numbers for any jobs, shards merged
by ``paper_figures``, and the real command line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from experiments.gessl_map import ex
from experiments.tracking import run_experiment
from paper_figures.__main__ import main as figures
from tests.experiments.fake_wandb import make_fake_wandb

REPO = Path(__file__).resolve().parents[2]
SMALL = {
    "profile": "tiny",
    "families": ["subspace"],
    "sweep": {"inner_lr": [0.1, 0.3], "critic": ["two_headed", "cosine"]},
    "seeds": 3,
    "steps": 6,
}


def _run(tmp_path, monkeypatch, name, **config):
    monkeypatch.setitem(sys.modules, "wandb", make_fake_wandb())
    folder = tmp_path / name
    run = run_experiment(ex, {**SMALL, **config}, runs_dir=str(folder))
    return run, folder / str(run._id)


def test_a_whole_map_leaves_jobs_cells_and_heat_maps(tmp_path, monkeypatch, capsys):
    run, d = _run(tmp_path, monkeypatch, "whole")
    assert run.status == "COMPLETED" and run.result["cells"] == 4
    # 8 trainings (every seed of a setting in one population) and 2 floor fits
    assert run.result["jobs"] == run.result["jobs_total"] == 10
    data = json.loads((d / "map.json").read_text())
    assert (
        data["complete"] and len(data["results"]) == 10 and data["map_id"] == run.result["map_id"]
    )
    trainings = [r for r in data["results"].values() if r["kind"] == "train"]
    assert all(sorted(r["runs"]) == ["0", "1", "2"] for r in trainings)
    assert {run["path"] for r in trainings for run in r["runs"].values()} == {
        "population/plain",
        "population/factored",
    }
    cells = json.loads((d / "map_cells.json").read_text())["cells"]
    assert {(c["knob"], c["value"]) for c in cells} == {
        ("inner_lr", 0.1),
        ("inner_lr", 0.3),
        ("critic", "two_headed"),
        ("critic", "cosine"),
    }
    assert (d / "gessl_map.png").stat().st_size > 20000
    out = capsys.readouterr().out
    assert "Δσ φ calibrated" in out and "Δσ adapted, tuned" in out and "subspace     critic" in out


def test_any_number_of_workers_and_shards_give_the_same_map(tmp_path, monkeypatch):
    one, d1 = _run(tmp_path, monkeypatch, "one", jobs=1)
    _, d2 = _run(tmp_path, monkeypatch, "two", jobs=2)

    def numbers(folder):  # everything but wall-clock seconds
        res = json.loads((folder / "map.json").read_text())["results"]

        def strip(d):
            return {
                f: strip(v) if isinstance(v, dict) else v
                for f, v in d.items()
                if "seconds" not in f
            }

        return {k: strip(r) for k, r in res.items()}

    assert numbers(d1) == numbers(d2)
    # the same map in three shards, merged by paper_figures
    shards = tmp_path / "shards"
    monkeypatch.setitem(sys.modules, "wandb", make_fake_wandb())
    for i in (1, 2):
        run_experiment(ex, {**SMALL, "shard": f"{i}/3"}, runs_dir=str(shards))
    out = tmp_path / "figs"
    assert figures(["--runs", str(shards), "--out", str(out), "--only", "gessl_map"]) == 1
    run_experiment(ex, {**SMALL, "shard": "3/3"}, runs_dir=str(shards))
    command = ["-m", "paper_figures", "--runs", str(shards), "--out", str(out)]
    proc = subprocess.run(  # the real command merges the three shards
        [sys.executable, *command, "--only", "gessl_map"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
    )
    assert proc.returncode == 0 and "gessl_map: 4 files" in proc.stdout, proc.stderr[-2000:]
    merged = json.loads((out / "gessl_map_cells.json").read_text())
    whole = json.loads((d1 / "map_cells.json").read_text())
    assert merged["cells"] == json.loads(json.dumps(whole["cells"]))
    assert merged["map_id"] == one.result["map_id"]
    sources = json.loads((out / "gessl_map.json").read_text())["sources"]
    assert len(sources) == 3 and (out / "gessl_map.png").is_file()


def test_paper_figures_names_the_missing_shards(tmp_path, monkeypatch, capsys):
    _run(tmp_path, monkeypatch, "half", shard="1/2")
    code = figures(
        ["--runs", str(tmp_path / "half"), "--out", str(tmp_path / "f"), "--only", "gessl_map"]
    )
    err = capsys.readouterr().err
    assert code == 1 and "hold 5 of its 10 jobs" in err
    assert "missing shard 2/2: `python -m experiments.gessl_map with shard=2/2`" in err


def _cli(tmp_path, *args):
    env = {**os.environ, "GESSL_RUNS_DIR": str(tmp_path), "WANDB_MODE": "disabled"}
    return subprocess.run(
        [sys.executable, "-m", "experiments.gessl_map", "with", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
        timeout=600,
    )


def test_command_line_runs_a_map_and_refuses_bad_settings(tmp_path):
    ok = _cli(
        tmp_path,
        "profile=tiny",
        "families=['noise_level']",
        "sweep={'sigma_weight': [0.0, 1.0]}",
        "seeds=2",
        "steps=4",
    )
    assert ok.returncode == 0, ok.stderr[-2000:]
    assert "noise_level  sigma_weight" in ok.stdout
    assert (tmp_path / "1" / "gessl_map.png").is_file()
    for setting, message in (
        ("families=['sphere']", "families: unknown value 'sphere' (allowed: homogeneous"),
        ("sweep={'critic': ['euclid']}", "critic must be one of"),
        ("sweep={'learning_rate': [1.0]}", "sweep knob must be one of"),
        ("shard=3/2", "shard must look like 'i/n'"),
        ("seeds=1", "seeds must be an integer >= 2"),
    ):
        bad = _cli(tmp_path / "bad", "profile=tiny", setting)
        assert bad.returncode == 2 and message in bad.stderr, (setting, bad.stderr[-1500:])
        assert len(bad.stderr.strip().splitlines()) == 1  # one line, no traceback
        assert not (tmp_path / "bad").exists()  # refused before any record exists
