"""The static HTML report (``python -m paper_figures --html``) from small synthetic records:
its content, the command line, and a real headless Chromium rendering it."""

from __future__ import annotations

import base64
import html
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from paper_figures.__main__ import main
from paper_figures.figures import COMMANDS, build
from paper_figures.html import Skipped, render_report, write_report
from paper_figures.panels import VERDICT_COLORS
from paper_figures.records import find_runs
from tests.paper_figures.test_figures import _claims, _run
from theory.claims import ClaimResult, Series

REPO = Path(__file__).resolve().parents[2]
COMMIT = "0123456789abcdef0123456789abcdef01234567+dirty"
EVIL = "<script>alert('x')</script>"
FLOOR = {
    "value": 0.186,
    "se": None,
    "direction": "sigma",
    "kind": "shared",
    "tasks": 200,
    "iterations": 6,
    "grad_max": 3e-7,
    "converged": True,
}


def _floor_claim() -> dict:
    """A theorem claim reporting a σ beside its family's floor (like ``sigma_zero_at_bayes``)."""
    rec = ClaimResult(
        "inconclusive",
        "not sure",
        "cosine critic 0.189 (floor 0.186) & a < b",
        [Series("σ per query", [1, 2], [0.3, 0.2])],
        details={
            "cosine_critic_sigma": 0.189,
            "cosine_family_floor": FLOOR,
            "kl_directions": "σ = KL(π_f ‖ π*); sigma_excess = KL(π* ‖ π_f)",
        },
        claim_id="toy_floor",
        kind="exact",
    ).to_dict()
    return {**rec, "statement": "s", "source": "docs/settings.md"}


def _error_claim() -> dict:
    """What ``experiments.bounds`` records for a check that raised."""
    return {
        "claim_id": "toy_error",
        "kind": "exact",
        "verdict": "error",
        "reason": "the check raised RuntimeError: boom",
        "summary": "check raised RuntimeError",
        "measured": [],
        "bounds": [],
        "details": {"traceback": "Traceback ...\nRuntimeError: boom\n"},
        "seconds": 0.1,
        "statement": "s",
    }


def _set_host(root: Path, run_id: int, host: dict) -> None:
    path = root / str(run_id) / "run.json"
    run = json.loads(path.read_text())
    path.write_text(json.dumps({**run, "host": host}))


def _wide_claim(rec: dict) -> dict:
    """``rec`` with a second panel (``details.extra_panel``): a wider figure (950 px)."""
    extra = {"title": "t", "x_label": "m", "series": [{"label": "gap", "x": [1, 2], "y": [1, 0]}]}
    return {**rec, "details": {**rec.get("details", {}), "extra_panel": extra}}


_rate, _exact, _repro = _claims()
CLAIMS = [_rate, _wide_claim(_exact), _repro, _floor_claim(), _error_claim()]
THEOREM_IDS = ["toy_rate", "toy_exact", "toy_floor", "toy_error"]
REPRO_IDS = ["contradicted_repro"]


def make_records(root: Path) -> Path:
    """A bounds run (with a commit) and a sigma run (an older record: no commit); nothing else,
    so the other outputs are missing."""
    _run(
        root,
        1,
        "bounds",
        {"profile": "tiny", "seed": 0, "note": EVIL},
        info={"verdicts": {c["claim_id"]: c["verdict"] for c in CLAIMS}},
        artifacts={"claims.json": {"profile": "tiny", "complete": True, "claims": CLAIMS}},
    )
    _set_host(root, 1, {"gessl_commit": COMMIT, "gessl_version": "9.9.9"})
    series = {
        f"sigma/{s}/{m}": {"steps": [0, 10], "values": [2.0, 1.0]}
        for s in ("train", "fresh", "held_out")
        for m in ("plain", "gessl")
    }
    _run(root, 3, "sigma", {"method": "simclr", "dataset": "digits"}, info={"series": series})
    return root


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> dict:
    """Records, the figures built from them, and the report, made once for the module."""
    tmp = tmp_path_factory.mktemp("report")
    runs = make_records(tmp / "runs")
    out, page_dir = tmp / "figs", tmp / "report"
    code = main(["--runs", str(runs), "--out", str(out), "--html", str(page_dir)])
    assert code == 0
    page = page_dir / "index.html"
    return {"tmp": tmp, "runs": runs, "out": out, "page": page, "text": page.read_text()}


def _table(text: str, css: str) -> str:
    match = re.search(rf'<table class="claims {css}">.*?</table>', text, re.S)
    assert match, f"no verdict table {css!r} in the page"
    return match.group(0)


def _row(text: str, claim_id: str) -> str:
    match = re.search(rf'<tr id="claim-{claim_id}">.*?</tr>', text, re.S)
    assert match, f"no row for {claim_id}"
    return match.group(0)


def _plain(fragment: str) -> str:
    """The text of an HTML fragment (tags dropped, entities decoded)."""
    return html.unescape(re.sub(r"<[^>]+>", "", fragment))


# ------------------------------------------------------------------------------------- content
def test_verdict_tables_have_a_row_per_claim_in_two_sections(report):
    text = report["text"]
    theorems, repro = _table(text, "theorems"), _table(text, "reproduction")
    assert re.findall(r'<tr id="claim-([^"]+)"', theorems) == THEOREM_IDS
    assert re.findall(r'<tr id="claim-([^"]+)"', repro) == REPRO_IDS
    assert text.index('id="theorem-claims"') < text.index('id="reproduction-claims"')
    for rec in CLAIMS:
        row = _row(text, rec["claim_id"])
        verdict = rec["verdict"]
        # the verdict as text, on its colour
        assert f'data-verdict="{verdict}"' in row
        assert f'style="background:{VERDICT_COLORS[verdict]}">{verdict}</span>' in row
        assert rec["kind"] in _plain(row)
    assert "slope -1.000 ± 0.020 (expected -1)" in _plain(_row(text, "toy_rate"))
    assert "RuntimeError: boom" in _plain(_row(text, "toy_error"))
    assert "experiments.bounds run 1 (tiny profile" in _plain(text)


def test_floors_stand_beside_sigma_with_their_kl_direction(report):
    text = report["text"]
    floor_row = _plain(_row(text, "toy_floor"))
    assert re.search(r"σ \(cosine family\) KL\(π_model ‖ π\*\): cosine critic 0\.189", floor_row)
    assert "shared floor 0.186 (200 tasks)" in floor_row
    repro_row = _plain(_row(text, "contradicted_repro"))
    # levels per mode beside the floor that bounds each (the fixture's 0.2, 0.3 and 0.0): the
    # shared floor for φ, the floor reachable by the fixed protocol, the per-task floor for the
    # tuned adaptation where no reachable one was fitted
    assert re.search(
        r"σ of φ calibrated[^:]*: plain 0\.5 · GeSSL 0\.5\s*shared floor 0\.2", repro_row
    )
    assert re.search(
        r"σ adapted fixed \(K, α\)[^:]*: plain 0\.45 · GeSSL 0\.45\s*reachable-fixed floor 0\.3",
        repro_row,
    )
    assert re.search(
        r"σ adapted tuned \(K, α\)[^:]*: plain 0\.4 · GeSSL 0\.4\s*per-task floor 0", repro_row
    )
    assert "σ: GeSSL − plain" in repro_row and "p_Holm" in repro_row
    assert "—" in _plain(_row(text, "toy_exact"))  # no σ, no floor: nothing invented


def test_every_built_figure_is_embedded_with_its_caption(report):
    text, out = report["text"], report["out"]
    pngs = sorted(out.rglob("*.png"))
    imgs = re.findall(r'<img src="([^"]+)" alt="([^"]+)"', text)
    assert len(imgs) == len(pngs) == 2 + len(CLAIMS)  # claims_summary, sigma_vs_step, panels
    embedded = {base64.b64decode(src.split(",", 1)[1]) for src, _ in imgs}
    assert all(src.startswith("data:image/png;base64,") for src, _ in imgs)
    assert embedded == {p.read_bytes() for p in pngs}
    captions = [_plain(c) for c in re.findall(r"<figcaption>.*?</figcaption>", text, re.S)]
    assert len(captions) == len(imgs)
    bounds_caps = [c for c in captions if "experiments.bounds run 1" in c]
    assert len(bounds_caps) == 1 + len(CLAIMS)
    assert all(COMMIT in c and "version 9.9.9" in c for c in bounds_caps)
    (sigma_cap,) = [c for c in captions if c.startswith("sigma_vs_step")]
    assert "experiments.sigma run 3" in sigma_cap and "commit unknown" in sigma_cap
    assert '"simclr"' in sigma_cap  # the run's config
    assert "claims/toy_floor" in text and "<details><summary>config (3 entries)" in text


def test_missing_outputs_are_listed_with_their_command(report):
    section = re.search(r'<section id="missing">.*?</section>', report["text"], re.S)[0]
    missing = _plain(section)
    for name in ("ablation_lookahead_steps", "ablation_inner_steps", "study_table"):
        cmd = COMMANDS[name]
        # the line printed today, with the command as code
        assert f"skipped {name}: no completed run record; produce it with {cmd}" in missing
        assert f"<code>{html.escape(cmd)}</code>" in section
    assert re.findall(r'<li id="missing-([^"]+)"', section) == [
        "ablation_lookahead_steps",
        "ablation_inner_steps",
        "study_table",
        "overhead_table",
        "gessl_map",
        "universality",
    ]


def test_text_is_escaped(report):
    text = report["text"]
    assert "<script" not in text.lower()  # neither ours (no JavaScript) nor the config's
    assert html.escape(json.dumps(EVIL), quote=True) in text
    assert "(floor 0.186) &amp; a &lt; b" in text


def test_without_a_bounds_record_the_page_names_the_command(tmp_path):
    page = render_report([], "nowhere", {}, [Skipped("claims", "claims: none", "python -m x")])
    assert "No completed <code>experiments.bounds</code> record" in page
    assert "python -m experiments.bounds" in page and "<code>python -m x</code>" in page


def test_verdicts_from_info_when_claims_json_is_absent(tmp_path):
    table = {
        "columns": ["claim", "kind", "verdict", "seconds", "slope", "summary"],
        "data": [
            ["a_claim", "rate", "holds", 1.0, -1.0, "ok"],
            ["b_claim", "reproduction", "not reproduced", 0.0, None, ""],
        ],
    }
    _run(tmp_path, 1, "bounds", {"profile": "quick"}, info={"wandb_tables": {"verdicts": table}})
    page = render_report(find_runs(tmp_path), str(tmp_path), {}, [])
    assert re.findall(r'<tr id="claim-([^"]+)"', _table(page, "theorems")) == ["a_claim"]
    assert 'data-verdict="not reproduced"' in _table(page, "reproduction")
    assert "Rebuilt from <code>info.json</code>" in page


def test_large_figures_are_copied_beside_the_page(report, tmp_path):
    runs = find_runs(report["runs"])
    paths = build("claims_summary", runs, tmp_path / "figs")
    page = write_report(tmp_path / "r", runs, "runs", {"claims_summary": paths}, [], 0)
    (src,) = re.findall(r'<img src="([^"]+)"', page.read_text())
    assert src == "figures/000_claims_summary.png"
    assert (page.parent / src).read_bytes() == (
        tmp_path / "figs" / "claims_summary.png"
    ).read_bytes()


def test_only_with_html_still_writes_the_page_and_exits_1(report, tmp_path):
    args = ["--runs", str(report["runs"]), "--out", str(tmp_path / "o"), "--html", str(tmp_path)]
    assert main([*args, "--only", "study_table"]) == 1
    text = (tmp_path / "index.html").read_text()
    assert "<img" not in text and "python -m experiments.study" in text
    assert '<tr id="claim-toy_rate">' in text  # the verdicts are shown whatever is built


# ---------------------------------------------------------------------------- the command line
def test_command_line_writes_the_page_and_rejects_unknown_outputs(report, tmp_path):
    env = {**os.environ, "WANDB_MODE": "disabled", "MPLBACKEND": "Agg"}
    cmd = [sys.executable, "-m", "paper_figures", "--runs", str(report["runs"])]
    cmd += ["--out", str(tmp_path / "figs"), "--html", str(tmp_path / "report")]
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert f"report: {tmp_path / 'report' / 'index.html'}" in done.stdout
    assert "skipped study_table" in done.stderr
    page = (tmp_path / "report" / "index.html").read_text()
    assert page.startswith("<!DOCTYPE html>") and page.count("<img ") == 2 + len(CLAIMS)
    bad = subprocess.run(
        [*cmd, "--only", "no_such"], cwd=REPO, env=env, capture_output=True, text=True, timeout=120
    )
    assert bad.returncode == 2 and "invalid choice: 'no_such'" in bad.stderr
    helped = subprocess.run(
        [sys.executable, "-m", "paper_figures", "--help"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert helped.returncode == 0 and "--html DIR" in helped.stdout


# ------------------------------------------------------------------------------ a real browser
CHECK_SCRIPT = """
<pre id="check"></pre>
<script>
window.addEventListener("load", function () {
  var de = document.documentElement;
  var imgs = Array.from(document.images);
  var overflow = Array.from(document.querySelectorAll("body *"))
    .filter(function (e) { return e.getBoundingClientRect().right > de.clientWidth + 0.5; })
    .slice(0, 5)
    .map(function (e) { return e.tagName + "." + e.className; });
  var imgOverflow = imgs.filter(function (i) {
    return i.getBoundingClientRect().right > i.parentElement.getBoundingClientRect().right + 0.5;
  }).map(function (i) { return i.alt; });
  var tables = Array.from(document.querySelectorAll("table.claims")).map(function (t) {
    return {cls: t.className, rows: t.tBodies[0].rows.length,
            scrollWidth: t.parentElement.scrollWidth, clientWidth: t.parentElement.clientWidth};
  });
  var verdicts = Array.from(document.querySelectorAll("td.verdict .pill")).map(function (p) {
    return [p.textContent, getComputedStyle(p).backgroundColor, p.getBoundingClientRect().width];
  });
  document.getElementById("check").textContent = JSON.stringify({
    images: imgs.length,
    broken: imgs.filter(function (i) { return !(i.complete && i.naturalWidth > 0); })
      .map(function (i) { return i.alt; }),
    scrollWidth: de.scrollWidth, clientWidth: de.clientWidth, innerWidth: window.innerWidth,
    overflowing: overflow, imgOverflow: imgOverflow, tables: tables, verdicts: verdicts
  });
});
</script>
"""

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-breakpad",
    "--hide-scrollbars",
]


def _chromium(args: list[str], tmp: Path) -> subprocess.CompletedProcess:
    exe = shutil.which("chromium")
    if exe is None:
        pytest.skip("chromium not found: install it (Debian: apt-get install chromium) to run this")
    cmd = [exe, *CHROMIUM_FLAGS, f"--user-data-dir={tmp / 'chromium-profile'}", *args]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    except subprocess.TimeoutExpired as err:
        pytest.fail(f"chromium did not finish in 60 s: {' '.join(cmd)}\n{err.stderr}")
    assert done.returncode == 0, f"{' '.join(cmd)} exited {done.returncode}:\n{done.stderr[-3000:]}"
    return done


def browser_check(page: Path, tmp: Path) -> dict:
    """Load a copy of ``page`` with :data:`CHECK_SCRIPT` appended in headless Chromium at 1280 px
    and return what the script measured."""
    copy = page.with_name("browser-check.html")
    copy.write_text(page.read_text().replace("</body>", CHECK_SCRIPT + "</body>"))
    done = _chromium(
        ["--window-size=1280,2000", "--virtual-time-budget=5000", "--dump-dom", copy.as_uri()],
        tmp,
    )
    match = re.search(r'<pre id="check">(.*?)</pre>', done.stdout, re.S)
    assert match and match.group(1), f"the check did not run; chromium said:\n{done.stderr[-3000:]}"
    return json.loads(html.unescape(match.group(1)))


def test_a_real_browser_renders_the_page_without_overflow(report, tmp_path):
    result = browser_check(report["page"], tmp_path)
    detail = json.dumps(result, indent=1)
    assert result["innerWidth"] == 1280, detail
    assert result["images"] == 2 + len(CLAIMS) and result["broken"] == [], detail
    assert result["scrollWidth"] <= result["clientWidth"] <= 1280, detail
    assert result["overflowing"] == [] and result["imgOverflow"] == [], detail
    rows = {t["cls"]: t["rows"] for t in result["tables"]}
    assert rows == {"claims theorems": len(THEOREM_IDS), "claims reproduction": len(REPRO_IDS)}
    for t in result["tables"]:  # the verdict tables wrap: no scrolling even inside their box
        assert t["scrollWidth"] <= t["clientWidth"], detail
    assert sorted(v[0] for v in result["verdicts"]) == sorted(c["verdict"] for c in CLAIMS)
    for text, color, width in result["verdicts"]:
        hexes = "#{:02x}{:02x}{:02x}".format(*map(int, re.findall(r"\d+", color)[:3]))
        assert hexes == VERDICT_COLORS[text] and width > 40, detail

    shot = tmp_path / "report.png"
    _chromium(
        ["--window-size=1280,2000", f"--screenshot={shot}", report["page"].as_uri()], tmp_path
    )
    assert shot.is_file(), "chromium wrote no screenshot"
    img = Image.open(shot).convert("RGB")
    assert img.size == (1280, 2000)
    colors = img.getcolors(maxcolors=1 << 20)
    assert colors is None or len(colors) > 200, "the screenshot is (nearly) blank"
    assert shot.stat().st_size > 50_000


def test_a_run_of_some_claims_says_which_it_left_out_and_where_each_was_last_checked(tmp_path):
    """The report and the claim figures read the latest bounds run; when it checked only some of
    the registered claims, both say so, with each missing claim's latest verdict elsewhere."""
    from theory.claims import all_claims

    registered = [c.id for c in all_claims()]
    root = tmp_path / "runs"

    def rec(cid: str, verdict: str) -> dict:
        return {**_rate, "claim_id": cid, "verdict": verdict, "kind": "exact"}

    def bounds(run_id: int, profile: str, complete: bool, claims: list, status="COMPLETED"):
        saved = {"profile": profile, "complete": complete, "claims": claims}
        _run(root, run_id, "bounds", {"profile": profile, "seed": 0}, status=status,
             artifacts={"claims.json": saved})  # fmt: skip

    bounds(1, "quick", True, [rec("infonce_mi_bound", "holds"), rec("collapse_values", "violated")])
    # an interrupted run is never read for the missing claims
    bounds(2, "quick", False, [rec("barlow_stepwise", "violated")], status="INTERRUPTED")
    bounds(3, "tiny", True, [rec("collapse_values", "holds")])
    runs = find_runs(root)
    page = render_report(runs, str(root), {}, [])
    block = re.search(r'<div class="coverage">.*?</div>', page, re.S)
    assert block, "no coverage note"
    note = block.group(0)
    assert f"This run checked 1 of the {len(registered)} registered claims." in note
    assert "<code>infonce_mi_bound</code>: " in note and "in run 1 (quick profile)" in note
    assert "<code>collapse_values</code>" not in note  # it is in the run
    item = re.search(r"<li><code>barlow_stepwise</code>: (.*?)</li>", note).group(1)
    assert item == "no completed run checked it"
    assert note.count("<li>") == len(registered) - 1
    out = subprocess.run(
        [sys.executable, "-m", "paper_figures", "--runs", str(root), "--out",
         str(tmp_path / "figs"), "--only", "claims_summary"],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    line = next(ln for ln in out.stderr.splitlines() if ln.startswith("note: run 3 checked"))
    assert f"run 3 checked 1 of the {len(registered)} registered claims; not in it: " in line
    assert "infonce_mi_bound (holds in run 1, quick profile)" in line
    assert "barlow_stepwise (no completed run checked it)" in line
