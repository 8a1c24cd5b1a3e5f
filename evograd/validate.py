"""Argument checks shared by every module: one message format, one exception type per kind of mistake.

A wrong *type* raises ``TypeError``; a value of the right type outside what is allowed raises
``ValueError`` (docs/design.rst, contract 6). Every message names the field, repeats the value and
states what is allowed, so a user can fix the call from the message alone::

    sigma=-1.0 is out of range; allowed (0, inf)
    size=2.5 must be an integer, got float

Each check returns the value converted to its plain Python type (``numpy.int64(3)`` becomes ``3``),
so callers store exactly what they checked.

Examples:
    >>> real("sigma", 0.5, low=0.0, low_open=True)
    0.5
    >>> integer("size", 0, low=1)
    Traceback (most recent call last):
    ...
    ValueError: size=0 is out of range; allowed integers in [1, inf)
    >>> integer("size", 2.5, low=1)
    Traceback (most recent call last):
    ...
    TypeError: size=2.5 must be an integer, got float
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import Any

__all__ = ["SEED_RANGE", "real", "integer", "seed", "choice", "flag"]

#: Seeds accepted everywhere: non-negative 63-bit integers.
SEED_RANGE = (0, 2**63 - 1)


def _bound(value: float) -> str:
    """A bound as the messages print it: ``0``, ``0.5``, ``inf``."""
    return f"{value:g}"


def real(
    name: str,
    value: Any,
    *,
    low: float = -math.inf,
    high: float = math.inf,
    low_open: bool = False,
    high_open: bool = False,
) -> float:
    """``value`` as a finite float within the stated interval.

    Raises:
        TypeError: ``value`` is not a real number (a bool, a string, None, ...).
        ValueError: ``value`` is NaN, infinite, or outside the interval.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name}={value!r} must be a real number, got {type(value).__name__}")
    value = float(value)
    below = value <= low if low_open else value < low
    above = value >= high if high_open else value > high
    if not math.isfinite(value) or below or above:
        left = "(" if low_open or low == -math.inf else "["
        right = ")" if high_open or high == math.inf else "]"
        raise ValueError(f"{name}={value!r} is out of range; allowed {left}{_bound(low)}, {_bound(high)}{right}")
    return value


def integer(name: str, value: Any, *, low: int | None = None, high: int | None = None) -> int:
    """``value`` as an ``int`` within ``[low, high]`` (either bound may be None: unbounded).

    Floats are refused even when integral (``2.0``): a float in an integer field is usually a
    mistake such as a truncated setting, and silently rounding it would hide that.

    Raises:
        TypeError: ``value`` is not an integer (bools, floats and strings are not).
        ValueError: ``value`` is outside the range.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name}={value!r} must be an integer, got {type(value).__name__}")
    value = int(value)
    if (low is not None and value < low) or (high is not None and value > high):
        left = "(-inf" if low is None else f"[{low}"
        right = "inf)" if high is None else f"{high}]"
        raise ValueError(f"{name}={value!r} is out of range; allowed integers in {left}, {right}")
    return value


def seed(name: str, value: Any) -> int:
    """A seed: an integer in :data:`SEED_RANGE` (``0`` is valid; numpy integers are accepted).

    Examples:
        >>> seed("seed", 0)
        0
    """
    return integer(name, value, low=SEED_RANGE[0], high=SEED_RANGE[1])


def choice(name: str, value: Any, allowed: Sequence[Any]) -> Any:
    """``value`` if it is one of ``allowed``; a ValueError listing them otherwise.

    Raises:
        ValueError: ``value`` is not one of ``allowed``.
    """
    if not any(value == option and type(value) is type(option) for option in allowed):
        raise ValueError(f"{name}={value!r} is not allowed; allowed {', '.join(map(repr, allowed))}")
    return value


def flag(name: str, value: Any) -> bool:
    """``value`` if it is a bool.

    Raises:
        TypeError: ``value`` is not a bool (``0`` and ``"yes"`` are refused, not interpreted).
    """
    if not isinstance(value, bool):
        raise TypeError(f"{name}={value!r} must be True or False, got {type(value).__name__}")
    return value
