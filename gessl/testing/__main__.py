"""``python -m gessl.testing MODULE:FUNCTION [--card FILE]`` — exit 0 all pass, 1 a property
fails, 2 usage error (bad arguments, unimportable function, malformed card: one ``error:`` line
on stderr, naming the card file)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from gessl.testing.card import DTYPES, PROPERTIES, CardError, PropertyCard, load_card, resolve


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m gessl.testing",
        description="Property-test an SSL loss against the invariants its card declares.",
        epilog="properties: "
        + "; ".join(f"{k}: {v}" for k, v in PROPERTIES.items())
        + f". dtypes: {', '.join(DTYPES)}. Exit status: 0 every property holds, 1 one is "
        "falsified (or could not be run), 2 usage or card error, 130 interrupted (Ctrl-C), 143 "
        "terminated (SIGTERM), 129 hung up (SIGHUP), 3 the environment failed (a folder, a "
        "disk).",
    )
    p.add_argument("target", help="the loss, as 'package.module:function'")
    p.add_argument(
        "--card", help="TOML property card (default: the built-in card of a registered gessl loss)"
    )
    p.add_argument("--only", help="comma-separated subset of the declared properties")
    p.add_argument("--max-examples", type=int, help="hypothesis examples per property")
    p.add_argument("--seed", type=int, help="hypothesis seed (default: derandomized)")
    p.add_argument(
        "--no-shrink",
        action="store_true",
        help="report the first falsifying example found, without minimising it",
    )
    p.add_argument(
        "--timeout",
        type=float,
        help="seconds one example may take before the property is reported TIMEOUT (default: "
        "the card's timeout, 60)",
    )
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    return p


def _error(*parts: object) -> int:
    """Print one ``error:`` line on stderr (newlines folded) and return the usage exit status."""
    print(" ".join(("error: " + ": ".join(str(p) for p in parts)).split()), file=sys.stderr)
    return 2


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.max_examples is not None and args.max_examples < 1:
        return _error("--max-examples must be >= 1")
    if args.timeout is not None and not args.timeout > 0:
        return _error("--timeout must be > 0 seconds")
    card: PropertyCard | None = None
    card_path = args.card
    if card_path:  # read first: a malformed card is reported before the loss (and torch) loads
        try:
            card = load_card(card_path)
        except CardError as err:
            return _error(err.source or card_path, err.message)
    try:
        fn = resolve(args.target)
    except Exception as err:  # a missing module or function, or one that fails to import
        return _error(f"cannot load {args.target!r}", f"{type(err).__name__}: {err}")
    if not callable(fn):
        return _error(f"{args.target!r} is not callable")
    if not card_path:
        name = getattr(fn, "loss_name", None)
        if name is None:
            return _error(f"--card is required: {args.target!r} has no built-in card")
        from gessl.losses import builtin_card_path

        card_path = builtin_card_path(name)
    from gessl.testing.harness import check_loss

    try:
        if card is None:
            card = load_card(card_path)
        only = [s.strip() for s in args.only.split(",")] if args.only else None
        report = check_loss(
            fn,
            card,
            properties=only,
            max_examples=args.max_examples,
            seed=args.seed,
            shrink=not args.no_shrink,
            timeout=args.timeout,
        )
    except KeyboardInterrupt as stop:  # the properties decided before it are still reported
        partial = getattr(stop, "report", None)
        if partial is not None:
            print(partial.to_json() if args.json else partial.format())
            print(
                f"({len(partial.results)} of {stop.planned} property runs decided before the "
                "interruption)"
            )
        raise
    except CardError as err:
        return _error(err.source or card_path, err.message)
    except ValueError as err:  # --only names an undeclared property
        return _error(err)
    print(report.to_json() if args.json else report.format())
    return 0 if report.passed else 1


if __name__ == "__main__":
    from gessl.cli import run_main

    run_main(main, "the properties decided before it are reported above")
