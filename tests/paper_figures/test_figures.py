"""Every figure and table from small synthetic run records written here; determinism; sources."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from paper_figures.__main__ import main
from paper_figures.figures import BUILDERS
from theory.claims import ClaimResult, Series


def _run(
    root: Path,
    run_id: int,
    experiment: str,
    config: dict,
    info: dict | None = None,
    result=None,
    artifacts: dict[str, object] | None = None,
    status="COMPLETED",
) -> None:
    d = root / str(run_id)
    d.mkdir(parents=True)
    (d / "run.json").write_text(
        json.dumps(
            {
                "experiment": {"name": experiment},
                "status": status,
                "start_time": f"2026-11-27T10:00:{run_id:02d}",
                "result": result,
            }
        )
    )
    (d / "config.json").write_text(json.dumps(config))
    (d / "info.json").write_text(json.dumps(info or {}))
    for name, content in (artifacts or {}).items():
        (d / name).write_text(json.dumps(content))


def _claims() -> list[dict]:
    a = ClaimResult(
        "holds",
        "slope ok",
        "slope −1.0",
        [Series("measured", [10, 100, 1000], [0.1, 0.01, 0.001], [0.01, 0.001, 0.0001])],
        [Series("bound", [10, 100, 1000], [1.0, 0.3, 0.1])],
        log_x=True,
        log_y=True,
        slope=-1.0,
        slope_se=0.02,
        expected_slope=-1.0,
        claim_id="toy_rate",
        kind="rate",
    ).to_dict()
    b = ClaimResult(
        "violated",
        "too big",
        "2 > 1",
        [Series("m", [1, 2], [2.0, 2.0])],
        [Series("b", [1, 2], [1.0, float("inf")])],
        claim_id="toy_exact",
        kind="exact",
    ).to_dict()
    from tests.theory.false_claims import contradicted_reproduction

    c = {
        **contradicted_reproduction("tiny", 0).to_dict(),
        "claim_id": "contradicted_repro",
        "kind": "reproduction",
    }
    c["details"]["levels"] = {
        m: {"sigma_phi_calibrated": 0.5, "sigma_adapted_tuned": 0.4, "fixed:sigma_adapted": 0.45}
        for m in ("plain", "gessl")
    }
    c["details"]["floors"] = {
        "shared_sigma": {"value": 0.2},
        "per_task_sigma": {"value": 0.0},
        "reachable_fixed_sigma": {"value": 0.3},
    }
    return [{**a, "statement": "s"}, {**b, "statement": "s"}, {**c, "statement": "s"}]


def _ablation_rows(values):
    keys = ("sigma_fresh", "sigma_held_out", "linear_probe", "few_shot", "train_seconds")
    return [
        {"value": v, **{k: {"mean": 0.5 + 0.1 * i, "std": 0.05} for k in keys}}
        for i, v in enumerate(values)
    ]


@pytest.fixture
def runs(tmp_path) -> Path:
    root = tmp_path / "runs"
    _run(root, 1, "bounds", {"profile": "tiny"}, artifacts={"claims.json": {"claims": _claims()}})
    _run(root, 2, "bounds", {"profile": "quick"}, status="FAILED")  # ignored: not completed
    series = {
        f"sigma/{s}/{m}": {"steps": [0, 10, 20], "values": [2.0, 1.0 + (m == "gessl"), 0.5]}
        for s in ("train", "fresh", "held_out")
        for m in ("plain", "gessl")
    }
    _run(root, 3, "sigma", {"method": "simclr", "dataset": "digits"}, info={"series": series})
    for i, p in enumerate(("lookahead_steps", "inner_steps")):
        _run(
            root,
            4 + i,
            "ablation",
            {"parameter": p, "method": "simclr", "seeds": [0, 1]},
            result={"parameter": p, "rows": _ablation_rows([0, 1, 2])},
        )
    rows = [
        {
            "method": "simclr",
            "mode": m,
            "seeds": 3,
            **{
                k: {"mean": 0.9, "std": 0.01}
                for k in (
                    "linear_probe",
                    "knn",
                    "few_shot",
                    "sigma_train",
                    "sigma_fresh",
                    "sigma_held_out",
                    "train_seconds",
                )
            },
        }
        for m in ("plain", "gessl")
    ]
    _run(
        root,
        6,
        "study",
        {"profile": "quick"},
        artifacts={
            "study.json": {
                "profile": "quick",
                "steps": 200,
                "rows": rows,
                "runs": [{"method": "simclr", "few_shot_way": 3}],
            }
        },
    )
    _run(
        root,
        7,
        "benchmark",
        {},
        result={"table": {"columns": ["config", "ratio"], "rows": [["gessl K=1", 2.31]]}},
    )
    from tests.theory.test_map_grid import MAP_SPEC, _fake_results
    from theory.map_grid import map_id, plan

    _run(
        root,
        8,
        "gessl_map",
        {"profile": "tiny"},
        info={"map_id": map_id(MAP_SPEC), "shard": "1/1"},
        artifacts={
            "map.json": {
                "map_id": map_id(MAP_SPEC),
                "spec": MAP_SPEC,
                "jobs_total": len(plan(MAP_SPEC)),
                "results": _fake_results(MAP_SPEC, -0.2),
            }
        },
    )
    _run(root, 9, "universality", {"profile": "quick"}, artifacts=_universality_record())
    return root


def _universality_record() -> dict:
    from experiments.universality import PROPERTIES, summarise

    metrics = [m for ms in PROPERTIES.values() for m in ms]
    results = [
        {
            "method": method,
            "mode": mode,
            "seed": s,
            "metrics": {k: 0.5 + 0.01 * s + 0.02 * (mode == "gessl") for k in metrics},
        }
        for method in ("simclr", "byol")
        for mode in ("plain", "meta", "gessl")
        for s in range(3)
    ]
    summary = summarise(results, metrics)
    record = {
        "spec": {"dataset": "mnist1d", "encoder": "cnn1d", "steps": 200},
        "properties": PROPERTIES,
        "metrics": metrics,
        **summary,
    }
    return {"universality.json": record, "universality.md": "| method | mode |\n|---|---|\n"}


def test_every_output_is_built_with_its_sources(runs, tmp_path, capsys):
    out = tmp_path / "figs"
    assert main(["--runs", str(runs), "--out", str(out)]) == 0
    for name in (
        "claims_summary",
        "sigma_vs_step",
        "ablation_lookahead_steps",
        "ablation_inner_steps",
    ):
        assert (out / f"{name}.png").stat().st_size > 10_000 and (out / f"{name}.pdf").is_file()
    assert sorted(p.name for p in (out / "claims").glob("*.png")) == [
        "contradicted_repro.png",
        "toy_exact.png",
        "toy_rate.png",
    ]
    assert (out / "gessl_map.png").stat().st_size > 20_000
    cells = json.loads((out / "gessl_map_cells.json").read_text())["cells"]
    assert (
        len(cells) == 12 and cells[0]["tests"]["gessl-plain:sigma_adapted"]["direction"] == "lower"
    )
    assert json.loads((out / "gessl_map.json").read_text())["sources"][0]["run_id"] == "8"
    side = json.loads((out / "sigma_vs_step.json").read_text())
    assert side["sources"][0]["run_id"] == "3" and side["sources"][0]["experiment"] == "sigma"
    assert json.loads((out / "claims_summary.json").read_text())["sources"][0]["run_id"] == "1"
    png = Image.open(out / "sigma_vs_step.png")
    assert json.loads(png.text["Source"]) == [{"experiment": "sigma", "run_id": "3"}]
    assert b"sigma" in (out / "sigma_vs_step.pdf").read_bytes()
    md = (out / "study_table.md").read_text()
    assert "| simclr | gessl |" in md and "0.900 ± 0.010" in md and "| 3-way few-shot |" in md
    assert r"\toprule" in (out / "study_table.tex").read_text()
    assert "2.31" in (out / "overhead_table.md").read_text()
    props = ("discriminability", "generalization", "label_efficiency", "transferability", "sigma")
    for prop in props:
        assert (out / f"universality_{prop}.png").stat().st_size > 10_000
        side = json.loads((out / f"universality_{prop}.json").read_text())
        assert side["sources"][0]["run_id"] == "9"
    assert "run 9 of `experiments.universality`" in (out / "universality_table.md").read_text()
    stems = {p.stem for p in out.glob("*.json")} - {"gessl_map_cells", "universality_table"}
    stems = {"universality" if s.startswith("universality_") else s for s in stems}
    assert set(BUILDERS) == stems | {"claims"}


def test_outputs_are_byte_identical_across_runs(runs, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    assert main(["--runs", str(runs), "--out", str(a)]) == 0
    assert main(["--runs", str(runs), "--out", str(b)]) == 0
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert len(files) > 20
    for f in files:
        assert (a / f).read_bytes() == (b / f).read_bytes(), f


def test_missing_records_name_their_command(tmp_path, capsys):
    empty = tmp_path / "none"
    empty.mkdir()  # an empty records folder (a missing one is a usage error, exit 2)
    assert main(["--runs", str(empty), "--out", str(tmp_path / "o")]) == 0  # all skipped
    err = capsys.readouterr().err
    assert "python -m experiments.bounds" in err and "python -m experiments.study" in err
    assert "parameter=inner_steps" in err
    assert main(["--runs", str(empty), "--out", str(tmp_path / "o"), "--only", "study_table"]) == 1
    with pytest.raises(SystemExit):
        main(["--only", "nonsense"])
