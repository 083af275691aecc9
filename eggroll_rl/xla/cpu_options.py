"""Opt-in XLA:CPU compiler options for one compiled program (never a process-wide flag).

EGGROLL's population forward is fast under a plain ``jax.jit``; these options are an extra,
CPU-only gain for programs that ask for them (``eggroll-rl train --xla-cpu-options``,
``LoopConfig(xla_cpu_options=True)``, and the "with options" column of ``eggroll-rl bench``).
``docs/performance.md`` says what each one changes and what it measures.

- ``xla_cpu_experimental_ynn_fusion_type=""``: XLA's own fused loops and dot emitter instead
  of YNNPACK library fusions. A library fusion cannot absorb its producers, so with YNNPACK a
  LayerNorm output that feeds both a dot and a reduction is computed twice, and Brax physics
  (many tiny dots and reductions) runs slower. Integer dots are the exception (YNNPACK's int8
  dot is faster): ``integer_dots=True`` leaves this option out.
- ``xla_disable_hlo_passes=tree_reduction_rewriter``: row reductions wider than 32 stay one
  reduction that fuses with its producers, instead of a reduce-window plus a second reduce.

JAX accepts per-program options on top-level jits only (a jit traced inside another jit
compiles with the outer program's options). An option that this jaxlib rejects, or that the
user's own ``XLA_FLAGS`` already sets, is left out. On other backends there are none.
"""

from __future__ import annotations

import functools
import os
from typing import Any, Callable

import jax

OPTIONS = {
    "xla_cpu_experimental_ynn_fusion_type": "",  # no YNNPACK library fusions
    "xla_disable_hlo_passes": "tree_reduction_rewriter",  # row reductions stay fusible
}
FLOAT_ONLY = ("xla_cpu_experimental_ynn_fusion_type",)  # int8 dots are faster in YNNPACK


@functools.cache
def _supported(backend: str, option: str) -> bool:
    if backend != "cpu":
        return False
    try:  # jaxlib versions without this option reject it at compile time
        jax.jit(lambda x: x + 1, compiler_options={option: OPTIONS[option]}).lower(1.0).compile()
    except Exception:  # noqa: BLE001 - any refusal means: compile without it
        return False
    return True


def compiler_options(integer_dots: bool = False) -> dict[str, Any]:
    """The options for a top-level ``jax.jit(..., compiler_options=...)`` on the default backend.

    Args:
      integer_dots: the program's matmuls are int8; keep YNNPACK's integer dots.

    Returns:
      ``{option: value}``: each option of ``OPTIONS`` this jaxlib accepts on the current
      default backend and ``XLA_FLAGS`` does not set itself; ``{}`` off the CPU.
    """
    flags, backend = os.environ.get("XLA_FLAGS", ""), jax.default_backend()
    return {
        option: value
        for option, value in OPTIONS.items()
        if not (integer_dots and option in FLOAT_ONLY)
        and option not in flags
        and _supported(backend, option)
    }


def jit(fun: Callable | None = None, *, integer_dots: bool = False, **jit_kwargs) -> Callable:
    """``jax.jit(fun, compiler_options=compiler_options(integer_dots), **jit_kwargs)``.

    The options are looked up when the function is first called (after JAX has picked its
    backend). Call the result at top level: inside another jit, the outer program's options
    apply. Usable as a decorator, with or without arguments.
    """
    if fun is None:
        return functools.partial(jit, integer_dots=integer_dots, **jit_kwargs)
    compiled: dict[str, Callable] = {}

    def program() -> Callable:
        if "fn" not in compiled:
            options = compiler_options(integer_dots)
            compiled["fn"] = jax.jit(fun, compiler_options=options or None, **jit_kwargs)
        return compiled["fn"]

    @functools.wraps(fun)
    def call(*args, **kwargs):
        return program()(*args, **kwargs)

    call.lower = lambda *args, **kwargs: program().lower(*args, **kwargs)
    return call
