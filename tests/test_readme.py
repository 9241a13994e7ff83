"""The README's self-contained Python examples run as written (each in a fresh interpreter).

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
BLOCKS = [
    b
    for b in re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)
    if b.startswith("import ")
]
# appended to blocks that train: the run happened and every logged loss is finite
TRAINED = (
    "\nimport math\nassert trainer.step == len(trainer.history) > 0\n"
    "assert all(math.isfinite(h['loss']) for h in trainer.history)\n"
)


def test_the_readme_has_its_runnable_examples() -> None:
    text = "\n".join(BLOCKS)
    for needle in ("get_loss(", "Trainer(", "@register_method"):
        assert needle in text, f"no self-contained README example uses {needle}"


@pytest.mark.parametrize("index", range(len(BLOCKS)))
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
    assert proc.returncode == 0, f"README example {index} failed:\n{code}\n{proc.stderr[-3000:]}"
    if "checkpoint_path=" in code:
        assert list(tmp_path.rglob("*.pt")), "the example's checkpoint was not written"
