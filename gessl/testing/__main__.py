"""``python -m gessl.testing MODULE:FUNCTION [--card FILE]`` — exit 0 all pass, 1 a property
fails, 2 usage error (bad arguments, unimportable function, malformed card)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from gessl.testing.card import PROPERTIES, CardError, load_card
from gessl.testing.harness import check_loss
from gessl.testing.properties import resolve


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m gessl.testing",
        description="Property-test an SSL loss against the invariants its card declares.",
        epilog="properties: " + "; ".join(f"{k}: {v}" for k, v in PROPERTIES.items()),
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
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        fn = resolve(args.target)
    except (ValueError, ImportError, AttributeError) as err:
        parser.print_usage(sys.stderr)
        print(f"error: cannot load {args.target!r}: {err}", file=sys.stderr)
        return 2
    if not callable(fn):
        print(f"error: {args.target!r} is not callable", file=sys.stderr)
        return 2
    try:
        if args.card:
            card = load_card(args.card)
        else:
            name = getattr(fn, "loss_name", None)
            if name is None:
                print(
                    "error: --card is required for a loss without a built-in card", file=sys.stderr
                )
                return 2
            from gessl.losses import builtin_card_path

            card = load_card(builtin_card_path(name))
        only = [s.strip() for s in args.only.split(",")] if args.only else None
        report = check_loss(
            fn,
            card,
            properties=only,
            max_examples=args.max_examples,
            seed=args.seed,
            shrink=not args.no_shrink,
        )
    except (CardError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(report.to_json() if args.json else report.format())
    return 0 if report.passed else 1


if __name__ == "__main__":
    sys.exit(main())
