"""Checks shared by every config dataclass: a bad value raises a ``ValueError`` that names the field."""

from __future__ import annotations

from collections.abc import Iterable


def positive_ints(config: object, names: Iterable[str]) -> None:
    """Require each named field to be an integer (not a bool) greater than zero."""
    for name in names:
        value = getattr(config, name)
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise ValueError(f"{type(config).__name__}.{name} must be a positive integer, got {value!r}")


def positive_numbers(config: object, names: Iterable[str]) -> None:
    """Require each named field to be a number greater than zero."""
    for name in names:
        value = getattr(config, name)
        if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
            raise ValueError(f"{type(config).__name__}.{name} must be a positive number, got {value!r}")


def probabilities(config: object, names: Iterable[str]) -> None:
    """Require each named field to be a number in [0, 1]."""
    for name in names:
        value = getattr(config, name)
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 <= value <= 1.0:
            raise ValueError(f"{type(config).__name__}.{name} must be a probability in [0, 1], got {value!r}")
