"""The benchmark's `higher` peer computes the trainer's step; the peer rows, their absence
without `higher`, and profile=gpu's refusal without CUDA."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from experiments import benchmark
from experiments.tracking import run_experiment
from gessl.data import GaussianLatentTasks, SyntheticImageTasks
from gessl.methods import build_method
from gessl.models import MLP, SmallCNN
from gessl.trainer import GeSSLConfig, Trainer
from tests.experiments.fake_wandb import make_fake_wandb

ROOT = Path(__file__).resolve().parents[2]
needs_higher = pytest.mark.skipif(
    benchmark.import_higher() is None, reason="`higher` is not installed (the peers extra)"
)
TINY = {
    "profile": "tiny",
    "methods": ["simclr"],
    "encoders": ["mlp"],
    "memory": False,
    "bounds_end_to_end": False,
    "tasks_per_step": 2,
    "n_samples": 8,
}


@pytest.fixture(autouse=True)
def fake_wandb(monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", make_fake_wandb())


def _small(encoder: str, **options):
    torch.manual_seed(0)
    if encoder == "mlp":
        net, sampler = MLP(8, width=16, depth=2), GaussianLatentTasks(dim=8)
    else:
        net, sampler = SmallCNN(1, 8), SyntheticImageTasks(size=8)
    method = build_method("simclr", net, proj_dims=(16, 8)).double()
    cfg = GeSSLConfig(tasks_per_step=3, inner_steps=2, lookahead_steps=2, **options)
    trainer = Trainer(copy.deepcopy(method), sampler, cfg, n_samples=8, device="cpu")
    return trainer, method, cfg


def _flat(grads: dict[str, torch.Tensor], names) -> torch.Tensor:
    return torch.cat([grads[k].flatten() for k in names])


@needs_higher
@pytest.mark.parametrize("order", ["first", "second"])
@pytest.mark.parametrize("encoder", ["mlp", "cnn"])
def test_peer_gradient_and_step_equal_the_trainers(encoder, order):
    """float64, K = λ = 2, M = 3: the same gradient (≤ 1e-6 relative) and the same parameters
    after the outer Adam step."""
    trainer, method, cfg = _small(encoder, order=order)
    batch = trainer.sample()
    sums, _ = trainer.task_gradients(batch)
    expected = {k: v / batch.n_tasks for k, v in sums.items()}
    peer = benchmark.HigherPeer(method, cfg)
    got = peer.gradients(batch)
    names = list(expected)
    assert set(got) == set(names)
    e, g = _flat(expected, names), _flat(got, names)
    assert float(e.norm()) > 0
    assert float((g - e).norm() / e.norm()) <= 1e-6
    # per tensor too, against the gradient's overall scale (a bias before a BatchNorm has a
    # gradient of rounding size only, so its own norm is no scale)
    scale = float(e.abs().max())
    for k in names:
        torch.testing.assert_close(got[k], expected[k], rtol=1e-6, atol=1e-6 * scale)
    trainer.train_step(batch)
    peer.step(batch)
    after = dict(trainer.method.online_params())
    # Adam moves an entry by about lr·g/(|g| + ε): a rounding-size gradient (that bias again,
    # ~1e-13) moves it by ~lr·1e-5, differently in the two; so: equal to 1e-4 of a step
    for k, p in method.online_params().items():
        torch.testing.assert_close(p, after[k], rtol=0, atol=1e-4 * cfg.outer_lr)


@needs_higher
def test_peer_refuses_what_it_does_not_implement():
    _, method, cfg = _small("mlp", adapt="projector")
    with pytest.raises(ValueError, match="adapt='all'"):
        benchmark.HigherPeer(method, cfg)
    byol = build_method("byol", MLP(8, width=16, depth=2), proj_dims=(16, 8))
    with pytest.raises(ValueError, match="'simclr', got 'byol'"):
        benchmark.HigherPeer(byol, GeSSLConfig())


@needs_higher
def test_benchmark_times_the_peer_beside_the_project(tmp_path):
    run = run_experiment(benchmark.ex, TINY, runs_dir=str(tmp_path))
    r = run.result
    rows = {row["config"]: row for row in r["steps"]}
    for order in ("first", "second"):
        peer, own = rows[f"higher K=1 λ=1 {order}"], rows[f"gessl K=1 λ=1 {order}"]
        assert peer["project_over_peer"] == pytest.approx(own["median_s"] / peer["median_s"])
        assert r["summary"][f"project_over_higher_mlp_{order}"] == peer["project_over_peer"]
        assert own["project_over_peer"] is None
    assert r["summary"]["higher_peer"].startswith("higher 0.2")
    assert r["table"]["columns"][-1] == "project / higher"
    table = {row[2]: row for row in r["table"]["rows"]}
    assert table["higher K=1 λ=1 first"][-1] == round(
        rows["higher K=1 λ=1 first"]["project_over_peer"], 2
    )
    # the peer rows stay out of the project's own targets
    assert rows["higher K=1 λ=1 first"]["ratio_to_minimum"] is None


def test_benchmark_without_higher_skips_the_peer_and_says_so(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "higher", None)  # `import higher` raises ImportError
    assert benchmark.import_higher() is None
    run = run_experiment(benchmark.ex, TINY, runs_dir=str(tmp_path))
    r = run.result
    assert not [row for row in r["steps"] if row["config"].startswith("higher")]
    assert r["summary"]["higher_peer"] == benchmark.PEER_MISSING
    assert not [k for k in r["summary"] if k.startswith("project_over_higher")]
    assert f"higher peer rows {benchmark.PEER_MISSING}" in capsys.readouterr().out
    with pytest.raises(ImportError, match="peers"):
        benchmark.HigherPeer(build_method("simclr", MLP(8, 8)), GeSSLConfig())


def test_gpu_profile_tables_both_precisions_on_any_device():
    """profile=gpu's bookkeeping (rows, ratios, bf16 speed-up, table, summary) with a tiny MLP on
    $GESSL_TEST_DEVICE (default cpu; on CUDA with the peak memory too)."""
    device = os.environ.get("GESSL_TEST_DEVICE", "cpu")
    p = {
        "rounds": 1,
        "grid": [{"inner_steps": 1, "lookahead_steps": 1}],
        "methods": ["simclr"],
        "encoders": ["mlp"],
        "precisions": ["float32", "bf16"],
    }
    run = SimpleNamespace(info={})
    cuda = device.startswith("cuda")
    out = benchmark.gpu_main(p, 2, 4, memory=cuda, device=device, _run=run)
    steps = out["steps"]
    assert [(r["precision"], r["config"]) for r in steps[:2]] == [
        ("float32", "plain (query views)"),
        ("float32", "plain (support + query)"),
    ]
    assert {r["precision"] for r in steps} == {"float32", "bf16"}
    for r in steps:
        assert r["images_per_s"] == pytest.approx(8 / r["median_s"])
        assert (r["bf16_speedup"] is None) == (r["precision"] == "float32")
        assert (r["peak_mb"] is not None and r["peak_mb"] > 0) == cuda
        assert r["device"].startswith(device)
    assert len(out["table"]["rows"]) == len(steps) == 10
    assert out["summary"]["images_per_step"] == 8
    assert "ratio_to_plain/bf16/gessl K=1 λ=1 second" in out["summary"]
    assert run.info["wandb_tables"]["gpu"]["columns"][-1] == "peak MB"


def test_resnet18_rows_use_cifar_shaped_batches():
    tr, batch = benchmark._trainer("simclr", "resnet18", 2, 4, inner_steps=1)
    assert tuple(batch.query_a.shape) == (2, 4, 3, 32, 32)
    assert tr.method.backbone.out_dim == 512


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_gpu_profile_without_cuda_exits_2_with_one_line(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "experiments.benchmark", "with", "profile=gpu"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "GESSL_RUNS_DIR": str(tmp_path), "WANDB_MODE": "disabled"},
    )
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines() == [f"error: {benchmark.NO_CUDA}"]
    assert not list(tmp_path.iterdir())  # refused before any record


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_peak_memory_grows_with_second_order():
    base = {"method": "simclr", "encoder": "mlp", "M": 4, "N": 16, "device": "cuda"}
    first, second = benchmark.cuda_peak_memory(
        [{**base, "inner_steps": 3}, {**base, "inner_steps": 3, "order": "second"}], "cuda"
    )
    assert second["peak_growth_mb"] > first["peak_growth_mb"] > 0
