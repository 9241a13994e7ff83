"""Judging ``reproduction`` claims: paired tests, Holm's correction, verdict and reason line.

A reproduction claim records a list of paired tests (:class:`theory.paired.PairedTest`), each
marked *primary* or not. The primary tests carry the paper's claim; the others (the other KL
direction, the attribution, the σ-term) are reported beside it. With every test's p-value
Holm-corrected across the set:

* **reproduced** — every primary test is significantly lower (the direction the paper claims);
* **not reproduced** — some primary test is significantly *higher*;
* **inconclusive** — otherwise (a primary difference that the seeds cannot tell from 0).

:func:`judge` applies this to one claim's tests (Holm within the claim). ``experiments.bounds``
runs :func:`correct_across` once every claim has finished, so the correction covers every test
of every reproduction claim of the run, and rewrites each verdict and reason.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from theory.claims.base import Check
from theory.paired import PairedTest, correct

__all__ = ["correct_across", "judge", "tests_of"]


def judge(tests: Sequence[PairedTest], primary: Sequence[bool]) -> Check:
    """The verdict from the (already corrected) tests and the reason line with every number."""
    prim = [t for t, p in zip(tests, primary) if p]
    if prim and all(t.direction == "lower" for t in prim):
        verdict = "reproduced"
    elif any(t.direction == "higher" for t in prim):
        verdict = "not reproduced"
    else:
        verdict = "inconclusive"
    parts = [("[primary] " if p else "") + t.describe() for t, p in zip(tests, primary)]
    return Check(verdict, "; ".join(parts))


def tests_of(record: dict[str, Any]) -> tuple[list[PairedTest], list[bool]]:
    """The paired tests of a reproduction claim's JSON record and their primary flags."""
    items = record.get("details", {}).get("tests", [])
    return [PairedTest.from_dict(d) for d in items], [bool(d.get("primary")) for d in items]


def correct_across(records: Sequence[dict[str, Any]]) -> int:
    """Holm's correction across every test of every reproduction record (in place): each
    test's ``p_holm``, each record's ``verdict`` and ``reason``. Returns the number of tests."""
    repro = [r for r in records if r.get("kind") == "reproduction" and r.get("verdict") != "error"]
    per_record = [tests_of(r) for r in repro]
    every = [t for tests, _ in per_record for t in tests]
    correct(every)
    for rec, (tests, primary) in zip(repro, per_record):
        for d, t in zip(rec["details"]["tests"], tests):
            d.update(t.to_dict())  # the corrected numbers; extra fields (primary, key) stay
        c = judge(tests, primary)
        rec["verdict"], rec["reason"] = c.verdict, c.reason
        rec["details"]["holm_tests"] = len(every)
    return len(every)
