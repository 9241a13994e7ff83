"""Test-wide settings: hypothesis profiles, tracking kept offline and out of the home folder."""

from __future__ import annotations

import os
import signal
import tempfile

import pytest
from hypothesis import HealthCheck, settings

# W&B must never reach the network or write under $HOME from the tests.
_tmp = tempfile.mkdtemp(prefix="gessl-tests-")
os.environ.setdefault("WANDB_MODE", "disabled")
for _var in ("WANDB_DIR", "WANDB_CACHE_DIR", "WANDB_CONFIG_DIR", "WANDB_DATA_DIR"):
    os.environ.setdefault(_var, _tmp)
os.environ.setdefault("MPLBACKEND", "Agg")
# a developer's team database must not receive the suite's runs (the database tests use
# GESSL_TEST_DB_URL and create their own databases)
for _var in ("GESSL_DB_URL", "GESSL_DB_OPTIONAL"):
    os.environ.pop(_var, None)

settings.register_profile(
    "ci",
    deadline=None,
    max_examples=30,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile("dev", deadline=None, max_examples=50)
settings.load_profile(os.getenv("HYPOTHESIS_PROFILE", "dev"))


@pytest.fixture
def false_claim():
    """Register the deliberately false claim ``false_mi_bound`` for one test."""
    from tests.theory.false_claims import false_mi_claim
    from theory.claims import Claim, register, unregister

    c = register(
        Claim(
            "false_mi_bound",
            "MI bound with I/10 (deliberately false)",
            "test",
            "[R]",
            "exact",
            false_mi_claim,
        )
    )
    yield c
    unregister("false_mi_bound")


def needs_signal(*names: str) -> pytest.MarkDecorator:
    """Skip (with the reason) where this process ignores one of the signals a test sends: its
    child processes inherit the ignored disposition (``nohup`` ignores SIGHUP; a shell's
    background job ignores SIGINT), so the command under test would never see the signal."""
    ignored = [
        n
        for n in names
        if hasattr(signal, n) and signal.getsignal(getattr(signal, n)) == signal.SIG_IGN
    ]
    missing = [n for n in names if not hasattr(signal, n)]
    reason = (
        f"{', '.join(ignored)} ignored by this shell (inherited by the command under test)"
        if ignored
        else f"no {', '.join(missing)} on this platform"
    )
    return pytest.mark.skipif(bool(ignored or missing), reason=reason)
