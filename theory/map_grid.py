"""The map of where GeSSL helps: which runs a sweep needs, and the cells assembled from them.

A map sweeps GeSSL's knobs one at a time around a base setting (the spec's ``base``: the fair
test's GeSSL setting, :data:`theory.fair_test.FAIR_SETTING` on the library's defaults), on each
task family, against the plain base method and against first-order meta-learning without the
σ-term (λ = γ = 0), on paired seeds (``docs/reproduction.md``). This module is pure bookkeeping
(no torch): it lists the *jobs* a map needs — each the training of every seed of one (family,
mode, options), as one population (:class:`gessl.trainer.PopulationTrainer`), with the
evaluations its cells read, or a floor fit — so that they can run in any number of processes
and be split into shards, and it assembles the cells from the jobs' results: per cell and
measure the paired per-seed differences, their t-tests, Holm's correction across the cells of
one heat map, the number of diverged seeds (counted and shown, never dropped), the mean levels
and the floors.
:mod:`experiments.gessl_map` runs it; :mod:`paper_figures` assembles merged shards with it.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable, Mapping
from typing import Any

from theory.paired import correct, paired_test

__all__ = [
    "COMPARISONS",
    "CRITIC_TEMPERATURE",
    "KNOBS",
    "MAP_MEASURES",
    "PROFILES",
    "assemble",
    "cells",
    "map_id",
    "plan",
    "seed_results",
    "shard_of",
    "units",
]

#: knob name → the FairTest field(s) it sets (``critic`` also sets the temperature; ``adapt``
#: ``"projector"`` also adds a linear backbone, so that there is something not to adapt); the
#: last three are the setting's: the family's dimension d and latent scale c, the encoder's depth
KNOBS = (
    "inner_lr",
    "inner_steps",
    "lookahead_steps",
    "sigma_weight",
    "order",
    "adapt",
    "kl_direction",
    "critic",
    "dim",
    "signal",
    "encoder_depth",
)
#: the axes of the sensitivity panel: every combination is a cell (knob ``"panel"``)
PANEL_AXES = ("dim", "signal", "encoder_depth")
#: the temperature each critic is used at in a map
CRITIC_TEMPERATURE = {"two_headed": 1.0, "neg_sq_distance": 1.0, "dot": 1.0, "cosine": 0.5}
#: the measures compared in every cell: the primary two — σ of φ at each model's calibrated logit
#: scale and σ after each model's tuned (K, α) (:mod:`theory.fair_eval`) — then σ and
#: sigma_excess after the cell's own (K, α) and the raw σ of φ
MAP_MEASURES = (
    "sigma_phi_calibrated",
    "sigma_adapted_tuned",
    "sigma_adapted",
    "excess_adapted",
    "sigma_phi",
)
#: the comparisons: GeSSL against the plain method, and against meta-learning without σ-term
COMPARISONS = (("gessl", "plain"), ("gessl", "meta"))

PROFILES: dict[str, dict[str, Any]] = {
    "tiny": {
        "families": ["homogeneous", "subspace"],
        "seeds": 3,
        "steps": 8,
        "val_tasks": 8,
        "eval_tasks": 16,
        "floor_tasks": 3,
        "floor_polish": 2,
        "sweep": {"inner_lr": [0.1, 0.3], "critic": ["two_headed", "cosine"]},
        "panel": {},
    },
    "quick": {
        "families": ["homogeneous", "subspace", "noise_level"],
        "seeds": 10,
        "steps": 60,
        "val_tasks": 24,
        "eval_tasks": 48,
        "floor_tasks": 8,
        "floor_polish": 5,
        "sweep": {
            "inner_lr": [0.03, 0.1, 0.3],
            "inner_steps": [1, 3],
            "lookahead_steps": [0, 1, 3],
            "sigma_weight": [0.0, 0.3, 1.0, 3.0],
            "order": ["first", "second"],
            "adapt": ["all", "projector"],
            "kl_direction": ["sigma", "sigma_excess"],
            "critic": ["two_headed", "cosine", "neg_sq_distance", "dot"],
        },
        "panel": {"dim": [4, 8], "signal": [1.0, 1.5], "encoder_depth": [1, 2]},
    },
    "full": {
        "families": ["homogeneous", "subspace", "noise_level"],
        "seeds": 10,
        "steps": 300,
        "outer_lr": 1e-2,
        "val_tasks": 50,
        "eval_tasks": 100,
        "floor_tasks": 20,
        "floor_polish": 20,
        "sweep": {
            "inner_lr": [0.01, 0.03, 0.1, 0.3, 1.0],
            "inner_steps": [1, 2, 3, 5],
            "lookahead_steps": [0, 1, 2, 5],
            "sigma_weight": [0.0, 0.1, 0.3, 1.0, 3.0, 10.0],
            "order": ["first", "second"],
            "adapt": ["all", "projector"],
            "kl_direction": ["sigma", "sigma_excess"],
            "critic": ["two_headed", "cosine", "neg_sq_distance", "dot"],
        },
        "panel": {"dim": [4, 8], "signal": [1.0, 1.5], "encoder_depth": [1, 2]},
    },
}

#: options a mode's training depends on (the rest only change the GeSSL mode)
_MODEL_KEYS = ("critic", "temperature", "encoder_depth", "dim", "signal")
_META_KEYS = (*_MODEL_KEYS, "inner_lr", "inner_steps", "order", "adapt")
#: options a floor depends on: the model family's (the encoder's depth does not change it)
FLOOR_KEYS = tuple(k for k in _MODEL_KEYS if k != "encoder_depth")


def _canon(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"))


def map_id(spec: Mapping[str, Any]) -> str:
    """A short hash of everything the map's numbers depend on (shards of one map share it)."""
    return hashlib.sha256(_canon(dict(spec)).encode()).hexdigest()[:12]


def fair_options(base: Mapping[str, Any], knob: str, value: Any) -> dict[str, Any]:
    """The :class:`theory.fair_test.FairTest` options of the cell ``knob = value`` (``knob =
    "panel"``: ``value`` sets every axis of :data:`PANEL_AXES`)."""
    opts = {**base, **(dict(value) if knob == "panel" else {knob: value})}
    critic = opts["critic"]
    opts["temperature"] = CRITIC_TEMPERATURE.get(critic, 1.0)  # unknown critics: FairTest says
    # adapt="projector" needs a backbone to leave out: a linear one (encoder depth 2)
    if opts["adapt"] == "projector":
        opts["encoder_depth"] = 2
    return opts


def _panel_values(panel: Mapping[str, list[Any]]) -> list[dict[str, Any]]:
    """Every combination of the sensitivity panel's axes, in a fixed order."""
    combos: list[dict[str, Any]] = [{}]
    for axis in PANEL_AXES:
        if axis in panel:
            combos = [{**c, axis: v} for c in combos for v in panel[axis]]
    return combos if panel else []


def cells(spec: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Every cell: ``family``, ``knob``, ``value`` and its options, in sweep order."""
    out = []
    panel = spec.get("panel") or {}
    unknown = sorted(set(panel) - set(PANEL_AXES))
    if unknown:
        raise ValueError(f"panel axis must be one of {PANEL_AXES}, got {unknown[0]!r}")
    for family in spec["families"]:
        for knob, values in spec["sweep"].items():
            if knob not in KNOBS:
                raise ValueError(f"sweep knob must be one of {KNOBS}, got {knob!r}")
            for value in values:
                out.append(
                    {
                        "family": family,
                        "knob": knob,
                        "value": value,
                        "options": fair_options(spec["base"], knob, value),
                    }
                )
        for combo in _panel_values(panel):
            out.append(
                {
                    "family": family,
                    "knob": "panel",
                    "value": ", ".join(f"{k}={v}" for k, v in combo.items()),
                    "options": fair_options(spec["base"], "panel", combo),
                }
            )
    return out


def _mode_options(options: Mapping[str, Any], mode: str) -> dict[str, Any]:
    if mode == "plain":
        return {k: options[k] for k in _MODEL_KEYS}
    if mode == "meta":
        return {k: options[k] for k in _META_KEYS}
    return dict(options)


def _eval_spec(options: Mapping[str, Any]) -> dict[str, Any]:
    """What a cell's evaluation of any of its three models depends on."""
    return {
        "test_steps": options["inner_steps"],
        "test_lr": options["inner_lr"],
        "lookahead_steps": options["lookahead_steps"],
        "adapt": options["adapt"],
        "kl_direction": options["kl_direction"],
    }


def train_key(family: str, mode: str, options: Mapping[str, Any], seed: int) -> str:
    """The key of one seed's run of ``mode`` under a cell's ``options``."""
    return _canon({"f": family, "m": mode, "o": _mode_options(options, mode), "s": seed})


def group_key(family: str, mode: str, options: Mapping[str, Any]) -> str:
    """The key of the job that trains every seed of ``mode`` under a cell's ``options``."""
    return _canon({"f": family, "m": mode, "o": _mode_options(options, mode)})


def plan(spec: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The jobs of a map, deduplicated and in a fixed order: training jobs (``kind="train"``:
    every seed of one family, mode and setting, with every evaluation spec its cells need) and
    floor fits (``kind="floor"``)."""
    jobs: dict[str, dict[str, Any]] = {}
    for cell in cells(spec):
        for mode in ("plain", "meta", "gessl"):
            key = group_key(cell["family"], mode, cell["options"])
            job = jobs.setdefault(
                key,
                {
                    "kind": "train",
                    "key": key,
                    "family": cell["family"],
                    "mode": mode,
                    "options": _mode_options(cell["options"], mode),
                    "seeds": list(range(spec["seeds"])),
                    "evals": {},
                },
            )
            ev = _eval_spec(cell["options"])
            job["evals"][_canon(ev)] = ev
        # the floor is the model family's: a linear backbone before the linear head represents
        # the same affine maps d → 2d as the head alone (a 2d×d matrix has rank ≤ d and every
        # one factors), so the floor is fitted in the one-layer parametrisation, whose fit is
        # well conditioned (:data:`FLOOR_KEYS`)
        floor_opts = {k: cell["options"][k] for k in FLOOR_KEYS}
        key = _canon({"floor": cell["family"], "o": floor_opts})
        jobs.setdefault(
            key, {"kind": "floor", "key": key, "family": cell["family"], "options": floor_opts}
        )
    return [jobs[k] for k in sorted(jobs)]


#: the options that only change a training's task sampler (its family's setting): jobs that
#: differ only in these train as one population (:func:`units`)
SAMPLER_KEYS = ("family", "signal")


def _unit_cost(unit: Mapping[str, Any]) -> float:
    """A rough relative cost of a unit (to start the long ones first; no result depends on it)."""
    job = unit["jobs"][0]
    if job["kind"] == "floor":
        return 0.1 if (job["options"].get("dim") or 4) <= 4 else 1.8
    o = job["options"]
    per = {"plain": 1.0, "meta": 1.2, "gessl": 1.8}[job["mode"]]
    per *= 1 + 0.3 * (o.get("inner_steps", 1) - 1) + 0.2 * o.get("lookahead_steps", 0)
    per *= 1.5 if o.get("order") == "second" else 1.0
    per *= 2.0 if (o.get("dim") or 4) > 4 else 1.0
    return per * len(unit["jobs"])


def units(jobs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The work units of a map's jobs: the training jobs that differ only in their task
    family's setting (:data:`SAMPLER_KEYS`) form one unit, trained as one population of every
    seed of every job (:func:`theory.fair_test.train_settings`: each member exactly as its own
    run, so no number depends on the grouping); a floor fit is a unit of its own. Units are
    listed longest first (a rough cost), so that workers finish together; each is ``{"key",
    "jobs"}``."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for job in jobs:
        if job["kind"] == "train":
            shared = {k: v for k, v in job["options"].items() if k not in SAMPLER_KEYS}
            key = _canon({"unit": job["mode"], "o": shared})
        else:
            key = job["key"]
        groups.setdefault(key, []).append(job)
    out = [{"key": k, "jobs": v} for k, v in sorted(groups.items())]
    return sorted(out, key=_unit_cost, reverse=True)


def shard_of(jobs: list[dict[str, Any]], shard: str) -> list[dict[str, Any]]:
    """The jobs of shard ``"i/n"`` (1-based): every n-th job from the i-th."""
    try:
        i, n = (int(x) for x in str(shard).split("/"))
    except ValueError:
        raise ValueError(f"shard must look like 'i/n' with 1 <= i <= n, got {shard!r}") from None
    if not 1 <= i <= n:
        raise ValueError(f"shard must look like 'i/n' with 1 <= i <= n, got {shard!r}")
    return jobs[i - 1 :: n]


def _diff(ra: Mapping[str, Any] | None, rb: Mapping[str, Any] | None, measure: str) -> float:
    """``ra[measure] − rb[measure]``, ``nan`` where either is missing or not finite."""
    a, b = (None if r is None else r.get(measure) for r in (ra, rb))
    if not isinstance(a, (int, float)) or not isinstance(b, (int, float)):
        return float("nan")
    return float(a) - float(b)


def _level(values: Iterable[float]) -> float:
    vals = [v for v in values if isinstance(v, (int, float)) and math.isfinite(v)]
    return sum(vals) / len(vals) if vals else float("nan")


def seed_results(results: Mapping[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Every seed's run result by :func:`train_key`, from the jobs' results (``key → result``);
    floor fits keep their keys."""
    out: dict[str, dict[str, Any]] = {}
    for key, res in results.items():
        if res.get("kind") == "train":
            for seed, run in res["runs"].items():
                out[train_key(res["family"], res["mode"], res["options"], int(seed))] = run
        else:
            out[key] = res
    return out


def assemble(spec: Mapping[str, Any], results: Mapping[str, dict[str, Any]]) -> dict[str, Any]:
    """The cells of a map from its jobs' results (``key → result``).

    Returns ``{"cells": [...], "floors": {...}, "missing": n}``; each cell holds, per measure of
    :data:`MAP_MEASURES` and comparison of :data:`COMPARISONS`, the paired test (Holm-corrected
    across all cells of that measure and comparison), the levels of the three modes and the
    number of diverged seeds of each mode.
    """
    out_cells, missing = [], 0
    floors = {r["key"]: r for r in results.values() if r.get("kind") == "floor"}
    results = seed_results(results)
    for cell in cells(spec):
        ev = _canon(_eval_spec(cell["options"]))
        per_mode: dict[str, list[dict[str, float] | None]] = {}
        diverged: dict[str, int] = {}
        for mode in ("plain", "meta", "gessl"):
            rows, diverged[mode] = [], 0
            for seed in range(spec["seeds"]):
                res = results.get(train_key(cell["family"], mode, cell["options"], seed))
                if res is None:
                    missing += 1
                    rows.append(None)
                elif res["diverged"]:
                    diverged[mode] += 1
                    rows.append(None)
                else:
                    rows.append(res["metrics"][ev])
            per_mode[mode] = rows
        nan = float("nan")
        entry = {k: cell[k] for k in ("family", "knob", "value")}
        entry["diverged"] = diverged
        entry["levels"] = {
            mode: {m: _level((r or {}).get(m, nan) for r in rows) for m in MAP_MEASURES}
            for mode, rows in per_mode.items()
        }
        entry["tests"] = {}
        for a, b in COMPARISONS:
            for measure in MAP_MEASURES:
                diffs = [_diff(ra, rb, measure) for ra, rb in zip(per_mode[a], per_mode[b])]
                entry["tests"][f"{a}-{b}:{measure}"] = paired_test(f"{measure}: {a} − {b}", diffs)
        out_cells.append(entry)
    for a, b in COMPARISONS:  # Holm within each heat map (one measure, one comparison)
        for measure in MAP_MEASURES:
            correct([c["tests"][f"{a}-{b}:{measure}"] for c in out_cells])
    for c in out_cells:
        c["tests"] = {k: t.to_dict() for k, t in c["tests"].items()}
    return {"cells": out_cells, "floors": list(floors.values()), "missing": missing}
