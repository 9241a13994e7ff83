"""The GeSSL-vs-base study on digits: classes 0–6 pretrain, 7–9 held out.

    python -m experiments.study                      # quick: 200 steps, 3 seeds (~11 min, 2 cores)
    python -m experiments.study with profile=full    # 1000 steps, 5 seeds

SimCLR, BYOL and Barlow Twins, each trained plainly and with GeSSL from the same initialisation
on the same task stream (matched samples; wall-clock reported), then evaluated: linear probe and
kNN on seen classes, few-shot on the held-out classes (3-way with the default split, which holds
out only 7, 8, 9; ``with 'seen_classes=[0,1,2,3,4]'`` gives 5-way on 5–9), σ of
the universality report on training / fresh / held-out tasks. The table (mean ± std over seeds)
is printed and saved as ``study.md`` and ``study.json``. Whatever the numbers say is the result.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from experiments.pipeline import (
    DEFAULT_GESSL,
    build_model,
    evaluate,
    flat_metrics,
    prepare_data,
    train,
)
from experiments.tracking import add_text_artifacts, main_entry, make_experiment
from experiments.validation import UsageError, check_choice, validates

ex = make_experiment("study")

COLUMNS = [
    "linear_probe",
    "knn",
    "few_shot",
    "sigma_train",
    "sigma_fresh",
    "sigma_held_out",
    "train_seconds",
]
PROFILES = {
    "quick": {"steps": 200, "seeds": [0, 1, 2]},
    "full": {"steps": 1000, "seeds": [0, 1, 2, 3, 4]},
    "tiny": {"steps": 3, "seeds": [0, 1]},
}


@ex.config
def config() -> None:
    profile = "quick"  # "quick", "full" or "tiny": steps and seeds per method
    methods = ["simclr", "byol", "barlow_twins"]  # each trained plain and with GeSSL
    seen_classes = list(range(7))  # digits pretrained on; the others are held out
    gessl = dict(DEFAULT_GESSL)
    encoder = "cnn"
    width = 32
    proj_dims = [64, 32]
    tasks_per_step = 4
    n_samples = 32
    evaluation = {
        "few_shot_way": 5,
        "few_shot_shot": 5,
        "few_shot_episodes": 200,
        "provider_steps": 60,
        "report_tasks": 6,
    }
    device = "auto"  # "auto" (CUDA when available, else CPU), "cpu", "cuda", "cuda:<i>"
    precision = "float32"  # "float32" or "bf16" (bfloat16 autocast forward passes)


def summarise(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for key in dict.fromkeys((r["method"], r["mode"]) for r in runs):
        sel = [r for r in runs if (r["method"], r["mode"]) == key]
        rows.append(
            {
                "method": key[0],
                "mode": key[1],
                "seeds": len(sel),
                **{
                    c: {
                        "mean": float(np.mean([r[c] for r in sel])),
                        "std": float(np.std([r[c] for r in sel])),
                    }
                    for c in COLUMNS
                },
            }
        )
    return rows


def markdown(rows: list[dict[str, Any]], steps: int, way: int) -> str:
    names = {
        "linear_probe": "linear probe",
        "knn": "kNN",
        "few_shot": f"{way}-way 5-shot",
        "sigma_train": "σ train",
        "sigma_fresh": "σ fresh",
        "sigma_held_out": "σ held-out",
        "train_seconds": "train s",
    }
    lines = [
        "| method | mode | " + " | ".join(names[c] for c in COLUMNS) + " |",
        "|---|---|" + "---|" * len(COLUMNS),
    ]
    for r in rows:
        cells = [
            f"{r[c]['mean']:.3f} ± {r[c]['std']:.3f}"
            if c != "train_seconds"
            else f"{r[c]['mean']:.1f}"
            for c in COLUMNS
        ]
        lines.append(f"| {r['method']} | {r['mode']} | " + " | ".join(cells) + " |")
    lines.append(
        f"\n{steps} outer steps of M×N images per run; mean ± std over "
        f"{rows[0]['seeds']} seeds; σ per query (nats) vs `trained` task models."
    )
    return "\n".join(lines)


@validates(ex)
def _check(config: dict[str, Any]) -> None:
    check_choice("profile", config["profile"], PROFILES)
    seen = config["seen_classes"]
    if not set(seen) <= set(range(10)) or not 2 <= len(set(seen)) <= 8:
        raise UsageError(
            f"seen_classes: must name 2 to 8 distinct digits 0–9 (the rest are held out), "
            f"got {seen}"
        )


@ex.main
def main(
    profile: str,
    methods: list[str],
    seen_classes: list[int],
    gessl: dict,
    encoder: str,
    width: int,
    proj_dims: list[int],
    tasks_per_step: int,
    n_samples: int,
    evaluation: dict,
    device: str,
    precision: str,
    _run: Any,
) -> dict[str, Any]:
    steps, seeds = PROFILES[profile]["steps"], PROFILES[profile]["seeds"]
    runs = []
    for method in methods:
        for seed in seeds:
            splits = prepare_data("digits", None, seen_classes, seed)
            for mode in ("plain", "gessl"):
                model = build_model(method, encoder, width, proj_dims, splits.input_shape, seed)
                _, seconds = train(
                    model,
                    splits,
                    mode,
                    steps,
                    tasks_per_step,
                    n_samples,
                    seed,
                    gessl,
                    progress=False,
                    device=device,
                    precision=precision,
                )
                m = flat_metrics(evaluate(model, splits, seed=seed, **evaluation))
                run = {"method": method, "mode": mode, "seed": seed, "train_seconds": seconds, **m}
                runs.append(run)
                for c in COLUMNS:
                    _run.log_scalar(f"{method}/{mode}/{c}", run[c], seed)
                print(
                    f"{method:13s} {mode:5s} seed {seed}: "
                    + ", ".join(f"{c} {run[c]:.3f}" for c in COLUMNS),
                    flush=True,
                )
    rows = summarise(runs)
    way = int(runs[0]["few_shot_way"])  # the way actually run (capped by the held-out classes)
    md = markdown(rows, steps, way)
    print(md)
    add_text_artifacts(
        _run,
        {
            "study.md": md,
            "study.json": json.dumps(
                {"profile": profile, "steps": steps, "rows": rows, "runs": runs}, indent=1
            ),
        },
    )
    _run.info["wandb_tables"] = {
        "study": {
            "columns": ["method", "mode", *COLUMNS],
            "data": [[r["method"], r["mode"], *[r[c]["mean"] for c in COLUMNS]] for r in rows],
        }
    }
    return {"rows": rows, "steps": steps, "few_shot_way": way}


if __name__ == "__main__":
    main_entry(ex)
