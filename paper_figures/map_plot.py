"""The heat maps of ``experiments.gessl_map``, drawn from an assembled map (``map_cells.json``).

Rows are the cells of the sweep (one knob varied at a time, then the sensitivity panel's
combinations), columns the task families. Panels: (a) Δσ of φ at each model's calibrated logit
scale and (b) Δσ after each model's tuned (K, α), GeSSL − plain — the primary comparisons;
(c) Δσ after the cell's own (K, α), GeSSL − plain; (d) Δσ after the tuned adaptation, GeSSL −
meta-learning without the σ-term; (e) the fraction of diverged seeds of each mode. A cell whose
difference is not significant after Holm's correction across the cells of its panel is hatched
and marked "n.s."; a cell with diverged seeds is marked "†k". The floors of each family × critic
are listed under the panels.
"""

from __future__ import annotations

import os
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from paper_figures.panels import STYLE

__all__ = ["PANELS", "plot_map", "save_map"]

#: (test key, title) of the difference panels
PANELS = (
    ("gessl-plain:sigma_phi_calibrated", "(a) Δσ of φ, calibrated\nGeSSL − plain"),
    ("gessl-plain:sigma_adapted_tuned", "(b) Δσ adapted, tuned (K, α)\nGeSSL − plain"),
    ("gessl-plain:sigma_adapted", "(c) Δσ adapted, the cell's (K, α)\nGeSSL − plain"),
    ("gessl-meta:sigma_adapted_tuned", "(d) Δσ adapted, tuned\nGeSSL − meta (λ=γ=0)"),
)


def _grid(assembled: dict[str, Any]) -> tuple[list[str], list[str], dict[tuple[str, str], dict]]:
    families = list(dict.fromkeys(c["family"] for c in assembled["cells"]))
    rows = list(dict.fromkeys(f"{c['knob']} = {c['value']}" for c in assembled["cells"]))
    by = {(f"{c['knob']} = {c['value']}", c["family"]): c for c in assembled["cells"]}
    return rows, families, by


def _floor_text(floors: dict[str, Any], key: str) -> str:
    x = floors.get(key, {}).get("value")
    conv = "" if floors.get(key, {}).get("converged", True) else "≤"
    return "—" if x is None else f"{conv}{x:.3g}"


def _floor_lines(assembled: dict[str, Any]) -> list[str]:
    lines = []
    for f in sorted(
        assembled.get("floors", []), key=lambda r: (r["family"], r["options"]["critic"])
    ):
        fl = f["floors"]
        o = f["options"]
        hidden = " (linear backbone)" if o.get("encoder_depth", 1) == 2 else ""
        for key, short in (("dim", "d"), ("signal", "c")):
            if o.get(key) is not None:
                hidden += f", {short} = {o[key]}"

        v = {
            key: _floor_text(fl, key)
            for key in (
                "shared_sigma",
                "per_task_sigma",
                "shared_sigma_excess",
                "per_task_sigma_excess",
            )
        }
        lines.append(
            f"{f['family']}, {f['options']['critic']}{hidden}: shared σ {v['shared_sigma']}, "
            f"per-task σ {v['per_task_sigma']}; shared sigma_excess {v['shared_sigma_excess']}, "
            f"per-task {v['per_task_sigma_excess']}"
        )
    return lines


def plot_map(assembled: dict[str, Any], title: str = "") -> Figure:
    """The four panels of the module docstring."""
    rows, families, by = _grid(assembled)
    seeds = assembled.get("spec", {}).get("seeds", 0)
    floors = _floor_lines(assembled)
    floors_in = 0.11 * (len(floors) + 1) + 0.2  # the floor list's height in inches (6 pt lines)
    height = 0.32 * len(rows) + 2.6 + floors_in
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(
            1,
            len(PANELS) + 1,
            figsize=(3.0 * (len(PANELS) + 1) + 2.5, height),
            sharey=True,
        )
        for ax, (key, panel_title) in zip(axes, PANELS):
            means = np.full((len(rows), len(families)), np.nan)
            for i, r in enumerate(rows):
                for j, f in enumerate(families):
                    c = by.get((r, f))
                    if c and c["tests"][key]["mean"] is not None:
                        means[i, j] = c["tests"][key]["mean"]
            finite = np.abs(means[np.isfinite(means)])
            # robust colour scale: a few blown-up cells must not wash out the rest (they
            # saturate; their value is printed)
            lim = float(np.percentile(finite, 90)) if finite.size else 1.0
            lim = lim if lim > 0 else 1.0
            ax.imshow(means, cmap="RdBu_r", vmin=-lim, vmax=lim, aspect="auto")
            for i, r in enumerate(rows):
                for j, f in enumerate(families):
                    c = by.get((r, f))
                    if c is None:
                        continue
                    t = c["tests"][key]
                    text = "—" if not isinstance(t["mean"], (int, float)) else f"{t['mean']:+.3f}"
                    if not t["significant"]:
                        ax.add_patch(
                            plt.Rectangle(
                                (j - 0.5, i - 0.5),
                                1,
                                1,
                                fill=False,
                                hatch="///",
                                color="#adb5bd",
                                linewidth=0,
                            )
                        )
                        text += " n.s." if text != "—" else ""
                    if t["diverged"]:
                        text += f" †{t['diverged']}"
                    ax.text(j, i, text, ha="center", va="center", fontsize=6)
            ax.set_title(panel_title, fontsize=8)
            ax.set_xticks(range(len(families)))
            ax.set_xticklabels(families, rotation=20, fontsize=7)
        ax = axes[-1]
        frac = np.full((len(rows), len(families)), np.nan)
        for i, r in enumerate(rows):
            for j, f in enumerate(families):
                c = by.get((r, f))
                if c and seeds:
                    frac[i, j] = c["diverged"]["gessl"] / seeds
                    ax.text(
                        j,
                        i,
                        "/".join(str(c["diverged"][m]) for m in ("plain", "meta", "gessl")),
                        ha="center",
                        va="center",
                        fontsize=6,
                    )
        ax.imshow(frac, cmap="Oranges", vmin=0, vmax=1, aspect="auto")
        ax.set_title(f"(e) diverged seeds of {seeds}\nplain/meta/GeSSL (colour: GeSSL)", fontsize=8)
        ax.set_xticks(range(len(families)))
        ax.set_xticklabels(families, rotation=20, fontsize=7)
        axes[0].set_yticks(range(len(rows)))
        axes[0].set_yticklabels(rows, fontsize=7)
        fig.suptitle(
            title
            or (
                f"Where GeSSL lowers σ (map {assembled.get('map_id', '?')}): red = GeSSL higher, "
                f"blue = lower; hatched = not significant (Holm within each panel); †k = k "
                f"seeds diverged (left out of the mean, counted in (e)); {seeds} paired seeds\n"
                "σ = KL(π_model ‖ π*) (the paper's direction), sigma_excess = KL(π* ‖ π_model); "
                "every model adapted alike: K test-time steps of size α on each task's support "
                "views"
            ),
            fontsize=9,
        )
        fig.text(
            0.01,
            0.01,
            "Floors of the model family on the evaluation tasks (σ per query; ≤ = fit not "
            "converged, an upper estimate):\n" + "\n".join(floors),
            fontsize=6,
            va="bottom",
            family="DejaVu Sans Mono",
        )
        fig.tight_layout(rect=(0, floors_in / height, 1, 1 - 0.7 / height))
    return fig


def save_map(assembled: dict[str, Any], folder: str, name: str) -> list[str]:
    """``gessl_map.png`` in ``folder`` (the experiment's own artifact)."""
    fig = plot_map(assembled)
    path = os.path.join(folder, "gessl_map.png")
    fig.savefig(path, metadata={"Software": None, "Source": name})
    plt.close(fig)
    return [path]
