"""experiments.device_check: the same float64 training on the CPU and on $GESSL_TEST_DEVICE
(default cpu, where it is trivially the same; scripts/gpu_check.sh runs it with cuda)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import torch

from experiments import device_check

ROOT = Path(__file__).resolve().parents[2]
DEVICE = os.environ.get("GESSL_TEST_DEVICE", "cpu")


def test_three_float64_steps_give_the_same_state_on_the_cpu_and_the_test_device():
    # every configuration on an accelerator; on the CPU two suffice (cpu against cpu)
    configs = device_check.CONFIGS if DEVICE != "cpu" else device_check.CONFIGS[:2]
    rows = device_check.check(DEVICE, steps=3, configs=configs)
    assert [r["config"] for r in rows] == [c[0] for c in configs]
    for r in rows:
        assert r["passed"], r
        assert r["worst_relative_difference"] <= device_check.TOLERANCE
        assert r["loss_relative_difference"] <= device_check.TOLERANCE


def test_state_holds_parameters_momentum_copies_and_the_threshold_network():
    data = device_check.batches("mlp", 1)
    state, logs = device_check.run_steps("byol", "mlp", {}, "cpu", data)
    assert any(k.startswith("target") or "momentum" in k for k in state), sorted(state)[:5]
    assert all(v.dtype == torch.float64 for v in state.values()) and len(logs) == 1
    state, _ = device_check.run_steps("simclr", "mlp", {"threshold": "learned"}, "cpu", data)
    assert any(k.startswith("threshold.") for k in state)


def test_compare_names_the_worst_tensor():
    ref = {"a": torch.ones(4, dtype=torch.float64), "b": torch.full((4,), 2.0, dtype=torch.float64)}
    other = {"a": ref["a"] * (1 + 1e-9), "b": ref["b"] * (1 + 1e-5)}
    worst, where = device_check.compare(ref, other)
    assert where == "b" and abs(worst - 1e-5) < 1e-9
    assert device_check.compare(ref, ref) == (0.0, "a")


def test_a_difference_fails_the_check_with_exit_1(monkeypatch, tmp_path, capsys):
    real = device_check.run_steps

    def drifting(method, encoder, options, device, data):
        state, logs = real(method, encoder, options, device, data)
        if str(device) != "cpu" or drifting.calls % 2:  # the second run of each pair drifts
            state = {k: v * (1 + 1e-4) for k, v in state.items()}
        drifting.calls += 1
        return state, logs

    drifting.calls = 0
    monkeypatch.setattr(device_check, "run_steps", drifting)
    monkeypatch.setattr(device_check, "CONFIGS", device_check.CONFIGS[:1])
    out = tmp_path / "rows.json"
    assert device_check.main(["--device", "cpu", "--steps", "1", "--json", str(out)]) == 1
    text = capsys.readouterr().out
    assert "DIFFERENT" in text and "0/1 configurations agree" in text
    rows = json.loads(out.read_text())["rows"]
    assert rows[0]["passed"] is False and abs(rows[0]["worst_relative_difference"] - 1e-4) < 1e-9


def test_command_line_refuses_bad_arguments_with_exit_2():
    for args, needle in (
        (["--steps", "0"], "--steps must be >= 1, got 0"),
        (["--device", "tpu"], "--device: unknown device 'tpu'"),
    ):
        proc = subprocess.run(
            [sys.executable, "-m", "experiments.device_check", *args],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc.returncode == 2, proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and needle in lines[0]
