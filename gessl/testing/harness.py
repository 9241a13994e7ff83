"""``check_loss``: run every property a card declares as a hypothesis test, report each."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import seed as hypothesis_seed
from hypothesis import strategies as st
from hypothesis.errors import HypothesisException

from gessl.testing.card import CardError, PropertyCard
from gessl.testing.properties import CHECKS, Context, Falsified

__all__ = ["CardReport", "PropertyResult", "check_loss"]


def _plain(x: Any) -> Any:
    """JSON-friendly copy of an example value (arrays to nested lists of rounded floats)."""
    if isinstance(x, np.ndarray):
        return np.round(x, 12).tolist()
    if isinstance(x, dict):
        return {k: _plain(v) for k, v in x.items()}
    if isinstance(x, (np.floating, np.integer)):
        return x.item()
    return x


@dataclass(frozen=True)
class PropertyResult:
    """The outcome of one declared property.

    ``status`` is ``"passed"``, ``"failed"`` (with ``message`` and the minimal falsifying
    ``example``) or ``"error"`` (hypothesis could not run the property, e.g. no valid example).
    """

    name: str
    status: str
    message: str = ""
    example: dict[str, Any] | None = None
    seconds: float = 0.0

    @property
    def passed(self) -> bool:
        return self.status == "passed"

    def describe_example(self) -> str:
        """The falsifying example, one input per line, arrays printed compactly."""
        if not self.example:
            return ""
        lines = []
        with np.printoptions(precision=6, suppress=True, linewidth=100):
            for k, v in self.example.items():
                txt = np.array2string(np.asarray(v)) if isinstance(v, np.ndarray) else repr(v)
                lines.append(f"    {k} = " + txt.replace("\n", "\n" + " " * (len(k) + 7)))
        return "\n".join(lines)


@dataclass(frozen=True)
class CardReport:
    """All property results of one card; ``passed`` iff every declared property passed."""

    card: PropertyCard
    results: list[PropertyResult] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(r.passed for r in self.results)

    def failures(self) -> list[PropertyResult]:
        return [r for r in self.results if not r.passed]

    def __getitem__(self, name: str) -> PropertyResult:
        for r in self.results:
            if r.name == name:
                return r
        raise KeyError(name)

    def format(self) -> str:
        """A human-readable table, with falsifying examples under each failure."""
        head = f"card {self.card.name!r}: " + (
            "all properties hold"
            if self.passed
            else f"{len(self.failures())} of {len(self.results)} properties FAILED"
        )
        rows = [head]
        for r in self.results:
            rows.append(
                f"  {r.status.upper():7s} {r.name:20s} {r.seconds:6.2f}s"
                + (f"  {r.message}" if r.message else "")
            )
            if r.example and not r.passed:
                rows.append("  falsifying example:")
                rows.append(r.describe_example())
        return "\n".join(rows)

    def to_json(self) -> str:
        return json.dumps(
            {
                "card": self.card.name,
                "passed": self.passed,
                "results": [
                    {
                        "property": r.name,
                        "status": r.status,
                        "message": r.message,
                        "seconds": r.seconds,
                        "example": _plain(r.example),
                    }
                    for r in self.results
                ],
            },
            indent=2,
        )


def _run_property(
    fn: Callable[..., Any],
    card: PropertyCard,
    name: str,
    max_examples: int,
    seed: int | None,
    shrink: bool,
) -> PropertyResult:
    check = CHECKS[name]
    state: dict[str, Any] = {}

    phases = [Phase.explicit, Phase.reuse, Phase.generate] + ([Phase.shrink] if shrink else [])

    @settings(
        max_examples=max_examples,
        deadline=None,
        derandomize=seed is None,
        database=None,
        suppress_health_check=list(HealthCheck),
        print_blob=False,
        phases=phases,
    )
    @given(data=st.data())
    def prop(data: Any) -> None:
        ctx = Context(fn, card, data, name)
        state["ctx"] = ctx
        try:
            check(ctx)
        except (Falsified, HypothesisException, CardError):
            raise
        except Exception as err:  # the loss itself raised on a valid input: a failure too
            raise Falsified(f"raised {type(err).__name__}: {err}") from err

    if seed is not None:
        prop = hypothesis_seed(seed)(prop)
    start = time.perf_counter()
    try:
        prop()
    except Falsified as err:
        example = dict(state["ctx"].example) if "ctx" in state else None
        return PropertyResult(name, "failed", str(err), example, time.perf_counter() - start)
    except CardError as err:
        return PropertyResult(
            name, "error", f"card error: {err}", None, time.perf_counter() - start
        )
    except HypothesisException as err:
        msg = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
        return PropertyResult(name, "error", msg, None, time.perf_counter() - start)
    except BaseExceptionGroup as group:  # several distinct failures: report the first
        first = next((e for e in group.exceptions if isinstance(e, Falsified)), group)
        example = dict(state["ctx"].example) if "ctx" in state else None
        return PropertyResult(name, "failed", str(first), example, time.perf_counter() - start)
    return PropertyResult(name, "passed", "", None, time.perf_counter() - start)


def check_loss(
    fn: Callable[..., Any],
    card: PropertyCard,
    properties: Iterable[str] | None = None,
    max_examples: int | None = None,
    seed: int | None = None,
    shrink: bool = True,
) -> CardReport:
    """Property-test ``fn`` against everything ``card`` declares.

    Args:
        fn: a loss called as ``fn(z1, z2, **extra_inputs, **options)`` returning a 0-dim tensor
            or an object with a ``.loss`` tensor (e.g. :class:`gessl.losses.LossOutput`).
        card: the declared properties (:class:`PropertyCard` or :func:`load_card`).
        properties: run only these declared properties (default: all declared).
        max_examples: hypothesis examples per property (default: the card's).
        seed: hypothesis seed; ``None`` runs derandomized, so reports are reproducible.
        shrink: minimise a falsifying example before reporting it (slower on failure; off, the
            first failing example found is reported as it is).

    Returns:
        A :class:`CardReport`; ``report.passed`` is ``True`` iff every property held, and each
        failure carries the minimal falsifying example hypothesis found.
    """
    chosen = list(card.properties) if properties is None else list(properties)
    undeclared = [p for p in chosen if p not in card.properties]
    if undeclared:
        raise ValueError(f"property {undeclared[0]!r} is not declared by card {card.name!r}")
    n = card.max_examples if max_examples is None else max_examples
    return CardReport(card, [_run_property(fn, card, p, n, seed, shrink) for p in chosen])
