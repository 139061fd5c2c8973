"""Checks of numeric arguments shared by the whole public API, so every error says the same three things: which
argument, the value it got, and what to pass instead."""

from __future__ import annotations

import math
import numbers
from typing import Any


def whole_number(name: str, value: Any, minimum: int) -> int:
    """``value`` as an int (numpy ints too) when it is a whole number of at least ``minimum``; else a ValueError
    naming ``name``, the value and what to pass."""
    if isinstance(value, float) and value.is_integer():  # 2.0 from a JSON file means 2
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        example = max(minimum, int(value)) if _is_real(value) else minimum
        raise ValueError(f"{name}={value!r} is not a whole number: pass one such as {name}={example}.")
    if value < minimum:
        raise ValueError(f"{name}={value} is too small: it must be at least {minimum}.")
    return int(value)


def _is_real(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def real_number(
    name: str, value: Any, low: float, high: float = math.inf, *, low_open: bool = False, why: str = ""
) -> float:
    """``value`` as a float when it is finite and in range (``low`` excluded when ``low_open``); else a ValueError
    naming ``name``, the value, the range and ``why``."""
    if not _is_real(value):
        raise ValueError(f"{name}={value!r} is not a finite number: pass a number in {_range(low, high, low_open)}.")
    if value < low or (low_open and value == low) or value > high:
        raise ValueError(f"{name}={value!r} is out of range: pass a number in {_range(low, high, low_open)}{why}.")
    return float(value)


def _range(low: float, high: float, low_open: bool) -> str:
    return f"{'(' if low_open else '['}{low:g}, {high:g}{']' if high < math.inf else ')'}"
