"""Keyword-argument checks shared by the environments: each raises a ``ValueError`` that names the argument."""

from __future__ import annotations

import math
from collections.abc import Sequence
from numbers import Integral, Real
from typing import Any


def check_choice(name: str, value: Any, choices: Sequence[str]) -> str:
    """Return ``value`` if it is one of ``choices``; otherwise raise, listing the valid values."""
    if not isinstance(value, str) or value not in choices:
        valid = ", ".join(repr(choice) for choice in choices)
        raise ValueError(f"{name}={value!r} is not a valid option; valid values: {valid}.")
    return value


def check_int(name: str, value: Any, minimum: int) -> int:
    """Return ``value`` as an ``int`` if it is an integer (not a bool) ``>= minimum``."""
    if isinstance(value, bool) or not isinstance(value, Integral) or int(value) < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}.")
    return int(value)


def check_real(name: str, value: Any, *, positive: bool = False, nonnegative: bool = False) -> float:
    """Return ``value`` as a finite ``float``, optionally required ``> 0`` or ``>= 0``."""
    if isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(float(value)):
        raise ValueError(f"{name} must be a finite real number, got {value!r}.")
    number = float(value)
    if positive and number <= 0.0:
        raise ValueError(f"{name} must be > 0, got {number!r}.")
    if nonnegative and number < 0.0:
        raise ValueError(f"{name} must be >= 0, got {number!r}.")
    return number


def check_bool(name: str, value: Any) -> bool:
    """Return ``value`` if it is a ``bool``."""
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be True or False, got {value!r}.")
    return value


def check_slip(value: Any) -> tuple[float, float, float]:
    """Check the slip distribution ``(intended, counter-clockwise, clockwise)`` of Frozen Lake moves.

    The three entries are the probabilities of moving in the intended direction and in each of its two
    orthogonal directions (action ``(a - 1) % 4`` and ``(a + 1) % 4``); they must be >= 0 and sum to 1.
    """
    usage = (
        "slip must be three probabilities (intended, orthogonal (a-1)%4, orthogonal (a+1)%4) that are >= 0 and "
        "sum to 1, e.g. (0.9, 0.05, 0.05)"
    )
    if isinstance(value, str | bytes) or not isinstance(value, Sequence) or len(value) != 3:
        raise ValueError(f"{usage}; got {value!r}.")
    probabilities = []
    for entry in value:
        if isinstance(entry, bool) or not isinstance(entry, Real) or not math.isfinite(float(entry)):
            raise ValueError(f"{usage}; got {value!r}.")
        probabilities.append(float(entry))
    if min(probabilities) < 0.0 or abs(sum(probabilities) - 1.0) > 1e-12:
        raise ValueError(f"{usage}; got {value!r} (sum {sum(probabilities)!r}).")
    return probabilities[0], probabilities[1], probabilities[2]
