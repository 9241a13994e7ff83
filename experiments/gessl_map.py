"""The map of where GeSSL lowers σ: its knobs × the task families, on paired seeds.

    python -m experiments.gessl_map                               # quick (~1.5 min, 2 CPU cores)
    python -m experiments.gessl_map with profile=full             # the documented full map
    python -m experiments.gessl_map with 'families=["subspace"]' 'sweep={"inner_lr": [0.1, 1.0]}'
    python -m experiments.gessl_map with shard=1/4                # one quarter of the jobs
    python -m experiments.gessl_map with jobs=1                   # one process (same numbers)

Each knob (α, K, λ, γ, order, adapt, kl_direction, critic) is varied around the reproduction
claims' setting (``theory/map_grid.py``), on each family, and every cell compares GeSSL with
the plain base method and with first-order meta-learning without the σ-term (λ = γ = 0), the
three trained from the same initialisation on the same tasks, per seed, and measured on the
same fresh tasks after the same test-time adaptation (``docs/reproduction.md``). The jobs
(trainings and floor fits) run as units (:func:`theory.map_grid.units`: the trainings of one
setting on every task family as one population) in ``jobs`` worker processes; ``shard="i/n"``
runs every n-th unit only, and ``python -m paper_figures`` merges the shards of one map (same
``map_id``).

Records (``runs/<id>/``): ``map.json`` (the spec, the shard, every job's result), and for a
whole map ``map_cells.json`` (the assembled cells, floors) and the heat maps ``gessl_map.png``.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from functools import partial
from typing import Any

from experiments.parallel import engine, in_workers, reseed
from experiments.tracking import main_entry, make_experiment
from experiments.validation import UsageError, check_choice, check_choices, check_int, validates
from gessl.progress import progress
from theory.map_grid import KNOBS, PROFILES, assemble, cells, map_id, plan, shard_of, units

ex = make_experiment("gessl_map")


@ex.config
def config() -> None:
    profile = "quick"  # "quick" (~1.5 min on 2 cores), "full" (~5 min), "tiny" (tests)
    families = None  # default: the profile's (homogeneous, subspace, noise_level)
    sweep = None  # {knob: [values]}; default: the profile's
    panel = None  # {axis: [values]} of dim, signal, encoder_depth, every combination a cell
    seeds = None  # number of paired seeds; default: the profile's
    steps = None  # outer steps of every training; default: the profile's
    jobs = 0  # worker processes; 0 = one per CPU core (the numbers are the same for any value)
    scheduler = None  # a running Dask scheduler, "tcp://host:8786" (else $GESSL_DASK_SCHEDULER)
    cluster = None  # start a Dask cluster: "local" (jobs workers here) or "slurm" (dask-jobqueue)
    cluster_options = None  # the cluster's options, e.g. {"queue": "cpu", "walltime": "01:00:00"}
    shard = "1/1"  # "i/n": run every n-th job from the i-th (merge with python -m paper_figures)
    figures = True  # draw the heat maps (whole maps only)
    device = "auto"  # "auto" (CUDA when available, else CPU), "cpu", "cuda", "cuda:<i>"


@validates(ex)
def _check(config: dict[str, Any]) -> None:
    """Every setting of every cell, the shard, the families: before any job runs."""
    from theory.task_families import FAMILIES

    check_choice("profile", config["profile"], PROFILES)
    if config["families"] is not None:
        check_choices("families", config["families"], FAMILIES, empty=False)
    if config["steps"] is not None:
        check_int("steps", config["steps"], 1)
    sweep = config["sweep"]
    if sweep is not None and not (
        isinstance(sweep, dict) and all(isinstance(v, list) and v for v in sweep.values())
    ):
        raise UsageError(f"sweep: expected {{knob: [values, ...]}}, got {sweep!r}")
    panel = config["panel"]
    if panel is not None and not (
        isinstance(panel, dict) and all(isinstance(v, list) and v for v in panel.values())
    ):
        raise UsageError(f"panel: expected {{axis: [values, ...]}}, got {panel!r}")
    if not isinstance(config["shard"], str):
        raise UsageError(f"shard: expected 'i/n', got {config['shard']!r}")
    spec = make_spec(
        **{k: config[k] for k in ("profile", "families", "sweep", "panel", "seeds", "steps")}
    )
    for cell in cells(spec):
        _fair(spec, cell["family"], cell["options"])
    shard_of(units(plan(spec)), config["shard"])


def make_spec(
    profile: str,
    families: list[str] | None,
    sweep: dict[str, list[Any]] | None,
    panel: dict[str, list[Any]] | None,
    seeds: int | None,
    steps: int | None,
) -> dict[str, Any]:
    """Everything the map's numbers depend on (its ``map_id`` is a hash of this)."""
    p = PROFILES[profile]
    if seeds is not None and (not isinstance(seeds, int) or seeds < 2):
        raise ValueError(f"seeds must be an integer >= 2 (paired comparisons), got {seeds!r}")
    return {
        "families": list(families or p["families"]),
        "sweep": {k: list(v) for k, v in (sweep or p["sweep"]).items()},
        "panel": {k: list(v) for k, v in (p["panel"] if panel is None else panel).items()},
        "seeds": int(seeds or p["seeds"]),
        "steps": int(steps or p["steps"]),
        "outer_lr": p.get("outer_lr", 3e-2),
        "val_tasks": p["val_tasks"],
        "eval_tasks": p["eval_tasks"],
        "floor_tasks": p["floor_tasks"],
        "floor_polish": p["floor_polish"],
        "tasks_per_step": 16,
        "n_samples": 16,
        "base": base_setting(),
    }


def base_setting() -> dict[str, Any]:
    """The setting every knob is varied around: the reproduction claims' (the fair test's GeSSL
    options, :data:`theory.fair_test.FAIR_SETTING` on :class:`gessl.trainer.GeSSLConfig`'s
    defaults, and its critic), read from there."""
    from theory.fair_test import FairTest
    from theory.task_families import FAMILIES, make_family

    test = FairTest()
    g = test.gessl_config.to_dict()
    # the families' own dimension and signal, spelled out where they all share them, so that a
    # panel cell at those values is the base setting (the same jobs) rather than a copy of it
    shared = {(make_family(f).dim, make_family(f).latent_scale) for f in FAMILIES}
    dim, signal = shared.pop() if len(shared) == 1 else (test.dim, test.signal)
    own = {"critic": test.critic, "dim": test.dim or dim, "signal": test.signal or signal}
    own["encoder_depth"] = test.encoder_depth
    return {k: own[k] if k in own else g[k] for k in KNOBS}


def _fair(spec: dict[str, Any], family: str, options: dict[str, Any]) -> Any:
    from theory.fair_test import FairTest

    model_keys = ("critic", "temperature", "encoder_depth", "dim", "signal")
    gessl = {k: v for k, v in options.items() if k not in model_keys}
    gessl.update(outer_lr=spec["outer_lr"], tasks_per_step=spec["tasks_per_step"])
    return FairTest(
        family=family,
        steps=spec["steps"],
        eval_tasks=spec["eval_tasks"],
        val_tasks=spec["val_tasks"],
        n_samples=spec["n_samples"],
        gessl=gessl,
        **{k: options[k] for k in model_keys if k in options},
    )


def run_unit(unit: dict[str, Any], spec: dict[str, Any], device: str = "auto") -> list[dict]:
    """One work unit of :func:`theory.map_grid.units`, a result per job: a floor fit (shared
    and per task, both KL directions), or the training jobs of one setting on several task
    families — every seed of every job trained as one population
    (:func:`theory.fair_test.train_settings`) and each model measured at its own protocols
    (:mod:`theory.fair_eval`: its calibrated σ of φ, its tuned (K, α), and the cells' fixed
    (K, α))."""
    from theory.fair_eval import Protocol, measure, task_sets
    from theory.fair_test import train_settings

    start = time.perf_counter()
    jobs = unit["jobs"]
    if jobs[0]["kind"] == "floor":
        return [_floor(jobs[0], spec)]
    tests = [_fair(spec, j["family"], j["options"]) for j in jobs]
    seeds = jobs[0]["seeds"]
    reseed(seeds[0])
    trained = train_settings(tests, jobs[0]["mode"], seeds, device=device)
    runs = [
        {
            str(s): {
                "diverged": r.diverged,
                "metrics": {},
                "train_seconds": r.seconds,
                "path": r.path,
            }
            for s, r in zip(seeds, job_runs)
        }
        for job_runs in trained
    ]
    # a blown-up model is measured; a non-finite one is not
    alive = [
        (i, s, r)
        for i, job_runs in enumerate(trained)
        for s, r in zip(seeds, job_runs)
        if r.diverged is None or "blew up" in r.diverged
    ]
    # one measurement per adapted parameter set: the cells read no σ-term, so their λ and KL
    # direction do not change what is measured (calibration, tuning and their fixed protocols)
    groups: dict[str, dict[str, dict]] = {}
    for job in jobs:
        for name, ev in job["evals"].items():
            groups.setdefault(ev["adapt"], {})[name] = ev
    if alive:
        n = tests[0].n_samples
        sets = [task_sets(tests[i].task_family, s, spec["val_tasks"], spec["eval_tasks"], n)
                for i, s, _ in alive]  # fmt: skip
        method = alive[0][2].method
        models = [dict(r.method.online_params()) for _, _, r in alive]
        for adapt, evs in groups.items():
            protocols = list(
                dict.fromkeys(Protocol(ev["test_steps"], ev["test_lr"]) for ev in evs.values())
            )
            records = measure(
                method,
                models,
                [v for v, _ in sets],
                [t for _, t in sets],
                fixed=protocols,
                lookahead=0,  # no σ-term is read
                names=method.head_names() if adapt == "projector" else None,
            )
            for (i, s, _), rec in zip(alive, records):
                for name in jobs[i]["evals"]:
                    ev = evs.get(name)
                    if ev is None:  # another adapt group's
                        continue
                    fixed = rec["fixed"][Protocol(ev["test_steps"], ev["test_lr"]).label]
                    runs[i][str(s)]["metrics"][name] = {
                        "sigma_phi": rec["sigma_phi_raw"],
                        "sigma_phi_calibrated": rec["sigma_phi_calibrated"],
                        "sigma_adapted_tuned": rec["sigma_adapted_tuned"],
                        "sigma_adapted": fixed["sigma_adapted"],
                        "excess_adapted": fixed["excess_adapted"],
                        "beta_sigma": rec["beta_sigma"],
                        "protocol_sigma": rec["protocol_sigma"],
                    }
    share = (time.perf_counter() - start) / len(jobs)
    return [
        {
            "kind": "train",
            "key": job["key"],
            "family": job["family"],
            "mode": job["mode"],
            "options": job["options"],
            "runs": job_runs,
            "seconds": share,
            "unit_jobs": len(jobs),
        }
        for job, job_runs in zip(jobs, runs)
    ]


def _floor(job: dict[str, Any], spec: dict[str, Any]) -> dict[str, Any]:
    """A floor fit: the model family's shared and per-task floors, both KL directions."""
    from theory.fair_eval import task_sets
    from theory.fair_test import build_model
    from theory.floors import fit_floor

    start = time.perf_counter()
    test = _fair(spec, job["family"], job["options"])
    reseed(0)
    _, t = task_sets(test.task_family, 0, 1, spec["eval_tasks"], test.n_samples)
    method = build_model(test, 0)
    critic, k = method.task_critic(), spec["floor_tasks"]
    floors = {}
    for direction in ("sigma", "sigma_excess"):
        q = (t.batch.query_a, t.batch.query_b)
        shared = fit_floor(method, critic, q, t.lp, direction, polish_iter=spec["floor_polish"])
        floors[f"shared_{direction}"] = shared.to_dict()
        floors[f"per_task_{direction}"] = fit_floor(
            method, critic, (q[0][:k], q[1][:k]), t.lp[:k], direction, "per_task",
            init=shared.params,
        ).to_dict()  # fmt: skip
    return {
        "kind": "floor",
        "key": job["key"],
        "family": job["family"],
        "options": job["options"],
        "floors": floors,
        "seconds": time.perf_counter() - start,
    }


def summary_table(assembled: dict[str, Any]) -> str:
    """One line per cell: the primary differences GeSSL − plain (σ of φ calibrated, σ after the
    tuned adaptation), the one at the cell's own (K, α), significance, divergence."""
    cols = (
        ("gessl-plain:sigma_phi_calibrated", "Δσ φ calibrated"),
        ("gessl-plain:sigma_adapted_tuned", "Δσ adapted, tuned"),
        ("gessl-plain:sigma_adapted", "Δσ adapted, cell's (K, α)"),
    )
    head = (
        f"{'family':12s} {'knob':15s} {'value':>32s}  "
        + "  ".join(f"{title:>30s}" for _, title in cols)
        + "  diverged p/m/g"
    )
    lines = [head, "-" * len(head)]
    for c in assembled["cells"]:
        parts = []
        for key, _ in cols:
            t = c["tests"][key]
            if t["mean"] is None:
                parts.append(f"— (all {t['diverged']} seeds diverged)")
            else:
                parts.append(f"{t['mean']:+.4f} (p_Holm {t['p_holm']:.2g}, {t['direction']})")
        div = "/".join(str(c["diverged"][m]) for m in ("plain", "meta", "gessl"))
        lines.append(
            f"{c['family']:12s} {c['knob']:15s} {c['value']!s:>32s}  "
            + "  ".join(f"{p:>30s}" for p in parts)
            + f"  {div}"
        )
    return "\n".join(lines)


@ex.main
def main(
    profile: str,
    families: list[str] | None,
    sweep: dict[str, list[Any]] | None,
    panel: dict[str, list[Any]] | None,
    seeds: int | None,
    steps: int | None,
    jobs: int,
    scheduler: str | None,
    cluster: str | None,
    cluster_options: dict[str, Any] | None,
    shard: str,
    figures: bool,
    device: str,
    _run: Any,
) -> dict[str, Any]:
    spec = make_spec(profile, families, sweep, panel, seeds, steps)  # validated before the run
    every = plan(spec)
    mine = shard_of(units(every), shard)
    n_mine = sum(len(u["jobs"]) for u in mine)
    mid = map_id(spec)
    workers = engine(jobs, scheduler, cluster, cluster_options)
    _run.info.update(map_id=mid, shard=shard, jobs_total=len(every))
    results: dict[str, dict[str, Any]] = {}
    start = time.perf_counter()
    bar = progress(total=n_mine, desc="map jobs", unit="job")

    def on_result(unit: dict[str, Any], res: list[dict[str, Any]]) -> None:
        for one in res:
            results[one["key"]] = one
        bar.update(len(res))
        _run.log_scalar("jobs_done", len(results))

    with tempfile.TemporaryDirectory() as tmp, bar:
        try:
            in_workers(partial(run_unit, spec=spec, device=device), mine, workers, on_result)
        finally:  # also when interrupted: the jobs done so far are kept
            path = os.path.join(tmp, "map.json")
            with open(path, "w") as fh:
                json.dump(
                    {
                        "map_id": mid,
                        "spec": spec,
                        "shard": shard,
                        "jobs_total": len(every),
                        "jobs_in_shard": n_mine,
                        "units_in_shard": len(mine),
                        "complete": len(results) == n_mine,
                        "results": results,
                    },
                    fh,
                )
            _run.add_artifact(path, "map.json")
        whole = n_mine == len(every)
        out: dict[str, Any] = {
            "map_id": mid,
            "shard": shard,
            "jobs": n_mine,
            "jobs_total": len(every),
            "workers": workers if isinstance(workers, int) else workers.describe(),
            "seconds": round(time.perf_counter() - start, 1),
        }
        if whole:
            assembled = assemble(spec, results)
            cells_path = os.path.join(tmp, "map_cells.json")
            with open(cells_path, "w") as fh:
                json.dump({"map_id": mid, "spec": spec, **assembled}, fh)
            _run.add_artifact(cells_path, "map_cells.json")
            print(summary_table(assembled))
            if figures:
                from paper_figures.map_plot import save_map

                for png in save_map({"map_id": mid, "spec": spec, **assembled}, tmp, mid):
                    _run.add_artifact(png, os.path.basename(png))

            def lower(key: str) -> int:
                return sum(c["tests"][key]["direction"] == "lower" for c in assembled["cells"])

            out.update(
                cells=len(assembled["cells"]),
                lower_than_plain=lower("gessl-plain:sigma_adapted"),
                lower_than_plain_calibrated=lower("gessl-plain:sigma_phi_calibrated"),
                lower_than_plain_tuned=lower("gessl-plain:sigma_adapted_tuned"),
                diverged_seeds=sum(c["diverged"]["gessl"] for c in assembled["cells"]),
            )
        else:
            print(
                f"shard {shard}: {n_mine} of {len(every)} jobs of map {mid}; merge the shards "
                "with `python -m paper_figures --only gessl_map`"
            )
    return out


if __name__ == "__main__":
    main_entry(ex)
