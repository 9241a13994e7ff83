"""Pretrain one method (plain or GeSSL) on a dataset, then run the evaluation suite.

    python -m experiments.pretrain                                   # SimCLR + GeSSL on digits
    python -m experiments.pretrain with method=byol mode=plain steps=500
    python -m experiments.pretrain with 'gessl={"inner_steps": 2, "lookahead_steps": 3}'
    python -m experiments.pretrain with dataset=cifar10 data_root=/data/cifar-10-batches-py \\
        encoder=resnet18 width=16

Per-step training metrics (loss, σ-term, support loss, seconds) and the evaluation results
(linear probe, kNN, few-shot on held-out classes, alignment/uniformity, effective rank, the
universality report) go to the Sacred record and W&B; the final weights are an artifact.
"""

from __future__ import annotations

import os
import tempfile
from typing import Any

import torch

from experiments.pipeline import (
    DEFAULT_GESSL,
    build_model,
    evaluate,
    flat_metrics,
    prepare_data,
    train,
)
from experiments.tracking import main_entry, make_experiment

ex = make_experiment("pretrain")


@ex.config
def config() -> None:
    method = "simclr"  # any of gessl.methods.available_methods()
    method_options = {}  # the method's own options (temperature, momentum, ...)
    mode = "gessl"  # "gessl" or "plain"
    gessl = dict(DEFAULT_GESSL)
    dataset = "digits"  # "digits" (bundled), "cifar10", "cifar100", "stl10"
    data_root = None  # folder of the CIFAR/STL files (or $GESSL_DATA_DIR/<dataset>)
    seen_classes = None  # None: digits 0-6, else the first 70% of the classes
    encoder = "cnn"  # "mlp", "cnn", "resnet18"
    width = 32
    proj_dims = [64, 32]
    steps = 300
    tasks_per_step = 4  # M
    n_samples = 32  # N
    outer_lr = 1e-3
    seed = 0
    checkpoint_every = 0  # steps between checkpoints (0: none)
    checkpoint_dir = "runs/checkpoints"  # where checkpoints go
    evaluation = {"few_shot_way": 5, "few_shot_shot": 5, "provider": "trained"}


def log_step(_run: Any):
    def callback(log: dict) -> None:
        step = int(log["step"])
        for k in ("loss", "ssl", "kl", "support_loss", "seconds"):
            _run.log_scalar(f"train/{k}", log[k], step)

    return callback


@ex.main
def main(
    method: str,
    method_options: dict,
    mode: str,
    gessl: dict,
    dataset: str,
    data_root: str | None,
    seen_classes: list[int] | None,
    encoder: str,
    width: int,
    proj_dims: list[int],
    steps: int,
    tasks_per_step: int,
    n_samples: int,
    outer_lr: float,
    seed: int,
    checkpoint_every: int,
    checkpoint_dir: str,
    evaluation: dict,
    _run: Any,
) -> dict[str, Any]:
    splits = prepare_data(dataset, data_root, seen_classes, seed)
    model = build_model(method, encoder, width, proj_dims, splits.input_shape, seed, method_options)
    ckpt = (
        os.path.join(checkpoint_dir, f"pretrain-{method}-{mode}-{seed}.pt")
        if checkpoint_every
        else None
    )
    _, seconds = train(
        model,
        splits,
        mode,
        steps,
        tasks_per_step,
        n_samples,
        seed,
        gessl,
        outer_lr,
        ckpt,
        checkpoint_every,
        log_step(_run),
    )
    result = evaluate(model, splits, seed=seed, **evaluation)
    _run.info["evaluation"] = result
    metrics = flat_metrics(result)
    for k, v in metrics.items():
        _run.log_scalar(f"eval/{k}", v, steps)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "model.pt")
        torch.save(model.state_dict(), path)
        _run.add_artifact(path, "model.pt")
    print(
        f"{method} ({mode}) on {dataset}: " + ", ".join(f"{k} {v:.4f}" for k, v in metrics.items())
    )
    return {"train_seconds": round(seconds, 3), "steps": steps, **metrics}


if __name__ == "__main__":
    main_entry(ex)
