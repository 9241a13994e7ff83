"""Judging ``reproduction`` claims: rules fixed in advance (``docs/reproduction.md``).

A reproduction claim records paired tests (:class:`theory.paired.PairedTest`), GeSSL − plain
per seed unless a test says otherwise, each *primary* or *secondary*:

* the **primary** tests carry the paper's claim. Their p-values are Holm-corrected over a
  **fixed family** — the primary tests of every claim of :data:`PRIMARY_FAMILY` — whatever
  claims a command runs (``experiments.bounds`` runs the whole family when one of its claims is
  selected, so a claim's verdict is the same alone as in the catalogue);
* the **secondary** tests (the raw σ, the fixed protocol, the attribution, accuracy, the other
  KL direction …) are Holm-corrected among the claim's own secondary tests and reported with
  their adjusted p-values; they never decide, except the reverse-direction counterparts of the
  primary tests, which can make a verdict *mixed*.

The verdict (:func:`judge`), in this order:

1. a primary test without a finished seed → **inconclusive**;
2. GeSSL diverged on some seeds (a diverged seed counts *against* the arm that diverged): on at
   least half of them → **not reproduced**; on fewer → the verdict can be no better than
   **inconclusive**;
3. a primary test significantly *higher* (GeSSL worse) → **not reproduced** — unless the plain
   arm diverged on some seeds (counted against plain), which makes it **inconclusive**;
4. every primary test significantly *lower*: if some difference is smaller than its stated
   minimum effect (:data:`MIN_EFFECT` of plain's distance to the floor that bounds it) → **no
   practical difference**; else, if a reverse-direction counterpart is significantly higher →
   **mixed**; else **reproduced**;
5. otherwise → **inconclusive**.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from theory.claims.base import Check
from theory.paired import PairedTest, correct

__all__ = [
    "MIN_EFFECT",
    "PRIMARY_FAMILY",
    "Judged",
    "correct_across",
    "family_missing",
    "judge",
    "tests_of",
]

#: the claims whose primary tests form the fixed Holm family
PRIMARY_FAMILY = ("gessl_sigma_homogeneous", "gessl_sigma_subspace", "gessl_sigma_noise_level")
#: the minimum effect, as a fraction of the plain arm's distance to the floor beside it: a
#: significant difference smaller than that is "no practical difference"
MIN_EFFECT = 0.05


@dataclass
class Judged:
    """What :func:`judge` reads besides the tests: per primary test key, its minimum effect
    (absolute, nats) and the key of its reverse-direction counterpart; the diverged seeds of
    the GeSSL and plain arms out of ``seeds``."""

    min_effect: Mapping[str, float] = field(default_factory=dict)
    reverse: Mapping[str, str] = field(default_factory=dict)
    diverged: Mapping[str, int] = field(default_factory=dict)
    seeds: int = 0


def judge(
    tests: Sequence[PairedTest],
    primary: Sequence[bool],
    keys: Sequence[str] | None = None,
    rules: Judged | None = None,
) -> Check:
    """The verdict from the (already corrected) tests, by the rules of the module docstring,
    and the reason line with every number."""
    rules = rules or Judged()
    keys = list(keys) if keys is not None else [str(i) for i in range(len(tests))]
    by_key = dict(zip(keys, tests))
    prim = [(k, t) for k, t, p in zip(keys, tests, primary) if p]
    gessl_dead = int(rules.diverged.get("gessl", 0))
    plain_dead = int(rules.diverged.get("plain", 0))
    notes = []
    if not prim or any(t.n == 0 for _, t in prim):
        verdict = "inconclusive"
        notes.append("a primary test has no finished seed")
    elif gessl_dead and 2 * gessl_dead >= max(rules.seeds, 1):
        verdict = "not reproduced"
        notes.append(f"GeSSL diverged on {gessl_dead} of {rules.seeds} seeds")
    elif any(t.direction == "higher" for _, t in prim):
        verdict = "not reproduced"
        if plain_dead:
            verdict = "inconclusive"
            notes.append(f"plain diverged on {plain_dead} of {rules.seeds} seeds")
    elif all(t.direction == "lower" for _, t in prim):
        small = [k for k, t in prim if abs(t.mean) < rules.min_effect.get(k, 0.0)]
        adverse = [
            rules.reverse[k]
            for k, _ in prim
            if k in rules.reverse
            and rules.reverse[k] in by_key
            and by_key[rules.reverse[k]].direction == "higher"
        ]
        if small:
            verdict = "no practical difference"
            notes.append(
                "below the minimum effect: "
                + ", ".join(f"{k} (|Δ| < {rules.min_effect[k]:.3g})" for k in small)
            )
        elif adverse:
            verdict = "mixed"
            notes.append("the reverse KL direction is significantly adverse: " + ", ".join(adverse))
        else:
            verdict = "reproduced"
        if gessl_dead:
            verdict = "inconclusive"
            notes.append(f"GeSSL diverged on {gessl_dead} of {rules.seeds} seeds")
    else:
        verdict = "inconclusive"
    parts = [("[primary] " if p else "") + t.describe() for t, p in zip(tests, primary)]
    reason = "; ".join(notes + parts)
    return Check(verdict, reason)


def tests_of(record: dict[str, Any]) -> tuple[list[PairedTest], list[bool]]:
    """The paired tests of a reproduction claim's JSON record and their primary flags."""
    items = record.get("details", {}).get("tests", [])
    return [PairedTest.from_dict(d) for d in items], [bool(d.get("primary")) for d in items]


def rules_of(record: dict[str, Any]) -> Judged:
    """The :class:`Judged` stored in a reproduction record."""
    r = record.get("details", {}).get("rules", {})
    return Judged(
        r.get("min_effect", {}), r.get("reverse", {}), r.get("diverged", {}), r.get("seeds", 0)
    )


def family_missing(claim_ids: Sequence[str]) -> list[str]:
    """The members of :data:`PRIMARY_FAMILY` a selection lacks, when it has one of them."""
    chosen = set(claim_ids)
    if not chosen & set(PRIMARY_FAMILY):
        return []
    return [c for c in PRIMARY_FAMILY if c not in chosen]


def correct_across(records: Sequence[dict[str, Any]]) -> int:
    """The verdicts of a run's reproduction records, in place: Holm over the primary tests of
    the fixed family (:data:`PRIMARY_FAMILY`, every member must be present), Holm within each
    claim's secondary tests, then :func:`judge`; each test's ``p_holm``, each record's
    ``verdict``, ``reason`` and ``details["holm"]``. Returns the number of primary tests
    corrected together."""
    repro = [r for r in records if r.get("kind") == "reproduction" and r.get("verdict") != "error"]
    parsed = [(r, *tests_of(r)) for r in repro]
    in_family = [p for p in parsed if p[0]["claim_id"] in PRIMARY_FAMILY]
    family = [t for _, tests, prim in in_family for t, p in zip(tests, prim) if p]
    correct(family)
    for rec, tests, prim in parsed:
        if rec["claim_id"] not in PRIMARY_FAMILY:  # a claim outside the family: on its own
            correct([t for t, p in zip(tests, prim) if p])
        correct([t for t, p in zip(tests, prim) if not p])
        for d, t in zip(rec["details"]["tests"], tests):
            d.update(t.to_dict())  # the corrected numbers; extra fields (primary, key) stay
        keys = [d.get("key", str(i)) for i, d in enumerate(rec["details"]["tests"])]
        c = judge(tests, prim, keys, rules_of(rec))
        rec["verdict"], rec["reason"] = c.verdict, c.reason
        rec["details"]["holm"] = {
            "primary_family": list(PRIMARY_FAMILY)
            if rec["claim_id"] in PRIMARY_FAMILY
            else [rec["claim_id"]],
            "primary_tests": len(family) if rec["claim_id"] in PRIMARY_FAMILY else sum(prim),
            "secondary_tests": len(prim) - sum(prim),
            "provisional": False,
        }
    return len(family)
