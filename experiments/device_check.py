"""Same training on two devices: 3 GeSSL outer steps in float64 on the CPU and on ``--device``.

    python -m experiments.device_check                   # cpu against cuda (cpu if no CUDA)
    python -m experiments.device_check --device cpu      # cpu against cpu: a smoke run
    python -m experiments.device_check --json out.json   # the per-configuration numbers too

The batches are drawn once, on the CPU, and moved to each device, so both runs start from the
same parameters and see the same numbers; in float64 the method's parameters and state after the
steps then agree up to the rounding of different kernels. A configuration passes when, for every
floating tensor of the method's ``state_dict`` (parameters, momentum copies, queues, centers),
``‖x_device − x_cpu‖ ≤ tol · ‖x_cpu‖`` (tol = 1e-6) and every logged loss agrees as well.
Configurations: SimCLR on an MLP and a small CNN (first order, second order, projector-only, the
learned threshold) and BYOL (momentum state). Exit status: 0 every configuration agrees, 1 one
does not, 2 a bad argument (one line).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

import torch
from torch import Tensor

from gessl.data import GaussianLatentTasks, SyntheticImageTasks
from gessl.devices import resolve_device
from gessl.methods import build_method
from gessl.models import MLP, SmallCNN
from gessl.tasks import TaskBatch
from gessl.trainer import GeSSLConfig, Trainer

__all__ = ["CONFIGS", "compare", "main", "run_steps"]

#: (name, method, encoder, GeSSL options)
CONFIGS: list[tuple[str, str, str, dict[str, Any]]] = [
    ("simclr mlp first", "simclr", "mlp", {}),
    ("simclr mlp second", "simclr", "mlp", {"order": "second"}),
    ("simclr cnn first", "simclr", "cnn", {}),
    ("simclr cnn projector", "simclr", "cnn", {"adapt": "projector"}),
    ("simclr mlp threshold", "simclr", "mlp", {"threshold": "learned"}),
    ("byol mlp first", "byol", "mlp", {}),
]
TOLERANCE = 1e-6
M, N = 3, 8


def _sampler(encoder: str) -> Any:
    return GaussianLatentTasks(dim=8) if encoder == "mlp" else SyntheticImageTasks(size=8)


def batches(encoder: str, steps: int, seed: int = 0) -> list[TaskBatch]:
    """``steps`` float64 task batches drawn on the CPU."""
    gen = torch.Generator().manual_seed(seed)
    return [_sampler(encoder).sample(M, N, gen).to(dtype=torch.float64) for _ in range(steps)]


def run_steps(
    method: str,
    encoder: str,
    options: dict[str, Any],
    device: str | torch.device,
    data: list[TaskBatch],
) -> tuple[dict[str, Tensor], list[dict[str, float]]]:
    """The method's (and threshold network's) floating state, on the CPU, after one outer step
    per batch on ``device``; and the step logs."""
    torch.manual_seed(0)
    net = MLP(8, width=16, depth=2) if encoder == "mlp" else SmallCNN(1, 8)
    model = build_method(method, net, proj_dims=(16, 8)).double()
    cfg = GeSSLConfig(tasks_per_step=M, inner_steps=2, lookahead_steps=2, **options)
    tr = Trainer(model, _sampler(encoder), cfg, n_samples=N, device=device)
    logs = [tr.train_step(b.to(device=tr.device)) for b in data]
    tensors = dict(tr.method.state_dict())
    if tr.threshold_net is not None:
        tensors.update({f"threshold.{k}": v for k, v in tr.threshold_net.state_dict().items()})
    state = {
        k: v.detach().to("cpu", copy=True) for k, v in tensors.items() if v.is_floating_point()
    }
    return state, logs


def compare(reference: dict[str, Tensor], other: dict[str, Tensor]) -> tuple[float, str]:
    """The largest ``‖other − reference‖ / ‖reference‖`` over the tensors, and its name."""
    worst, where = 0.0, ""
    for k, ref in reference.items():
        scale = float(ref.norm())
        diff = float((other[k] - ref).norm())
        rel = diff / scale if scale > 0 else diff
        if rel > worst or not where:
            worst, where = rel, k
    return worst, where


def check(
    device: str | torch.device,
    steps: int = 3,
    configs: list[tuple[str, str, str, dict[str, Any]]] | None = None,
) -> list[dict[str, Any]]:
    """One row per configuration (default :data:`CONFIGS`): the worst relative difference
    (state and losses) between the CPU and ``device`` after ``steps`` outer steps, and whether it
    is within tolerance."""
    dev = resolve_device(device)
    rows = []
    for name, method, encoder, options in CONFIGS if configs is None else configs:
        start = time.perf_counter()
        data = batches(encoder, steps)
        ref_state, ref_logs = run_steps(method, encoder, options, "cpu", data)
        state, logs = run_steps(method, encoder, options, dev, data)
        worst, where = compare(ref_state, state)
        loss_gap = max(
            abs(a["loss"] - b["loss"]) / max(abs(a["loss"]), 1e-12) for a, b in zip(ref_logs, logs)
        )
        rows.append(
            {
                "config": name,
                "device": str(dev),
                "steps": steps,
                "worst_relative_difference": worst,
                "worst_tensor": where,
                "loss_relative_difference": loss_gap,
                "passed": worst <= TOLERANCE and loss_gap <= TOLERANCE,
                "seconds": time.perf_counter() - start,
            }
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m experiments.device_check",
        description=__doc__.split("\n\n")[0],
    )
    parser.add_argument(
        "--device", default="auto", help="the device to compare with the CPU (default: auto)"
    )
    parser.add_argument("--steps", type=int, default=3, help="outer steps (default: 3)")
    parser.add_argument("--json", help="also write the rows to this file")
    args = parser.parse_args(argv)
    if args.steps < 1:
        print(f"error: --steps must be >= 1, got {args.steps}", file=sys.stderr)
        return 2
    try:
        dev = resolve_device(args.device)
    except ValueError as err:
        print(f"error: --device: {err}", file=sys.stderr)
        return 2
    rows = check(dev, args.steps)
    for r in rows:
        verdict = "ok" if r["passed"] else "DIFFERENT"
        print(
            f"{r['config']:<22} cpu vs {r['device']}: state {r['worst_relative_difference']:.2e} "
            f"({r['worst_tensor']}), loss {r['loss_relative_difference']:.2e}  {verdict}"
        )
    failed = [r["config"] for r in rows if not r["passed"]]
    print(
        f"{len(rows) - len(failed)}/{len(rows)} configurations agree within {TOLERANCE:g} "
        f"after {args.steps} float64 steps (cpu vs {dev})"
    )
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"tolerance": TOLERANCE, "rows": rows}, fh, indent=2)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
