"""``check_loss``: run every property a card declares as a hypothesis test, in each of its
dtypes, and report each run."""

from __future__ import annotations

import inspect
import json
import signal
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import seed as hypothesis_seed
from hypothesis import strategies as st
from hypothesis.errors import HypothesisException, Unsatisfiable

from gessl.testing.card import CardError, PropertyCard, expression_names, resolve
from gessl.testing.properties import CHECKS, Context, Falsified, _numeric_defaults

__all__ = ["CardReport", "PropertyResult", "as_loss_function", "check_loss"]


def _plain(x: Any) -> Any:
    """JSON-friendly copy of an example value (arrays to nested lists of rounded floats;
    non-finite floats to the strings ``"nan"``, ``"inf"``, ``"-inf"``, which strict JSON lacks)."""
    if isinstance(x, np.ndarray):
        return _plain(np.round(x, 12).tolist())
    if isinstance(x, dict):
        return {k: _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    if isinstance(x, (np.floating, np.integer, np.bool_)):
        return _plain(x.item())
    if isinstance(x, float) and not np.isfinite(x):
        return str(x)
    return x


@dataclass(frozen=True)
class PropertyResult:
    """The outcome of one declared property in one dtype.

    ``status`` is ``"passed"``, ``"failed"`` (with ``message`` and the minimal falsifying
    ``example``, whose ``"dtype"`` entry repeats ``dtype``), ``"timeout"`` (an example took
    longer than the card's ``timeout``; ``example`` is that one) or ``"error"`` (hypothesis could
    not run the property, e.g. no valid example).
    """

    name: str
    status: str
    message: str = ""
    example: dict[str, Any] | None = None
    seconds: float = 0.0
    dtype: str = "float64"

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
                if k == "dtype":  # in the heading
                    continue
                txt = np.array2string(np.asarray(v)) if isinstance(v, np.ndarray) else repr(v)
                lines.append(f"    {k} = " + txt.replace("\n", "\n" + " " * (len(k) + 7)))
        return "\n".join(lines)


@dataclass(frozen=True)
class CardReport:
    """All property results of one card (one per property and dtype); ``passed`` iff every one
    passed. ``report["stability"]`` is the first result of that property,
    ``report["stability", "float32"]`` the one in that dtype."""

    card: PropertyCard
    results: list[PropertyResult] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(r.passed for r in self.results)

    def failures(self) -> list[PropertyResult]:
        return [r for r in self.results if not r.passed]

    def __getitem__(self, key: str | tuple[str, str]) -> PropertyResult:
        name, dtype = key if isinstance(key, tuple) else (key, None)
        for r in self.results:
            if r.name == name and dtype in (None, r.dtype):
                return r
        raise KeyError(key)

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
                f"  {r.status.upper():7s} {r.name:20s} {r.dtype:8s} {r.seconds:6.2f}s"
                + (f"  {r.message}" if r.message else "")
            )
            if r.example and not r.passed:
                rows.append(f"  falsifying example ({r.dtype}):")
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
                        "dtype": r.dtype,
                        "status": r.status,
                        "message": r.message,
                        "seconds": r.seconds,
                        "example": _plain(r.example),
                    }
                    for r in self.results
                ],
            },
            indent=2,
            allow_nan=False,
        )


class ExampleTimeout(BaseException):
    """One example took longer than the card's ``timeout`` (a loss that hangs). A
    ``BaseException``, like ``KeyboardInterrupt``: hypothesis stops at once instead of shrinking
    (every replay would take the time limit again)."""


@contextmanager
def _time_limit(seconds: float) -> Iterator[None]:
    """Raise :class:`ExampleTimeout` in the block after ``seconds`` (SIGALRM, main thread; a
    no-op where that is not available). Python code is interrupted at once; a long native call
    when it returns."""
    if (
        not hasattr(signal, "setitimer")
        or threading.current_thread() is not threading.main_thread()
    ):
        yield
        return

    def expire(signum: int, frame: Any) -> None:
        raise ExampleTimeout(f"an example took longer than the time limit of {seconds:g} s")

    before = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, before)


def _run_property(
    fn: Callable[..., Any],
    card: PropertyCard,
    name: str,
    dtype: str,
    max_examples: int,
    seed: int | None,
    shrink: bool,
    timeout: float | None = None,
) -> PropertyResult:
    check = CHECKS[name]
    state: dict[str, Any] = {}
    limit = card.timeout if timeout is None else timeout

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
        ctx = Context(fn, card, data, name, dtype)
        state["ctx"] = ctx
        try:
            with _time_limit(limit):
                check(ctx)
        except ExampleTimeout as err:
            state["timeout"] = (str(err), dict(ctx.example))
            raise
        except (Falsified, HypothesisException, CardError):
            raise
        except Exception as err:  # the loss itself raised on a valid input: a failure too
            raise Falsified(f"raised {type(err).__name__}: {err}") from err

    if seed is not None:
        prop = hypothesis_seed(seed)(prop)
    start = time.perf_counter()

    def result(status: str, message: str = "", example: Any = None) -> PropertyResult:
        return PropertyResult(name, status, message, example, time.perf_counter() - start, dtype)

    try:
        prop()
    except ExampleTimeout:
        message, example = state["timeout"]
        return result("timeout", message, example)
    except Falsified as err:
        return result("failed", str(err), dict(state["ctx"].example) if "ctx" in state else None)
    except CardError:  # the card, not the loss, is wrong: no report, the caller is told
        raise
    except Unsatisfiable:  # every draw was rejected by the card's conditioning
        raise CardError(
            f"card {card.name!r}: no example of {name!r} satisfies conditioning = "
            f"{card.conditioning} (rows with norm and columns with std at least that, entries "
            "in [-4, 4], N and D from batch and dim); lower it"
        ) from None
    except HypothesisException as err:
        return result("error", f"{type(err).__name__}: {(str(err).splitlines() or [''])[0]}")
    except BaseExceptionGroup as group:  # several distinct failures: report the first
        card_error = next((e for e in group.exceptions if isinstance(e, CardError)), None)
        if card_error is not None:
            raise card_error from None
        first = next((e for e in group.exceptions if isinstance(e, Falsified)), group)
        return result("failed", str(first), dict(state["ctx"].example) if "ctx" in state else None)
    return result("passed")


def _signature(fn: Callable[..., Any]) -> inspect.Signature | None:
    try:
        return inspect.signature(fn)
    except (TypeError, ValueError):
        return None


def _check_call(fn: Callable[..., Any], what: str, keywords: Iterable[str]) -> None:
    """``fn`` accepts ``fn(z1, z2, **{k: ... for k in keywords})`` (when its signature is known)."""
    sig = _signature(fn)
    if sig is None:
        return
    try:
        sig.bind(None, None, **dict.fromkeys(keywords))
    except TypeError as err:
        raise CardError(
            f"{what} cannot be called as fn(z1, z2, **extra_inputs, **options): {err}"
        ) from None


def validate(fn: Callable[..., Any], card: PropertyCard) -> None:
    """Check what can be checked before running: the reference imports, the loss and the
    reference accept the card's inputs and options, expressions use known variables.

    Raises:
        CardError: naming what is wrong.
    """
    label = f"card {card.name!r}"
    keywords = [
        *card.extra_inputs,
        *card.options,
        *card.sweep,
        *{k for opts in card.property_options.values() for k in opts},
    ]
    target = getattr(fn, "__qualname__", None) or repr(fn)
    _check_call(fn, f"{label}: the loss {target}", keywords)
    if card.reference:
        try:
            ref = resolve(card.reference)
        except Exception as err:
            raise CardError(
                f"{label}: reference {card.reference!r} cannot be loaded: "
                f"{type(err).__name__}: {err}"
            ) from None
        if not callable(ref):
            raise CardError(f"{label}: reference {card.reference!r} is not callable")
        if "reference" in card.properties:
            ref_keywords = [
                *card.extra_inputs,
                *card.options,
                *card.sweep,
                *card.property_options.get("reference", {}),
            ]
            _check_call(ref, f"{label}: reference {card.reference!r}", ref_keywords)
    numeric = {
        k
        for opts in (card.options, card.sweep, *card.property_options.values())
        for k, v in opts.items()
        if k in card.sweep or (isinstance(v, (int, float)) and not isinstance(v, bool))
    }
    known = {"N", "D", *_numeric_defaults(fn), *numeric}
    for key, exprs, extra in (
        ("range", card.range or (), set()),
        ("collapse", () if card.collapse is None else (card.collapse,), {"norm2"}),
    ):
        for expr in exprs:
            try:
                unknown = sorted(expression_names(expr) - known - extra)
            except CardError as err:
                raise CardError(f"{label}: {key}: {err.message}") from None
            if unknown:
                raise CardError(
                    f"{label}: {key} expression {expr!r} uses unknown variable {unknown[0]!r}"
                )


def as_loss_function(target: Any, card: PropertyCard) -> Callable[..., Any]:
    """``target`` as the harness calls a loss, ``fn(z1, z2, **options)``: a function as it is;
    a ``torch.nn.Module`` class built per call with the card's ``init`` options (and every
    option the constructor takes: swept ones included), then called as ``module(z1, z2,
    **rest)``. Its signature merges the constructor's and ``forward``'s keywords, so the card's
    options are checked against both and their numeric defaults are expression variables.

    Raises:
        CardError: ``init`` given for a function, a class that is not a module, or an ``init``
            option its constructor does not take.
    """
    label = f"card {card.name!r}"
    if not inspect.isclass(target):
        if card.init:
            raise CardError(f"{label}: [init] is for a loss class; {target!r} is a function")
        return target
    import torch

    name = target.__qualname__
    if not issubclass(target, torch.nn.Module):
        raise CardError(f"{label}: the loss class {name} is not a torch.nn.Module")
    kinds = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
    ctor = [p for p in inspect.signature(target).parameters.values() if p.kind not in kinds]
    taken = {p.name for p in ctor}
    unknown = sorted(set(card.init) - taken)
    if unknown:
        raise CardError(
            f"{label}: init option {unknown[0]!r} is not a parameter of {name}() "
            f"(it takes: {', '.join(sorted(taken)) or 'nothing'})"
        )
    forward = list(inspect.signature(target.forward).parameters.values())[3:]  # self, z1, z2
    params = [
        inspect.Parameter("z1", inspect.Parameter.POSITIONAL_OR_KEYWORD),
        inspect.Parameter("z2", inspect.Parameter.POSITIONAL_OR_KEYWORD),
        *(
            p.replace(kind=inspect.Parameter.KEYWORD_ONLY, default=card.init.get(p.name, p.default))
            for p in ctor
        ),
        *(
            p.replace(kind=inspect.Parameter.KEYWORD_ONLY)
            if p.kind is not inspect.Parameter.VAR_KEYWORD
            else p
            for p in forward
            if p.name not in taken and p.kind is not inspect.Parameter.VAR_POSITIONAL
        ),
    ]

    def loss(z1: Any, z2: Any, **options: Any) -> Any:
        built = {**card.init, **{k: options.pop(k) for k in list(options) if k in taken}}
        return target(**built)(z1, z2, **options)

    loss.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    loss.__qualname__ = f"{name} (a module per call)"
    return loss


def check_loss(
    fn: Callable[..., Any],
    card: PropertyCard,
    properties: Iterable[str] | None = None,
    max_examples: int | None = None,
    seed: int | None = None,
    shrink: bool = True,
    timeout: float | None = None,
) -> CardReport:
    """Property-test ``fn`` against everything ``card`` declares, each property in its dtypes.

    Args:
        fn: a loss called as ``fn(z1, z2, **extra_inputs, **options)`` returning a 0-dim tensor
            or an object with a ``.loss`` tensor (e.g. :class:`gessl.losses.LossOutput`), or a
            ``torch.nn.Module`` class built with the card's ``init`` (:func:`as_loss_function`).
        card: the declared properties (:class:`PropertyCard` or :func:`load_card`).
        properties: run only these declared properties (default: all declared).
        max_examples: hypothesis examples per property (default: the card's).
        seed: hypothesis seed; ``None`` runs derandomized, so reports are reproducible.
        shrink: minimise a falsifying example before reporting it (slower on failure; off, the
            first failing example found is reported as it is).
        timeout: seconds one example may take (default: the card's ``timeout``, 60 s).

    Returns:
        A :class:`CardReport` with one result per property and dtype; ``report.passed`` is
        ``True`` iff every one held, and each failure carries the minimal falsifying example
        hypothesis found, with its dtype.

    Raises:
        CardError: the card is wrong for this loss (a reference that does not import, an option
            the loss does not take, an expression that cannot be evaluated, ...), found before
            or during the run: nothing about the loss has been established.
        ValueError: ``properties`` names an undeclared property, ``max_examples < 1`` or
            ``timeout <= 0``.
        KeyboardInterrupt: Ctrl-C (or SIGTERM/SIGHUP in a command); its ``report`` attribute
            holds the properties decided before it, ``planned`` how many were to run.
    """
    chosen = list(card.properties) if properties is None else list(properties)
    undeclared = [p for p in chosen if p not in card.properties]
    if undeclared:
        raise ValueError(f"property {undeclared[0]!r} is not declared by card {card.name!r}")
    n = card.max_examples if max_examples is None else max_examples
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"max_examples must be an integer >= 1, got {n!r}")
    if timeout is not None and not (isinstance(timeout, int | float) and timeout > 0):
        raise ValueError(f"timeout must be a number of seconds > 0, got {timeout!r}")
    fn = as_loss_function(fn, card)
    validate(fn, card)
    report = CardReport(card)
    runs = [(p, dtype) for p in chosen for dtype in card.dtypes_for(p)]
    try:
        for p, dtype in runs:
            report.results.append(_run_property(fn, card, p, dtype, n, seed, shrink, timeout))
    except KeyboardInterrupt as stop:  # the properties decided so far travel with it
        stop.report = report  # type: ignore[attr-defined]
        stop.planned = len(runs)  # type: ignore[attr-defined]
        raise
    return report
