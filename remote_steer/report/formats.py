"""How the report writes a number: every table and text formats through here."""

from __future__ import annotations

import math

import numpy as np

MISSING = "—"  # what a table shows for a number that is not there (None or NaN)


def missing(x) -> bool:
    return x is None or (isinstance(x, float | np.floating) and math.isnan(x))


def num(x, digits: int = 3) -> str:
    """``digits`` significant digits."""
    return MISSING if missing(x) else f"{x:.{digits}g}"


def fixed(x) -> str:
    """Two decimals."""
    return MISSING if missing(x) else f"{x:.2f}"


def pct(x) -> str:
    """A share as a whole percentage."""
    return MISSING if missing(x) else f"{x:.0%}"


def percentage_points(x) -> str:
    """A difference of shares, signed, in whole percentage points."""
    return MISSING if missing(x) else f"{100 * x:+.0f} pp"


def integer(x) -> str:
    return MISSING if missing(x) else str(int(x))


def signed(x) -> str:
    """A steering strength: signed, shortest form."""
    return MISSING if missing(x) else f"{x:+g}"


def ci(est: float, low: float, high: float) -> str:
    """An estimate and its interval, ``est [low, high]``; the estimate alone without one."""
    if missing(est):
        return MISSING
    return f"{num(est)} [{num(low, 2)}, {num(high, 2)}]" if not missing(low) else num(est)
