"""Universality on data: discriminability, generalization, label efficiency, transferability, σ.

    python -m experiments.universality                          # MNIST-1D, quick (~7 min, 2 cores)
    python -m experiments.universality with profile=full        # 10 seeds, 1000 steps
    python -m experiments.universality with dataset=digits      # scikit-learn's 8×8 digits
    python -m experiments.universality with encoder=mypkg.models:build checkpoint=enc.pt

The paper (arXiv 2405.01053) calls a representation universal when it is discriminative (good on
the training samples), generalises (good on unseen samples of the same distribution) and
transfers (good on unseen tasks under distribution shift), and claims GeSSL improves all three.
This study trains each method plainly, as first-order meta-learning without the σ-term
(``meta``: λ = γ = 0) and with GeSSL, from the same initialisation on the same task stream per
seed, and measures the frozen backbone:

* **discriminability** — linear probe and kNN accuracy on the training samples (kNN leave one
  out);
* **generalization** — the same probe and kNN on held-out samples of the seen classes;
* **label efficiency** — the probe from 1, 5 and 10 labels per class (many labelled subsets);
* **transferability** — few-shot episodes on classes held out of pretraining (1 and 5 shots), and
  probe and kNN under distribution shifts (MNIST-1D regenerated with other noise, shear and
  translation settings, one readout per shift);
* **σ** of the pretrained model on the data's own N-way tasks against task models fine-tuned from
  it (floor 0: the provider is a member of the model's family; KL(π_model ‖ π_opt)).

Every readout's setting (the probe's C, the kNN's k and temperature, the few-shot head's steps
and rate) is chosen per model on validation data (:mod:`gessl.eval.protocols`). Each number has
a 95% t-interval over seeds; the paired differences GeSSL − plain, meta − plain and GeSSL − meta
have t-intervals, and the pre-declared primary family (GeSSL − plain on one metric per property
and method) is Holm-corrected. Whatever the numbers say is the result.

With ``encoder=module:function`` and ``checkpoint=path`` the study evaluates a user's pretrained
encoder instead of training: ``function(input_shape)`` builds the module, the checkpoint (a
state dict, loaded with ``weights_only=True``) fills it, and the same readouts run (σ needs the
method that trained the encoder and is not reported).
"""

from __future__ import annotations

import importlib
import json
import math
import os
import time
from dataclasses import dataclass
from functools import lru_cache, partial
from typing import Any

import numpy as np
import torch

from experiments.parallel import engine, in_workers, reseed
from experiments.pipeline import DEFAULT_GESSL, MEASURING_CRITIC, Splits, build_model, train
from experiments.tracking import add_text_artifacts, main_entry, make_experiment
from experiments.validation import (
    UsageError,
    check_bool,
    check_choice,
    check_choices,
    check_int,
    validates,
)
from gessl.data import DatasetTasks, ImageSet, class_split, dataset_entry, load_dataset
from gessl.eval import features, universality_report
from gessl.eval.protocols import (
    label_efficiency,
    stratified_split,
    tuned_few_shot,
    tuned_knn,
    tuned_probe,
)
from gessl.progress import progress
from theory.paired import PairedTest, correct, paired_test

ex = make_experiment("universality")

MODES = ("plain", "meta", "gessl")
PROFILES: dict[str, dict[str, Any]] = {
    "quick": {"steps": 200, "seeds": 5, "episodes": 300, "draws": 20, "shift_samples": 2000},
    "full": {"steps": 1000, "seeds": 10, "episodes": 600, "draws": 50, "shift_samples": 5000},
    "tiny": {"steps": 3, "seeds": 2, "episodes": 20, "draws": 3, "shift_samples": 300},
}
#: the distribution shifts of MNIST-1D's generator (its other settings stay the training set's;
#: another seed, so the samples are new too); Greydanus 2020, arXiv 2011.14439
MNIST1D_SHIFTS: dict[str, dict[str, Any]] = {
    "noise": {"corr_noise_scale": 0.5, "iid_noise_scale": 0.1},
    "shear": {"shear_scale": 2.0},
    "translation": {"max_translation": 12},
}
SHIFT_SEED = 4242
#: the properties and their metrics (the table's columns, in order)
PROPERTIES: dict[str, list[str]] = {
    "discriminability": ["disc_probe", "disc_knn"],
    "generalization": ["gen_probe", "gen_knn"],
    "label_efficiency": ["probe_1", "probe_5", "probe_10"],
    "transferability": ["fewshot_1", "fewshot_5"],  # + shift_<name>_probe/_knn per shift
    "sigma": ["sigma_train", "sigma_fresh", "sigma_held_out"],
}
#: one metric per property: GeSSL − plain on these, per method, is the Holm family
PRIMARY = {
    "discriminability": "disc_probe",
    "generalization": "gen_probe",
    "label_efficiency": "probe_5",
    "transferability": "fewshot_5",
}
CONTRASTS = (("gessl", "plain"), ("meta", "plain"), ("gessl", "meta"))


@ex.config
def config() -> None:
    profile = "quick"  # "quick" (< 10 min on 2 cores), "full", "tiny" (tests)
    dataset = "mnist1d"  # a registered dataset: "mnist1d" (generated), "digits" (bundled), ...
    data_root = None  # its folder (MNIST-1D: the cache folder; default ~/.cache/gessl/mnist1d)
    data_options = None  # MNIST-1D generation arguments {name: value} (gessl.data.MNIST1D_DEFAULTS)
    seen_classes = None  # pretrained on; default the first 70% (0–6); the rest are held out
    methods = ["simclr", "byol", "barlow_twins"]
    modes = list(MODES)  # plain, meta (λ = γ = 0) and GeSSL
    gessl = dict(DEFAULT_GESSL)  # GeSSL's options (meta: the same with λ = γ = 0)
    encoder = None  # a registered backbone (default: cnn1d for signals, cnn for images), or
    # "module:function", a user's encoder (with checkpoint)
    checkpoint = None  # the user encoder's state dict (torch.load with weights_only=True)
    width = 16  # the backbone's width
    proj_dims = [64, 32]
    tasks_per_step = 4
    n_samples = 32
    outer_lr = 1e-3
    steps = None  # outer steps per training; default: the profile's
    seeds = None  # paired seeds; default: the profile's
    shifts = None  # {name: {generation arguments}}; default: MNIST-1D's three (none for digits)
    # the readouts (each entry documented in docs/experiments.md)
    readout = {
        "shots": [1, 5, 10],
        "few_shot_shots": [1, 5],
        "few_shot_way": 5,
        "report_tasks": 4,
        "provider_steps": 40,
    }
    jobs = 0  # worker processes; 0 = one per CPU core (the numbers are the same for any value)
    scheduler = None  # a running Dask scheduler, "tcp://host:8786" (else $GESSL_DASK_SCHEDULER)
    cluster = None  # start a Dask cluster: "local" (jobs workers here) or "slurm" (dask-jobqueue)
    cluster_options = None  # the cluster's options, e.g. {"queue": "cpu", "walltime": "01:00:00"}
    figures = True  # draw one figure per property into the record
    device = "cpu"  # "cpu", "cuda", "auto" (jobs=1 on a GPU)


# ----------------------------------------------------------------------------- the data
@dataclass(frozen=True)
class StudyData:
    """Seen-class train/test samples, held-out-class samples split into validation and test
    halves, and per shift a (train, test) pair of the shifted distribution's seen classes."""

    train: ImageSet
    test: ImageSet
    held_val: ImageSet
    held_test: ImageSet
    shifts: dict[str, tuple[ImageSet, ImageSet]]
    augment: Any
    seen: list[int]

    @property
    def input_shape(self) -> tuple[int, ...]:
        return self.train.shape

    def splits(self) -> Splits:
        return Splits(self.train, self.test, self.held_val, self.augment, self.seen)


def _cat(a: ImageSet, b: ImageSet) -> ImageSet:
    return ImageSet(torch.cat([a.images, b.images]), torch.cat([a.labels, b.labels]), a.name)


def _seen_split(data: ImageSet, seen: list[int]) -> tuple[ImageSet, ImageSet]:
    keep = torch.isin(data.labels, torch.tensor(seen, dtype=data.labels.dtype))
    return data.subset(keep), data.subset(~keep)


def _load(dataset: str, root: str | None, split: str | None, options: dict) -> ImageSet:
    if dataset == "mnist1d":
        from gessl.data import load_mnist1d

        return load_mnist1d(root, split or "train", **options)
    return load_dataset(dataset, root, split)


@lru_cache(maxsize=4)
def _study_data(key: str, seed: int) -> StudyData:
    s = json.loads(key)
    dataset, root, options = s["dataset"], s["data_root"], s["data_options"]
    entry = dataset_entry(dataset)
    if entry.splits:
        train_all = _load(dataset, root, "train", options)
        test_all = _load(dataset, root, "test", options)
        seen = s["seen_classes"] or _default_seen(train_all.classes())
        train, held_a = _seen_split(train_all, seen)
        test, held_b = _seen_split(test_all, seen)
        held = _cat(held_a, held_b)
    else:
        data = _load(dataset, root, None, options)
        seen = s["seen_classes"] or _default_seen(data.classes())
        train, test, held = class_split(data, seen, test_fraction=0.2, seed=seed)
    val_idx, test_idx = stratified_split(held.labels.long(), 0.5, seed)
    shifts = {}
    for name, change in s["shifts"].items():
        opts = {**options, **change}
        opts.setdefault("seed", SHIFT_SEED)
        opts.setdefault("num_samples", s["shift_samples"])
        a, _ = _seen_split(_load(dataset, root, "train", opts), seen)
        b, _ = _seen_split(_load(dataset, root, "test", opts), seen)
        shifts[name] = (a, b)
    return StudyData(
        train,
        test,
        ImageSet(held.images[val_idx], held.labels[val_idx], held.name),
        ImageSet(held.images[test_idx], held.labels[test_idx], held.name),
        shifts,
        entry.augment,
        list(seen),
    )


def _default_seen(classes: list[int]) -> list[int]:
    return classes[: max(2, len(classes) * 7 // 10)]


# ----------------------------------------------------------------------------- measuring
def measure(
    backbone: torch.nn.Module,
    data: StudyData,
    seed: int,
    spec: dict[str, Any],
    method: Any = None,
) -> dict[str, Any]:
    """Every readout of the frozen ``backbone`` (σ too when ``method`` is given): the flat
    metrics and the chosen protocol settings."""
    ev, p = spec["readout"], PROFILES[spec["profile"]]
    backbone.eval()
    f = {
        name: features(backbone, s)
        for name, s in (
            ("train", data.train),
            ("test", data.test),
            ("held_val", data.held_val),
            ("held_test", data.held_test),
        )
    }
    ytr, yte = data.train.labels.long(), data.test.labels.long()
    m: dict[str, float] = {}
    chosen: dict[str, Any] = {}
    probe = tuned_probe(f["train"], ytr, f["test"], yte, seed=seed)
    knn = tuned_knn(f["train"], ytr, f["test"], yte, seed=seed)
    m.update(
        disc_probe=probe["train"],
        gen_probe=probe["test"],
        disc_knn=knn["train"],
        gen_knn=knn["test"],
    )
    chosen.update(probe_C=probe["C"], knn_k=knn["k"], knn_temperature=knn["temperature"])
    le = label_efficiency(
        f["train"], ytr, f["test"], yte, shots=ev["shots"], draws=p["draws"], seed=seed
    )
    for s, r in le.items():
        m[f"probe_{s}"] = r["accuracy"]
        chosen[f"probe_{s}_C"] = r["C"]
    way = min(ev["few_shot_way"], len(data.held_test.classes()))
    for shot in ev["few_shot_shots"]:
        fs = tuned_few_shot(
            f["held_val"],
            data.held_val.labels.long(),
            f["held_test"],
            data.held_test.labels.long(),
            way,
            shot,
            queries=spec["few_shot_queries"],
            episodes=p["episodes"],
            val_episodes=max(10, p["episodes"] // 3),
            seed=seed,
        )
        m[f"fewshot_{shot}"] = fs["accuracy"]
        chosen[f"fewshot_{shot}"] = {"steps": fs["steps"], "lr": fs["lr"], "way": way}
    for name, (a, b) in data.shifts.items():
        fa, fb = features(backbone, a), features(backbone, b)
        ya, yb = a.labels.long(), b.labels.long()
        sp = tuned_probe(fa, ya, fb, yb, seed=seed)
        sk = tuned_knn(fa, ya, fb, yb, seed=seed)
        m[f"shift_{name}_probe"], m[f"shift_{name}_knn"] = sp["test"], sk["test"]
        chosen[f"shift_{name}"] = {"C": sp["C"], "k": sk["k"], "temperature": sk["temperature"]}
    if data.shifts:
        m["shift_probe"] = float(np.mean([m[f"shift_{n}_probe"] for n in data.shifts]))
    if method is not None:
        gen = torch.Generator().manual_seed(10_000 + seed)
        sets = {
            name: DatasetTasks(s, data.augment).sample(ev["report_tasks"], spec["n_samples"], gen)
            for name, s in (
                ("train", data.train),
                ("fresh", data.test),
                ("held_out", data.held_test),
            )
        }
        rep = universality_report(
            method,
            sets,
            provider="trained",
            temperature=MEASURING_CRITIC["sigma_temperature"],
            critic=MEASURING_CRITIC["sigma_critic"],
            provider_steps=ev["provider_steps"],
        )
        for name, r in rep.items():
            m[f"sigma_{name}"] = r["sigma"]
        chosen["sigma"] = {
            "critic": rep["train"]["critic"],
            "floor_per_task": 0.0,
            "kl_direction": "KL(π_model ‖ π_opt)",
        }
    backbone.train()
    return {"metrics": m, "protocol": chosen}


def _gessl_options(mode: str, gessl: dict[str, Any]) -> dict[str, Any]:
    if mode == "meta":
        return {**gessl, "lookahead_steps": 0, "sigma_weight": 0.0}
    return dict(gessl)


def run_unit(unit: dict[str, Any], spec: dict[str, Any]) -> dict[str, Any]:
    """Train one (method, mode, seed) and measure it; or measure the user's encoder."""
    start = time.perf_counter()
    seed = unit["seed"]
    reseed(seed)
    data = _study_data(_data_key(spec), seed)
    if unit["method"] is None:
        backbone = load_user_encoder(spec["encoder"], spec["checkpoint"], data.input_shape)
        out = measure(backbone, data, seed, spec)
        return {**unit, **out, "seconds": time.perf_counter() - start}
    model = build_model(
        unit["method"], spec["encoder"], spec["width"], spec["proj_dims"], data.input_shape, seed
    )
    mode = unit["mode"]
    trainer, seconds = train(
        model,
        data.splits(),
        "plain" if mode == "plain" else "gessl",
        spec["steps"],
        spec["tasks_per_step"],
        spec["n_samples"],
        seed,
        _gessl_options(mode, spec["gessl"]),
        outer_lr=spec["outer_lr"],
        progress=False,
        device=spec["device"],
    )
    model = model.cpu() if spec["device"] != "cpu" else model
    out = measure(model.backbone, data, seed, spec, method=model)
    return {
        **unit,
        **out,
        "train_seconds": seconds,
        "gradient_path": getattr(trainer, "gradient_path", None),
        "seconds": time.perf_counter() - start,
    }


def _data_key(spec: dict[str, Any]) -> str:
    keys = ("dataset", "data_root", "data_options", "seen_classes", "shifts", "shift_samples")
    return json.dumps({k: spec[k] for k in keys}, sort_keys=True)


# ----------------------------------------------------------------------------- user encoders
def load_user_encoder(
    target: str, checkpoint: str | None, input_shape: tuple[int, ...]
) -> torch.nn.Module:
    """``module:function`` → ``function(input_shape)``, filled from ``checkpoint`` (a state
    dict, a dict holding one under ``"state_dict"``/``"backbone"``, or a whole method's state
    such as ``experiments.pretrain``'s ``model.pt``, whose ``backbone.*`` entries are taken;
    loaded with ``weights_only=True``) and checked to map ``[B, *input_shape]`` to ``[B, d]``. Every
    failure raises :class:`UsageError` in one line."""
    if checkpoint is None:
        raise UsageError(f"encoder={target!r} is a user's encoder: give checkpoint=<path>")
    mod_name, _, attr = target.partition(":")
    if not mod_name or not attr:
        raise UsageError(f"encoder: expected 'module:function', got {target!r}")
    try:
        module = importlib.import_module(mod_name)
    except Exception as err:  # an import error of any kind is the user's module's
        raise UsageError(
            f"encoder: cannot import {mod_name!r}: {type(err).__name__}: {err}".splitlines()[0]
        ) from None
    build = getattr(module, attr, None)
    if not callable(build):
        raise UsageError(f"encoder: {mod_name!r} has no function {attr!r}")
    if not os.path.isfile(checkpoint):
        raise UsageError(f"checkpoint: no such file: {checkpoint}")
    try:
        state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    except Exception as err:
        raise UsageError(
            f"checkpoint: cannot load {checkpoint} with weights_only=True: {err}".splitlines()[0]
        ) from None
    if isinstance(state, dict):
        for key in ("state_dict", "backbone"):
            if isinstance(state.get(key), dict):
                state = state[key]
                break
    if isinstance(state, dict) and any(str(k).startswith("backbone.") for k in state):
        # a whole method's state (``experiments.pretrain``'s model.pt): its backbone's part
        state = {k[len("backbone.") :]: v for k, v in state.items() if k.startswith("backbone.")}
    try:
        net = build(tuple(input_shape))
    except Exception as err:
        msg = f"encoder: {target}({tuple(input_shape)}) raised {type(err).__name__}: {err}"
        raise UsageError(msg.splitlines()[0]) from None
    if not isinstance(net, torch.nn.Module):
        raise UsageError(f"encoder: {target} returned {type(net).__name__}, not a torch module")
    try:
        net.load_state_dict(state)
    except Exception as err:
        raise UsageError(
            f"checkpoint: does not fit {target}: {err}".replace("\n", " ")[:300]
        ) from None
    net.eval()
    try:
        with torch.no_grad():
            out = net(torch.zeros(2, *input_shape))
    except Exception as err:
        raise UsageError(
            f"encoder: {target} fails on inputs of shape [2, {', '.join(map(str, input_shape))}]"
            f": {type(err).__name__}: {err}".splitlines()[0]
        ) from None
    if not isinstance(out, torch.Tensor) or out.dim() != 2 or out.shape[0] != 2:
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise UsageError(
            f"encoder: {target} must map [B, {', '.join(map(str, input_shape))}] to [B, d] "
            f"features, got {shape} for B = 2"
        )
    return net


# ----------------------------------------------------------------------------- statistics
def _interval(values: list[float]) -> dict[str, Any]:
    t = paired_test("", values)  # the one-sample t-interval of the values
    return {"mean": t.mean, "lo": t.ci[0], "hi": t.ci[1], "n": t.n, "values": t.diffs}


def summarise(results: list[dict[str, Any]], metrics: list[str]) -> dict[str, Any]:
    """Per (method, mode) and metric: mean and 95% t-interval over seeds; per method, metric
    and contrast: the paired test; Holm over the primary family (GeSSL − plain on
    :data:`PRIMARY`'s metrics, per method)."""
    rows = []
    keys = list(dict.fromkeys((r["method"], r["mode"]) for r in results))
    for method, mode in keys:
        sel = sorted((r for r in results if (r["method"], r["mode"]) == (method, mode)),
                     key=lambda r: r["seed"])  # fmt: skip
        rows.append(
            {
                "method": method,
                "mode": mode,
                "seeds": [r["seed"] for r in sel],
                **{k: _interval([r["metrics"][k] for r in sel]) for k in metrics},
            }
        )
    found: list[tuple[dict[str, Any], PairedTest]] = []  # (labels, test)
    for method in dict.fromkeys(m for m, _ in keys):
        by_mode = {
            mode: {
                r["seed"]: r["metrics"]
                for r in results
                if (r["method"], r["mode"]) == (method, mode)
            }
            for mode in MODES
        }
        for a, b in CONTRASTS:
            if not by_mode[a] or not by_mode[b]:
                continue
            seeds = sorted(set(by_mode[a]) & set(by_mode[b]))
            for k in metrics:
                diffs = [by_mode[a][s][k] - by_mode[b][s][k] for s in seeds]
                primary = (a, b) == ("gessl", "plain") and k in PRIMARY.values()
                labels = {"method": method, "metric": k, "contrast": f"{a}-{b}", "primary": primary}
                found.append((labels, paired_test(f"{method} {k}: {a} − {b}", diffs)))
    family = [t for labels, t in found if labels["primary"]]
    correct(family)  # Holm over the primary family only
    tests = []
    for labels, t in found:
        d = {**labels, **t.to_dict()}
        if not labels["primary"]:  # secondary: uncorrected p only
            d.update(p_holm=None, significant=None, direction="secondary")
        tests.append(d)
    return {"rows": rows, "tests": tests, "family_size": len(family)}


def saturated(rows: list[dict[str, Any]], metrics: list[str]) -> list[str]:
    """The accuracy metrics whose mean is within 0.02 of 1 for every (method, mode)."""
    return [
        k
        for k in metrics
        if not k.startswith("sigma")
        and all(r[k]["mean"] is not None and r[k]["mean"] >= 0.98 for r in rows)
    ]


def _cell(d: dict[str, Any]) -> str:
    if d["mean"] is None or not math.isfinite(d["mean"]):
        return "—"
    if d["n"] < 2 or not math.isfinite(d["lo"]):
        return f"{d['mean']:.3f}"
    return f"{d['mean']:.3f} [{d['lo']:.3f}, {d['hi']:.3f}]"


def markdown(summary: dict[str, Any], metrics: list[str], spec: dict[str, Any]) -> str:
    lines = [
        "| method | mode | " + " | ".join(metrics) + " |",
        "|---|---|" + "---|" * len(metrics),
    ]
    for r in summary["rows"]:
        lines.append(
            f"| {r['method']} | {r['mode']} | " + " | ".join(_cell(r[k]) for k in metrics) + " |"
        )
    if ":" in spec["encoder"]:
        lines.append(
            f"\n{spec['dataset']}; the user's encoder {spec['encoder']} ({spec['checkpoint']}), "
            "read out once (no training, no seeds: no interval); σ is not measured (it needs "
            "the method that trained the encoder)."
        )
        return "\n".join(lines)
    lines.append(
        f"\nmean [95% t-interval] over {len(summary['rows'][0]['seeds'])} seeds; "
        f"{spec['dataset']}, encoder {spec['encoder']}, {spec['steps']} steps; σ per query in "
        "nats, KL(π_model ‖ π_opt), floor 0 (task models fine-tuned from the model)."
    )
    if summary["tests"]:
        lines += [
            "",
            "| method | metric | contrast | mean [95% CI] | p | p_Holm |",
            "|---|---|---|---|---|---|",
        ]
        for t in summary["tests"]:
            if t["metric"] not in PRIMARY.values() and t["metric"] != "shift_probe":
                continue
            ci = (
                "—"
                if t["mean"] is None
                else f"{t['mean']:+.3f} [{t['ci'][0]:+.3f}, {t['ci'][1]:+.3f}]"
            )
            ph = "—" if t["p_holm"] is None else f"{t['p_holm']:.2g} ({t['direction']})"
            lines.append(
                f"| {t['method']} | {t['metric']} | {t['contrast']} | {ci} | {t['p']:.2g} | {ph} |"
            )
        lines.append(
            f"\nHolm over the {summary['family_size']} primary tests (GeSSL − plain on "
            + ", ".join(PRIMARY.values())
            + " per method); the other rows are secondary (uncorrected p)."
        )
    return "\n".join(lines)


# ----------------------------------------------------------------------------- the command
def _encoder(config: dict[str, Any]) -> str:
    """The configured encoder, or the default for the dataset: ``cnn1d`` for MNIST-1D's
    signals, ``cnn`` for images."""
    if config["encoder"] is not None:
        return str(config["encoder"])
    return "cnn1d" if config["dataset"] == "mnist1d" else "cnn"


def make_spec(config: dict[str, Any]) -> dict[str, Any]:
    """Everything the numbers depend on, with the profile's defaults filled in."""
    p = PROFILES[config["profile"]]
    user = ":" in _encoder(config)
    shifts = config["shifts"]
    if shifts is None:
        shifts = MNIST1D_SHIFTS if config["dataset"] == "mnist1d" else {}
    return {
        "profile": config["profile"],
        "dataset": config["dataset"],
        "data_root": config["data_root"],
        "data_options": dict(config["data_options"] or {}),
        "seen_classes": config["seen_classes"],
        "methods": [] if user else list(config["methods"]),
        "modes": [] if user else list(config["modes"]),
        "gessl": dict(config["gessl"]),
        "encoder": _encoder(config),
        "checkpoint": config["checkpoint"],
        "width": config["width"],
        "proj_dims": list(config["proj_dims"]),
        "tasks_per_step": config["tasks_per_step"],
        "n_samples": config["n_samples"],
        "outer_lr": config["outer_lr"],
        "steps": int(config["steps"] or p["steps"]),
        "seeds": int(config["seeds"] or p["seeds"]),
        "shifts": {k: dict(v) for k, v in shifts.items()},
        "shift_samples": p["shift_samples"],
        "few_shot_queries": 5 if config["profile"] == "tiny" else 10,
        "readout": dict(config["readout"]),
        "device": config["device"],
    }


READOUT_KEYS = ("shots", "few_shot_shots", "few_shot_way", "report_tasks", "provider_steps")


@validates(ex)
def _check(config: dict[str, Any]) -> None:
    check_choice("profile", config["profile"], PROFILES)
    check_choices("modes", config["modes"], MODES, empty=False)
    if config["seeds"] is not None:
        check_int("seeds", config["seeds"], 2)
    check_bool("figures", config["figures"])
    ev = config["readout"]
    unknown = sorted(set(ev) - set(READOUT_KEYS))
    if unknown:
        raise UsageError(
            f"readout: unknown key {unknown[0]!r}; valid keys: {', '.join(READOUT_KEYS)}"
        )
    for key in ("shots", "few_shot_shots"):
        vals = ev.get(key)
        if not isinstance(vals, list) or not vals:
            raise UsageError(f"readout.{key}: expected a non-empty list of counts, got {vals!r}")
        for i, v in enumerate(vals):
            check_int(f"readout.{key}[{i}]", v, 1)
    check_int("readout.few_shot_way", ev.get("few_shot_way"), 2)
    check_int("readout.report_tasks", ev.get("report_tasks"), 1)
    check_int("readout.provider_steps", ev.get("provider_steps"), 1)
    options = config["data_options"]
    if options is not None and not isinstance(options, dict):
        raise UsageError(f"data_options: expected {{argument: value}}, got {options!r}")
    if options and config["dataset"] != "mnist1d":
        raise UsageError("data_options: only MNIST-1D is generated (dataset=mnist1d)")
    shifts = config["shifts"]
    if shifts is not None:
        if not isinstance(shifts, dict) or not all(isinstance(v, dict) for v in shifts.values()):
            raise UsageError(f"shifts: expected {{name: {{generation arguments}}}}, got {shifts!r}")
        if shifts and config["dataset"] != "mnist1d":
            raise UsageError("shifts: distribution shifts are generated for dataset=mnist1d only")
    if config["dataset"] == "mnist1d":
        from gessl.data import MNIST1D_DEFAULTS

        for name, change in (shifts or MNIST1D_SHIFTS).items():
            bad = sorted(set(change) - set(MNIST1D_DEFAULTS))
            if bad:
                raise UsageError(
                    f"shifts.{name}: unknown generation argument {bad[0]!r}; valid: "
                    + ", ".join(MNIST1D_DEFAULTS)
                )
        bad = sorted(set(options or {}) - set(MNIST1D_DEFAULTS))
        if bad:
            raise UsageError(
                f"data_options: unknown generation argument {bad[0]!r}; valid: "
                + ", ".join(MNIST1D_DEFAULTS)
            )
    encoder = _encoder(config)
    if ":" not in encoder and config["checkpoint"] is not None:
        raise UsageError("checkpoint: only read with a user's encoder (encoder='module:function')")
    data = _study_data(_data_key(make_spec(config)), 0)
    if ":" in encoder:  # a user's encoder: import, load and try it now
        load_user_encoder(encoder, config["checkpoint"], data.input_shape)
    else:
        from gessl.models import build_backbone

        try:
            build_backbone(encoder, data.input_shape, config["width"])
        except ValueError as err:
            raise UsageError(f"encoder: {err} ({config['dataset']})") from None


@ex.main
def main(
    profile: str,
    dataset: str,
    data_root: str | None,
    data_options: dict[str, Any] | None,
    seen_classes: list[int] | None,
    methods: list[str],
    modes: list[str],
    gessl: dict[str, Any],
    encoder: str | None,
    checkpoint: str | None,
    width: int,
    proj_dims: list[int],
    tasks_per_step: int,
    n_samples: int,
    outer_lr: float,
    steps: int | None,
    seeds: int | None,
    shifts: dict[str, dict[str, Any]] | None,
    readout: dict[str, Any],
    jobs: int,
    scheduler: str | None,
    cluster: str | None,
    cluster_options: dict[str, Any] | None,
    figures: bool,
    device: str,
    _run: Any,
) -> dict[str, Any]:
    # every key is an argument: Sacred then accepts new entries of the dict-valued ones
    # (``data_options.num_samples=800``)
    engine_keys = ("jobs", "scheduler", "cluster", "cluster_options")
    config = {k: v for k, v in locals().items() if k not in (*engine_keys, "figures", "_run")}
    spec = make_spec(config)
    user = ":" in spec["encoder"]
    if user:
        units = [{"method": None, "mode": "encoder", "seed": 0}]
    else:
        units = [
            {"method": m, "mode": mode, "seed": s}
            for m in spec["methods"]
            for s in range(spec["seeds"])
            for mode in spec["modes"]
        ]
    workers = engine(jobs, scheduler, cluster, cluster_options)
    if spec["device"] != "cpu":
        workers = 1  # one device: one process
    results: list[dict[str, Any]] = []
    bar = progress(total=len(units), desc="universality", unit="model")
    start = time.perf_counter()

    def on_result(unit: dict[str, Any], res: dict[str, Any]) -> None:
        results.append(res)
        bar.update(1)
        label = "user encoder" if unit["method"] is None else f"{unit['method']} {unit['mode']}"
        for k, v in res["metrics"].items():
            _run.log_scalar(f"{label.replace(' ', '/')}/{k}", v, unit["seed"])
        print(
            f"{label:24s} seed {unit['seed']} ({res['seconds']:.0f} s): "
            + ", ".join(
                f"{k} {v:.3f}"
                for k, v in res["metrics"].items()
                if not k.startswith("shift_") or k == "shift_probe"
            ),
            flush=True,
        )

    with bar:
        in_workers(partial(run_unit, spec=spec), units, workers, on_result)
    seconds = time.perf_counter() - start
    metrics = [k for k in results[0]["metrics"]]
    for r in results:
        if user:
            r["method"] = spec["encoder"]
    summary = summarise(results, metrics)
    md = markdown(summary, metrics, spec)
    sat = saturated(summary["rows"], metrics)
    print(md)
    if sat:
        print(f"saturated (every model within 0.02 of 1.0): {', '.join(sat)}")
    properties = {k: list(v) for k, v in PROPERTIES.items()}
    properties["transferability"] += [k for k in metrics if k.startswith("shift_")]
    if user:
        properties.pop("sigma")
    record = {
        "spec": spec,
        "properties": properties,
        "metrics": metrics,
        "primary": PRIMARY,
        "seconds": seconds,
        "saturated": sat,
        **summary,
        "runs": sorted(results, key=lambda r: (str(r["method"]), r["mode"], r["seed"])),
    }
    add_text_artifacts(
        _run,
        {"universality.json": json.dumps(record, indent=1), "universality.md": md},
    )
    _run.info["wandb_tables"] = {
        "universality": {
            "columns": ["method", "mode", *metrics],
            "data": [
                [r["method"], r["mode"], *[r[k]["mean"] for k in metrics]] for r in summary["rows"]
            ],
        }
    }
    if figures:
        import tempfile

        from paper_figures.universality_plot import save_universality

        with tempfile.TemporaryDirectory() as tmp:
            for png in save_universality(record, tmp):
                _run.add_artifact(png, os.path.basename(png))
    significant = [t for t in summary["tests"] if t["primary"] and t["significant"]]
    return {
        "models": len(results),
        "seconds": round(seconds, 1),
        "saturated": sat,
        "family_size": summary["family_size"],
        "gessl_minus_plain_significant": [
            f"{t['method']} {t['metric']} {t['direction']}" for t in significant
        ],
    }


if __name__ == "__main__":
    main_entry(ex)
