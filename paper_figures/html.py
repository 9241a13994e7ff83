"""One static, shareable HTML page of the records: ``python -m paper_figures --html OUT``.

``OUT/index.html`` holds, in this order:

* the verdict table of the latest completed ``experiments.bounds`` run (its ``claims.json``
  artifact; its ``info.json`` when that artifact is missing), theorem claims and reproduction
  claims in separate sections, one row per claim: id, kind, verdict (a coloured cell that reads
  the verdict), key numbers, and every σ beside its model family's floor and KL direction where
  the record has them;
* every figure and table ``paper_figures`` built in this invocation, each with a caption naming
  the output, its run id(s), the experiment, the run's config and the git commit of the code
  that made the record (``run.json → host.gessl_commit``; ``unknown`` for older records);
* the outputs whose records are missing, with the command that produces them.

The page needs no server, no network and no JavaScript: the PNGs are embedded as base64 ``data:``
URIs, so the page is one file (when they would exceed :data:`MAX_EMBED_BYTES` they are copied
beside it instead). All text goes through :func:`html.escape`. The page is deterministic: the same
records and figures give the same bytes.
"""

from __future__ import annotations

import base64
import html
import json
import math
import re
import shutil
import struct
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from paper_figures.figures import COMMANDS
from paper_figures.panels import FLOOR_FALLBACK, LEVELS, VERDICT_COLORS
from paper_figures.records import RunRecord, claim_coverage, latest, read_json

__all__ = ["MAX_EMBED_BYTES", "Skipped", "render_report", "write_report"]

#: above this many bytes of base64 PNG data, the images are copied beside ``index.html`` instead
MAX_EMBED_BYTES = 20 * 2**20

#: in a grid of figures, a PNG at least this wide (px) takes a whole row
WIDE_PX = 900
#: how a floor's ``direction`` reads on the page
KL_DIRECTIONS = {"sigma": "KL(π_model ‖ π*)", "sigma_excess": "KL(π* ‖ π_model)"}
#: the display name of each mode of a reproduction claim
MODE_NAMES = {"plain": "plain", "meta": "meta", "gessl": "GeSSL"}
#: how a σ of each direction is named on the page
SIGMA_NAMES = {"sigma": "σ", "sigma_excess": "sigma_excess"}


@dataclass(frozen=True)
class Skipped:
    """An output that was not built: the message printed for it and the command behind it."""

    name: str
    message: str
    command: str | None = None


# ------------------------------------------------------------------------------------- helpers
def esc(value: Any) -> str:
    """``str(value)`` escaped for HTML text and attribute values."""
    return html.escape(str(value), quote=True)


def fmt_number(value: Any, spec: str = ".3g") -> str:
    """A number for the page (``—`` for ``None``/NaN; strings such as ``"inf"`` as they are)."""
    if isinstance(value, bool) or value is None:
        return "—" if value is None else str(value)
    if isinstance(value, (int, float)):
        return "—" if isinstance(value, float) and math.isnan(value) else format(value, spec)
    return str(value)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def run_host(run: RunRecord) -> dict[str, Any]:
    """``run.json → host`` of a record (``{}`` when absent)."""
    data = read_json(run.path / "run.json")
    host = data.get("host") if isinstance(data, dict) else None
    return host if isinstance(host, dict) else {}


def run_commit(run: RunRecord) -> str:
    """The git commit the record was made with, or ``unknown`` (records older than the field)."""
    return str(run_host(run).get("gessl_commit") or "unknown")


def run_version(run: RunRecord) -> str:
    return str(run_host(run).get("gessl_version") or "unknown")


def png_size(path: Path) -> tuple[int, int] | None:
    """Width and height from a PNG's IHDR chunk (``None`` if it is not a PNG)."""
    head = path.read_bytes()[:24]
    if len(head) < 24 or head[:8] != b"\x89PNG\r\n\x1a\n":
        return None
    width, height = struct.unpack(">II", head[16:24])
    return int(width), int(height)


def breakable(text: str) -> str:
    """Escaped ``text`` that may wrap after each underscore (long claim ids)."""
    return "_<wbr>".join(esc(part) for part in str(text).split("_"))


def verdict_cell(verdict: str) -> str:
    """A table cell holding the verdict as text on its :data:`VERDICT_COLORS` colour."""
    color = VERDICT_COLORS.get(verdict, "#343a40")
    return (
        f'<td class="verdict" data-verdict="{esc(verdict)}"><span class="pill" '
        f'style="background:{esc(color)}">{esc(verdict)}</span></td>'
    )


# ------------------------------------------------------------------------------ verdict table
def bounds_run(runs: Sequence[RunRecord]) -> RunRecord | None:
    """The latest completed ``bounds`` run that stored its claims (``claims.json`` or info)."""
    return latest(
        list(runs),
        "bounds",
        lambda r: (
            r.artifact("claims.json").is_file()
            or bool(r.info.get("verdicts"))
            or bool(r.info.get("wandb_tables", {}).get("verdicts"))
        ),
    )


def claim_records(run: RunRecord) -> tuple[list[dict[str, Any]], bool | None]:
    """The run's claim records and whether the run finished every claim (``None``: unknown).

    From ``claims.json``; when the run has none, rows rebuilt from ``info.json``
    (``wandb_tables.verdicts`` or ``verdicts``), which hold no series, floors or tests."""
    data = read_json(run.artifact("claims.json"))
    if isinstance(data, dict) and isinstance(data.get("claims"), list):
        return data["claims"], data.get("complete")
    table = run.info.get("wandb_tables", {}).get("verdicts")
    if isinstance(table, dict) and "columns" in table:
        rows = [dict(zip(table["columns"], row)) for row in table["data"]]
        return [
            {
                "claim_id": r.get("claim"),
                "kind": r.get("kind", "?"),
                "verdict": r.get("verdict", "?"),
                "seconds": r.get("seconds"),
                "slope": r.get("slope"),
                "summary": r.get("summary", ""),
            }
            for r in rows
        ], None
    verdicts = run.info.get("verdicts", {})
    return [{"claim_id": k, "kind": "?", "verdict": v} for k, v in verdicts.items()], None


def key_numbers(rec: Mapping[str, Any]) -> str:
    """The numbers a verdict rests on: slope ± SE against its expectation, SE, seconds, and for a
    reproduction claim its primary paired tests (the others in a ``<details>``)."""
    parts: list[str] = []
    if rec.get("slope") is not None:
        txt = f"slope {fmt_number(rec['slope'], '.3f')}"
        if rec.get("slope_se") is not None:
            txt += f" ± {fmt_number(rec['slope_se'], '.3f')}"
        if rec.get("expected_slope") is not None:
            bound = rec.get("details", {}).get("slope_is_bound")
            word = "bound ≤" if bound else "expected"
            expected = f"({word} {fmt_number(rec['expected_slope'], 'g')})"
            txt = f'{esc(txt)} <span class="nowrap">{esc(expected)}</span>'
        else:
            txt = esc(txt)
        parts.append(f"<div>{txt}</div>")
    if rec.get("se") is not None:
        parts.append(f"<div>SE {esc(fmt_number(rec['se'], '.2g'))}</div>")
    tests = rec.get("details", {}).get("tests") or []
    primary = [t for t in tests if t.get("primary")]
    others = [t for t in tests if not t.get("primary")]
    if primary:
        parts.append('<ul class="tests">' + "".join(_test_item(t) for t in primary) + "</ul>")
    if others:
        parts.append(
            f"<details><summary>{len(others)} further tests</summary>"
            '<ul class="tests">' + "".join(_test_item(t) for t in others) + "</ul></details>"
        )
    if _is_number(rec.get("seconds")):
        parts.append(f'<div class="muted">{esc(fmt_number(rec["seconds"], ".1f"))} s</div>')
    return "".join(parts) or "—"


def _test_item(test: Mapping[str, Any]) -> str:
    """One paired test: name, mean, 95% CI, Holm-adjusted p and the significant direction."""
    lo, hi = [*(test.get("ci") or []), None, None][:2]
    text = (
        f"{fmt_number(test.get('mean'), '+.3f')}, CI [{fmt_number(lo, '+.3f')}, "
        f"{fmt_number(hi, '+.3f')}], p_Holm {fmt_number(test.get('p_holm'), '.2g')}"
    )
    direction = test.get("direction", "")
    cls = "sig" if test.get("significant") else "ns"
    return (
        f'<li><span class="test-name">{esc(test.get("name", "?"))}</span>: {esc(text)} '
        f'<span class="{cls}">({esc(direction)})</span></li>'
    )


@dataclass(frozen=True)
class SigmaFloor:
    """One σ of a record beside its model family's floor, both in one KL direction."""

    label: str
    direction: str | None
    values: tuple[tuple[str, float], ...]  # (mode or "", σ) pairs
    floor: Mapping[str, Any] | None


def _is_floor(value: Any) -> bool:
    return isinstance(value, dict) and "value" in value and "direction" in value


def _series_value(rec: Mapping[str, Any], direction: str, x: float) -> float | None:
    """The y at ``x`` of the record's σ series in ``direction`` (label ``σ…``/``sigma_excess…``)."""
    prefix = "sigma_excess" if direction == "sigma_excess" else "σ"
    for s in [*rec.get("measured", []), *rec.get("bounds", [])]:
        if str(s.get("label", "")).startswith(prefix):
            for sx, sy in zip(s.get("x", []), s.get("y", [])):
                if _is_number(sx) and _is_number(sy) and math.isclose(sx, x):
                    return float(sy)
    return None


def sigma_floors(rec: Mapping[str, Any]) -> list[SigmaFloor]:
    """Every σ of the record that has a floor: a reproduction claim's levels per mode beside
    ``details.floors`` (:data:`paper_figures.panels.LEVELS`), and any other floor found in
    ``details`` beside the σ next to it (a sibling ``*sigma*`` number, or the σ series at the
    ``tau_<x>`` the floor's key names)."""
    details = rec.get("details") or {}
    out: list[SigmaFloor] = []
    levels, floors = details.get("levels"), details.get("floors")
    if isinstance(levels, dict) and isinstance(floors, dict):
        for key, label, fkey in LEVELS:
            values = tuple(
                (MODE_NAMES.get(mode, mode), float(v[key]))
                for mode, v in levels.items()
                if isinstance(v, dict) and _is_number(v.get(key))
            )
            if fkey not in floors and FLOOR_FALLBACK.get(fkey) in floors:
                fkey = FLOOR_FALLBACK[fkey]  # the floor that still bounds it on this profile
            floor = floors.get(fkey)
            if isinstance(floor, dict) and "value" in floor:
                # the key names kind and direction (shared_<dir>, reachable_fixed_<dir>, …)
                kind, _, direction = fkey.partition("_sigma")
                floor = {**floor, "kind": kind, "direction": "sigma" + direction}
            else:
                floor = None
            if values or floor:
                direction = (floor or {}).get("direction", "sigma" + fkey.partition("_sigma")[2])
                out.append(SigmaFloor(label.replace("\n", " "), direction, values, floor))

    def visit(node: Mapping[str, Any], parent: str) -> None:
        for key, value in node.items():
            if key == "floors" and isinstance(levels, dict):
                continue  # shown above
            if _is_floor(value):
                direction = value.get("direction")
                where = humanize(parent if key in SIGMA_NAMES else key)
                name = SIGMA_NAMES.get(str(direction), "σ")
                label = f"{name} ({where})" if where else name
                values: tuple[tuple[str, float], ...] = tuple(
                    (humanize(k), float(v))
                    for k, v in node.items()
                    if "sigma" in k and "floor" not in k and _is_number(v)
                )
                tau = re.search(r"tau_([0-9]+(?:\.[0-9]+)?)", f"{parent}/{key}")
                if not values and tau:
                    y = _series_value(rec, str(direction), float(tau.group(1)))
                    values = () if y is None else (("", y),)
                out.append(SigmaFloor(label, direction, values, value))
            elif isinstance(value, dict):
                visit(value, key)

    visit(details, "")
    return out


def humanize(key: str) -> str:
    """A record key for reading: ``floors_cosine_tau_0.2`` → ``cosine τ=0.2``,
    ``cosine_family_floor`` → ``cosine family``, ``cosine_critic_sigma`` → ``cosine critic``."""
    text = re.sub(r"tau_([0-9]+(?:\.[0-9]+)?)", r"τ=\1", key)
    words = [w for w in text.split("_") if w and w not in ("floor", "floors", "sigma")]
    return " ".join(words)


def _floor_text(floor: Mapping[str, Any] | None) -> str:
    if not floor:
        return "no floor in the record"
    kind = str(floor.get("kind", "?")).replace("_", "-")
    text = f"{kind} floor {fmt_number(floor.get('value'))}"
    if floor.get("tasks") is not None:
        text += f" ({floor['tasks']} tasks)"
    if floor.get("converged") is False:
        text += ", not converged: an upper estimate"
    return text


def sigma_cell(rec: Mapping[str, Any]) -> str:
    """σ beside its floor and KL direction (the record's own note on directions below)."""
    items = []
    for sf in sigma_floors(rec):
        direction = KL_DIRECTIONS.get(sf.direction or "", sf.direction or "")
        values = " · ".join(
            f"{mode} {fmt_number(v)}" if mode else fmt_number(v) for mode, v in sf.values
        )
        items.append(
            "<li>"
            f'<span class="sigma-label">{esc(sf.label)}</span>'
            + (f' <span class="kl">{esc(direction)}</span>' if direction else "")
            + f": {esc(values or '—')}"
            + f' <span class="floor">{esc(_floor_text(sf.floor))}</span></li>'
        )
    details = rec.get("details") or {}
    note = details.get("kl_directions") or details.get("kl_direction")
    html_out = '<ul class="sigma">' + "".join(items) + "</ul>" if items else ""
    if note:
        html_out += f'<div class="kl-note">{esc(note)}</div>'
    return html_out or "—"


def claim_row(rec: Mapping[str, Any], with_sigma: bool) -> str:
    """One ``<tr>`` of the verdict table."""
    cid = rec.get("claim_id", "?")
    claim = f'<code class="cid">{breakable(cid)}</code>'
    more = []
    if rec.get("source"):
        prov = f" {rec['provenance']}" if rec.get("provenance") else ""
        more.append(f"<p><b>Source.</b> {esc(rec['source'])}{esc(prov)}</p>")
    if rec.get("statement"):
        more.append(f"<p><b>Statement.</b> {esc(rec['statement'])}</p>")
    if rec.get("reason"):
        more.append(f"<p><b>Reason.</b> {esc(rec['reason'])}</p>")
    trace = (rec.get("details") or {}).get("traceback")
    if trace:
        more.append(f"<pre>{esc(trace)}</pre>")
    summary = esc(rec.get("summary", ""))
    if more:
        summary += "<details><summary>source, statement and reason</summary>" + "".join(more)
        summary += "</details>"
    cells = [
        f"<td>{claim}</td>",
        f'<td class="kind">{esc(rec.get("kind", "?"))}</td>',
        verdict_cell(str(rec.get("verdict", "?"))),
        f'<td class="numbers">{key_numbers(rec)}</td>',
    ]
    if with_sigma:
        cells.append(f'<td class="sigma-cell">{sigma_cell(rec)}</td>')
    cells.append(f'<td class="summary">{summary}</td>')
    return f'<tr id="claim-{esc(cid)}">' + "".join(cells) + "</tr>"


def tally(records: Iterable[Mapping[str, Any]]) -> str:
    """Coloured counts of each verdict, in :data:`VERDICT_COLORS` order."""
    records = list(records)
    chips = []
    for verdict in VERDICT_COLORS:
        n = sum(r.get("verdict") == verdict for r in records)
        if n:
            color = VERDICT_COLORS[verdict]
            chips.append(f'<span class="chip" style="background:{color}">{n} {esc(verdict)}</span>')
    return " ".join(chips)


def claims_table(records: Sequence[Mapping[str, Any]], css_class: str) -> str:
    """A verdict table; the σ column appears when a record has a σ with a floor or direction."""
    with_sigma = any(sigma_cell(r) != "—" for r in records)
    # percent of the table's width: reproduction rows hold more tests and levels
    if not with_sigma:
        widths = [19, 7, 10, 24, 40]
    elif css_class == "reproduction":
        widths = [14, 9, 10, 24, 24, 19]
    else:
        widths = [16, 7, 10, 19, 21, 27]
    head = ["claim", "kind", "verdict", "key numbers"]
    head += ["σ beside its floor (KL direction)"] if with_sigma else []
    head += ["summary"]
    cols = "".join(f'<col style="width:{w}%">' for w in widths)
    rows = "".join(claim_row(r, with_sigma) for r in records)
    return (
        f'<div class="table-wrap"><table class="claims {css_class}"><colgroup>{cols}</colgroup>'
        "<thead><tr>" + "".join(f"<th>{esc(h)}</th>" for h in head) + "</tr></thead>"
        f"<tbody>{rows}</tbody></table></div>"
    )


def verdict_section(runs: Sequence[RunRecord], runs_dir: str) -> str:
    """The verdict tables of the latest bounds run, or a note naming the command that makes one."""
    run = bounds_run(runs)
    if run is None:
        return (
            '<section id="verdicts"><h2>Claim verdicts</h2><p class="missing-note">No completed '
            f"<code>experiments.bounds</code> record under <code>{esc(runs_dir)}</code>; produce "
            f"it with <code>{esc(COMMANDS['claims'])}</code>.</p></section>"
        )
    records, complete = claim_records(run)
    theorems = [r for r in records if r.get("kind") != "reproduction"]
    repro = [r for r in records if r.get("kind") == "reproduction"]
    profile = run.config.get("profile", "?")
    meta = (
        f"<code>experiments.bounds</code> run {esc(run.run_id)} ({esc(profile)} profile, seed "
        f"{esc(run.config.get('seed', '?'))}), started {esc(run.start_time)}; commit "
        f"<code>{esc(run_commit(run))}</code>, version {esc(run_version(run))}."
    )
    if complete is False:
        meta += " <b>The run was interrupted: only the claims checked before it stopped.</b>"
    if complete is None:
        meta += " Rebuilt from <code>info.json</code> (no <code>claims.json</code> artifact)."
    cover = claim_coverage(list(runs), run, [str(r.get("claim_id")) for r in records])
    if cover.elsewhere:
        items = "".join(
            f"<li><code>{esc(cid)}</code>: "
            + (
                "no completed run checked it"
                if got is None
                else f"{verdict_cell(got[1])} in run {esc(got[0])} ({esc(got[2])} profile)"
            )
            + "</li>"
            for cid, got in cover.elsewhere.items()
        )
        coverage = (
            f'<div class="coverage"><p><b>This run checked {cover.checked} of the '
            f"{cover.registered} registered claims.</b> Not in it, with the latest verdict "
            f"another completed run reached:</p><ul>{items}</ul></div>"
        )
    else:
        coverage = ""
    overview = (
        f'<a href="#theorem-claims">{len(theorems)} theorem claims</a> {tally(theorems)}'
        f' &nbsp;·&nbsp; <a href="#reproduction-claims">{len(repro)} reproduction claims</a> '
        f"{tally(repro)}"
    )
    parts = [
        '<section id="verdicts"><h2>Claim verdicts</h2>',
        f'<p class="meta">{meta}</p>',
        coverage,
        f'<p class="overview">{overview}</p>',
        f'<h3 id="theorem-claims">Theorem claims <span class="count">({len(theorems)})</span></h3>',
        f'<p class="tally">{tally(theorems)}</p>',
        '<p class="explain">Kinds <code>exact</code> and <code>rate</code>: they decide the exit '
        "status of <code>python -m experiments.bounds</code>.</p>",
        claims_table(theorems, "theorems") if theorems else "<p>None in this run.</p>",
        '<h3 id="reproduction-claims">Reproduction claims '
        f'<span class="count">({len(repro)})</span></h3>',
        f'<p class="tally">{tally(repro)}</p>',
        '<p class="explain">Paired seeds; 95% t-intervals; p-values Holm-corrected across every '
        "reproduction test of the run. Primary tests (the paper's direction σ = KL(π_model ‖ π*)) "
        "are listed first; a σ is only interpretable beside its model family's floor.</p>",
        claims_table(repro, "reproduction") if repro else "<p>None in this run.</p>",
        "</section>",
    ]
    return "".join(parts)


# ------------------------------------------------------------------------------------ figures
def _sources(path: Path) -> list[dict[str, str]]:
    side = read_json(path.with_suffix(".json"))
    if isinstance(side, dict) and isinstance(side.get("sources"), list):
        return [s for s in side["sources"] if isinstance(s, dict)]
    return []


def config_details(config: Mapping[str, Any]) -> str:
    """A run's config as a collapsed two-column table (values as compact JSON)."""
    if not config:
        return '<span class="muted">no config recorded</span>'
    rows = "".join(
        f"<tr><th>{esc(k)}</th><td><code>{esc(json.dumps(v, ensure_ascii=False))}</code></td></tr>"
        for k, v in sorted(config.items())
    )
    return (
        f"<details><summary>config ({len(config)} entries)</summary>"
        f'<table class="config">{rows}</table></details>'
    )


def caption(name: str, sources: Sequence[Mapping[str, str]], by_id: Mapping[str, RunRecord]) -> str:
    """Output name; per source run: experiment, run id, start, commit, version and config."""
    lines = [f'<div class="fig-name">{esc(name)}</div>']
    if not sources:
        lines.append('<div class="muted">no sources recorded</div>')
    for src in sources:
        run = by_id.get(str(src.get("run_id")))
        experiment = src.get("experiment", "?")
        text = f"experiments.{experiment} run {src.get('run_id', '?')}"
        if run is None:
            lines.append(f'<div class="source">{esc(text)} (record not found)</div>')
            continue
        lines.append(
            f'<div class="source">{esc(text)}, started {esc(run.start_time)} · commit '
            f'<code class="commit">{esc(run_commit(run))}</code> · version '
            f"{esc(run_version(run))}</div>{config_details(run.config)}"
        )
    return "<figcaption>" + "".join(lines) + "</figcaption>"


def markdown_table(text: str) -> str:
    """The pipe table of a ``*.md`` output as an HTML table; other lines as a paragraph."""
    rows, notes = [], []
    for line in text.splitlines():
        s = line.strip()
        if s.startswith("|") and s.endswith("|"):
            cells = [c.strip() for c in s[1:-1].split("|")]
            if not all(set(c) <= set("-: ") for c in cells):
                rows.append(cells)
        elif s:
            notes.append(s)
    if not rows:
        return f"<pre>{esc(text)}</pre>"
    head = "".join(f"<th>{esc(c)}</th>" for c in rows[0])
    body = "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in r) + "</tr>" for r in rows[1:])
    out = f'<div class="table-wrap"><table class="data"><thead><tr>{head}</tr></thead>'
    out += f"<tbody>{body}</tbody></table></div>"
    if notes:
        out += f'<p class="muted">{esc(" ".join(notes))}</p>'
    return out


def _figure_outputs(paths: Sequence[Path]) -> list[Path]:
    """The PNGs and Markdown tables among an output's files, in the order it wrote them."""
    return [p for p in paths if p.suffix in (".png", ".md")]


def image_sources(
    built: Mapping[str, Sequence[Path]], out_dir: Path, limit: float
) -> dict[Path, str]:
    """The ``src`` of every built PNG: a base64 ``data:`` URI, or, when all of them together
    would exceed ``limit`` bytes of base64, a relative path to a copy under ``out_dir/figures``."""
    pngs = [p for paths in built.values() for p in _figure_outputs(paths) if p.suffix == ".png"]
    total = sum(4 * math.ceil(p.stat().st_size / 3) for p in pngs)
    if total <= limit:
        return {
            p: "data:image/png;base64," + base64.b64encode(p.read_bytes()).decode() for p in pngs
        }
    srcs = {}
    for i, p in enumerate(pngs):
        rel = Path("figures") / f"{i:03d}_{p.name}"
        (out_dir / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(p, out_dir / rel)
        srcs[p] = rel.as_posix()
    return srcs


def figures_section(
    built: Mapping[str, Sequence[Path]],
    runs: Sequence[RunRecord],
    srcs: Mapping[Path, str],
) -> str:
    """One ``<section>`` per built output: its figures (or tables), each with its caption."""
    by_id = {r.run_id: r for r in runs}
    parts = ['<section id="figures"><h2>Figures and tables</h2>']
    if not built:
        parts.append("<p>No figure was built.</p>")
    for name, paths in built.items():
        items = _figure_outputs(paths)
        grid = " grid" if sum(p.suffix == ".png" for p in items) > 1 else ""
        parts.append(f'<section class="output" id="out-{esc(name)}"><h3>{esc(name)}</h3>')
        parts.append(f'<div class="figures{grid}">')
        for p in items:
            label = p.stem if p.parent.name != name else f"{name}/{p.stem}"
            cap = caption(label, _sources(p), by_id)
            if p.suffix == ".png":
                size = png_size(p)
                dims = f' width="{size[0]}" height="{size[1]}"' if size else ""
                body = f'<img src="{esc(srcs[p])}" alt="{esc(label)}"{dims}>'
                wide = size is not None and size[0] >= WIDE_PX
            else:
                body, wide = markdown_table(p.read_text()), True
            cls = ' class="wide"' if wide else ""
            parts.append(f"<figure{cls}>{body}{cap}</figure>")
        parts.append("</div></section>")
    parts.append("</section>")
    return "".join(parts)


def code_spans(text: str) -> str:
    """Escaped ``text`` with its backquoted parts (commands) as ``<code>``."""
    parts = str(text).split("`")
    if len(parts) % 2 == 0:  # an unmatched backquote: leave the text as it is
        return esc(text)
    return "".join(f"<code>{esc(p)}</code>" if i % 2 else esc(p) for i, p in enumerate(parts))


def missing_section(skipped: Sequence[Skipped]) -> str:
    """The outputs not built, each with the message printed for it (the command that produces
    its record as ``<code>``)."""
    if not skipped:
        return ""
    items = []
    for s in skipped:
        item = f'<li id="missing-{esc(s.name)}"><span class="skip">skipped</span> '
        item += code_spans(s.message)
        if s.command and s.command not in s.message:
            item += f"; produced by <code>{esc(s.command)}</code>"
        items.append(item + "</li>")
    return (
        '<section id="missing"><h2>Missing outputs '
        f'<span class="count">({len(skipped)})</span></h2>'
        "<p>Their records are missing or incomplete: run the command each names (its records go "
        "to <code>$GESSL_RUNS_DIR</code> or <code>runs/</code>), or add "
        "<code>--run-missing</code>, then build the report again.</p>"
        f'<ul class="missing">{"".join(items)}</ul></section>'
    )


# ---------------------------------------------------------------------------------- the page
CSS = """
*, *::before, *::after { box-sizing: border-box; }
html { background: #f1f3f5; }
body { margin: 0; color: #212529; font: 14px/1.45 "DejaVu Sans", system-ui, -apple-system,
  "Segoe UI", Roboto, Arial, sans-serif; overflow-wrap: anywhere; }
main { max-width: 1240px; margin: 0 auto; padding: 20px 28px 48px; background: #fff;
  min-height: 100vh; box-shadow: 0 0 0 1px #dee2e6; }
h1 { font-size: 24px; margin: 4px 0 2px; }
h2 { font-size: 19px; margin: 30px 0 8px; padding-bottom: 4px; border-bottom: 2px solid #dee2e6; }
h3 { font-size: 16px; margin: 22px 0 6px; }
p { margin: 6px 0; }
code, pre { font-family: "DejaVu Sans Mono", ui-monospace, Menlo, Consolas, monospace;
  font-size: 12px; }
pre { white-space: pre-wrap; overflow-wrap: anywhere; background: #f8f9fa; padding: 6px 8px;
  border: 1px solid #e9ecef; border-radius: 4px; margin: 4px 0; }
nav.toc { margin: 10px 0 0; color: #495057; }
nav.toc a { margin-right: 14px; }
a { color: #1c5fa8; text-decoration: none; }
.subtitle, .muted { color: #6c757d; }
.muted { font-size: 12px; }
.nowrap { white-space: nowrap; }
.count { color: #868e96; font-weight: normal; }
.meta { color: #495057; }
.overview { font-size: 15px; margin: 10px 0 4px; }
.explain { color: #495057; font-size: 13px; }
.chip { display: inline-block; color: #fff; font-weight: 600; font-size: 12px;
  padding: 1px 9px; border-radius: 10px; margin-right: 4px; }
.table-wrap { max-width: 100%; overflow-x: auto; border: 1px solid #dee2e6; border-radius: 4px;
  margin: 6px 0 10px; }
table { border-collapse: collapse; width: 100%; font-size: 13px; }
table.claims { table-layout: fixed; }
th, td { text-align: left; vertical-align: top; padding: 6px 8px; overflow-wrap: anywhere; }
thead th { background: #f1f3f5; border-bottom: 1px solid #ced4da; font-size: 12px;
  color: #343a40; }
tbody tr + tr td { border-top: 1px solid #e9ecef; }
tbody tr:nth-child(even) td { background: #fafbfc; }
td.verdict { text-align: center; }
td.kind { font-size: 12px; overflow-wrap: normal; }
.pill { display: inline-block; min-width: 84px; overflow-wrap: normal; color: #fff;
  font-weight: 700; font-size: 12px; padding: 2px 8px; border-radius: 4px; text-align: center; }
code.cid { font-size: 12px; font-weight: 600; }
ul.tests, ul.sigma, ul.missing { margin: 2px 0; padding-left: 16px; }
ul.tests li, ul.sigma li { margin: 2px 0; }
.test-name, .sigma-label { font-weight: 600; }
.sig { color: #2b8a3e; font-weight: 600; }
.ns { color: #868e96; }
.kl { color: #5f3dc4; white-space: nowrap; }
.floor { display: block; color: #495057; font-size: 12px; }
.kl-note { color: #6c757d; font-size: 11px; margin-top: 4px; }
details > summary { cursor: pointer; color: #1c5fa8; font-size: 12px; }
td.summary details p { font-size: 12px; }
.figures.grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(520px, 1fr));
  gap: 14px; }
.figures.grid figure.wide { grid-column: 1 / -1; }
figure { margin: 8px 0 14px; padding: 8px; border: 1px solid #e9ecef; border-radius: 4px;
  min-width: 0; }
figure img { display: block; max-width: 100%; height: auto; margin: 0 auto; }
figcaption { margin-top: 6px; font-size: 12px; color: #495057; }
.fig-name { font-weight: 700; color: #212529; font-size: 13px; }
code.commit { font-size: 11px; }
table.config { font-size: 11px; margin-top: 4px; table-layout: fixed; }
table.config th { width: 30%; font-weight: 600; background: none; }
table.config td, table.config th { padding: 2px 6px; border-top: 1px solid #f1f3f5; }
table.data td, table.data th { white-space: normal; }
ul.missing li { margin: 6px 0; }
ul.missing code { background: #f1f3f5; padding: 1px 4px; border-radius: 3px; }
.skip { color: #868e96; font-size: 12px; text-transform: uppercase; letter-spacing: 0.03em; }
footer { margin-top: 36px; color: #868e96; font-size: 12px; border-top: 1px solid #dee2e6;
  padding-top: 8px; }
"""


def render_report(
    runs: Sequence[RunRecord],
    runs_dir: str,
    built: Mapping[str, Sequence[Path]],
    skipped: Sequence[Skipped],
    srcs: Mapping[Path, str] | None = None,
) -> str:
    """The whole page. ``built`` maps each output name to the files it wrote (this invocation),
    ``skipped`` lists the outputs that were not built; ``srcs`` gives each PNG's ``src``
    (default: ``data:`` URIs)."""
    if srcs is None:
        srcs = image_sources(built, Path("."), limit=math.inf)
    n_figs = sum(
        1 for paths in built.values() for p in _figure_outputs(paths) if p.suffix == ".png"
    )
    toc = [
        '<a href="#verdicts">Claim verdicts</a>',
        '<a href="#figures">Figures and tables</a>',
    ]
    if skipped:
        toc.append('<a href="#missing">Missing outputs</a>')
    body = [
        "<header><h1>GeSSL Lab report</h1>",
        f'<p class="subtitle">Built by <code>python -m paper_figures --html</code> from the run '
        f"records under <code>{esc(runs_dir)}</code>: {len(built)} outputs built "
        f"({n_figs} figures), {len(skipped)} missing.</p>",
        f'<nav class="toc">{" ".join(toc)}</nav></header>',
        verdict_section(runs, runs_dir),
        figures_section(built, runs, srcs),
        missing_section(skipped),
        "<footer>A static page: no server, no network, no JavaScript; the figures are embedded. "
        "Verdict colours: "
        + " ".join(
            f'<span class="chip" style="background:{c}">{esc(v)}</span>'
            for v, c in VERDICT_COLORS.items()
        )
        + "</footer>",
    ]
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        "<title>GeSSL Lab report</title>\n"
        f"<style>{CSS}</style>\n</head>\n<body>\n<main>\n"
        + "\n".join(body)
        + "\n</main>\n</body>\n</html>\n"
    )


def write_report(
    out_dir: str | Path,
    runs: Sequence[RunRecord],
    runs_dir: str,
    built: Mapping[str, Sequence[Path]],
    skipped: Sequence[Skipped],
    max_embed_bytes: float = MAX_EMBED_BYTES,
) -> Path:
    """Write ``out_dir/index.html`` (and, above ``max_embed_bytes``, ``out_dir/figures/``)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    srcs = image_sources(built, out, max_embed_bytes)
    page = out / "index.html"
    page.write_text(render_report(runs, runs_dir, built, skipped, srcs), encoding="utf-8")
    return page
