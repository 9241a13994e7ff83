"""``python -m gessl.testing``: exit 0 when all properties hold, 1 on a failure, 2 on misuse."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from gessl.losses import builtin_card_path
from gessl.testing.__main__ import main

REPO = Path(__file__).resolve().parents[3]
WRONG_CARD = REPO / "examples" / "cards" / "vicreg_wrong.toml"


def test_builtin_card_passes(capsys):
    rc = main(["gessl.losses:byol", "--card", builtin_card_path("byol"), "--max-examples", "10"])
    assert rc == 0
    assert "all properties hold" in capsys.readouterr().out


def test_card_defaults_to_the_builtin_one(capsys):
    assert main(["gessl.losses:simsiam", "--only", "range,collapse", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["passed"] and [r["property"] for r in report["results"]] == ["range", "collapse"]


def test_wrong_card_exits_1_with_a_falsifying_example(capsys):
    rc = main(["gessl.losses:vicreg", "--card", str(WRONG_CARD), "--no-shrink"])
    out = capsys.readouterr().out
    assert rc == 1
    assert "FAILED  rotation" in out and "falsifying example" in out and "Q = " in out
    assert "PASSED  translation" in out


def test_usage_errors_exit_2(tmp_path, capsys):
    assert main(["gessl.losses:no_such_loss", "--card", str(WRONG_CARD)]) == 2
    assert main(["not_a_target"]) == 2
    assert main(["math:sqrt"]) == 2  # no built-in card and none given
    bad = tmp_path / "bad.toml"
    bad.write_text('properties = ["telepathy"]\n')
    assert main(["gessl.losses:byol", "--card", str(bad)]) == 2
    assert "unknown property 'telepathy'" in capsys.readouterr().err


def test_module_entry_point_runs():
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "gessl.testing",
            "gessl.losses:infonce",
            "--only",
            "collapse",
            "--max-examples",
            "5",
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "PASSED  collapse" in proc.stdout
