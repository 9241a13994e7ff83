"""pretrain, sigma, ablation and study experiments on tiny settings: records and results."""

from __future__ import annotations

import json
import sys

import pytest

from experiments import ablation, pretrain, sigma, study
from experiments.tracking import run_experiment
from tests.experiments.fake_wandb import make_fake_wandb

TINY_EVAL = {
    "few_shot_way": 3,
    "few_shot_episodes": 20,
    "provider_steps": 5,
    "report_tasks": 2,
    "report_samples": 8,
}


@pytest.fixture(autouse=True)
def fake_wandb(monkeypatch):
    fake = make_fake_wandb()
    monkeypatch.setitem(sys.modules, "wandb", fake)
    return fake


def test_pretrain_records_training_and_evaluation(tmp_path, fake_wandb):
    run = run_experiment(
        pretrain.ex,
        {"steps": 3, "width": 8, "n_samples": 8, "evaluation": TINY_EVAL, "method": "byol"},
        runs_dir=str(tmp_path),
    )
    assert run.status == "COMPLETED"
    r = run.result
    for key in (
        "linear_probe",
        "knn",
        "few_shot",
        "sigma_train",
        "sigma_fresh",
        "sigma_held_out",
        "alignment",
        "uniformity",
        "effective_rank",
    ):
        assert key in r
    assert 0 <= r["linear_probe"] <= 1 and r["sigma_held_out"] >= 0
    d = tmp_path / str(run._id)
    metrics = json.loads((d / "metrics.json").read_text())
    assert metrics["train/loss"]["steps"] == [1, 2, 3]
    assert (d / "model.pt").stat().st_size > 0
    info = json.loads((d / "info.json").read_text())
    assert set(info["evaluation"]["universality"]) == {"train", "fresh", "held_out"}
    # the record names the gradient path that ran (GeSSL, every parameter adapted, an MLP)
    assert info["gradient_path"]["path"] == "factored"
    assert info["gradient_path"]["fallback"] is None
    assert fake_wandb.runs[0].finished == 0


def test_pretrain_missing_cifar_folder_fails_with_the_named_error(tmp_path, monkeypatch):
    """The data folder is looked for while the configuration is checked: before any record."""
    monkeypatch.delenv("GESSL_DATA_DIR", raising=False)
    with pytest.raises(FileNotFoundError, match=r"cifar10: folder .* does not exist"):
        run_experiment(
            pretrain.ex,
            {"dataset": "cifar10", "data_root": str(tmp_path / "x")},
            runs_dir=str(tmp_path),
        )
    assert not (tmp_path / "1").exists()


def test_sigma_experiment_logs_both_modes(tmp_path):
    run = run_experiment(
        sigma.ex,
        {
            "steps": 2,
            "eval_every": 1,
            "width": 8,
            "n_samples": 8,
            "report_tasks": 2,
            "provider_steps": 3,
        },
        runs_dir=str(tmp_path),
    )
    info = json.loads((tmp_path / str(run._id) / "info.json").read_text())
    series = info["series"]
    assert info["gradient_path"]["plain"]["path"] == "plain"
    assert info["gradient_path"]["gessl"]["path"] in ("factored", "reference")
    for split in ("train", "fresh", "held_out"):
        for mode in ("plain", "gessl"):
            s = series[f"sigma/{split}/{mode}"]
            assert s["steps"] == [0, 1, 2] and len(s["values"]) == 3
    # both models start from the same initialisation: equal σ at step 0
    assert series["sigma/fresh/plain"]["values"][0] == series["sigma/fresh/gessl"]["values"][0]


def test_ablation_and_study_write_tables(tmp_path):
    run = run_experiment(
        ablation.ex,
        {"steps": 2, "values": [0, 1], "width": 8, "n_samples": 8, "evaluation": TINY_EVAL},
        runs_dir=str(tmp_path),
    )
    assert [r["value"] for r in run.result["rows"]] == [0, 1]
    md = (tmp_path / str(run._id) / "ablation.md").read_text()
    assert md.startswith("| lookahead_steps |") and md.count("\n") == 3
    run = run_experiment(
        study.ex,
        {
            "profile": "tiny",
            "methods": ["simclr"],
            "width": 8,
            "n_samples": 8,
            "evaluation": TINY_EVAL,
        },
        runs_dir=str(tmp_path),
    )
    rows = run.result["rows"]
    assert [(r["method"], r["mode"]) for r in rows] == [("simclr", "plain"), ("simclr", "gessl")]
    assert all(r["seeds"] == 2 for r in rows)
    table = (tmp_path / str(run._id) / "study.md").read_text()
    assert "| simclr | gessl |" in table and "σ held-out" in table
    assert "3-way 5-shot" in table  # 7, 8, 9 held out
    # five held-out digits give the 5-way column the evaluation asks for
    run = run_experiment(
        study.ex,
        {
            "profile": "tiny",
            "methods": ["simclr"],
            "seen_classes": [0, 1, 2, 3, 4],
            "width": 8,
            "n_samples": 8,
            "evaluation": {**TINY_EVAL, "few_shot_way": 5},
        },
        runs_dir=str(tmp_path),
    )
    assert "5-way 5-shot" in (tmp_path / str(run._id) / "study.md").read_text()
    assert run.result["few_shot_way"] == 5
    with pytest.raises(ValueError, match="seen_classes"):
        run_experiment(study.ex, {"seen_classes": [3]}, runs_dir=str(tmp_path))
    with pytest.raises(ValueError, match="parameter: unknown value 'nope' \\(allowed: mode, "):
        run_experiment(ablation.ex, {"parameter": "nope"}, runs_dir=str(tmp_path))


def test_benchmark_records_ratios_and_the_overhead_table(tmp_path):
    from experiments import benchmark
    from tests.experiments.test_benchmark_peer import TINY

    run = run_experiment(
        benchmark.ex,
        TINY,
        runs_dir=str(tmp_path),
    )
    r = run.result
    names = [row["config"] for row in r["steps"]]
    assert names[:2] == ["plain (query views)", "plain (support + query)"]
    plain = r["steps"][0]
    assert plain["ratio_to_plain"] == 1.0
    assert r["steps"][1]["ratio_to_plain_same_views"] == 1.0
    # the two denominators are the two plain steps' times
    assert plain["ratio_to_plain_same_views"] == pytest.approx(
        plain["median_s"] / r["steps"][1]["median_s"]
    )
    first = next(row for row in r["steps"] if row["config"].endswith("first"))
    assert first["minimum_passes"] == 3 and first["ratio_to_minimum"] > 0
    assert r["summary"]["sigma_worst_ratio_to_floor"] > 0
    assert r["table"]["columns"][-2:] == ["× minimum", "project / higher"]
    assert len(r["table"]["rows"]) == len(names)
    assert all(b["speedup"] > 0 for b in r["batching"])
    # population rows: one per arm, the speedup the ratio of the two timings
    assert [p["arm"] for p in r["population"]] == ["plain", "meta", "gessl"]
    for p in r["population"]:
        assert p["seeds"] == 3 and p["speedup"] == pytest.approx(p["loop_s"] / p["population_s"])
    assert r["summary"]["population_min_speedup"] == min(p["speedup"] for p in r["population"])


def test_peak_memory_probe_grows_with_second_order():
    from experiments.benchmark import peak_memory

    base = {"method": "simclr", "encoder": "mlp", "M": 4, "N": 16, "inner_steps": 3}
    first, second = peak_memory([base, {**base, "order": "second"}])
    assert second["peak_growth_mb"] > first["peak_growth_mb"] > 0
