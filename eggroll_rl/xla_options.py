"""XLA:CPU compiler options that keep float population rollouts close to plain inference.

XLA's CPU backend hands dots, elementwise ops and reductions to its YNNPACK library fusions by
default. A library fusion cannot absorb its producers, which costs us twice: in an EGGROLL
forward each LayerNorm+ReLU output feeds both the shared matmul and the member's ``x . B``
coefficient (a reduction), so XLA computed the whole LayerNorm twice per member; and Brax's
physics, full of tiny matmuls and reductions, ran at less than half the speed it reaches
without them.
With every YNNPACK fusion off (an empty ``xla_cpu_experimental_ynn_fusion_type``), XLA's own
fused loops and dot emitter do the work. Measured (README): EGGROLL CartPole generations
10-18% shorter (``eggroll-rl bench --case training_cartpole_3x256``, against the same with
``XLA_FLAGS=--xla_cpu_experimental_ynn_fusion_type=LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT``), Brax
env steps 2.4x faster at 2048 envs (``experiments/brax_backend_speed.py``). The price: XLA's
own dot is slower than YNNPACK's on very wide layers (4096 x 4096: ~1.7x) and PPO on gymnax
CartPole's tiny nets trains ~30% slower (``EGGROLL_RL_DEFAULT_XLA=1`` restores the defaults).

The second option turns off XLA:CPU's tree reduction rewriter, which splits every row
reduction wider than 32 (LayerNorm's mean and variance, the member's ``x . B``) into a
reduce-window and a second reduce. A reduce-window fuses with nothing, so XLA either wrote the
perturbed layer output to memory for it or recomputed it from the noise rows in each consumer.
Without the rewrite each reduction is one fusion with its producers. Measured side by side in
one process (``python experiments/xla_options_ab.py``, README): EGGROLL CartPole rollouts
14-16% faster at N=512 and 2048, the shared-policy rollout 6-10% faster; Brax physics
(``--workload brax``) 2% faster, a PPO update on Brax (``--workload ppo_brax``) 2% slower.

Integer matmuls are the exception to the first option: XLA's own int8 dot is ~2.5x slower than
YNNPACK's (``eggroll-rl bench --case int8_mlp_3x256`` with
``XLA_FLAGS=--xla_cpu_experimental_ynn_fusion_type=``), so int8 programs (the int8 trainer,
marked ``integer_dots``, and the int8 bench) keep the YNNPACK fusions and get only the second
option (``integer_dots=True`` below).

The options are per compiled program (``jax.jit(..., compiler_options=...)``), never a global
flag, and only on the CPU backend. JAX accepts them on top-level jits only, so ``jit`` below
adds them when called from Python and leaves them off when traced inside another jit (whose own
options then apply). ``EGGROLL_RL_DEFAULT_XLA=1`` turns them off; an XLA_FLAGS setting of an
option wins over ours.

One more option can only be set for the whole process: XLA:CPU's multi-output fusion
(``xla_cpu_use_multi_output_fusion``, a key of the map option ``xla_backend_extra_options``,
which JAX's per-program ``compiler_options`` reject: "is not a valid message value"). With it,
XLA's fusion pass stops duplicating a producer into each of its consumers: a perturbed layer's
output is computed once, not once per LayerNorm reduction and again inside the next layer's
``x . B``, and sibling reductions share a pass. Measured in alternated processes (README,
``python experiments/multi_output_fusion_ab.py``): EGGROLL CartPole rollouts at 0.85-0.93 of the
shared-policy rollout at N=2048 with it, 0.82-0.85 without, higher with it in every pair. The
cost: PPO on gymnax CartPole's tiny nets trains ~35% slower (README), so ``eggroll-rl train
--algo ppo`` takes it back out (``drop_process_flag``).
``configure_process`` (run when ``eggroll_rl`` is imported) adds it to ``XLA_FLAGS``, which XLA
reads once, when JAX starts its first backend: import ``eggroll_rl`` before running any JAX
computation, or put the flag in ``XLA_FLAGS`` yourself. ``EGGROLL_RL_DEFAULT_XLA=1`` or a
``xla_backend_extra_options`` of your own in ``XLA_FLAGS`` leaves it off.
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
MULTI_OUTPUT_FUSION = "xla_cpu_use_multi_output_fusion"
PROCESS_FLAG = f"--xla_backend_extra_options={MULTI_OUTPUT_FUSION}"


def _backends_started() -> bool:
    try:
        from jax._src import xla_bridge

        return xla_bridge.backends_are_initialized()
    except (ImportError, AttributeError):  # unknown: a late XLA_FLAGS is ignored, not harmful
        return False


def configure_process() -> bool:
    """Add ``PROCESS_FLAG`` to ``XLA_FLAGS`` unless opted out; True if this process has it.

    False when JAX had already started a backend without it (XLA read its flags then).
    """
    flags = os.environ.get("XLA_FLAGS", "")
    started = _backends_started()
    if not (
        started or os.environ.get("EGGROLL_RL_DEFAULT_XLA") or "xla_backend_extra_options" in flags
    ):
        os.environ["XLA_FLAGS"] = f"{flags} {PROCESS_FLAG}".strip()
    return multi_output_fusion()


def drop_process_flag() -> bool:
    """Take ``PROCESS_FLAG`` back out while no backend has started, for a process that trains PPO
    only: multi-output fusion slows its small networks (README). True if it is now off."""
    if not _backends_started():
        os.environ["XLA_FLAGS"] = without_process_flag(dict(os.environ))["XLA_FLAGS"]
    return not multi_output_fusion()


def multi_output_fusion() -> bool:
    """Whether ``XLA_FLAGS`` asks for multi-output fusion (it applies if set before JAX started)."""
    return MULTI_OUTPUT_FUSION in os.environ.get("XLA_FLAGS", "")


def without_process_flag(environ: dict[str, str]) -> dict[str, str]:
    """``environ`` for a subprocess that must run at XLA's defaults (e.g. another library's
    trainer timed as a baseline): ``PROCESS_FLAG`` removed from its ``XLA_FLAGS``."""
    flags = environ.get("XLA_FLAGS", "").replace(PROCESS_FLAG, "").strip()
    return {**environ, "XLA_FLAGS": flags}


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
    """The options for a top-level ``jax.jit`` on the current default backend ({} if none).

    Each option this jaxlib accepts (with ``integer_dots``, those not in ``FLOAT_ONLY``), unless
    ``EGGROLL_RL_DEFAULT_XLA`` is set or ``XLA_FLAGS`` sets that option itself.
    """
    if os.environ.get("EGGROLL_RL_DEFAULT_XLA"):
        return {}
    flags, backend = os.environ.get("XLA_FLAGS", ""), jax.default_backend()
    return {
        option: value
        for option, value in OPTIONS.items()
        if not (integer_dots and option in FLOAT_ONLY)
        and option not in flags
        and _supported(backend, option)
    }


def _traced(args, kwargs) -> bool:
    return any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree_util.tree_leaves((args, kwargs)))


def jit(fun: Callable | None = None, *, integer_dots: bool = False, **jit_kwargs) -> Callable:
    """``jax.jit(fun, **jit_kwargs)`` plus ``compiler_options(integer_dots)`` at top level."""
    if fun is None:
        return functools.partial(jit, integer_dots=integer_dots, **jit_kwargs)
    plain = jax.jit(fun, **jit_kwargs)
    tuned: dict[str, Callable] = {}

    def top_level() -> Callable:
        options = compiler_options(integer_dots)
        if not options:
            return plain
        if "fn" not in tuned:
            tuned["fn"] = jax.jit(fun, compiler_options=options, **jit_kwargs)
        return tuned["fn"]

    @functools.wraps(fun)
    def call(*args, **kwargs):
        if _traced(args, kwargs):
            return plain(*args, **kwargs)
        return top_level()(*args, **kwargs)

    call.lower = lambda *args, **kwargs: top_level().lower(*args, **kwargs)  # as jax.jit has
    call.plain = plain  # the jit without options
    return call
