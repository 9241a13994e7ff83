"""Two gloo processes (tasks sharded across ranks) give the parameters of one process."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.gessl.trainer.ddp_worker import build

WORKER = Path(__file__).with_name("ddp_worker.py")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("method", ["byol", "moco"])
def test_two_process_gloo_equals_one_process(tmp_path, method):
    out = tmp_path / "ddp.pt"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node=2",
        "--master_addr=127.0.0.1",
        f"--master_port={_free_port()}",
        str(WORKER),
        str(out),
        method,
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ddp = torch.load(out, weights_only=False)
    assert ddp["world"] == 2 and ddp["backend"] == "gloo" and ddp["device"] == "cpu"
    single = build(method)
    single.fit(3, progress=False)
    ref = single.method.state_dict()
    for name, value in ddp["state"].items():
        torch.testing.assert_close(value, ref[name], rtol=0, atol=1e-6)
    # and the runs are not trivially equal: the parameters moved
    torch.manual_seed(0)
    fresh = build(method).method.state_dict()
    assert any(not torch.allclose(fresh[k], ref[k]) for k in ref if k.startswith("backbone."))
    assert [h["loss"] for h in ddp["history"]] == pytest.approx(
        [h["loss"] for h in single.history], rel=1e-10
    )
