"""The universality study through its command: records, figures, a user's encoder, bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from experiments.universality import PRIMARY, saturated, summarise

ROOT = Path(__file__).resolve().parents[2]
#: a small MNIST-1D (the generation arguments) and the cheapest readouts
SMALL = [
    "profile=tiny",
    "data_options={'num_samples': 800}",
    "readout={'shots': [1, 5], 'few_shot_shots': [1], 'few_shot_way': 3, 'report_tasks': 2, "
    "'provider_steps': 3}",
    "width=8",
    "jobs=1",
]


def _env(tmp_path: Path, extra_path: Path | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        WANDB_MODE="disabled",
        GESSL_CACHE_DIR=str(tmp_path / "cache"),
        GESSL_PROGRESS="0",
        PYTHONPATH=os.pathsep.join(
            p for p in (str(extra_path) if extra_path else "", str(ROOT)) if p
        ),
    )
    return env


def _run(tmp_path: Path, *config: str, extra_path: Path | None = None, check: bool = True):
    runs = tmp_path / "runs"
    proc = subprocess.run(
        [sys.executable, "-m", "experiments.universality", "-F", str(runs), "with", *config],
        cwd=ROOT,
        env=_env(tmp_path, extra_path),
        capture_output=True,
        text=True,
        timeout=600,
    )
    if check:
        assert proc.returncode == 0, proc.stderr[-3000:]
    return proc, runs


def _no_network(folder: Path) -> Path:
    """A folder whose sitecustomize makes every socket connection fail in the subprocess."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "sitecustomize.py").write_text(
        textwrap.dedent(
            """
            import socket

            def _refuse(*args, **kwargs):
                raise OSError("network access refused by the test")

            socket.socket.connect = _refuse
            socket.socket.connect_ex = _refuse
            socket.create_connection = _refuse
            """
        )
    )
    return folder


def _record(runs: Path) -> dict:
    (run_dir,) = [p for p in runs.iterdir() if p.name.isdigit()]
    return json.loads((run_dir / "universality.json").read_text())


def test_the_study_trains_the_arms_and_records_every_property(tmp_path):
    proc, runs = _run(
        tmp_path,
        *SMALL,
        "methods=['simclr']",
        extra_path=_no_network(tmp_path / "offline"),
    )
    rec = _record(runs)
    (run_dir,) = [p for p in runs.iterdir() if p.name.isdigit()]
    # plain, meta and GeSSL for each of the 2 seeds, paired
    assert sorted((r["mode"], r["seed"]) for r in rec["runs"]) == [
        (m, s) for m in ("gessl", "meta", "plain") for s in (0, 1)
    ]
    expected = {
        "disc_probe", "disc_knn", "gen_probe", "gen_knn", "probe_1", "probe_5", "fewshot_1",
        "shift_noise_probe", "shift_noise_knn", "shift_shear_probe", "shift_translation_knn",
        "shift_probe", "sigma_train", "sigma_fresh", "sigma_held_out",
    }  # fmt: skip
    assert expected <= set(rec["metrics"])
    for row in rec["rows"]:
        for k in rec["metrics"]:
            cell = row[k]
            assert cell["n"] == 2 and cell["lo"] <= cell["mean"] <= cell["hi"]
            if not k.startswith("sigma"):
                assert 0.0 <= cell["mean"] <= 1.0
    # every readout was tuned on validation data, per model
    for r in rec["runs"]:
        p = r["protocol"]
        assert p["probe_C"] in (0.01, 0.1, 1.0, 10.0) and p["knn_k"] in (1, 5, 20, 50)
        assert p["sigma"]["kl_direction"] == "KL(π_model ‖ π_opt)"
        assert p["sigma"]["floor_per_task"] == 0.0
    # paired differences for the three contrasts; Holm over the primary family only
    contrasts = {(t["contrast"], t["metric"]) for t in rec["tests"]}
    assert ("gessl-plain", "gen_probe") in contrasts and ("gessl-meta", "fewshot_1") in contrasts
    primary = [t for t in rec["tests"] if t["primary"]]
    assert rec["family_size"] == len(primary) == 3  # fewshot_5 is not measured here
    assert {t["metric"] for t in primary} == {"disc_probe", "gen_probe", "probe_5"}
    assert all(t["p_holm"] >= t["p"] for t in primary)
    assert all(t["p_holm"] is None for t in rec["tests"] if not t["primary"])
    # the Markdown table, the figures (one per property), the log
    md = (run_dir / "universality.md").read_text()
    assert "| simclr | gessl |" in md and "Holm over the 3 primary tests" in md
    pngs = sorted(p.name for p in run_dir.glob("universality_*.png"))
    assert pngs == [
        f"universality_{p}.png"
        for p in sorted(
            ("discriminability", "generalization", "label_efficiency", "transferability", "sigma")
        )
    ]
    assert "simclr gessl" in proc.stdout and "seed 1" in proc.stdout
    # paper_figures builds the same figures and the table from the record
    out = tmp_path / "figs"
    built = subprocess.run(
        [
            sys.executable,
            "-m",
            "paper_figures",
            "--runs",
            str(runs),
            "--out",
            str(out),
            "--only",
            "universality",
        ],
        cwd=ROOT,
        env=_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert built.returncode == 0, built.stderr
    assert (out / "universality_transferability.png").stat().st_size > 0
    assert "gessl-plain" in (out / "universality_table.md").read_text()


def _user_module(folder: Path, body: str) -> Path:
    pkg = folder / "userpkg"
    pkg.mkdir(parents=True, exist_ok=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "models.py").write_text(textwrap.dedent(body))
    return folder


ENCODER = """
    from gessl.models import build_backbone

    def build(input_shape):
        return build_backbone("cnn1d", input_shape, 8)

    def flat(input_shape):
        import torch
        return torch.nn.Identity()
"""


def test_a_users_encoder_is_evaluated_on_the_same_readouts(tmp_path):
    from gessl.models import build_backbone

    path = _user_module(tmp_path / "code", ENCODER)
    torch.manual_seed(0)
    ckpt = tmp_path / "encoder.pt"
    net = build_backbone("cnn1d", (1, 1, 40), 8)
    torch.save({f"backbone.{k}": v for k, v in net.state_dict().items()}, ckpt)  # a method's
    _, runs = _run(
        tmp_path, *SMALL, "encoder=userpkg.models:build", f"checkpoint={ckpt}", extra_path=path
    )
    rec = _record(runs)
    (row,) = rec["rows"]
    assert row["method"] == "userpkg.models:build" and row["mode"] == "encoder"
    assert 0.0 <= row["gen_probe"]["mean"] <= 1.0
    assert not any(k.startswith("sigma") for k in rec["metrics"])  # no method, no σ
    assert rec["tests"] == [] and "sigma" not in rec["properties"]
    (run_dir,) = [p for p in runs.iterdir() if p.name.isdigit()]
    assert "read out once (no training" in (run_dir / "universality.md").read_text()


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (["encoder=userpkg.models:build", "checkpoint=MISSING"], "checkpoint: no such file"),
        (["encoder=nowhere.models:build", "checkpoint=CKPT"], "encoder: cannot import 'nowhere"),
        (["encoder=userpkg.models:absent", "checkpoint=CKPT"], "has no function 'absent'"),
        (["encoder=userpkg.models:flat", "checkpoint=EMPTY"], "to [B, d] features, got (2, 1, 1"),
        (["encoder=userpkg.models:build", "checkpoint=EMPTY"], "checkpoint: does not fit"),
        (["encoder=userpkg.models:build"], "give checkpoint=<path>"),
        (["encoder=userpkg.models:build", "checkpoint=NOTTORCH"], "cannot load"),
        (["checkpoint=CKPT"], "only read with a user's encoder"),
        (["readout={'shots': [0]}"], "readout.shots[0]"),
        (["shifts={'noise': {'noise': 1}}"], "unknown generation argument 'noise'"),
        (["modes=['plain', 'maml']"], "modes"),
    ],
)
def test_bad_input_is_refused_in_one_line_before_any_record(tmp_path, config, message):
    from gessl.models import build_backbone

    path = _user_module(tmp_path / "code", ENCODER)
    files = {
        "CKPT": tmp_path / "enc.pt",
        "EMPTY": tmp_path / "empty.pt",
        "NOTTORCH": tmp_path / "text.pt",
        "MISSING": tmp_path / "missing.pt",
    }
    torch.save(build_backbone("cnn1d", (1, 1, 40), 8).state_dict(), files["CKPT"])
    torch.save({}, files["EMPTY"])
    files["NOTTORCH"].write_text("not a checkpoint")
    for key, file in files.items():
        config = [c.replace(key, str(file)) for c in config]
    proc, runs = _run(tmp_path, *SMALL, *config, extra_path=path, check=False)
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and message in lines[0], proc.stderr
    assert not runs.exists() or not any(p.name.isdigit() for p in runs.iterdir())


def _fake_results(gain: float, noise: float = 0.01, seeds: int = 6) -> list[dict]:
    gen = torch.Generator().manual_seed(0)
    out = []
    for s in range(seeds):
        base = {k: 0.6 + 0.05 * float(torch.randn(1, generator=gen)) for k in PRIMARY.values()}
        for mode, shift in (("plain", 0.0), ("meta", 0.0), ("gessl", gain)):
            jitter = {k: noise * float(torch.randn(1, generator=gen)) for k in base}
            m = {k: v + shift + jitter[k] for k, v in base.items()}
            out.append({"method": "simclr", "mode": mode, "seed": s, "metrics": m})
    return out


def test_the_paired_comparison_finds_a_planted_gain_and_no_gain_where_there_is_none():
    metrics = list(PRIMARY.values())
    planted = summarise(_fake_results(0.05), metrics)
    tests = {t["metric"]: t for t in planted["tests"] if t["contrast"] == "gessl-plain"}
    assert planted["family_size"] == 4
    for k in metrics:
        assert tests[k]["direction"] == "higher" and tests[k]["p_holm"] < 0.05
        assert tests[k]["ci"][0] < 0.05 < tests[k]["ci"][1]
    null = summarise(_fake_results(0.0), metrics)
    assert all(t["direction"] == "n.s." for t in null["tests"] if t["primary"])
    # a wrong alternative: pairing by seed removes the seed-to-seed spread (0.05), which an
    # unpaired reading of the same numbers could not; the paired intervals are narrow
    widths = [t["ci"][1] - t["ci"][0] for t in planted["tests"] if t["primary"]]
    assert max(widths) < 0.05


def test_saturation_is_reported_only_when_every_model_is_near_one():
    rows = [
        {"disc_probe": {"mean": 0.99}, "gen_probe": {"mean": 0.97}, "sigma_train": {"mean": 1.0}},
        {"disc_probe": {"mean": 0.985}, "gen_probe": {"mean": 0.99}, "sigma_train": {"mean": 1.0}},
    ]
    assert saturated(rows, ["disc_probe", "gen_probe", "sigma_train"]) == ["disc_probe"]
