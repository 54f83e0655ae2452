"""Parameter checks shared by the library: each raises a one-line ``TypeError`` / ``ValueError``
that names the parameter and what it takes, before any tensor is touched."""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np


def check_positive_int(name: str, value: Any, minimum: int = 1) -> None:
    """A ``ValueError`` naming ``name`` unless ``value`` is an int ``>= minimum``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")


def check_choice(name: str, value: Any, choices: Sequence[str]) -> None:
    """A ``ValueError`` naming ``name`` unless ``value`` is one of ``choices``."""
    if value not in choices:
        raise ValueError(f"unknown {name} {value!r}; choose one of {list(choices)}")


def check_layer_param(value: Any) -> None:
    """``None`` (the method's default) or a non-negative int; the range is checked against the
    tower at call time (``tower.check_layer``)."""
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"layer must be None or an int, got {value!r}")
    if value < 0:
        raise ValueError(f"layer must be >= 0 (a block index), got {value}")


def check_number(name: str, value: Any, low: float | None = None, high: float | None = None,
                 low_open: bool = False, high_open: bool = False) -> None:
    """A ``TypeError`` unless ``value`` is a real number, a ``ValueError`` unless it is finite and
    within the (open / closed) bounds."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, got {value!r}")
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    if low is not None and (value < low or (low_open and value == low)):
        raise ValueError(f"{name} must be {'>' if low_open else '>='} {low}, got {value}")
    if high is not None and (value > high or (high_open and value == high)):
        raise ValueError(f"{name} must be {'<' if high_open else '<='} {high}, got {value}")


def check_seed(value: Any) -> None:
    """A seed: a non-negative int."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"seed must be an int, got {value!r}")
    if value < 0:
        raise ValueError(f"seed must be >= 0, got {value}")
