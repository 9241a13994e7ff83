"""Every figure and table, each built from the latest completed run record that produces it.

Each builder returns the paths it wrote, or raises :class:`MissingRecord` naming the experiment
command that produces its input. Every output names its sources (run ids) in a sidecar
``<name>.json``, in the PNG text chunk ``Source`` and in the PDF ``Keywords``.
"""

from __future__ import annotations

import json
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.figure import Figure

from paper_figures.panels import MEASURED_COLORS, STYLE, VERDICT_COLORS, plot_claim
from paper_figures.records import RunRecord, claim_coverage, latest

__all__ = ["BUILDERS", "COMMANDS", "MissingRecord", "build"]

COMMANDS = {
    "claims": "python -m experiments.bounds",
    "claims_summary": "python -m experiments.bounds",
    "sigma_vs_step": "python -m experiments.sigma",
    "ablation_lookahead_steps": (
        "python -m experiments.ablation with parameter=lookahead_steps 'values=[0, 1, 2, 4]'"
    ),
    "ablation_inner_steps": (
        "python -m experiments.ablation with parameter=inner_steps 'values=[0, 1, 2, 4]'"
    ),
    "study_table": "python -m experiments.study",
    "overhead_table": "python -m experiments.benchmark",
    "gessl_map": "python -m experiments.gessl_map",
    "universality": "python -m experiments.universality",
}


class MissingRecord(LookupError):
    """No completed run record for a figure; the message names the command that makes one."""

    def __init__(self, name: str) -> None:
        super().__init__(f"{name}: no completed run record; produce it with `{COMMANDS[name]}`")
        self.name = name


def _sidecar(path: Path, sources: list[dict[str, str]], outputs: list[Path]) -> Path:
    side = path.with_suffix(".json")
    side.write_text(
        json.dumps(
            {"sources": sources, "outputs": [p.name for p in outputs]}, indent=1, sort_keys=True
        )
        + "\n"
    )
    return side


def save_figure(fig: Figure, out: Path, name: str, sources: list[dict[str, str]]) -> list[Path]:
    """PNG and PDF with deterministic metadata, plus the sidecar JSON."""
    out.mkdir(parents=True, exist_ok=True)
    src = json.dumps([{k: s[k] for k in ("experiment", "run_id")} for s in sources])
    png, pdf = out / f"{name}.png", out / f"{name}.pdf"
    fig.savefig(png, metadata={"Software": None, "Source": src, "Title": name})
    fig.savefig(
        pdf,
        metadata={
            "Creator": None,
            "Producer": None,
            "CreationDate": None,
            "Keywords": src,
            "Title": name,
        },
    )
    plt.close(fig)
    return [png, pdf, _sidecar(out / name, sources, [png, pdf])]


def save_tables(
    out: Path, name: str, markdown: str, latex: str, sources: list[dict[str, str]]
) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    md, tex = out / f"{name}.md", out / f"{name}.tex"
    md.write_text(markdown + "\n")
    tex.write_text(latex + "\n")
    return [md, tex, _sidecar(out / name, sources, [md, tex])]


# ------------------------------------------------------------------------------------ builders
def _bounds_records(runs: list[RunRecord]) -> tuple[RunRecord, list[dict[str, Any]]]:
    """The latest completed ``bounds`` run with its claim records; when it did not check every
    registered claim, one line on stderr says which it left out and where each was last
    checked (:func:`paper_figures.records.claim_coverage`)."""
    run = latest(runs, "bounds", lambda r: r.artifact("claims.json").is_file())
    if run is None:
        raise MissingRecord("claims")
    records = json.loads(run.artifact("claims.json").read_text())["claims"]
    line = claim_coverage(runs, run, [str(r.get("claim_id")) for r in records]).line()
    if line:
        print(f"note: {line}", file=sys.stderr)
    return run, records


def claims(runs: list[RunRecord], out: Path) -> list[Path]:
    """One panel per claim (empirical vs bound, log-log where the claim is a rate)."""
    run, records = _bounds_records(runs)
    paths: list[Path] = []
    for rec in records:
        paths += save_figure(plot_claim(rec), out / "claims", rec["claim_id"], [run.source()])
    return paths


def claims_summary(runs: list[RunRecord], out: Path) -> list[Path]:
    """All claims at a glance: kind, verdict (coloured) and the measured-vs-bound summary."""
    try:
        run, records = _bounds_records(runs)
    except MissingRecord:
        raise MissingRecord("claims_summary") from None
    with plt.rc_context(STYLE):
        fig, ax = plt.subplots(figsize=(11, 0.38 * len(records) + 0.9))
        ax.set_axis_off()
        for i, rec in enumerate(records):
            y = len(records) - i
            color = VERDICT_COLORS.get(rec["verdict"], "black")
            ax.add_patch(plt.Rectangle((0.30, y - 0.38), 0.09, 0.76, color=color, alpha=0.85))
            ax.text(0.0, y, rec["claim_id"], va="center", fontsize=8, family="DejaVu Sans Mono")
            kind = "reprod." if rec["kind"] == "reproduction" else rec["kind"]
            ax.text(0.255, y, kind, va="center", fontsize=8)
            ax.text(0.345, y, rec["verdict"], va="center", ha="center", fontsize=7, color="white")
            ax.text(0.40, y, textwrap.shorten(rec["summary"], 105), va="center", fontsize=7)
        ax.set_xlim(0, 1)
        ax.set_ylim(0.3, len(records) + 0.9)
        theorems = [r for r in records if r["kind"] != "reproduction"]
        repro = [r for r in records if r["kind"] == "reproduction"]

        def tally(recs: list[dict[str, Any]], verdicts: tuple[str, ...]) -> str:
            counts = {v: sum(r["verdict"] == v for r in recs) for v in (*verdicts, "error")}
            return ", ".join(f"{n} {v}" for v, n in counts.items() if n or v != "error")

        title = (
            f"experiments.bounds run {run.run_id} ({run.config.get('profile', '?')} profile)\n"
            f"{len(theorems)} theorem claims: "
            + tally(theorems, ("holds", "violated", "inconclusive"))
        )
        if repro:
            title += f"\n{len(repro)} reproduction claims: " + tally(
                repro,
                (
                    "reproduced",
                    "not reproduced",
                    "mixed",
                    "no practical difference",
                    "inconclusive",
                ),
            )
        ax.set_title(title, fontsize=10)
        fig.tight_layout()
    return save_figure(fig, out, "claims_summary", [run.source()])


def sigma_vs_step(runs: list[RunRecord], out: Path) -> list[Path]:
    """σ against the training step, GeSSL vs plain, on training, fresh and held-out tasks."""
    run = latest(runs, "sigma", lambda r: "series" in r.info)
    if run is None:
        raise MissingRecord("sigma_vs_step")
    series = run.info["series"]
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(1, 3, figsize=(11, 3.4), sharey=True)
        for ax, split in zip(axes, ("train", "fresh", "held_out")):
            for j, mode in enumerate(("plain", "gessl")):
                s = series.get(f"sigma/{split}/{mode}")
                if s:
                    ax.plot(
                        s["steps"],
                        s["values"],
                        "o-",
                        ms=3,
                        color=MEASURED_COLORS[j],
                        label="GeSSL" if mode == "gessl" else "plain",
                    )
            ax.set_title(f"{split.replace('_', '-')} tasks")
            ax.set_xlabel("outer step")
        axes[0].set_ylabel("σ per query (nats)")
        axes[0].legend(frameon=False)
        fig.suptitle(
            f"σ over training: {run.config.get('method', '?')} on "
            f"{run.config.get('dataset', '?')} (run {run.run_id})",
            fontsize=10,
        )
        fig.tight_layout()
    return save_figure(fig, out, "sigma_vs_step", [run.source()])


def _ablation(parameter: str) -> Callable[[list[RunRecord], Path], list[Path]]:
    name = f"ablation_{parameter}"

    def build_one(runs: list[RunRecord], out: Path) -> list[Path]:
        run = latest(
            runs,
            "ablation",
            lambda r: r.config.get("parameter") == parameter and isinstance(r.result, dict),
        )
        if run is None:
            raise MissingRecord(name)
        rows = run.result["rows"]
        xs = [str(r["value"]) for r in rows]
        panels = [
            ("sigma_fresh", "σ fresh"),
            ("sigma_held_out", "σ held-out"),
            ("linear_probe", "linear probe"),
            ("few_shot", "few-shot"),
        ]
        with plt.rc_context(STYLE):
            fig, axes = plt.subplots(1, len(panels), figsize=(11, 3.0))
            for ax, (key, label) in zip(axes, panels):
                ax.errorbar(
                    xs,
                    [r[key]["mean"] for r in rows],
                    yerr=[r[key]["std"] for r in rows],
                    fmt="o-",
                    color=MEASURED_COLORS[0],
                    capsize=3,
                    ms=4,
                )
                ax.set_title(label)
                ax.set_xlabel(parameter)
            fig.suptitle(
                f"ablation of {parameter} ({run.config.get('method', '?')}, run "
                f"{run.run_id}; mean ± std over {len(run.config.get('seeds', [0]))} "
                "seed(s))",
                fontsize=10,
            )
            fig.tight_layout()
        return save_figure(fig, out, name, [run.source()])

    build_one.__name__ = name
    return build_one


def _latex(header: list[str], body: list[list[str]]) -> str:
    esc = [h.replace("σ", r"$\sigma$").replace("_", r"\_").replace("±", r"$\pm$") for h in header]
    lines = [
        r"\begin{tabular}{" + "l" * 2 + "r" * (len(header) - 2) + "}",
        r"\toprule",
        " & ".join(esc) + r" \\",
        r"\midrule",
    ]
    for row in body:
        lines.append(" & ".join(c.replace("±", r"$\pm$").replace("_", r"\_") for c in row) + r" \\")
    return "\n".join([*lines, r"\bottomrule", r"\end{tabular}"])


def study_table(runs: list[RunRecord], out: Path) -> list[Path]:
    """The study's accuracy and σ table (mean ± std over seeds), Markdown and LaTeX."""
    run = latest(runs, "study", lambda r: r.artifact("study.json").is_file())
    if run is None:
        raise MissingRecord("study_table")
    data = json.loads(run.artifact("study.json").read_text())
    way = next((r["few_shot_way"] for r in data.get("runs", []) if "few_shot_way" in r), None)
    cols = [
        ("linear_probe", "linear probe"),
        ("knn", "kNN"),
        ("few_shot", "few-shot" if way is None else f"{int(way)}-way few-shot"),
        ("sigma_train", "σ train"),
        ("sigma_fresh", "σ fresh"),
        ("sigma_held_out", "σ held-out"),
        ("train_seconds", "train s"),
    ]
    header = ["method", "mode", *[c[1] for c in cols]]
    body = [
        [r["method"], r["mode"], *[f"{r[k]['mean']:.3f} ± {r[k]['std']:.3f}" for k, _ in cols]]
        for r in data["rows"]
    ]
    md = "\n".join(
        [
            "| " + " | ".join(header) + " |",
            "|" + "---|" * len(header),
            *["| " + " | ".join(b) + " |" for b in body],
        ]
    )
    md += (
        f"\n\nrun {run.run_id} of `experiments.study` ({data.get('profile', '?')} profile, "
        f"{data.get('steps', '?')} steps); mean ± std over seeds."
    )
    return save_tables(out, "study_table", md, _latex(header, body), [run.source()])


def _cell(v: Any) -> str:
    if v is None:
        return "—"
    if isinstance(v, float):
        return f"{v:.0f}" if abs(v) >= 100 else f"{v:.3g}"
    return str(v)


def overhead_table(runs: list[RunRecord], out: Path) -> list[Path]:
    """The benchmark's overhead table (``result["table"] = {"columns", "rows"}``)."""
    run = latest(runs, "benchmark", lambda r: isinstance(r.result, dict) and "table" in r.result)
    if run is None:
        raise MissingRecord("overhead_table")
    table = run.result["table"]
    header = [str(c) for c in table["columns"]]
    body = [[_cell(v) for v in row] for row in table["rows"]]
    md = "\n".join(
        [
            "| " + " | ".join(header) + " |",
            "|" + "---|" * len(header),
            *["| " + " | ".join(b) + " |" for b in body],
        ]
    )
    return save_tables(out, "overhead_table", md, _latex(header, body), [run.source()])


def merge_map(runs: list[RunRecord]) -> tuple[dict[str, Any], list[RunRecord]]:
    """The latest map's spec and the union of its shards' job results (records of
    ``experiments.gessl_map`` with the same ``map_id``); raises :class:`MissingRecord` if there
    is none, ``ValueError`` naming the missing jobs if the shards do not cover the map."""
    maps = [
        r
        for r in runs
        if r.experiment == "gessl_map"
        and r.status == "COMPLETED"
        and r.artifact("map.json").is_file()
    ]
    if not maps:
        raise MissingRecord("gessl_map")
    newest = max(maps, key=lambda r: (r.start_time, int(r.run_id)))
    mid = newest.info.get("map_id")
    shards = [r for r in maps if r.info.get("map_id") == mid]
    results: dict[str, Any] = {}
    spec, total = None, 0
    for r in sorted(shards, key=lambda r: int(r.run_id)):
        data = json.loads(r.artifact("map.json").read_text())
        spec, total = data["spec"], data["jobs_total"]
        results.update(data["results"])
    if len(results) < total:
        raise ValueError(
            f"map {mid}: the shards in the records hold {len(results)} of its {total} jobs "
            f"(runs {', '.join(r.run_id for r in shards)}); {_missing_shards(shards)}"
        )
    return {"map_id": mid, "spec": spec, "results": results}, shards


def _missing_shards(shards: list[RunRecord]) -> str:
    """Which shards of a map to run still, by name (``shard=i/n``), from the shards present
    (records of one split, ``i/n`` with one n; a whole run is ``1/1``)."""
    present: dict[int, set[int]] = {}
    for r in shards:
        i, _, n = str(r.info.get("shard", "1/1")).partition("/")
        if i.isdigit() and n.isdigit():
            present.setdefault(int(n), set()).add(int(i))
    if len(present) == 1:
        ((n, have),) = present.items()
        missing = [f"{i}/{n}" for i in range(1, n + 1) if i not in have]
        if missing:
            cmds = "; ".join(f"`python -m experiments.gessl_map with shard={m}`" for m in missing)
            return f"missing shard{'s' if len(missing) > 1 else ''} {', '.join(missing)}: {cmds}"
    return "run the missing shards with `python -m experiments.gessl_map with shard=i/n`"


def gessl_map(runs: list[RunRecord], out: Path) -> list[Path]:
    """The heat maps of where GeSSL lowers σ, merged from the shards of the latest map."""
    from paper_figures.map_plot import plot_map
    from theory.map_grid import assemble

    merged, shards = merge_map(runs)
    assembled = {"map_id": merged["map_id"], "spec": merged["spec"]}
    assembled.update(assemble(merged["spec"], merged["results"]))
    (out / "gessl_map_cells.json").parent.mkdir(parents=True, exist_ok=True)
    (out / "gessl_map_cells.json").write_text(
        json.dumps(assembled, indent=1, sort_keys=True) + "\n"
    )
    paths = save_figure(plot_map(assembled), out, "gessl_map", [r.source() for r in shards])
    return [*paths, out / "gessl_map_cells.json"]


def universality(runs: list[RunRecord], out: Path) -> list[Path]:
    """The universality study's figures (one per property: methods × modes with 95% intervals)
    and its table with the paired differences, from the latest ``experiments.universality``
    record."""
    from paper_figures.universality_plot import plot_property

    run = latest(runs, "universality", lambda r: r.artifact("universality.json").is_file())
    if run is None:
        raise MissingRecord("universality")
    record = json.loads(run.artifact("universality.json").read_text())
    paths: list[Path] = []
    for prop, metrics in record["properties"].items():
        if any(m in record["metrics"] for m in metrics):
            fig = plot_property(record, prop)
            paths += save_figure(fig, out, f"universality_{prop}", [run.source()])
    md = run.artifact("universality.md")
    if md.is_file():
        table = out / "universality_table.md"
        table.write_text(md.read_text() + f"\n\nrun {run.run_id} of `experiments.universality`\n")
        paths.append(table)
        paths.append(_sidecar(out / "universality_table", [run.source()], [table]))
    return paths


BUILDERS: dict[str, Callable[[list[RunRecord], Path], list[Path]]] = {
    "claims": claims,
    "claims_summary": claims_summary,
    "sigma_vs_step": sigma_vs_step,
    "ablation_lookahead_steps": _ablation("lookahead_steps"),
    "ablation_inner_steps": _ablation("inner_steps"),
    "study_table": study_table,
    "overhead_table": overhead_table,
    "gessl_map": gessl_map,
    "universality": universality,
}


def build(name: str, runs: list[RunRecord], out: Path) -> list[Path]:
    """Build one named output (see :data:`BUILDERS`)."""
    return BUILDERS[name](runs, out)
