"""What GeSSL costs: step-time ratios against the plain step and the algorithmic minimum.

    python -m experiments.benchmark                    # quick profile (~3 min on 2 CPU cores)
    python -m experiments.benchmark with profile=full

Everything is measured side by side in one process: each configuration is warmed up, then the
configurations are timed in interleaved rounds (so drifts of a noisy machine hit all of them
alike) and the median and interquartile range are reported. Ratios are the product; absolute times
are machine-specific. Units: one *pass* is the forward and backward of the base loss on one pair
of views of every task. A plain step on the query views is 1 pass; first-order GeSSL needs K inner
passes, λ look-ahead passes and 1 outer pass, so its algorithmic minimum is K + λ + 1 plain steps.
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

import torch

from experiments.tracking import main_entry, make_experiment
from experiments.validation import check_choice, check_int, validates
from gessl.data import GaussianLatentTasks, SyntheticImageTasks
from gessl.methods import build_method
from gessl.models import MLP, SmallCNN
from gessl.sigma import sigma_from_logits
from gessl.trainer import GeSSLConfig, Trainer

ex = make_experiment("benchmark")

PROFILES = {
    "quick": {
        "rounds": 7,
        "grid": [
            {"inner_steps": 1, "lookahead_steps": 1},
            {"inner_steps": 3, "lookahead_steps": 1},
            {"inner_steps": 1, "lookahead_steps": 3},
        ],
        "tasks": [4, 8, 16],
    },
    "full": {
        "rounds": 15,
        "grid": [
            {"inner_steps": k, "lookahead_steps": lam} for k in (1, 2, 4) for lam in (0, 1, 3)
        ],
        "tasks": [2, 4, 8, 16, 32],
    },
    "tiny": {"rounds": 2, "grid": [{"inner_steps": 1, "lookahead_steps": 1}], "tasks": [4]},
}


@ex.config
def config() -> None:
    profile = "quick"  # "quick" (rounds and grid of the README table), "full", "tiny" (tests)
    methods = ["simclr", "byol"]  # methods timed
    encoders = ["mlp", "cnn"]  # backbones timed
    n_samples = 32
    tasks_per_step = 8
    memory = True  # peak-memory subprocesses
    bounds_end_to_end = True  # time `python -m experiments.bounds` (quick)
    threads = torch.get_num_threads()  # torch threads (default: as many as torch uses)


def _trainer(method: str, encoder: str, m: int, n: int, **cfg: Any) -> tuple[Trainer, Any]:
    torch.manual_seed(0)
    if encoder == "mlp":  # the backbone dominates the cost, as it does for real encoders
        net, sampler = MLP(64, width=512, depth=3), GaussianLatentTasks(dim=64)
    else:
        net, sampler = SmallCNN(1, 16), SyntheticImageTasks(size=16)
    model = build_method(method, net, proj_dims=(128, 64))
    tr = Trainer(model, sampler, GeSSLConfig(tasks_per_step=m, **cfg), n_samples=n)
    return tr, tr.sample()


def interleaved(
    fns: dict[str, Callable[[], Any]], rounds: int, warmup: int = 2
) -> dict[str, dict[str, float]]:
    """Median and quartiles of each function's wall time over interleaved rounds."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(rounds):
        for k, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - start)
    out = {}
    for k, ts in times.items():
        q = statistics.quantiles(ts, n=4) if len(ts) >= 2 else [ts[0]] * 3
        out[k] = {"median": statistics.median(ts), "q1": q[0], "q3": q[2], "n": len(ts)}
    return out


def step_costs(
    method: str, encoder: str, grid: list[dict], m: int, n: int, rounds: int
) -> list[dict[str, Any]]:
    """Plain vs GeSSL outer steps on one fixed batch; ratios to plain and to K + λ + 1."""
    configs: dict[str, dict[str, Any]] = {
        "plain (query views)": {"mode": "plain", "use_support_in_plain": False},
        "plain (support + query)": {"mode": "plain"},
    }
    for g in grid:
        k, lam = g["inner_steps"], g["lookahead_steps"]
        configs[f"gessl K={k} λ={lam} first"] = {**g}
        configs[f"gessl K={k} λ={lam} second"] = {**g, "order": "second"}
        configs[f"gessl K={k} λ={lam} projector"] = {**g, "adapt": "projector"}
    fns = {}
    for name, cfg in configs.items():
        tr, batch = _trainer(method, encoder, m, n, **cfg)
        fns[name] = lambda tr=tr, batch=batch: tr.train_step(batch)
    fwd_tr, fwd_batch = _trainer(method, encoder, m, n)
    fns["forward (query views)"] = lambda: _forward_only(fwd_tr, fwd_batch)
    timing = interleaved(fns, rounds)
    base = timing["plain (query views)"]["median"]
    # the plain step on every view GeSSL sees (support and query): the same samples and views
    same_views = timing["plain (support + query)"]["median"]
    fwd = timing["forward (query views)"]["median"]
    rows = []
    for name, cfg in configs.items():
        t = timing[name]["median"]
        passes = (
            cfg.get("inner_steps", 0) + cfg.get("lookahead_steps", 0) + 1
            if name.startswith("gessl")
            and cfg.get("order") != "second"
            and cfg.get("adapt") != "projector"
            else None
        )
        rows.append(
            {
                "method": method,
                "encoder": encoder,
                "config": name,
                "M": m,
                "N": n,
                "median_s": t,
                "q1_s": timing[name]["q1"],
                "q3_s": timing[name]["q3"],
                "ratio_to_plain": t / base,
                "ratio_to_plain_same_views": t / same_views,
                "minimum_passes": passes,
                "ratio_to_minimum": t / (passes * base) if passes else None,
                # the σ-term also needs the look-ahead model's forward on the query views
                "ratio_to_minimum_with_target_forward": (
                    t / (passes * base + fwd) if passes else None
                ),
            }
        )
    return rows


def _forward_only(tr: Trainer, batch: Any) -> None:
    """The embeddings of every task's query views without gradients: what the σ-term's
    look-ahead target costs on top of K + λ + 1 passes."""
    params = {k: v.detach() for k, v in tr.method.online_params().items()}
    with torch.no_grad():
        for i in range(batch.n_tasks):
            tr.method.embed(params, batch.query_a[i])
            tr.method.embed(params, batch.query_b[i])


def batching_costs(encoder: str, tasks: list[int], n: int, rounds: int) -> list[dict[str, Any]]:
    """vmap-batched tasks against a Python loop over tasks (first-order GeSSL, SimCLR)."""
    rows = []
    for m in tasks:
        fns = {}
        for b in ("vmap", "loop"):
            tr, batch = _trainer("simclr", encoder, m, n, batching=b)
            fns[b] = lambda tr=tr, batch=batch: tr.task_gradients(batch)
        t = interleaved(fns, rounds)
        rows.append(
            {
                "encoder": encoder,
                "M": m,
                "vmap_s": t["vmap"]["median"],
                "loop_s": t["loop"]["median"],
                "speedup": t["loop"]["median"] / t["vmap"]["median"],
            }
        )
    return rows


def sigma_cost(m: int, n: int, d: int, rounds: int) -> dict[str, Any]:
    """σ over M tasks of N×N logits against the matmul + log-sum-exp it needs."""
    g = torch.Generator().manual_seed(0)
    zq, zc, zo = (torch.randn(m, n, d, generator=g) for _ in range(3))

    def floor() -> Any:
        a, b = zq @ zc.transpose(1, 2), zq @ zo.transpose(1, 2)
        return torch.logsumexp(a, -1), torch.logsumexp(b, -1)

    def full() -> Any:
        return sigma_from_logits(zq @ zc.transpose(1, 2), zq @ zo.transpose(1, 2))

    t = interleaved({"floor": floor, "sigma": full}, rounds * 20, warmup=5)
    return {
        "M": m,
        "N": n,
        "d": d,
        "floor_s": t["floor"]["median"],
        "sigma_s": t["sigma"]["median"],
        "ratio": t["sigma"]["median"] / t["floor"]["median"],
    }


_MEMORY_SCRIPT = r"""
import json, sys, torch
sys.path.insert(0, {root!r})
from experiments.benchmark import _trainer

def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1])

cfg = json.loads(sys.argv[1])
tr, batch = _trainer(cfg.pop("method"), cfg.pop("encoder"), cfg.pop("M"), cfg.pop("N"), **cfg)
before = status("VmRSS:")  # model and batch built, no step taken yet
with open("/proc/self/clear_refs", "w") as fh:  # reset the peak (VmHWM) to the current RSS
    fh.write("5")
for _ in range(3):
    tr.train_step(batch)
print(json.dumps({{"before_kb": before, "peak_kb": status("VmHWM:")}}))
"""


def peak_memory(configs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Peak resident-set growth over the first 3 outer steps, each configuration in a fresh
    process: Linux's ``VmHWM`` reset through ``/proc/self/clear_refs``, since the CPU
    allocator has no counter like CUDA's ``max_memory_allocated``."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    script = _MEMORY_SCRIPT.format(root=root)
    rows = []
    for cfg in configs:
        proc = subprocess.run(
            [sys.executable, "-c", script, json.dumps(cfg)],
            capture_output=True,
            text=True,
            timeout=600,
        )
        if proc.returncode != 0:
            raise RuntimeError(f"memory probe failed for {cfg}: {proc.stderr[-2000:]}")
        r = json.loads(proc.stdout.strip().splitlines()[-1])
        rows.append({**cfg, "peak_growth_mb": (r["peak_kb"] - r["before_kb"]) / 1024})
    return rows


def bounds_wall_time() -> float:
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "GESSL_RUNS_DIR": tmp, "WANDB_MODE": "disabled"}
        start = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "experiments.bounds"],
            env=env,
            capture_output=True,
            timeout=900,
            check=False,
        )
        return time.perf_counter() - start


@validates(ex)
def _check(config: dict[str, Any]) -> None:
    check_choice("profile", config["profile"], PROFILES)
    check_int("threads", config["threads"], 1)


@ex.main
def main(
    profile: str,
    methods: list[str],
    encoders: list[str],
    n_samples: int,
    tasks_per_step: int,
    memory: bool,
    bounds_end_to_end: bool,
    threads: int,
    _run: Any,
) -> dict[str, Any]:
    torch.set_num_threads(threads)
    p = PROFILES[profile]
    steps = [
        row
        for meth in methods
        for enc in encoders
        for row in step_costs(meth, enc, p["grid"], tasks_per_step, n_samples, p["rounds"])
    ]
    batching = [
        row for enc in encoders for row in batching_costs(enc, p["tasks"], n_samples, p["rounds"])
    ]
    sig = [sigma_cost(m, 64, 128, p["rounds"]) for m in p["tasks"]]
    mem = (
        peak_memory(
            [
                {"method": "simclr", "encoder": "mlp", "M": tasks_per_step, "N": n_samples, **extra}
                for extra in (
                    {"mode": "plain", "use_support_in_plain": False},
                    {"inner_steps": 1},
                    {"inner_steps": 3},
                    {"inner_steps": 3, "order": "second"},
                    {"inner_steps": 3, "adapt": "projector"},
                )
            ]
        )
        if memory
        else []
    )
    bounds_s = bounds_wall_time() if bounds_end_to_end else None
    for i, r in enumerate(steps):
        _run.log_scalar(f"ratio_to_plain/{r['method']}/{r['encoder']}", r["ratio_to_plain"], i)
    table_rows = [
        [
            r["method"],
            r["encoder"],
            r["config"],
            round(r["median_s"] * 1e3, 2),
            round(r["ratio_to_plain"], 2),
            round(r["ratio_to_plain_same_views"], 2),
            None if r["ratio_to_minimum"] is None else round(r["ratio_to_minimum"], 2),
        ]
        for r in steps
    ]
    table = {
        "columns": [
            "method",
            "encoder",
            "configuration",
            "ms/step",
            "× plain",
            "× plain (same views)",
            "× minimum",
        ],
        "rows": table_rows,
    }
    _run.info["wandb_tables"] = {"overhead": {"columns": table["columns"], "data": table["rows"]}}
    summary = {
        "first_order_worst_ratio_to_minimum_with_target_forward": max(
            r["ratio_to_minimum_with_target_forward"]
            for r in steps
            if r["ratio_to_minimum_with_target_forward"] is not None
        ),
        "first_order_worst_ratio_to_minimum": max(
            r["ratio_to_minimum"] for r in steps if r["ratio_to_minimum"] is not None
        ),
        "projector_worst_ratio_to_plain": max(
            r["ratio_to_plain"] for r in steps if r["config"].endswith("projector")
        ),
        "projector_worst_ratio_to_plain_same_views": max(
            r["ratio_to_plain_same_views"] for r in steps if r["config"].endswith("projector")
        ),
        "vmap_min_speedup": min(r["speedup"] for r in batching),
        "vmap_mlp_speedup_at_M_ge_8": min(
            (r["speedup"] for r in batching if r["encoder"] == "mlp" and r["M"] >= 8), default=None
        ),
        "sigma_worst_ratio_to_floor": max(r["ratio"] for r in sig),
        "bounds_quick_seconds": bounds_s,
        "threads": threads,
        "machine": f"{os.cpu_count()} CPU cores, torch {torch.__version__}",
    }
    for k, v in summary.items():
        print(f"{k}: {v}")
    return {
        "summary": summary,
        "steps": steps,
        "batching": batching,
        "sigma": sig,
        "memory": mem,
        "table": table,
        "maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


if __name__ == "__main__":
    main_entry(ex)
