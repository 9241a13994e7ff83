"""Run 3 outer GeSSL steps under torchrun and save rank 0's parameters: the process group and
the device come from :func:`gessl.devices.init_distributed` (CPU here: gloo).

Usage: python -m torch.distributed.run --nproc_per_node=2 ddp_worker.py OUT METHOD
"""

from __future__ import annotations

import sys

import torch
import torch.distributed as dist

from gessl.data import GaussianLatentTasks
from gessl.devices import init_distributed
from gessl.methods import build_method
from gessl.models import MLP
from gessl.trainer import GeSSLConfig, Trainer


def build(method: str, device: str | torch.device = "cpu") -> Trainer:
    torch.manual_seed(0)
    m = build_method(method, MLP(6, width=12), proj_dims=(12, 6)).double()
    cfg = GeSSLConfig(tasks_per_step=5, inner_steps=1, lookahead_steps=1, sigma_weight=0.5)
    return Trainer(m, GaussianLatentTasks(dim=6), cfg, n_samples=6, device=device)


def main() -> None:
    out, method = sys.argv[1], sys.argv[2]
    device = init_distributed("cpu")
    tr = build(method, device)
    tr.fit(3, progress=False)
    if dist.get_rank() == 0:
        torch.save(
            {
                "state": tr.method.state_dict(),
                "history": tr.history,
                "world": dist.get_world_size(),
                "backend": dist.get_backend(),
                "device": str(device),
            },
            out,
        )
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
