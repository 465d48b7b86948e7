"""argparse value types shared by the subcommands: bad values become one-line errors."""

from __future__ import annotations

import argparse
from typing import Callable


def positive(kind: type, what: str) -> Callable[[str], int | float]:
    """A parser for a positive `kind` (int or float); `what` names it in the error."""
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number of {what}: {text!r}") from None
        if value <= 0:
            raise argparse.ArgumentTypeError(f"{what} must be positive: {text!r}")
        return value
    return parse


def pid(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a PID: {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"not a PID: {text!r}")
    return value


seconds = positive(float, "seconds")
