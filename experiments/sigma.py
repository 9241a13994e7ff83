"""σ over training, GeSSL against the plain base method on the same task stream.

    python -m experiments.sigma                         # SimCLR on digits, 300 steps
    python -m experiments.sigma with method=byol steps=600 eval_every=50

Every ``eval_every`` outer steps both models are measured on the *same* fixed evaluation tasks
(training images, fresh images of the seen classes, held-out classes): σ and sigma_excess per
query against the ``trained`` optimal task models, and task accuracy. The series are logged as
``sigma/<split>/<mode>`` against the training step (and kept in ``info.json`` for the figures).
"""

from __future__ import annotations

from typing import Any

import torch

from experiments.pipeline import DEFAULT_GESSL, MEASURING_CRITIC, build_model, prepare_data
from experiments.tracking import main_entry, make_experiment
from experiments.validation import UsageError, check_int, validates
from gessl.data import DatasetTasks
from gessl.eval import universality_report
from gessl.trainer import GeSSLConfig, Trainer

ex = make_experiment("sigma")


@ex.config
def config() -> None:
    method = "simclr"
    gessl = dict(DEFAULT_GESSL)
    dataset = "digits"
    data_root = None
    encoder = "cnn"
    width = 32
    proj_dims = [64, 32]
    steps = 300
    eval_every = 50  # steps between two σ measurements
    tasks_per_step = 4
    n_samples = 32
    outer_lr = 1e-3
    report_tasks = 6  # held-out tasks per σ measurement
    # the measuring critic of σ (the same key as in pretrain, study and ablation); training's
    # σ-term critic is gessl.sigma_critic
    evaluation = dict(MEASURING_CRITIC)
    provider_steps = 60  # steps of the reference model that provides the optimal task models
    seed = 0
    device = "auto"  # "auto" (CUDA when available, else CPU), "cpu", "cuda", "cuda:<i>"
    precision = "float32"  # "float32" or "bf16" (bfloat16 autocast forward passes)


@validates(ex)
def _check(config: dict[str, Any]) -> None:
    check_int("eval_every", config["eval_every"], 1)
    check_int("report_tasks", config["report_tasks"], 1)
    check_int("provider_steps", config["provider_steps"], 1)
    if config["steps"] < config["eval_every"]:
        raise UsageError(
            f"steps: must be >= eval_every ({config['eval_every']}), got {config['steps']}"
        )


@ex.main
def main(
    method: str,
    gessl: dict,
    dataset: str,
    data_root: str | None,
    encoder: str,
    width: int,
    proj_dims: list[int],
    steps: int,
    eval_every: int,
    tasks_per_step: int,
    n_samples: int,
    outer_lr: float,
    report_tasks: int,
    evaluation: dict,
    provider_steps: int,
    seed: int,
    device: str,
    precision: str,
    _run: Any,
) -> dict[str, Any]:
    splits = prepare_data(dataset, data_root, None, seed)
    gen = torch.Generator().manual_seed(20_000 + seed)
    eval_sets = {
        name: DatasetTasks(d, splits.augment).sample(report_tasks, n_samples, gen)
        for name, d in (
            ("train", splits.train),
            ("fresh", splits.test),
            ("held_out", splits.held_out),
        )
    }
    measure = {**MEASURING_CRITIC, **evaluation}
    trainers = {}
    for mode in ("plain", "gessl"):
        model = build_model(method, encoder, width, proj_dims, splits.input_shape, seed)
        cfg = GeSSLConfig(
            mode=mode,
            tasks_per_step=tasks_per_step,
            outer_lr=outer_lr,
            seed=seed,
            **{"precision": precision, **(gessl if mode == "gessl" else {})},
        )
        trainers[mode] = Trainer(
            model,
            DatasetTasks(splits.train, splits.augment),
            cfg,
            n_samples=n_samples,
            device=device,
        )
    series: dict[str, dict[str, list[float]]] = {}
    seconds = {"plain": 0.0, "gessl": 0.0}
    for step in range(0, steps + 1, eval_every):
        for mode, tr in trainers.items():
            if step:
                tr.fit(eval_every, progress=False)
                seconds[mode] += sum(h["seconds"] for h in tr.history[-eval_every:])
            rep = universality_report(
                tr.method,
                eval_sets,
                temperature=measure["sigma_temperature"],
                critic=measure["sigma_critic"],  # the measuring critic (one key everywhere)
                provider_steps=provider_steps,
            )
            for split, r in rep.items():
                for key in ("sigma", "sigma_excess", "accuracy"):
                    name = f"{key}/{split}/{mode}"
                    _run.log_scalar(name, r[key], step)
                    series.setdefault(name, {"steps": [], "values": []})
                    series[name]["steps"].append(step)
                    series[name]["values"].append(r[key])
        print(
            f"step {step}: "
            + ", ".join(
                f"σ_{s} plain {series[f'sigma/{s}/plain']['values'][-1]:.3f} "
                f"GeSSL {series[f'sigma/{s}/gessl']['values'][-1]:.3f}"
                for s in ("train", "fresh", "held_out")
            )
        )
    _run.info["series"] = series
    _run.info["seconds"] = seconds
    _run.info["gradient_path"] = {m: tr.outer_step.describe() for m, tr in trainers.items()}
    final = {name: s["values"][-1] for name, s in series.items()}
    return {"final": final, "seconds": seconds, "steps": steps}


if __name__ == "__main__":
    main_entry(ex)
