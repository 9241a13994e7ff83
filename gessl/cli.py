"""The exit-status convention shared by the project's argparse commands."""

from __future__ import annotations

import sys
from collections.abc import Callable

__all__ = ["run_main"]


def run_main(main: Callable[[], int], interrupted: str) -> None:
    """``sys.exit(main())``; Ctrl-C prints ``interrupted; <interrupted>`` and exits 130."""
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print(f"interrupted; {interrupted}", file=sys.stderr)
        sys.exit(130)
