"""The power of the claims: each declared wrong alternative is called *violated*.

Every alternative marked ``fast`` whose ``rejects_on`` names ``tiny`` is run here on the tiny
profile; the others are run by ``python -m experiments.bounds with power=True`` on the default
profile (the catalogue's "rejects" column, docs/claims.md).
"""

from __future__ import annotations

import pytest

from theory.claims import Alternative, Claim, all_claims, get_claim
from theory.claims.base import ClaimResult, Series

POWER = [(c.id, a) for c in all_claims() for a in c.alternatives]
FAST = [(cid, a.name) for cid, a in POWER if a.fast and "tiny" in a.rejects_on]
REJECTED_WHEN = {(cid, a.name): a.rejected_when for cid, a in POWER}


def test_alternatives_are_declared_for_claims_and_named_once():
    assert FAST, "no fast alternative is declared"
    for c in all_claims():
        names = [a.name for a in c.alternatives]
        assert len(names) == len(set(names)), c.id
        for a in c.alternatives:
            assert a.description and a.overrides, (c.id, a.name)


@pytest.mark.parametrize(("claim_id", "alternative"), FAST, ids=[f"{c}-{a}" for c, a in FAST])
def test_a_fast_alternative_is_rejected_on_tiny(claim_id, alternative):
    result = get_claim(claim_id).check("tiny", 0, alternative=alternative)
    assert result.verdict in REJECTED_WHEN[claim_id, alternative], result.reason


def _holding(budget: str, seed: int) -> ClaimResult:
    return ClaimResult("holds" if LIMIT >= 1.0 else "violated", "r", "s", [Series("a", [1], [1])])


LIMIT = 1.0


def test_an_alternative_is_applied_only_inside_its_check():
    """The override is in place during the check and gone afterwards (also after an error)."""
    c = Claim(
        "power_probe",
        "s",
        "src",
        "[R]",
        "exact",
        _holding,
        alternatives=(
            Alternative("limit_half", "LIMIT halved", {f"{__name__}.LIMIT": 0.5}),
            Alternative("missing", "no such name", {f"{__name__}.NOPE": 1}),
        ),
    )
    assert c.check("tiny").verdict == "holds"
    assert c.check("tiny", alternative="limit_half").verdict == "violated"
    assert c.check("tiny").verdict == "holds" and LIMIT == 1.0
    with pytest.raises(AttributeError, match="NOPE does not exist"):
        c.check("tiny", alternative="missing")
    with pytest.raises(ValueError, match="has no alternative 'other' \\(declared: limit_half"):
        c.check("tiny", alternative="other")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"overrides": {}}, "no override"),
        ({"overrides": {"LIMIT": 1}}, "is not module.name"),
        ({"overrides": {"a.b": 1}, "rejects_on": ("full",)}, "include the default 'quick'"),
        ({"overrides": {"a.b": 1}, "rejects_on": ("quick", "huge")}, "rejects_on must name"),
        ({"overrides": {"a.b": 1}, "rejected_when": ("holds",)}, "rejected_when must name"),
        ({"overrides": {"a.b": 1}, "rejected_when": ()}, "rejected_when must name"),
    ],
)
def test_a_malformed_alternative_is_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Alternative("x", "y", **kwargs)


def test_alternative_names_must_not_repeat():
    a = Alternative("same", "d", {"a.b": 1})
    with pytest.raises(ValueError, match="alternative names repeat"):
        Claim("c", "s", "src", "[R]", "exact", _holding, alternatives=(a, a))


def test_an_alternative_is_rejected_only_by_verdicts_of_its_claims_kind():
    a = Alternative("x", "d", {"a.b": 1}, rejected_when=("not reproduced",))
    with pytest.raises(ValueError, match="not verdicts of a exact claim"):
        Claim("c", "s", "src", "[R]", "exact", _holding, alternatives=(a,))
    assert Claim("c", "s", "src", "RECON", "reproduction", _holding, alternatives=(a,))
