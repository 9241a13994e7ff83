"""Sweep one GeSSL option and measure its effect (λ, K, γ, order, adapt, threshold, ...).

    python -m experiments.ablation                                   # λ ∈ {0, 1, 2, 4}
    python -m experiments.ablation with parameter=inner_steps 'values=[0, 1, 2, 4]'
    python -m experiments.ablation with parameter=order 'values=["first", "second"]'

For every value (and seed) one GeSSL run trains from the same initialisation on the same task
stream; the table of results (mean ± std over seeds) is printed, logged, and saved as
``ablation.json`` / ``ablation.md`` artifacts.
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
from experiments.validation import UsageError, check_choice, check_gessl, check_int, validates
from gessl.trainer import GeSSLConfig

ex = make_experiment("ablation")

COLUMNS = ["linear_probe", "few_shot", "sigma_fresh", "sigma_held_out", "train_seconds"]


@ex.config
def config() -> None:
    method = "simclr"
    parameter = "lookahead_steps"  # any GeSSLConfig field
    values = [0, 1, 2, 4]  # the values of the parameter, one training per value and seed
    gessl = dict(DEFAULT_GESSL)
    dataset = "digits"
    data_root = None
    encoder = "cnn"
    width = 32
    proj_dims = [64, 32]
    steps = 150
    tasks_per_step = 4
    n_samples = 32
    seeds = [0]  # seeds of every value (paired across values)
    evaluation = {"few_shot_way": 5, "few_shot_episodes": 200, "provider_steps": 60}
    device = "auto"  # "auto" (CUDA when available, else CPU), "cpu", "cuda", "cuda:<i>"
    precision = "float32"  # "float32" or "bf16" (bfloat16 autocast forward passes)


def table(rows: list[dict[str, Any]], parameter: str) -> str:
    head = f"| {parameter} | " + " | ".join(COLUMNS) + " |"
    lines = [head, "|" + "---|" * (len(COLUMNS) + 1)]
    for r in rows:
        cells = [f"{r[c]['mean']:.4f} ± {r[c]['std']:.4f}" for c in COLUMNS]
        lines.append(f"| {r['value']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


@validates(ex)
def _check(config: dict[str, Any]) -> None:

    fields = list(GeSSLConfig.__dataclass_fields__)
    check_choice("parameter", config["parameter"], fields)
    values, seeds = config["values"], config["seeds"]
    if not isinstance(values, list) or not values:
        raise UsageError(f"values: expected a non-empty list, got {values!r}")
    for v in values:
        check_gessl(
            f"values ({config['parameter']}={v!r})",
            {**config["gessl"], config["parameter"]: v},
            tasks_per_step=config["tasks_per_step"],
        )
    if not isinstance(seeds, list) or not seeds:
        raise UsageError(f"seeds: expected a non-empty list of integers, got {seeds!r}")
    for i, s in enumerate(seeds):
        check_int(f"seeds[{i}]", s)


@ex.main
def main(
    method: str,
    parameter: str,
    values: list,
    gessl: dict,
    dataset: str,
    data_root: str | None,
    encoder: str,
    width: int,
    proj_dims: list[int],
    steps: int,
    tasks_per_step: int,
    n_samples: int,
    seeds: list[int],
    evaluation: dict,
    device: str,
    precision: str,
    _run: Any,
) -> dict[str, Any]:
    rows = []
    for i, value in enumerate(values):
        per_seed = []
        for seed in seeds:
            splits = prepare_data(dataset, data_root, None, seed)
            model = build_model(method, encoder, width, proj_dims, splits.input_shape, seed)
            opts = {**gessl, parameter: value}
            _, seconds = train(
                model,
                splits,
                "gessl",
                steps,
                tasks_per_step,
                n_samples,
                seed,
                opts,
                progress=False,
                device=device,
                precision=precision,
            )
            m = flat_metrics(evaluate(model, splits, seed=seed, **evaluation))
            m["train_seconds"] = seconds
            per_seed.append(m)
            for k in COLUMNS:
                _run.log_scalar(f"{parameter}={value}/{k}", m[k], seed)
        row = {
            "value": value,
            **{
                k: {
                    "mean": float(np.mean([p[k] for p in per_seed])),
                    "std": float(np.std([p[k] for p in per_seed])),
                }
                for k in COLUMNS
            },
        }
        rows.append(row)
        for k in COLUMNS:
            _run.log_scalar(f"ablation/{k}", row[k]["mean"], i)
        print(f"{parameter}={value}: " + ", ".join(f"{k} {row[k]['mean']:.4f}" for k in COLUMNS))
    md = table(rows, parameter)
    print(md)
    add_text_artifacts(
        _run,
        {
            "ablation.json": json.dumps({"parameter": parameter, "rows": rows}, indent=1),
            "ablation.md": md,
        },
    )
    _run.info["wandb_tables"] = {
        "ablation": {
            "columns": [parameter, *COLUMNS],
            "data": [[str(r["value"]), *[r[k]["mean"] for k in COLUMNS]] for r in rows],
        }
    }
    return {"parameter": parameter, "rows": rows}


if __name__ == "__main__":
    main_entry(ex)
