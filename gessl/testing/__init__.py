"""Property-test an SSL loss — yours or a built-in one — against the invariants it declares.

Write a *property card* (TOML or :class:`PropertyCard`) that lists what your loss claims — its
range as a function of (N, D, τ), its value at collapse, invariances, view-swap symmetry,
gradient correctness, agreement with a reference — and run::

    python -m gessl.testing mypkg.losses:my_loss --card my_loss.toml

or, from Python, ``check_loss(my_loss, load_card("my_loss.toml"))``. Each property runs as a
hypothesis test in float64; a property that does not hold is reported with the minimal
falsifying example. Built-in losses ship their cards (``gessl/losses/cards/``).
"""

from gessl.testing.card import PROPERTIES, CardError, PropertyCard, evaluate, load_card
from gessl.testing.harness import CardReport, PropertyResult, check_loss

__all__ = [
    "PROPERTIES",
    "CardError",
    "CardReport",
    "PropertyCard",
    "PropertyResult",
    "check_loss",
    "evaluate",
    "load_card",
]
