"""The commands' exit-status convention, in a real process: Ctrl-C 130, SIGTERM 143, SIGHUP 129,
one line each; the previous signal handlers come back after the block."""

from __future__ import annotations

import signal
import subprocess
import sys

import pytest

from gessl.cli import Preempted, exit_status, preemption_handled
from tests.conftest import needs_signal

SCRIPT = """
import os, signal, time
from gessl.cli import run_main

def main():
    os.kill(os.getpid(), signal.{sig})
    time.sleep(30)  # the signal arrives first
    return 0

run_main(main, "the outputs written so far are kept")
"""


@pytest.mark.parametrize(
    ("sig", "code", "line"),
    [
        ("SIGTERM", 143, "interrupted by SIGTERM; the outputs written so far are kept"),
        ("SIGHUP", 129, "interrupted by SIGHUP; the outputs written so far are kept"),
        ("SIGINT", 130, "interrupted; the outputs written so far are kept"),
    ],
)
def test_a_signal_is_one_line_and_its_exit_status(sig, code, line):
    skip = needs_signal(sig)
    if skip.args[0]:
        pytest.skip(skip.kwargs["reason"])
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT.format(sig=sig)], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == code, proc.stderr
    assert proc.stderr.strip() == line


@needs_signal("SIGTERM")
def test_the_handlers_are_restored_and_the_status_is_128_plus_the_signal():
    before = signal.getsignal(signal.SIGTERM)
    with preemption_handled():
        assert signal.getsignal(signal.SIGTERM) is not before
        with pytest.raises(Preempted) as caught:
            signal.raise_signal(signal.SIGTERM)
    assert signal.getsignal(signal.SIGTERM) is before
    assert caught.value.args == ("SIGTERM",) and isinstance(caught.value, KeyboardInterrupt)
    assert exit_status(caught.value) == 143 and exit_status(KeyboardInterrupt()) == 130


@pytest.mark.skipif(not hasattr(signal, "SIGHUP"), reason="no SIGHUP on this platform")
def test_a_signal_the_process_ignores_stays_ignored():
    """Under ``nohup`` SIGHUP is ignored: the command does not take it over."""
    before = signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        with preemption_handled():
            assert signal.getsignal(signal.SIGHUP) == signal.SIG_IGN
            assert signal.getsignal(signal.SIGTERM) not in (signal.SIG_IGN, signal.SIG_DFL)
    finally:
        signal.signal(signal.SIGHUP, before)
