"""The figures of ``experiments.universality``: one per property, drawn from its record.

Each figure has one panel per metric of the property; in a panel, the methods along the x-axis
and one bar per mode (plain, meta with λ = γ = 0, GeSSL) with the 95% t-interval over seeds as
an error bar. A primary comparison (GeSSL − plain, Holm-corrected) that is significant is marked
above the method's bars with ``↑`` or ``↓``. The σ panels state the KL direction and the floor.
"""

from __future__ import annotations

import os
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from paper_figures.panels import MEASURED_COLORS, MODE_COLORS, STYLE

__all__ = ["plot_property", "save_universality"]

TITLES = {
    "disc_probe": "linear probe, training samples",
    "disc_knn": "kNN (leave one out), training samples",
    "gen_probe": "linear probe, unseen samples",
    "gen_knn": "kNN, unseen samples",
    "probe_1": "probe, 1 label per class",
    "probe_5": "probe, 5 labels per class",
    "probe_10": "probe, 10 labels per class",
    "fewshot_1": "held-out classes, 1-shot",
    "fewshot_5": "held-out classes, 5-shot",
    "shift_probe": "shifted data, probe (mean of shifts)",
    "sigma_train": "σ, training tasks",
    "sigma_fresh": "σ, unseen samples' tasks",
    "sigma_held_out": "σ, held-out classes' tasks",
}


def _title(metric: str) -> str:
    if metric in TITLES:
        return TITLES[metric]
    if metric.startswith("shift_"):
        name, _, kind = metric[len("shift_") :].rpartition("_")
        return f"shift '{name}', {'probe' if kind == 'probe' else 'kNN'}"
    return metric


def plot_property(record: dict[str, Any], prop: str) -> Figure:
    """The figure of one property (a key of ``record["properties"]``)."""
    metrics = [m for m in record["properties"][prop] if m in record["metrics"]]
    rows = record["rows"]
    methods = list(dict.fromkeys(str(r["method"]) for r in rows))
    modes = list(dict.fromkeys(r["mode"] for r in rows))
    marks = {
        (t["method"], t["metric"]): t["direction"]
        for t in record.get("tests", [])
        if t.get("primary") and t.get("significant")
    }
    with plt.rc_context(STYLE):
        ncol = min(3, max(1, len(metrics)))
        nrow = -(-len(metrics) // ncol)
        fig, axes = plt.subplots(
            nrow, ncol, figsize=(3.4 * ncol, 2.8 * nrow), squeeze=False, constrained_layout=True
        )
        width = 0.8 / max(1, len(modes))
        for ax, metric in zip(axes.flat, metrics):
            for j, mode in enumerate(modes):
                xs, ys, lo, hi = [], [], [], []
                for i, method in enumerate(methods):
                    r = next(
                        (r for r in rows if str(r["method"]) == method and r["mode"] == mode), None
                    )
                    if r is None or r[metric]["mean"] is None:
                        continue
                    c = r[metric]
                    xs.append(i + (j - (len(modes) - 1) / 2) * width)
                    ys.append(c["mean"])
                    ok = c["lo"] is not None and np.isfinite(c["lo"])
                    lo.append(c["mean"] - c["lo"] if ok else 0.0)
                    hi.append(c["hi"] - c["mean"] if ok else 0.0)
                color = MODE_COLORS.get(mode, MEASURED_COLORS[j % len(MEASURED_COLORS)])
                ax.bar(xs, ys, width, yerr=[lo, hi], capsize=2, color=color, label=mode)
            for i, method in enumerate(methods):
                d = marks.get((method, metric))
                if d in ("higher", "lower"):
                    ax.annotate(
                        "↑ GeSSL" if d == "higher" else "↓ GeSSL",
                        (i, 1.0),
                        xycoords=("data", "axes fraction"),
                        ha="center",
                        va="bottom",
                        fontsize=7,
                    )
            ax.set_xticks(range(len(methods)), methods, rotation=15)
            ax.set_title(_title(metric))
            ax.set_ylabel("σ per query (nats)" if metric.startswith("sigma") else "accuracy")
        for ax in list(axes.flat)[len(metrics) :]:
            ax.axis("off")
        axes.flat[0].legend(loc="lower left")
        spec = record["spec"]
        seeds = len(rows[0]["seeds"]) if rows else 0
        note = (
            f"{spec['dataset']}, encoder {spec['encoder']}, {spec['steps']} steps; "
            f"mean and 95% t-interval over {seeds} seeds; each model's readout tuned on validation"
        )
        if prop == "sigma":
            note += "; σ = KL(π_model ‖ π_opt), floor 0"
        fig.suptitle(f"{prop.replace('_', ' ')}\n{note}", fontsize=8)
    return fig


def save_universality(record: dict[str, Any], folder: str) -> list[str]:
    """``universality_<property>.png`` in ``folder``, one per property of the record."""
    paths = []
    for prop, metrics in record["properties"].items():
        if not any(m in record["metrics"] for m in metrics):
            continue
        fig = plot_property(record, prop)
        path = os.path.join(folder, f"universality_{prop}.png")
        fig.savefig(path, metadata={"Software": None, "Title": f"universality: {prop}"})
        plt.close(fig)
        paths.append(path)
    return paths
