"""What GeSSL costs: step-time ratios against the plain step and the algorithmic minimum.

    python -m experiments.benchmark                    # quick profile (~3.5 min on 2 CPU cores)
    python -m experiments.benchmark with profile=full
    python -m experiments.benchmark with profile=gpu   # ResNet-18, CIFAR-shaped, float32 + bf16

Everything is measured side by side in one process: each configuration is warmed up, then the
configurations are timed in interleaved rounds (so drifts of a noisy machine hit all of them
alike) and the median and interquartile range are reported. Ratios are the product; absolute times
are machine-specific. Units: one *pass* is the forward and backward of the base loss on one pair
of views of every task. A plain step on the query views is 1 pass; first-order GeSSL needs K inner
passes, λ look-ahead passes and 1 outer pass, so its algorithmic minimum is K + λ + 1 plain steps.

A *peer* times the same outer step written with `higher` (Grefenstette et al. 2019, arXiv
1910.01727), the library MAML-style code is commonly written with (:class:`HigherPeer`, SimCLR,
first and second order); its rows are skipped, with a message, when `higher` is not installed
(``pip install -e '.[peers]'``). ``profile=gpu`` needs a CUDA device: ResNet-18 (width 64) on
3×32×32 synthetic images, M × N = 8 × 32 = 256 images per step, in float32 and bf16, with
images/s and the peak GPU memory of every configuration.
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
import warnings
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from experiments.tracking import main_entry, make_experiment
from experiments.validation import UsageError, check_choice, check_int, validates
from gessl.data import GaussianLatentTasks, SyntheticImageTasks
from gessl.devices import PRECISIONS, autocast, resolve_device
from gessl.losses import no_value_checks
from gessl.methods import Method, build_method
from gessl.methods.base import resolve_critic
from gessl.models import MLP, ResNet18, SmallCNN
from gessl.sigma import kl_in_direction, sigma_from_logits
from gessl.tasks import TaskBatch
from gessl.trainer import GeSSLConfig, PopulationTrainer, Trainer

ex = make_experiment("benchmark")

PROFILES: dict[str, dict[str, Any]] = {
    "quick": {
        "rounds": 7,
        "grid": [
            {"inner_steps": 1, "lookahead_steps": 1},
            {"inner_steps": 3, "lookahead_steps": 1},
            {"inner_steps": 1, "lookahead_steps": 3},
        ],
        "tasks": [4, 8, 16],
        "peer_grid": 1,  # the `higher` peer at the first grid point (K = λ = 1)
        "population": {"seeds": 10, "steps": 20, "rounds": 5},
    },
    "full": {
        "rounds": 15,
        "grid": [
            {"inner_steps": k, "lookahead_steps": lam} for k in (1, 2, 4) for lam in (0, 1, 3)
        ],
        "tasks": [2, 4, 8, 16, 32],
        "peer_grid": 9,
        "population": {"seeds": 10, "steps": 60, "rounds": 9},
    },
    "tiny": {
        "rounds": 2,
        "grid": [{"inner_steps": 1, "lookahead_steps": 1}],
        "tasks": [4],
        "peer_grid": 1,
        "population": {"seeds": 3, "steps": 2, "rounds": 2},
    },
    # one CUDA device: ResNet-18 on CIFAR-shaped images, float32 and bf16 (the methods and
    # encoders keys are replaced by the profile's; tasks_per_step × n_samples images per step)
    "gpu": {
        "rounds": 10,
        "grid": [{"inner_steps": 1, "lookahead_steps": 1}],
        "methods": ["simclr"],
        "encoders": ["resnet18"],
        "precisions": list(PRECISIONS),
        "peer_grid": 0,
    },
}
DEVICES = ("auto", "cpu", "cuda")
NO_CUDA = "profile=gpu needs a CUDA device; torch.cuda.is_available() is False"


@ex.config
def config() -> None:
    profile = "quick"  # "quick" (the README table's grid), "full", "tiny" (tests), "gpu" (CUDA)
    methods = ["simclr", "byol"]  # methods timed (profile=gpu: simclr)
    encoders = ["mlp", "cnn"]  # backbones timed (profile=gpu: resnet18, width 64, 3×32×32)
    n_samples = 32
    tasks_per_step = 8
    memory = True  # peak memory: RSS growth in subprocesses (CPU), max_memory_allocated (CUDA)
    bounds_end_to_end = True  # time `python -m experiments.bounds` (quick; CPU profiles only)
    threads = torch.get_num_threads()  # torch threads (default: as many as torch uses)
    device = "auto"  # "auto" (cpu for quick/full/tiny, cuda for gpu), "cpu" or "cuda"
    precision = "float32"  # "float32" or "bf16" (autocast); profile=gpu times both itself


def _trainer(
    method: str,
    encoder: str,
    m: int,
    n: int,
    device: str = "cpu",
    precision: str = "float32",
    **cfg: Any,
) -> tuple[Trainer, Any]:
    torch.manual_seed(0)
    if encoder == "mlp":  # the backbone dominates the cost, as it does for real encoders
        net, sampler = MLP(64, width=512, depth=3), GaussianLatentTasks(dim=64)
    elif encoder == "resnet18":  # CIFAR-shaped: 3×32×32
        net, sampler = ResNet18(3, width=64), SyntheticImageTasks(size=32, channels=3)
    else:
        net, sampler = SmallCNN(1, 16), SyntheticImageTasks(size=16)
    model = build_method(method, net, proj_dims=(128, 64))
    tr = Trainer(
        model,
        sampler,
        GeSSLConfig(tasks_per_step=m, precision=precision, **cfg),
        n_samples=n,
        device=device,
    )
    return tr, tr.sample()


# ------------------------------------------------------------------ the `higher` peer
def import_higher() -> Any | None:
    """The ``higher`` module, or ``None`` when it is not importable.

    higher 0.2.1 (2020) holds string escapes and an ``is`` with a literal that Python warns
    about when it compiles them (``DeprecationWarning`` on 3.11, ``SyntaxWarning`` from 3.12);
    those warnings are silenced for this import only, so a test run that turns warnings into
    errors can still import it when no compiled files exist.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", SyntaxWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            import higher
    except ImportError:
        return None
    return higher


class HigherPeer:
    """GeSSL's outer step written the way a researcher would write it with ``higher``.

    ``higher`` (Grefenstette et al. 2019, arXiv 1910.01727) unrolls an inner optimiser over a
    patched module. For each of the M tasks in a Python loop: ``higher.innerloop_ctx`` with a
    differentiable SGD (step size α) takes the K inner steps on the support views; λ look-ahead
    steps from the detached adapted weights, without a graph, give the target θ̃; the outer loss is
    ``ℓ(θ_K; query) + γ·KL(π_θ ‖ π_θ̃)`` with the trainer's critic (``sigma_critic``,
    ``sigma_temperature``). First order (``track_higher_grads=False``): the outer gradient at
    θ_K is added to φ's gradient (FOMAML); second order: ``backward`` through the unrolled inner
    steps. Then the trainer's outer optimiser step. The losses are the method's own, so only the
    meta-learning machinery differs from :meth:`gessl.trainer.Trainer.train_step`.

    Written for SimCLR (no momentum targets, no predictor) with every parameter adapted and no
    threshold network; the trainer's options otherwise.
    """

    def __init__(self, method: Method, cfg: GeSSLConfig) -> None:
        higher = import_higher()
        if higher is None:
            raise ImportError("the higher peer needs `higher`: pip install -e '.[peers]'")
        if method.name != "simclr":
            raise ValueError(f"the higher peer is written for method 'simclr', got {method.name!r}")
        wanted = {"mode": "gessl", "adapt": "all", "threshold": "none"}
        for key, value in wanted.items():
            if getattr(cfg, key) != value:
                raise ValueError(
                    f"the higher peer needs {key}={value!r}, got {getattr(cfg, key)!r}"
                )
        self.higher, self.method, self.cfg = higher, method, cfg
        self.net = nn.Sequential(method.backbone, method.projector)  # shares φ with the method
        self.params = list(self.net.parameters())
        if [id(p) for p in self.params] != [id(p) for p in method.online_params().values()]:
            raise ValueError("the higher peer needs φ = backbone and projector parameters")
        self.inner_opt = torch.optim.SGD(self.params, lr=cfg.inner_lr)
        opt_cls = torch.optim.Adam if cfg.optimizer == "adam" else torch.optim.SGD
        self.optimizer = opt_cls(self.params, lr=cfg.outer_lr, weight_decay=cfg.weight_decay)
        self.critic = resolve_critic(
            method, cfg.sigma_critic, cfg.sigma_temperature, argument="sigma_critic"
        )

    def _ssl(self, za: Tensor, zb: Tensor) -> Tensor:
        return self.method.loss_from_projections({}, za, zb, None).loss

    def _kl(self, lp_model: Tensor, lp_target: Tensor) -> Tensor:
        return kl_in_direction(lp_model, lp_target, self.cfg.kl_direction).mean()

    def _lookahead(self, fnet: Any, theta: list[Tensor], sa: Tensor, sb: Tensor) -> list[Tensor]:
        """λ plain SGD steps on the support views from sg(θ_K), no graph kept."""
        w = [p.detach().requires_grad_() for p in theta]
        for _ in range(self.cfg.lookahead_steps):
            g = torch.autograd.grad(self._ssl(fnet(sa, params=w), fnet(sb, params=w)), w)
            w = [(p - self.cfg.inner_lr * gp).detach().requires_grad_() for p, gp in zip(w, g)]
        return w

    def gradients(self, batch: TaskBatch) -> dict[str, Tensor]:
        """φ's gradient of the mean task objective (left in ``.grad``), by parameter name."""
        cfg, m = self.cfg, batch.n_tasks
        second = cfg.order == "second"
        for p in self.params:
            p.grad = None
        with no_value_checks():  # as in the trainer's hot loop
            for i in range(m):
                sa, sb = batch.support_a[i], batch.support_b[i]
                qa, qb = batch.query_a[i], batch.query_b[i]
                with self.higher.innerloop_ctx(
                    self.net,
                    self.inner_opt,
                    copy_initial_weights=False,
                    track_higher_grads=second,
                ) as (fnet, diffopt):
                    for _ in range(cfg.inner_steps):
                        diffopt.step(self._ssl(fnet(sa), fnet(sb)))
                    theta = list(fnet.parameters())
                    za, zb = fnet(qa, params=theta), fnet(qb, params=theta)
                    loss = self._ssl(za, zb)
                    if cfg.sigma_weight > 0:
                        look = self._lookahead(fnet, theta, sa, sb)
                        with torch.no_grad():
                            lp_target = self.critic.log_probs(
                                fnet(qa, params=look), fnet(qb, params=look)
                            )
                        kl = self._kl(self.critic.log_probs(za, zb), lp_target)
                        loss = loss + cfg.sigma_weight * kl
                    loss = loss / m
                    if second:  # through the unrolled inner steps into φ
                        loss.backward()
                    else:  # FOMAML: the gradient at θ_K, copied onto φ
                        for p, g in zip(self.params, torch.autograd.grad(loss, theta)):
                            p.grad = g if p.grad is None else p.grad + g
        return {k: p.grad for k, p in self.method.online_params().items()}

    def step(self, batch: TaskBatch) -> None:
        """One outer step: :meth:`gradients`, then the outer optimiser's step."""
        self.gradients(batch)
        self.optimizer.step()


def _peer(encoder: str, m: int, n: int, device: str, **cfg: Any) -> tuple[HigherPeer, TaskBatch]:
    """The peer on the model and batch :func:`_trainer` builds for the same options."""
    tr, batch = _trainer("simclr", encoder, m, n, device=device, **cfg)
    return HigherPeer(tr.method, tr.cfg), batch


def interleaved(
    fns: dict[str, Callable[[], Any]],
    rounds: int,
    warmup: int = 2,
    device: torch.device | str = "cpu",
) -> dict[str, dict[str, float]]:
    """Median and quartiles of each function's wall time over interleaved rounds (on CUDA,
    each call is followed by a synchronisation, so the time is the kernels', not the launch's)."""
    sync = _synchronizer(device)
    for fn in fns.values():
        for _ in range(warmup):
            fn()
            sync()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(rounds):
        for k, fn in fns.items():
            start = time.perf_counter()
            fn()
            sync()
            times[k].append(time.perf_counter() - start)
    out = {}
    for k, ts in times.items():
        q = statistics.quantiles(ts, n=4) if len(ts) >= 2 else [ts[0]] * 3
        out[k] = {"median": statistics.median(ts), "q1": q[0], "q3": q[2], "n": len(ts)}
    return out


def _synchronizer(device: torch.device | str) -> Callable[[], None]:
    dev = torch.device(device)
    if dev.type == "cuda":
        return lambda: torch.cuda.synchronize(dev)
    return lambda: None


def step_configs(grid: list[dict]) -> dict[str, dict[str, Any]]:
    """The timed configurations by row name: the two plain steps, then first order, second
    order and projector-only GeSSL at every (K, λ) of ``grid``."""
    configs: dict[str, dict[str, Any]] = {
        "plain (query views)": {"mode": "plain", "use_support_in_plain": False},
        "plain (support + query)": {"mode": "plain"},
    }
    for g in grid:
        k, lam = g["inner_steps"], g["lookahead_steps"]
        configs[f"gessl K={k} λ={lam} first"] = {**g}
        configs[f"gessl K={k} λ={lam} second"] = {**g, "order": "second"}
        configs[f"gessl K={k} λ={lam} projector"] = {**g, "adapt": "projector"}
    return configs


def step_costs(
    method: str,
    encoder: str,
    grid: list[dict],
    m: int,
    n: int,
    rounds: int,
    device: str = "cpu",
    precision: str = "float32",
    peer_grid: int = 0,
) -> list[dict[str, Any]]:
    """Plain vs GeSSL outer steps on one fixed batch; ratios to plain and to K + λ + 1.

    With ``peer_grid`` > 0 (SimCLR, float32, `higher` importable) the :class:`HigherPeer` is
    timed in the same rounds at the first ``peer_grid`` grid points, first and second order;
    its rows carry ``project_over_peer``, the project's time over the peer's."""
    on = {"device": device, "precision": precision}
    dev = resolve_device(device)
    configs = step_configs(grid)
    fns = {}
    for name, cfg in configs.items():
        tr, batch = _trainer(method, encoder, m, n, **on, **cfg)
        fns[name] = lambda tr=tr, batch=batch: tr.train_step(batch)
    peers: dict[str, str] = {}  # peer row → the project's row of the same computation
    if peer_grid and method == "simclr" and precision == "float32" and import_higher():
        for g in grid[:peer_grid]:
            k, lam = g["inner_steps"], g["lookahead_steps"]
            for order in ("first", "second"):
                name = f"higher K={k} λ={lam} {order}"
                peer, batch = _peer(encoder, m, n, device, **g, order=order)
                fns[name] = lambda peer=peer, batch=batch: peer.step(batch)
                peers[name] = f"gessl K={k} λ={lam} {order}"
    fwd_tr, fwd_batch = _trainer(method, encoder, m, n, **on)
    fns["forward (query views)"] = lambda: _forward_only(fwd_tr, fwd_batch)
    timing = interleaved(fns, rounds, device=dev)
    base = timing["plain (query views)"]["median"]
    # the plain step on every view GeSSL sees (support and query): the same samples and views
    same_views = timing["plain (support + query)"]["median"]
    fwd = timing["forward (query views)"]["median"]
    rows = []
    for name in [*configs, *peers]:
        cfg = configs.get(name, {})
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
                "device": str(dev),
                "precision": precision,
                "median_s": t,
                "q1_s": timing[name]["q1"],
                "q3_s": timing[name]["q3"],
                "images_per_s": m * n / t,
                "ratio_to_plain": t / base,
                "ratio_to_plain_same_views": t / same_views,
                "minimum_passes": passes,
                "ratio_to_minimum": t / (passes * base) if passes else None,
                # the σ-term also needs the look-ahead model's forward on the query views
                "ratio_to_minimum_with_target_forward": (
                    t / (passes * base + fwd) if passes else None
                ),
                # < 1: the project's step is faster than the peer's for the same computation
                "project_over_peer": (timing[peers[name]]["median"] / t if name in peers else None),
            }
        )
    return rows


def _forward_only(tr: Trainer, batch: Any) -> None:
    """The embeddings of every task's query views without gradients: what the σ-term's
    look-ahead target costs on top of K + λ + 1 passes."""
    params = {k: v.detach() for k, v in tr.method.online_params().items()}
    with torch.no_grad(), autocast(batch.query_a.device, tr.cfg.precision):
        for i in range(batch.n_tasks):
            tr.method.embed(params, batch.query_a[i])
            tr.method.embed(params, batch.query_b[i])


def batching_costs(
    encoder: str, tasks: list[int], n: int, rounds: int, device: str = "cpu"
) -> list[dict[str, Any]]:
    """vmap-batched tasks against a Python loop over tasks (first-order GeSSL, SimCLR)."""
    rows = []
    for m in tasks:
        fns = {}
        for b in ("vmap", "loop"):
            tr, batch = _trainer("simclr", encoder, m, n, device=device, batching=b)
            fns[b] = lambda tr=tr, batch=batch: tr.task_gradients(batch)
        t = interleaved(fns, rounds, device=device)
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


def population_costs(
    seeds: int, steps: int, rounds: int, device: str = "cpu"
) -> list[dict[str, Any]]:
    """S seeds of the fair test's model (:mod:`theory.fair_test`: InfoNCE, two-headed critic, one
    affine layer, M = 16 tasks of N = 16) trained for ``steps`` outer steps as one population
    (:class:`gessl.trainer.PopulationTrainer`) against a loop of S separate
    :class:`~gessl.trainer.Trainer` runs, for each arm (plain, meta, GeSSL), interleaved; both
    include building the trainers and drawing the tasks (what a user pays)."""
    from theory.fair_test import MODES, FairTest, build_model
    from theory.task_families import FamilySampler

    test = FairTest()
    sampler = FamilySampler(test.task_family)
    members = list(range(seeds))
    fns: dict[str, Callable[[], Any]] = {}
    for mode in MODES:
        cfg = test.config(mode)

        def loop(mode: str = mode) -> None:
            for s in members:
                tr = Trainer(build_model(test, s), sampler, test.config(mode, s), 16, device=device)
                tr.fit(steps, progress=False)

        def population(cfg: GeSSLConfig = cfg) -> None:
            methods = [build_model(test, s) for s in members]
            pop = PopulationTrainer(methods, sampler, cfg, members, 16, device=device)
            pop.fit(steps, progress=False)

        fns[f"{mode} loop"], fns[f"{mode} population"] = loop, population
    timing = interleaved(fns, rounds, warmup=1, device=device)
    return [
        {
            "arm": mode,
            "seeds": seeds,
            "steps": steps,
            "loop_s": timing[f"{mode} loop"]["median"],
            "population_s": timing[f"{mode} population"]["median"],
            "speedup": timing[f"{mode} loop"]["median"] / timing[f"{mode} population"]["median"],
        }
        for mode in MODES
    ]


def sigma_cost(m: int, n: int, d: int, rounds: int, device: str = "cpu") -> dict[str, Any]:
    """σ over M tasks of N×N logits against the matmul + log-sum-exp it needs."""
    g = torch.Generator().manual_seed(0)
    zq, zc, zo = (torch.randn(m, n, d, generator=g).to(device) for _ in range(3))

    def floor() -> Any:
        a, b = zq @ zc.transpose(1, 2), zq @ zo.transpose(1, 2)
        return torch.logsumexp(a, -1), torch.logsumexp(b, -1)

    def full() -> Any:
        return sigma_from_logits(zq @ zc.transpose(1, 2), zq @ zo.transpose(1, 2))

    t = interleaved({"floor": floor, "sigma": full}, rounds * 20, warmup=5, device=device)
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


def cuda_peak_memory(configs: list[dict[str, Any]], device: str) -> list[dict[str, Any]]:
    """Peak GPU memory over the first 3 outer steps of each configuration, built alone on the
    device: ``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats``; also its
    growth over what the model, optimiser and batch hold before the first step."""
    dev = resolve_device(device)
    rows = []
    for cfg in configs:
        c = {k: v for k, v in cfg.items() if k != "config"}  # "config": the row's name
        tr, batch = _trainer(c.pop("method"), c.pop("encoder"), c.pop("M"), c.pop("N"), **c)
        torch.cuda.synchronize(dev)
        torch.cuda.reset_peak_memory_stats(dev)
        before = torch.cuda.memory_allocated(dev)
        for _ in range(3):
            tr.train_step(batch)
        torch.cuda.synchronize(dev)
        peak = torch.cuda.max_memory_allocated(dev)
        rows.append({**cfg, "peak_mb": peak / 2**20, "peak_growth_mb": (peak - before) / 2**20})
        del tr, batch
        torch.cuda.empty_cache()
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
    check_choice("device", config["device"], DEVICES)
    # precision, and a cuda device without CUDA, are refused by the shared checks
    # (experiments.validation) before this runs
    if config["profile"] == "gpu":
        if not torch.cuda.is_available():
            raise UsageError(NO_CUDA)
        if config["device"] == "cpu":
            raise UsageError("device: profile=gpu runs on CUDA, got 'cpu' (allowed: auto, cuda)")
        if config["precision"] != "float32":
            raise UsageError(
                f"precision: profile=gpu times float32 and bf16 itself, got "
                f"{config['precision']!r} (allowed: float32, the default)"
            )


PEER_MISSING = "skipped: `higher` is not importable (pip install -e '.[peers]')"


def _peer_status(methods: list[str], precision: str) -> str:
    """What the summary says about the `higher` peer rows."""
    higher = import_higher()
    if higher is None:
        return PEER_MISSING
    if "simclr" not in methods:
        return "skipped: the peer is written for SimCLR, which methods does not include"
    if precision != "float32":
        return f"skipped: the peer runs in float32 only (precision={precision})"
    from importlib.metadata import version

    return f"higher {version('higher')}"


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
    device: str,
    precision: str,
    _run: Any,
) -> dict[str, Any]:
    torch.set_num_threads(threads)
    p = PROFILES[profile]
    if profile == "gpu":
        return gpu_main(p, tasks_per_step, n_samples, memory, device, _run)
    dev = str(resolve_device("cpu" if device == "auto" else device))
    prec = precision
    peer = _peer_status(methods, prec)
    if peer.startswith("skipped"):
        print(f"higher peer rows {peer}")
    steps = [
        row
        for meth in methods
        for enc in encoders
        for row in step_costs(
            meth,
            enc,
            p["grid"],
            tasks_per_step,
            n_samples,
            p["rounds"],
            dev,
            prec,
            p["peer_grid"],
        )
    ]
    batching = [
        row
        for enc in encoders
        for row in batching_costs(enc, p["tasks"], n_samples, p["rounds"], dev)
    ]
    sig = [sigma_cost(m, 64, 128, p["rounds"], dev) for m in p["tasks"]]
    pop = population_costs(**p["population"], device=dev)
    mem_configs = [
        {"method": "simclr", "encoder": "mlp", "M": tasks_per_step, "N": n_samples, **extra}
        for extra in (
            {"mode": "plain", "use_support_in_plain": False},
            {"inner_steps": 1},
            {"inner_steps": 3},
            {"inner_steps": 3, "order": "second"},
            {"inner_steps": 3, "adapt": "projector"},
        )
    ]
    if not memory:
        mem = []
    elif dev == "cpu":
        mem = peak_memory([{**c, "precision": prec} for c in mem_configs])
    else:
        mem = cuda_peak_memory([{**c, "device": dev, "precision": prec} for c in mem_configs], dev)
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
            None if r["project_over_peer"] is None else round(r["project_over_peer"], 2),
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
            "project / higher",
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
        "population_min_speedup": min(r["speedup"] for r in pop),
        **{f"population_speedup_{r['arm']}": r["speedup"] for r in pop},
        "bounds_quick_seconds": bounds_s,
        "higher_peer": peer,
        # the project's step time over the peer's for the same computation (< 1: faster);
        # the largest over the peer's grid points
        **{
            f"project_over_higher_{enc}_{order}": max(
                r["project_over_peer"]
                for r in steps
                if r["encoder"] == enc
                and r["project_over_peer"] is not None
                and r["config"].endswith(order)
            )
            for enc in encoders
            for order in ("first", "second")
            if any(r["encoder"] == enc and r["project_over_peer"] is not None for r in steps)
        },
        "threads": threads,
        "device": dev,
        "precision": prec,
        "machine": f"{os.cpu_count()} CPU cores, torch {torch.__version__}",
    }
    for k, v in summary.items():
        print(f"{k}: {v}")
    return {
        "summary": summary,
        "steps": steps,
        "batching": batching,
        "sigma": sig,
        "population": pop,
        "memory": mem,
        "table": table,
        "maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


# ------------------------------------------------------------------ profile=gpu
def gpu_main(
    p: dict[str, Any],
    m: int,
    n: int,
    memory: bool,
    device: str,
    _run: Any,
) -> dict[str, Any]:
    """profile=gpu: plain vs GeSSL (first order, second order, projector) on one CUDA device,
    each in float32 and bf16: images/s (M × N source images per
    outer step), ratios to the plain steps, and the peak GPU memory of every configuration."""
    dev = str(resolve_device("cuda" if device == "auto" else device))
    precisions = p["precisions"]
    # memory first, each configuration built alone on the device (its peak is its own)
    mem = (
        cuda_peak_memory(
            [
                {
                    "method": meth,
                    "encoder": enc,
                    "M": m,
                    "N": n,
                    "device": dev,
                    "precision": prec,
                    "config": name,
                    **cfg,
                }
                for prec in precisions
                for meth in p["methods"]
                for enc in p["encoders"]
                for name, cfg in step_configs(p["grid"]).items()
            ],
            dev,
        )
        if memory
        else []
    )
    peak = {(r["precision"], r["method"], r["encoder"], r["config"]): r["peak_mb"] for r in mem}
    steps = [
        {**row, "peak_mb": peak.get((prec, meth, enc, row["config"]))}
        for prec in precisions
        for meth in p["methods"]
        for enc in p["encoders"]
        for row in step_costs(meth, enc, p["grid"], m, n, p["rounds"], dev, prec)
    ]
    fp32 = {
        (r["method"], r["encoder"], r["config"]): r for r in steps if r["precision"] == "float32"
    }
    for r in steps:
        ref = fp32.get((r["method"], r["encoder"], r["config"]))
        r["bf16_speedup"] = (
            ref["median_s"] / r["median_s"] if ref and r["precision"] == "bf16" else None
        )
    columns = [
        "method",
        "encoder",
        "precision",
        "configuration",
        "ms/step",
        "images/s",
        "× plain",
        "× plain (same views)",
        "peak MB",
    ]
    rows = [
        [
            r["method"],
            r["encoder"],
            r["precision"],
            r["config"],
            round(r["median_s"] * 1e3, 2),
            round(r["images_per_s"], 1),
            round(r["ratio_to_plain"], 2),
            round(r["ratio_to_plain_same_views"], 2),
            None if r["peak_mb"] is None else round(r["peak_mb"]),
        ]
        for r in steps
    ]
    table = {"columns": columns, "rows": rows}
    _run.info["wandb_tables"] = {"gpu": {"columns": columns, "data": rows}}
    print("| " + " | ".join(columns) + " |")
    print("|" + "---|" * len(columns))
    for row in rows:
        print("| " + " | ".join("—" if v is None else str(v) for v in row) + " |")
    gessl = [r for r in steps if r["config"].startswith("gessl")]
    summary = {
        "device": f"{torch.cuda.get_device_name(dev)} ({dev})" if dev.startswith("cuda") else dev,
        "machine": f"torch {torch.__version__}, CUDA {torch.version.cuda}",
        "images_per_step": m * n,
        **{
            f"ratio_to_plain/{r['precision']}/{r['config']}": round(r["ratio_to_plain"], 3)
            for r in gessl
        },
        **{
            f"images_per_s/{r['precision']}/{r['config']}": round(r["images_per_s"], 1)
            for r in steps
        },
        **{
            f"bf16_speedup/{r['config']}": round(r["bf16_speedup"], 3)
            for r in steps
            if r["bf16_speedup"] is not None
        },
        **{f"peak_mb/{r['precision']}/{r['config']}": round(r["peak_mb"], 1) for r in mem},
    }
    for k, v in summary.items():
        print(f"{k}: {v}")
    return {"summary": summary, "steps": steps, "memory": mem, "table": table}


if __name__ == "__main__":
    main_entry(ex)
