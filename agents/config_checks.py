"""Range checks shared by the trainers' config ``validate()`` methods.

A config value that is infinite, NaN, of the wrong type or out of range must stop a run before
anything compiles, with one line naming the field, the value and what is allowed: a run that
trains on ``lr=inf`` ends "done" over an all-NaN policy, and ``hidden=(0,)`` fails deep inside
flax's initialiser. Each helper raises ``ValueError("<prefix>: <field> ...")``.
"""

from __future__ import annotations

import math
from typing import Any, Optional

import numpy as np


def count(prefix: str, name: str, value: Any, minimum: int = 1) -> None:
    """``value`` must be an int (not a bool) ``>= minimum``."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{prefix}: {name} must be an integer >= {minimum}, got {value!r}.")
    if value < minimum:
        raise ValueError(f"{prefix}: {name} must be >= {minimum}, got {value}.")


def real(
    prefix: str,
    name: str,
    value: Any,
    *,
    above: Optional[float] = None,
    at_least: Optional[float] = None,
    at_most: Optional[float] = None,
) -> None:
    """``value`` must be a finite real number within the given bounds.

    Args:
        above: exclusive lower bound; at_least: inclusive lower bound; at_most: inclusive upper
            bound (None: no bound).
    """
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.number)):
        raise ValueError(f"{prefix}: {name} must be a number, got {value!r}.")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{prefix}: {name} must be finite, got {value}.")
    if above is not None and at_most is not None and not above < value <= at_most:
        raise ValueError(f"{prefix}: {name} must be in ({above:g}, {at_most:g}], got {value}.")
    if at_least is not None and at_most is not None and not at_least <= value <= at_most:
        raise ValueError(f"{prefix}: {name} must be in [{at_least:g}, {at_most:g}], got {value}.")
    if above is not None and not value > above:
        raise ValueError(f"{prefix}: {name} must be > {above:g}, got {value}.")
    if at_least is not None and not value >= at_least:
        raise ValueError(f"{prefix}: {name} must be >= {at_least:g}, got {value}.")
    if at_most is not None and not value <= at_most:
        raise ValueError(f"{prefix}: {name} must be <= {at_most:g}, got {value}.")


def hidden(prefix: str, widths: Any) -> None:
    """Hidden layer widths: a sequence of ints >= 1 (empty: no hidden layer)."""
    if isinstance(widths, (str, bytes)) or not hasattr(widths, "__iter__"):
        raise ValueError(f"{prefix}: hidden must be a sequence of layer widths, got {widths!r}.")
    widths = tuple(widths)
    if any(
        isinstance(w, (bool, np.bool_)) or not isinstance(w, (int, np.integer)) or w < 1
        for w in widths
    ):
        raise ValueError(
            f"{prefix}: hidden layer widths must be integers >= 1, got {widths} "
            "(e.g. --hidden 64 64)."
        )


def decaying_schedule(prefix: str, name: str, start: float, decay: float, horizon: int) -> None:
    """``start * decay**g`` for every generation ``g < horizon`` must stay finite and > 0 in
    float32 at ``g = 0`` and be finite and >= 0 at the horizon (a decay in (0, 1] on a finite,
    positive start never turns negative; float32 may round it down to 0 only far out).

    Args:
        horizon: an upper bound on the generations of the run (e.g. its env-step budget over
            the env steps one generation takes at least).
    """
    values = np.float32(start) * np.float32(decay) ** np.array([0, max(0, horizon - 1)], np.float32)
    if not (np.all(np.isfinite(values)) and values[0] > 0 and values[1] >= 0):
        raise ValueError(
            f"{prefix}: the {name} schedule {start:g} * {decay:g}^generation leaves the finite "
            f"positive range within the run's {horizon} generations ({values.tolist()}); pick a "
            f"finite {name} > 0 and a {name}_decay in (0, 1]."
        )
