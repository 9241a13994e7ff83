"""Pretrain one method (plain or GeSSL) on a dataset, then run the evaluation suite.

    python -m experiments.pretrain                                   # SimCLR + GeSSL on digits
    python -m experiments.pretrain with method=byol mode=plain steps=500
    python -m experiments.pretrain with 'gessl={"inner_steps": 2, "lookahead_steps": 3}'
    python -m experiments.pretrain with method=byol steps=300 checkpoint_every=50
    python -m experiments.pretrain with resume=runs/7              # continue run 7 (new record)
    python -m experiments.pretrain with dataset=cifar10 data_root=/data/cifar-10-batches-py \\
        encoder=resnet18 width=16

Per-step training metrics (loss, σ-term, support loss, seconds) and the evaluation results
(linear probe, kNN, few-shot on held-out classes, alignment/uniformity, effective rank, the
universality report) go to the Sacred record and W&B; the final weights are an artifact.
With ``checkpoint_every`` the run keeps its last checkpoint in its own record folder,
``runs/<id>/checkpoint.pt``; ``resume=runs/<id>`` starts a new record that continues from it
with the parent's configuration (``info.resumed_from``, ``info.resumed_at_step``), bit for bit
the uninterrupted run.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import MutableMapping
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
from experiments.validation import UsageError
from gessl.trainer.checkpoint import load_checkpoint

ex = make_experiment("pretrain")

#: a run's checkpoint inside its record folder: ``runs/<id>/checkpoint.pt``
CHECKPOINT_FILE = "checkpoint.pt"
#: the keys a resumed run may set differently from its parent (they change neither the
#: trajectory nor the weights at a given step)
RESUME_MAY_CHANGE = ("resume", "steps", "checkpoint_every")


def check_resume(path: str) -> dict[str, Any]:
    """Check that ``path`` is a pretrain record with a checkpoint; nothing is trained.

    Returns ``{"path", "config", "checkpoint", "step"}``: the normalised folder, its
    ``config.json``, the checkpoint file and the step it was written at.

    Raises:
        ValueError: one line naming ``path``: no such folder, not a run record, a record of
            another experiment, no checkpoint, or a checkpoint that is unreadable or would run
            code when loaded (:class:`gessl.trainer.checkpoint.UnsafeCheckpointError`).
    """
    folder = os.path.normpath(str(path))
    if not os.path.isdir(folder):
        raise ValueError(f"resume: no run record at {path!r} (expected a folder runs/<id>)")
    config_file = os.path.join(folder, "config.json")
    if not os.path.isfile(config_file):
        raise ValueError(f"resume: {path!r} is not a run record (it has no config.json)")
    try:
        with open(config_file) as fh:
            config = json.load(fh)
        run_file = os.path.join(folder, "run.json")
        name = "pretrain"
        if os.path.isfile(run_file):
            with open(run_file) as fh:
                name = json.load(fh).get("experiment", {}).get("name", "pretrain")
    except (OSError, ValueError) as err:
        raise ValueError(f"resume: cannot read the record {path!r}: {err}") from None
    if name != "pretrain":
        raise ValueError(f"resume: {path!r} is a record of {name!r}, not of pretrain")
    checkpoint = os.path.join(folder, CHECKPOINT_FILE)
    if not os.path.isfile(checkpoint):
        raise ValueError(
            f"resume: the run {path!r} has no checkpoint ({checkpoint} is missing: it ran with "
            "checkpoint_every=0 or stopped before its first checkpoint)"
        )
    state = load_checkpoint(checkpoint)  # weights_only: a file that would run code is refused
    if not isinstance(state.get("step"), int):
        raise ValueError(f"resume: {checkpoint} is not a GeSSL trainer checkpoint")
    return {"path": folder, "config": config, "checkpoint": checkpoint, "step": state["step"]}


def _differences(given: Any, parent: Any, key: str) -> list[str]:
    """``key=given (parent: value)`` for each dotted key where ``given`` differs from
    ``parent`` (keys only ``given`` has are ignored)."""
    if isinstance(given, dict) and isinstance(parent, dict):
        return [
            d for k in parent if k in given for d in _differences(given[k], parent[k], f"{key}.{k}")
        ]
    return [] if given == parent else [f"{key}={given!r} (parent: {parent!r})"]


def inherit_config(scope: MutableMapping[str, Any], resume: str) -> None:
    """Give the config scope of a resumed run its parent's values (called inside ``config``).

    Sacred keeps the command-line values of the scope: any that contradicts the parent (other
    than :data:`RESUME_MAY_CHANGE`) is refused, as is ``steps`` below the checkpoint's step.
    """
    from sacred.config.utils import undogmatize

    parent = check_resume(resume)
    conflicts = []
    for key, value in parent["config"].items():
        if key == "resume" or key not in scope:
            continue  # a key this version no longer has is left out
        scope[key] = value  # a command-line value stays (Sacred's config scope)
        if key not in RESUME_MAY_CHANGE:
            conflicts += _differences(undogmatize(scope[key]), value, key)
    if conflicts:
        raise ValueError(
            f"resume: a resumed run keeps the configuration of {parent['path']}; refused: "
            + ", ".join(conflicts)
            + " (only steps and checkpoint_every may change)"
        )
    if scope["steps"] < parent["step"]:
        raise ValueError(
            f"resume: steps={scope['steps']} is below the step of the last checkpoint of "
            f"{parent['path']} ({parent['step']}); give steps >= {parent['step']}"
        )


@ex.config
def config() -> None:
    method = "simclr"  # any of gessl.methods.available_methods()
    method_options = {}  # the method's own options (temperature, momentum, ...)
    mode = "gessl"  # "gessl" or "plain"
    gessl = dict(DEFAULT_GESSL)
    dataset = "digits"  # "digits" (bundled), "cifar10", "cifar100", "stl10" or registered
    data_root = None  # folder of the CIFAR/STL files (or $GESSL_DATA_DIR/<dataset>)
    seen_classes = None  # None: digits 0-6, else the first 70% of the classes
    encoder = "cnn"  # "identity", "mlp", "cnn", "resnet18" or a registered backbone
    width = 32
    proj_dims = [64, 32]
    steps = 300
    tasks_per_step = 4  # M
    n_samples = 32  # N
    outer_lr = 1e-3
    seed = 0
    checkpoint_every = 0  # steps between checkpoints, kept as checkpoint.pt in the record (0: none)
    resume = None  # a pretrain record (runs/7): continue from its checkpoint, with its config
    evaluation = {"few_shot_way": 5, "few_shot_shot": 5, "provider": "trained"}
    device = "auto"  # "auto" (CUDA when available, else CPU), "cpu", "cuda", "cuda:<i>"
    precision = "float32"  # "float32" or "bf16" (bfloat16 autocast forward passes)
    if resume:  # the parent's configuration; command-line values other than steps must agree
        inherit_config(locals(), resume)


def record_folder(_run: Any) -> str | None:
    """The run's record folder ``runs/<id>`` (its file observer's), or ``None``."""
    from sacred.observers import FileStorageObserver

    for obs in _run.observers:
        if isinstance(obs, FileStorageObserver) and obs.dir:
            return obs.dir
    return None


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
    resume: str | None,
    evaluation: dict,
    device: str,
    precision: str,
    _run: Any,
) -> dict[str, Any]:
    parent = check_resume(resume) if resume else None
    ckpt = None
    if checkpoint_every:
        folder = record_folder(_run)
        if folder is None:
            raise UsageError(
                "checkpoint_every: checkpoints are kept in the run's record folder and this run "
                "has none (run it observed, without -u/--unobserved)"
            )
        ckpt = os.path.join(folder, CHECKPOINT_FILE)
    if parent is not None:
        _run.info["resumed_from"] = parent["path"]
        _run.info["resumed_at_step"] = parent["step"]
        print(f"resuming {parent['path']} at step {parent['step']} of {steps}")
    splits = prepare_data(dataset, data_root, seen_classes, seed)
    model = build_model(method, encoder, width, proj_dims, splits.input_shape, seed, method_options)
    trainer, seconds = train(
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
        resume_from=parent["checkpoint"] if parent else None,
        device=device,
        precision=precision,
    )
    _run.info["gradient_path"] = trainer.outer_step.describe()  # which path ran, any fallback
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
