"""The registry of claims: ``register``, ``get_claim``, ``all_claims``."""

from __future__ import annotations

from collections.abc import Sequence

from theory.claims.base import Alternative, CheckFn, Claim

__all__ = ["all_claims", "claim", "get_claim", "register", "unregister"]

_CLAIMS: dict[str, Claim] = {}


def register(c: Claim) -> Claim:
    """Add a claim; its id must be new."""
    if c.id in _CLAIMS:
        raise ValueError(f"claim {c.id!r} is already registered")
    _CLAIMS[c.id] = c
    return c


def unregister(claim_id: str) -> None:
    """Remove a claim (for tests that register temporary ones)."""
    _CLAIMS.pop(claim_id, None)


def claim(
    id: str,
    statement: str,
    source: str,
    provenance: str,
    kind: str,
    group: str | None = None,
    cost: float = 1.0,
    setting: str = "",
    alternatives: Sequence[Alternative] = (),
):
    """Decorator form: ``@claim(...)`` on a ``run(budget, seed) -> ClaimResult`` function;
    ``alternatives``: the wrong variants its check must reject (:class:`Alternative`)."""

    def decorate(fn: CheckFn) -> CheckFn:
        register(
            Claim(
                id,
                statement,
                source,
                provenance,
                kind,
                fn,
                group,
                cost,
                setting,
                tuple(alternatives),
            )
        )
        return fn

    return decorate


def get_claim(claim_id: str) -> Claim:
    """The registered claim ``claim_id``."""
    try:
        return _CLAIMS[claim_id]
    except KeyError:
        raise ValueError(f"unknown claim {claim_id!r}; registered: {', '.join(_CLAIMS)}") from None


def all_claims() -> list[Claim]:
    """Every registered claim, in registration order."""
    return list(_CLAIMS.values())
