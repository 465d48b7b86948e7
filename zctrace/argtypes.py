"""argparse value types shared by the subcommands: bad values become one-line errors."""

from __future__ import annotations

import argparse
from typing import Callable


def _checked(kind: type, not_a_number: str, not_positive: str) -> Callable[[str], int | float]:
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{not_a_number}: {text!r}") from None
        if value <= 0:
            raise argparse.ArgumentTypeError(f"{not_positive}: {text!r}")
        return value
    return parse


def positive(kind: type, what: str) -> Callable[[str], int | float]:
    """A parser for a positive `kind` (int or float); `what` names it in the error."""
    return _checked(kind, f"not a number of {what}", f"{what} must be positive")


pid = _checked(int, "not a PID", "not a PID")
seconds = positive(float, "seconds")
