"""The shared pipeline of the training experiments: data → model → trainer → evaluation.

Kept free of Sacred so the study and the ablation can call it many times inside one run.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from gessl.data import DatasetTasks, ImageSet, class_split, dataset_entry, load_dataset
from gessl.eval import (
    alignment,
    effective_rank,
    features,
    few_shot,
    knn_accuracy,
    linear_probe,
    uniformity,
    universality_report,
)
from gessl.methods import Method, build_method
from gessl.models import build_backbone
from gessl.progress import progress, set_progress
from gessl.trainer import GeSSLConfig, Trainer

__all__ = [
    "DEFAULT_GESSL",
    "MEASURING_CRITIC",
    "Splits",
    "build_model",
    "evaluate",
    "flat_metrics",
    "prepare_data",
    "train",
]

#: the GeSSL options every training experiment starts from: GeSSLConfig's defaults (written
#: there once; our reconstruction's, docs/training.md)
DEFAULT_GESSL = GeSSLConfig().algorithm()
#: the measuring critic of every σ report, by default: cosine at τ = 0.1
#: (``evaluation.sigma_critic`` and ``evaluation.sigma_temperature`` in every experiment)
MEASURING_CRITIC = {"sigma_critic": "cosine", "sigma_temperature": 0.1}


@dataclass(frozen=True)
class Splits:
    """Seen-class train/test images, held-out-class images and the augmentation."""

    train: ImageSet
    test: ImageSet
    held_out: ImageSet
    augment: Callable[..., Any]
    seen_classes: list[int]

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return self.train.shape


def prepare_data(
    dataset: str = "digits",
    data_root: str | None = None,
    seen_classes: list[int] | None = None,
    seed: int = 0,
) -> Splits:
    """The registered ``dataset`` (``gessl.data.available_datasets()``) and the augmentation its
    registry entry names. A dataset without splits (digits): a stratified 80/20 split of the seen
    classes; one with splits (CIFAR/STL): its own train/test files, restricted to the seen
    classes; held out = every image of the other classes. ``seen_classes`` defaults to the first
    70% of the classes (at least 2): digits 0–6."""
    entry = dataset_entry(dataset)

    def default_seen(classes: list[int]) -> list[int]:
        if seen_classes is not None:
            return list(seen_classes)
        return classes[: max(2, len(classes) * 7 // 10)]

    if not entry.splits:
        data = load_dataset(dataset, data_root)
        seen = default_seen(data.classes())
        train, test, held = class_split(data, seen, test_fraction=0.2, seed=seed)
        return Splits(train, test, held, entry.augment, seen)
    train_all = load_dataset(dataset, data_root, "train")
    test_all = load_dataset(dataset, data_root, "test")
    seen = default_seen(train_all.classes())
    keep = torch.tensor(seen)
    return Splits(
        train_all.subset(torch.isin(train_all.labels, keep)),
        test_all.subset(torch.isin(test_all.labels, keep)),
        test_all.subset(~torch.isin(test_all.labels, keep)),
        entry.augment,
        seen,
    )


def build_model(
    method: str,
    encoder: str,
    width: int,
    proj_dims: list[int],
    input_shape: tuple[int, ...],
    seed: int,
    options: dict | None = None,
) -> Method:
    torch.manual_seed(seed)
    backbone = build_backbone(encoder, input_shape, width)
    return build_method(method, backbone, tuple(proj_dims), **(options or {}))


def train(
    method: Method,
    splits: Splits,
    mode: str,
    steps: int,
    tasks_per_step: int,
    n_samples: int,
    seed: int,
    gessl: dict | None = None,
    outer_lr: float = 1e-3,
    checkpoint_path: str | None = None,
    checkpoint_every: int = 0,
    callback: Callable[[dict], None] | None = None,
    progress: bool = True,
    resume_from: str | None = None,
    device: str | None = None,
    precision: str = "float32",
) -> tuple[Trainer, float]:
    """Train on tasks of seen-class training images; returns the trainer and wall-clock s.

    ``checkpoint_path`` receives a checkpoint every ``checkpoint_every`` steps. ``resume_from``:
    a checkpoint of the same configuration to continue from — model, optimiser, step, task
    stream and RNG states are restored, then training runs up to ``steps`` in all (bit for bit
    the uninterrupted run). ``device`` and ``precision``: see :class:`gessl.trainer.Trainer`
    and :class:`gessl.trainer.GeSSLConfig` (a ``precision`` inside ``gessl`` wins).
    """
    opts = {"precision": precision, **(dict(gessl or {}) if mode == "gessl" else {})}
    cfg = GeSSLConfig(
        mode=mode, tasks_per_step=tasks_per_step, outer_lr=outer_lr, seed=seed, **opts
    )
    trainer = Trainer(
        method,
        DatasetTasks(splits.train, splits.augment),
        cfg,
        n_samples=n_samples,
        checkpoint_path=checkpoint_path,
        device=device,
    )
    if resume_from is not None:
        trainer.load(resume_from)
        if trainer.step > steps:
            raise ValueError(
                f"steps = {steps} is below the step of the checkpoint {resume_from} "
                f"({trainer.step})"
            )
    start = time.perf_counter()

    def on_step(log: dict) -> None:
        set_progress(f"step {trainer.step}/{steps} ({mode})")  # named by an interruption
        if callback is not None:
            callback(log)

    trainer.fit(
        steps - trainer.step,
        checkpoint_every=checkpoint_every,
        progress=progress,
        callback=on_step,
    )
    return trainer, time.perf_counter() - start


def evaluate(
    method: Method,
    splits: Splits,
    seed: int = 0,
    knn_k: int = 20,
    knn_temperature: float = 0.07,
    few_shot_way: int = 5,
    few_shot_shot: int = 5,
    few_shot_episodes: int = 300,
    report_tasks: int = 8,
    report_samples: int = 32,
    sigma_critic: str = MEASURING_CRITIC["sigma_critic"],
    sigma_temperature: float = MEASURING_CRITIC["sigma_temperature"],
    provider: str = "trained",
    provider_steps: int = 100,
) -> dict[str, Any]:
    """The evaluation suite on frozen backbone features (and the head, for the report), run on
    the method's device; features go to the CPU for the scikit-learn probes.

    ``few_shot_way`` is an upper limit: with fewer held-out classes the episodes use all of them
    (the way run is recorded as ``few_shot["n_way"]``). ``sigma_critic`` and
    ``sigma_temperature`` define the task classifier π whose σ the report measures: the measuring
    critic, named as the σ-term's (``GeSSLConfig.sigma_critic``), but chosen here, apart from
    training."""
    method.eval()
    bb = method.backbone
    phases = progress(total=5, desc="evaluation", unit="phase")  # on a terminal only
    set_progress("evaluation")
    phases.set_postfix_str("features")
    ftr, fte, fho = (features(bb, s) for s in (splits.train, splits.test, splits.held_out))
    phases.update(1)
    phases.set_postfix_str("linear probe, kNN")
    out: dict[str, Any] = {
        "linear_probe": linear_probe(ftr, splits.train.labels, fte, splits.test.labels),
        "knn": knn_accuracy(
            ftr, splits.train.labels, fte, splits.test.labels, knn_k, knn_temperature
        ),
        "effective_rank": effective_rank(fte),
    }
    phases.update(1)
    phases.set_postfix_str(f"few-shot ({few_shot_episodes} episodes)")
    way = min(few_shot_way, len(splits.held_out.classes()))
    out["few_shot"] = few_shot(
        fho,
        splits.held_out.labels,
        n_way=way,
        k_shot=few_shot_shot,
        episodes=few_shot_episodes,
        seed=seed,
    ).to_dict()
    phases.update(1)
    phases.set_postfix_str("alignment, uniformity")
    params = {k: v.detach() for k, v in method.online_params().items()}
    device = next(iter(params.values())).device  # views drawn and embedded there
    gen = torch.Generator(device=device).manual_seed(10_000 + seed)
    with torch.no_grad():  # on the normalised embeddings the loss shapes (Wang & Isola 2020)
        test_images = splits.test.as_float(device=device)
        a = splits.augment(test_images, gen)
        b = splits.augment(test_images, gen)
        za = F.normalize(method.embed(params, a), dim=1)
        zb = F.normalize(method.embed(params, b), dim=1)
    out["alignment"] = float(alignment(za, zb))
    out["uniformity"] = float(uniformity(za))
    phases.update(1)
    phases.set_postfix_str(f"σ report ({provider} provider)")
    sets = {
        name: DatasetTasks(data, splits.augment).sample(report_tasks, report_samples, gen)
        for name, data in (
            ("train", splits.train),
            ("fresh", splits.test),
            ("held_out", splits.held_out),
        )
    }
    out["universality"] = universality_report(
        method,
        sets,
        provider=provider,
        temperature=sigma_temperature,
        critic=sigma_critic,
        provider_steps=provider_steps,
    )
    phases.update(1)
    phases.close()
    method.train()
    return out


def flat_metrics(result: dict[str, Any]) -> dict[str, float]:
    """The headline numbers of :func:`evaluate` as a flat dict of floats."""
    u = result["universality"]
    return {
        "linear_probe": result["linear_probe"]["accuracy"],
        "knn": result["knn"]["accuracy"],
        "few_shot": result["few_shot"]["accuracy"],
        "few_shot_ci95": result["few_shot"]["ci95"],
        "few_shot_way": result["few_shot"]["n_way"],
        "alignment": result["alignment"],
        "uniformity": result["uniformity"],
        "effective_rank": result["effective_rank"],
        **{f"sigma_{k}": v["sigma"] for k, v in u.items()},
        **{f"sigma_excess_{k}": v["sigma_excess"] for k, v in u.items()},
        **{f"task_accuracy_{k}": v["accuracy"] for k, v in u.items()},
    }
