"""The map's bookkeeping: jobs deduplicated, shards partition them, cells assembled right."""

from __future__ import annotations

import json

import pytest

from theory.map_grid import (
    PROFILES,
    assemble,
    cells,
    group_key,
    map_id,
    plan,
    shard_of,
    train_key,
    units,
)

#: the reproduction claims' setting (experiments.gessl_map.base_setting reads it from the
#: library; written out here so that the bookkeeping is tested without torch)
BASE = {
    "inner_lr": 0.1,
    "inner_steps": 1,
    "lookahead_steps": 1,
    "sigma_weight": 1.0,
    "order": "first",
    "adapt": "all",
    "kl_direction": "sigma",
    "critic": "two_headed",
    "dim": None,
    "signal": None,
    "encoder_depth": 1,
}

MAP_SPEC = {
    "families": ["homogeneous", "subspace"],
    "sweep": {
        "inner_lr": [0.1, 0.3],
        "sigma_weight": [0.0, 1.0],
        "critic": ["two_headed", "cosine"],
    },
    "seeds": 4,
    "steps": 5,
    "eval_tasks": 4,
    "floor_tasks": 2,
    "base": dict(BASE),
}


def test_jobs_are_deduplicated_across_cells():
    jobs = plan(MAP_SPEC)
    train = [j for j in jobs if j["kind"] == "train"]
    # per family: plain depends on the critic only (2), meta on α and the critic (3: the base
    # cell is shared), GeSSL on every knob (4 distinct settings: base, α=0.3, γ=0, cosine)
    per_family = {"plain": 2, "meta": 3, "gessl": 4}
    for mode, n in per_family.items():  # one job per setting: every seed in one population
        assert sum(j["mode"] == mode for j in train) == 2 * n
    assert all(j["seeds"] == [0, 1, 2, 3] for j in train)
    base_plain = [
        j for j in train if j["mode"] == "plain" and j["options"]["critic"] == "two_headed"
    ]
    # the base plain run serves the α = 0.1 and α = 0.3 cells: two test-time step sizes
    assert {len(j["evals"]) for j in base_plain} == {2}
    floors = [j for j in jobs if j["kind"] == "floor"]
    assert len(floors) == 2 * 2  # family × critic
    assert len({j["key"] for j in jobs}) == len(jobs) and jobs == plan(MAP_SPEC)  # fixed order


def test_shards_partition_the_jobs_and_bad_shards_raise():
    jobs = plan(MAP_SPEC)
    parts = [shard_of(jobs, f"{i}/3") for i in (1, 2, 3)]
    keys = [j["key"] for p in parts for j in p]
    assert sorted(keys) == sorted(j["key"] for j in jobs) and len(keys) == len(set(keys))
    for bad in ("0/3", "4/3", "a/b", "3"):
        with pytest.raises(ValueError, match="shard must look like 'i/n' with 1 <= i <= n"):
            shard_of(jobs, bad)
    with pytest.raises(ValueError, match="sweep knob must be one of"):
        cells({**MAP_SPEC, "sweep": {"learning_rate": [1]}})
    assert (
        map_id(MAP_SPEC)
        == map_id(json.loads(json.dumps(MAP_SPEC)))
        != map_id({**MAP_SPEC, "seeds": 5})
    )


def _fake_results(spec, gessl_shift, diverge=()):
    """Every training job measured: plain 1.0, meta 0.9, GeSSL 1.0 + shift (+ noise per seed)."""
    out = {}
    for job in plan(spec):
        if job["kind"] == "floor":
            out[job["key"]] = {
                "kind": "floor",
                "key": job["key"],
                "family": job["family"],
                "options": job["options"],
                "floors": {},
            }
            continue
        runs = {}
        for seed in job["seeds"]:
            level = {"plain": 1.0, "meta": 0.9, "gessl": 1.0 + gessl_shift}[job["mode"]]
            level += 0.01 * seed + (0.003 * seed**2 if job["mode"] == "gessl" else 0)
            metrics = {
                ev: {"sigma_adapted": level, "excess_adapted": level / 2, "sigma_phi": level}
                for ev in job["evals"]
            }
            dead = (job["mode"], seed) in diverge
            runs[str(seed)] = {"diverged": "x" if dead else None, "metrics": metrics}
        out[job["key"]] = {
            "kind": "train",
            "key": job["key"],
            "family": job["family"],
            "mode": job["mode"],
            "options": job["options"],
            "runs": runs,
        }
    return out


def test_assembly_pairs_seeds_counts_divergence_and_corrects_across_cells():
    res = _fake_results(MAP_SPEC, -0.2, diverge={("gessl", 3)})
    a = assemble(MAP_SPEC, res)
    assert a["missing"] == 0 and len(a["cells"]) == 2 * 6 and len(a["floors"]) == 4
    c = a["cells"][0]
    t = c["tests"]["gessl-plain:sigma_adapted"]
    assert t["diffs"][:3] == pytest.approx([-0.2, -0.2 + 0.003, -0.2 + 0.012])
    assert t["diffs"][3] is None
    assert t["diverged"] == 1 and c["diverged"] == {"plain": 0, "meta": 0, "gessl": 1}
    assert t["direction"] == "lower" and t["p_holm"] >= t["p"]
    assert c["levels"]["plain"]["sigma_adapted"] == pytest.approx(1.015)
    assert c["tests"]["gessl-meta:sigma_adapted"]["mean"] == pytest.approx(-0.1 + 0.005)
    # a missing job is reported, not invented: every seed of it is missing
    key = group_key("subspace", "gessl", cells(MAP_SPEC)[-1]["options"])
    partial = {k: v for k, v in res.items() if k != key}
    assert assemble(MAP_SPEC, partial)["missing"] >= MAP_SPEC["seeds"]
    assert train_key("subspace", "gessl", cells(MAP_SPEC)[-1]["options"], 0) != key


def test_the_sensitivity_panel_is_every_combination_of_its_axes():
    spec = {
        **MAP_SPEC,
        "sweep": {},
        "panel": {"dim": [4, 8], "signal": [1.0, 1.5], "encoder_depth": [1, 2]},
    }
    got = [c for c in cells(spec) if c["family"] == "subspace"]
    assert len(got) == 8 and {c["knob"] for c in got} == {"panel"}
    assert got[-1]["value"] == "dim=8, signal=1.5, encoder_depth=2"
    assert {
        (c["options"]["dim"], c["options"]["signal"], c["options"]["encoder_depth"]) for c in got
    } == {(d, s, e) for d in (4, 8) for s in (1.0, 1.5) for e in (1, 2)}
    # the setting changes the model and the family: every arm trains anew in every combination
    jobs = plan(spec)
    assert sum(j["kind"] == "train" and j["family"] == "subspace" for j in jobs) == 8 * 3
    with pytest.raises(ValueError, match="panel axis must be one of"):
        cells({**spec, "panel": {"width": [1]}})


def test_profiles_sweep_every_knob_the_issue_names():
    quick = PROFILES["quick"]["sweep"]
    assert set(quick) == {
        "inner_lr",
        "inner_steps",
        "lookahead_steps",
        "sigma_weight",
        "order",
        "adapt",
        "kl_direction",
        "critic",
    }
    assert PROFILES["quick"]["panel"] == {
        "dim": [4, 8],
        "signal": [1.0, 1.5],
        "encoder_depth": [1, 2],
    }
    assert PROFILES["quick"]["families"] == ["homogeneous", "subspace", "noise_level"]


def test_units_train_the_family_settings_of_one_setting_together():
    spec = {
        **MAP_SPEC,
        "panel": {"signal": [1.0, 1.5]},
    }
    jobs = plan(spec)
    got = units(jobs)
    assert units(jobs) == got  # a fixed order
    # every job in exactly one unit
    keys = [j["key"] for u in got for j in u["jobs"]]
    assert sorted(keys) == sorted(j["key"] for j in jobs) and len(keys) == len(set(keys))
    for u in got:
        first = u["jobs"][0]
        if first["kind"] == "floor":
            assert len(u["jobs"]) == 1
            continue
        # one mode and one setting but for the family's: one graph
        drop = ("signal",)
        shared = {k: v for k, v in first["options"].items() if k not in drop}
        for j in u["jobs"]:
            assert j["mode"] == first["mode"] and j["seeds"] == first["seeds"]
            assert {k: v for k, v in j["options"].items() if k not in drop} == shared
    train = [u for u in got if u["jobs"][0]["kind"] == "train"]
    # both families of a setting meet in one unit, with the base's signal (the family's own,
    # None here) and the panel's two: 2 × 3 jobs
    assert max(len(u["jobs"]) for u in train) == 6
    assert {len({j["family"] for j in u["jobs"]}) for u in train} == {2}
    assert len(train) < sum(j["kind"] == "train" for j in jobs) / 2 + 1
    # the long units first: GeSSL before meta before plain, floors last
    kinds = [u["jobs"][0].get("mode", "floor") for u in got]
    assert kinds.index("plain") > kinds.index("gessl") and kinds[-1] == "floor"


def test_the_full_map_trains_in_a_quarter_of_the_populations():
    from experiments.gessl_map import make_spec

    jobs = plan(make_spec("full", None, None, None, None, None))
    train = [u for u in units(jobs) if u["jobs"][0]["kind"] == "train"]
    assert sum(j["kind"] == "train" for j in jobs) == 180 and len(train) == 48


def test_floors_do_not_depend_on_the_encoder_depth_and_the_base_is_spelled_out():
    """A linear backbone before the linear head spans the same maps: one floor per family ×
    critic × (d, c), whatever the depth; the base setting names the families' own d and c, so
    the panel's cell at them trains no copy of the base's runs."""
    from experiments.gessl_map import base_setting

    base = base_setting()
    assert (base["dim"], base["signal"], base["encoder_depth"]) == (4, 1.0, 1)
    spec = {**MAP_SPEC, "base": base, "sweep": {}, "panel": {"dim": [4], "encoder_depth": [1, 2]}}
    jobs = plan(spec)
    floors = [j for j in jobs if j["kind"] == "floor"]
    assert len(floors) == 2 and all("encoder_depth" not in j["options"] for j in floors)
    # per family: the depth-1 and the depth-2 cell train anew (no base cell in this sweep)
    assert sum(j["kind"] == "train" for j in jobs) == 2 * 3 * 2
    # with the base cell in the sweep, the panel's d = 4 cell is the base setting: its three
    # runs are the base cell's; only d = 8 trains anew (9 runs per family if it were a copy)
    spec = {**spec, "sweep": {"inner_lr": [0.1]}, "panel": {"dim": [4, 8]}}
    assert len(cells(spec)) == 2 * 3
    assert sum(j["kind"] == "train" for j in plan(spec)) == 2 * 3 * 2
    unspelled = {**spec, "base": {**base, "dim": None, "signal": None}}
    assert sum(j["kind"] == "train" for j in plan(unspelled)) == 2 * 3 * 3
