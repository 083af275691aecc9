"""How a bench program is compiled: by a plain ``jax.jit``, or with the opt-in XLA:CPU options.

Every ratio of the bench is measured per *mode*. ``"default"`` is ``jax.jit`` with XLA's
default options, what a user's own jit gets: the headline figure. ``"with_options"`` is
``eggroll_rl.xla.cpu_options.jit``, the opt-in per-program options; they exist on the CPU
backend only, so elsewhere that figure is skipped and the JSON says why. Both sides of a ratio
(EGGROLL and its inference ceiling) are always compiled in the same mode.

Timing keys of the options mode carry ``@with_options`` (``key("eggroll", mode)``); result
keys carry ``_with_options`` (``suffix(mode)``), so the default figure keeps the plain names.
"""

from __future__ import annotations

import functools
from typing import Callable, Optional, Sequence

import jax

from eggroll_rl.xla import cpu_options

DEFAULT = "default"
WITH_OPTIONS = "with_options"
MODES = (DEFAULT, WITH_OPTIONS)


def available_modes(requested: Optional[Sequence[str]] = None) -> tuple[str, ...]:
    """The modes to measure on the current default backend: both on a CPU, ``default`` elsewhere.

    ``requested`` (default: both) is filtered to what the backend has, in ``MODES`` order.
    """
    requested = MODES if requested is None else tuple(requested)
    unknown = set(requested) - set(MODES)
    if unknown:
        raise ValueError(f"unknown compile modes {sorted(unknown)}; known: {MODES}.")
    have = MODES if jax.default_backend() == "cpu" else (DEFAULT,)
    return tuple(m for m in MODES if m in requested and m in have)


def compiler(mode: str, integer_dots: bool = False) -> Callable:
    """A ``jit`` for ``mode``: ``jax.jit``, or ``cpu_options.jit`` (``integer_dots`` keeps
    YNNPACK's int8 dots, as the int8 trainer does)."""
    if mode == DEFAULT:
        return jax.jit
    if mode == WITH_OPTIONS:
        return functools.partial(cpu_options.jit, integer_dots=integer_dots)
    raise ValueError(f"unknown compile mode {mode!r}; known: {MODES}.")


def key(name: str, mode: str) -> str:
    """The timing key of variant ``name`` compiled in ``mode``."""
    return name if mode == DEFAULT else f"{name}@{mode}"


def suffix(mode: str) -> str:
    """What result keys of ``mode`` end with: nothing for the default jit, ``_with_options``."""
    return "" if mode == DEFAULT else f"_{mode}"


def skipped_reason(mode: str) -> Optional[str]:
    """Why ``mode`` is not measured on this backend, or None when it is."""
    if mode in available_modes():
        return None
    return f"skipped: no compiler options on the {jax.default_backend()} backend"


def describe_modes(modes: Sequence[str]) -> dict:
    """The JSON record of how each figure was compiled (or why it was skipped)."""
    record = {DEFAULT: "jax.jit with XLA's default options"}
    if WITH_OPTIONS in modes:
        options = cpu_options.compiler_options()
        record[WITH_OPTIONS] = {
            "compiler_options": options,
            "int8_compiler_options": cpu_options.compiler_options(integer_dots=True),
            "note": None if options else "this jaxlib/XLA_FLAGS leaves no option to apply: "
            "the figure is the default jit's program again",
        }
    else:
        record[WITH_OPTIONS] = skipped_reason(WITH_OPTIONS) or "skipped: not requested"
    return record


def merge(result: dict, per_mode: dict[str, dict], modes: Sequence[str], ratio_keys=()) -> dict:
    """``result`` plus every mode's keys (suffixed); ``ratio_keys`` of a mode not measured are
    set to None, so a reader finds every figure's key."""
    for mode in MODES:
        if mode in per_mode:
            result.update({k + suffix(mode): v for k, v in per_mode[mode].items()})
        else:
            result.update({k + suffix(mode): None for k in ratio_keys})
            result[mode] = skipped_reason(mode) or "skipped: not requested"
    return result
