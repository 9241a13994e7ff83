"""Property-test an SSL loss — yours or a built-in one — against the invariants it declares.

Write a *property card* (TOML or :class:`PropertyCard`) that lists what your loss claims — its
range as a function of (N, D, τ), its value at collapse, invariances, view-swap symmetry,
gradient correctness, agreement with a reference — and run::

    python -m gessl.testing mypkg.losses:my_loss --card my_loss.toml

or, from Python, ``check_loss(my_loss, load_card("my_loss.toml"))``. Each property runs as a
hypothesis test — the exact ones in float64, ``stability`` (finite loss and gradients at the
extremes of the declared options, on embeddings of realistic scale) in float32, or in the dtypes
the card lists; a property that does not hold is reported with the minimal falsifying example
and its dtype. A card that is itself wrong raises :class:`CardError`. Built-in losses ship their
cards (``gessl/losses/cards/``).
"""

from typing import TYPE_CHECKING, Any

from gessl.testing.card import (
    DEFAULT_DTYPES,
    DTYPES,
    PROPERTIES,
    CardError,
    PropertyCard,
    evaluate,
    load_card,
)

if TYPE_CHECKING:
    from gessl.testing.harness import CardReport, PropertyResult, check_loss

__all__ = [
    "DEFAULT_DTYPES",
    "DTYPES",
    "PROPERTIES",
    "CardError",
    "CardReport",
    "PropertyCard",
    "PropertyResult",
    "check_loss",
    "evaluate",
    "load_card",
]

_HARNESS = ("CardReport", "PropertyResult", "check_loss")


def __getattr__(name: str) -> Any:
    """The harness (and with it torch) is imported on first use, so that ``python -m
    gessl.testing`` reports a malformed card without loading torch."""
    if name in _HARNESS:
        from gessl.testing import harness

        return getattr(harness, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
