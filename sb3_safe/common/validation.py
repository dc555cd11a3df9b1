"""Hyperparameter checks shared by the safe algorithms: refuse a bad value at construction, naming the valid range.

SB3 accepts most of these silently (a negative learning rate makes a critic climb its loss, ``batch_size=0``
divides by zero several calls later); these checks run first, with a message that says what would be valid.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def _value_at_start(value: Any) -> float | None:
    """A float, or a schedule's value at the start of training (progress 1); None if it is neither."""
    if isinstance(value, int | float):
        return float(value)
    if callable(value):
        try:
            return float(value(1.0))
        except Exception:  # a schedule we cannot probe: SB3 will call it later and fail there if it must
            return None
    return None


def check_positive_int(name: str, value: Any, hint: str = "") -> None:
    """Refuse anything but an integer >= 1 (booleans included)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}.{' ' + hint if hint else ''}")


def check_learning_rate(name: str, value: Any) -> None:
    """Refuse a learning rate (or a schedule starting at one) that is not > 0."""
    start = _value_at_start(value)
    if start is not None and not start > 0:
        raise ValueError(
            f"{name} must be > 0 (or a schedule of positive values), got {start!r}: a rate <= 0 makes the optimizer "
            "stand still or climb its loss. Typical values are 1e-4 to 1e-3."
        )


def check_unit_interval(name: str, value: Any, meaning: str) -> None:
    """Refuse a value outside (0, 1]."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 < float(value) <= 1.0:
        raise ValueError(f"{name} must be in (0, 1] ({meaning}), got {value!r}.")


def check_common_hyperparameters(algorithm: Any, extra_rates: dict[str, Any] | None = None) -> None:
    """The checks every safe algorithm shares: ``batch_size``, ``gamma``, ``learning_rate`` (and ``extra_rates``).

    Args:
        algorithm: An SB3 algorithm after SB3's ``__init__`` stored its arguments.
        extra_rates: Further learning rates by argument name (e.g. ``{"critic_learning_rate": ...}``).

    Raises:
        ValueError: Naming the argument, its value and the valid range.
    """
    checks: list[Callable[[], None]] = [
        lambda: check_positive_int("batch_size", algorithm.batch_size, "It is the number of samples per update."),
        lambda: check_unit_interval("gamma", algorithm.gamma, "the discount factor; 0.99 is typical"),
        lambda: check_learning_rate("learning_rate", algorithm.learning_rate),
    ]
    for check in checks:
        check()
    for name, value in (extra_rates or {}).items():
        if value is not None:
            check_learning_rate(name, value)
