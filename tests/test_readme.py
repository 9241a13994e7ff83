"""The self-contained Python examples of the README and of ``docs/*.md`` run as written (each in
a fresh interpreter); every relative link of those pages points at a file that exists.

A block counts as self-contained when its first line is an ``import``; fragments that use names
defined elsewhere (``method``, ``batch_a``…) start otherwise and are not run.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
EXAMPLES = [
    (page.relative_to(ROOT).as_posix(), b)
    for page in PAGES
    for b in re.findall(r"```python\n(.*?)```", page.read_text(), flags=re.S)
    if b.startswith("import ")
]
BLOCKS = [b for _, b in EXAMPLES]
# appended to blocks that train: the run happened and every logged loss is finite
TRAINED = (
    "\nimport math\nassert trainer.step == len(trainer.history) > 0\n"
    "assert all(math.isfinite(h['loss']) for h in trainer.history)\n"
)


def test_the_docs_have_their_runnable_examples() -> None:
    text = "\n".join(BLOCKS)
    for needle in ("get_loss(", "Trainer(", "@register_method"):
        assert needle in text, f"no self-contained example uses {needle}"
    readme = [b for page, b in EXAMPLES if page == "README.md"]
    assert any("Trainer(" in b for b in readme), "the README shows no runnable training example"


def test_the_readme_is_a_tour() -> None:
    """The README stays short and links every page of docs/."""
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 250
    for page in sorted((ROOT / "docs").glob("*.md")):
        assert f"docs/{page.name}" in text, f"the README does not link docs/{page.name}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_relative_links_resolve(page: Path) -> None:
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
    broken = []
    for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text):
        if "://" in target or target.startswith("mailto:"):
            continue
        if not (page.parent / target).exists():
            broken.append(target)
    assert not broken, f"{page.name}: broken links {broken}"


@pytest.mark.parametrize(
    "index", range(len(BLOCKS)), ids=[f"{p}-{i}" for i, (p, _) in enumerate(EXAMPLES)]
)
def test_readme_example_runs(index: int, tmp_path: Path) -> None:
    code = BLOCKS[index]
    if "trainer.fit(" in code:
        code += TRAINED
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "WANDB_MODE": "disabled",
        "GESSL_RUNS_DIR": str(tmp_path / "runs"),
    }
    proc = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, (
        f"example {index} ({EXAMPLES[index][0]}) failed:\n{code}\n{proc.stderr[-3000:]}"
    )
    if "checkpoint_path=" in code:
        assert list(tmp_path.rglob("*.pt")), "the example's checkpoint was not written"
