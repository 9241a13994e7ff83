"""The property harness's limits, through the command: a loss that hangs is reported TIMEOUT
with its example (exit 1), a card expression that would grow without bound is a card error (exit
2, not blamed on the loss), and Ctrl-C prints the properties decided before it (exit 130)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gessl.testing import load_card
from gessl.testing.card import CardError, evaluate
from tests.conftest import needs_signal

REPO = Path(__file__).resolve().parents[3]
SLOW = "tests.gessl.testing.slow_losses"


def _card(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "card.toml"
    path.write_text(text)
    return path


def _harness(*args: str, timeout: int = 240) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "gessl.testing", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )


@pytest.mark.skipif(not hasattr(signal, "setitimer"), reason="the time limit needs SIGALRM")
def test_a_hanging_loss_is_reported_timeout_with_its_example(tmp_path):
    card = _card(
        tmp_path,
        'properties = ["finite"]\ndim = [2, 8]\nmax_examples = 20\ntimeout = 1.5\n',
    )
    start = time.monotonic()
    proc = _harness(f"{SLOW}:hangs_on_wide_inputs", "--card", str(card))
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert time.monotonic() - start < 120
    assert "TIMEOUT finite" in proc.stdout
    assert "an example took longer than the time limit of 1.5 s" in proc.stdout
    example = proc.stdout.split("falsifying example", 1)[1]
    z1 = example.split("z1 = ", 1)[1].split("\n    z2", 1)[0]  # the example that hung: D > 4
    assert len(z1.splitlines()[0].split()) > 4
    # --timeout overrides the card's
    proc = _harness(f"{SLOW}:hangs_on_wide_inputs", "--card", str(card), "--timeout", "0.5")
    assert proc.returncode == 1 and "time limit of 0.5 s" in proc.stdout
    assert (
        _harness(f"{SLOW}:hangs_on_wide_inputs", "--card", str(card), "--timeout", "0").returncode
        == 2
    )


def test_a_card_expression_that_grows_without_bound_is_a_card_error(tmp_path):
    for expr in ("N**N**N**N", "9**9**9**9"):
        with pytest.raises(CardError, match="OverflowError"):
            evaluate(expr, {"N": 8})
    card = _card(tmp_path, 'properties = ["range"]\nrange = ["0", "N**N**N**N"]\nbatch = [4, 8]\n')
    start = time.monotonic()
    proc = _harness("gessl.losses:infonce", "--card", str(card))
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert time.monotonic() - start < 60
    err = proc.stderr.strip()
    assert err.startswith("error: ") and "cannot evaluate 'N**N**N**N'" in err
    assert "FAILED" not in proc.stdout  # never blamed on the loss
    with pytest.raises(CardError, match="timeout must be"):
        load_card(_card(tmp_path, 'properties = ["finite"]\ntimeout = 0\n'))


@needs_signal("SIGINT")
def test_ctrl_c_prints_the_properties_decided_before_it(tmp_path):
    card = _card(tmp_path, 'properties = ["finite", "rotation"]\nmax_examples = 8\n')
    proc = subprocess.Popen(
        [sys.executable, "-m", "gessl.testing", f"{SLOW}:hangs_after_a_while", "--card", str(card)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        start_new_session=True,
    )
    try:
        time.sleep(12)  # imports, then 'finite' is decided and 'rotation' hangs in its sleep
        assert proc.poll() is None, proc.communicate()
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 130, err[-2000:]
    assert (
        "PASSED  finite" in out and "(1 of 2 property runs decided before the interruption)" in out
    )
    assert err.strip().splitlines()[-1] == (
        "interrupted; the properties decided before it are reported above"
    )


CLASS_CARD = """properties = ["finite", "collapse", "rotation", "batch_permutation"]
collapse = "0"
max_examples = 10

[init]
scale = 2.0

[sweep]
temperature = [0.5, 2.0]
"""


def test_a_loss_class_is_built_with_the_cards_init_options(tmp_path):
    from gessl.testing import check_loss
    from tests.gessl.testing.slow_losses import ScaledAlignment

    card = load_card(_card(tmp_path, CLASS_CARD))
    ScaledAlignment.built.clear()
    report = check_loss(ScaledAlignment, card)
    assert report.passed, report.format()
    built = ScaledAlignment.built
    assert built and all(b["scale"] == 2.0 for b in built)  # [init]
    temps = {b["temperature"] for b in built}  # the swept constructor option, per example
    assert len(temps) > 3 and all(0.5 <= t <= 2.0 for t in temps)
    proc = _harness(f"{SLOW}:ScaledAlignment", "--card", str(_card(tmp_path, CLASS_CARD)))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "all properties hold" in proc.stdout


def test_init_options_the_class_or_the_function_does_not_take_are_card_errors(tmp_path):
    bad = _card(tmp_path, CLASS_CARD.replace("scale = 2.0", "scael = 2.0"))
    proc = _harness(f"{SLOW}:ScaledAlignment", "--card", str(bad))
    assert proc.returncode == 2
    assert "init option 'scael' is not a parameter of ScaledAlignment()" in proc.stderr
    proc = _harness(f"{SLOW}:hangs_on_wide_inputs", "--card", str(_card(tmp_path, CLASS_CARD)))
    assert proc.returncode == 2 and "[init] is for a loss class" in proc.stderr
