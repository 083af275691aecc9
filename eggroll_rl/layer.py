"""The EGGROLL Dense layer, and how plain ``nn.Dense`` layers join a population evaluation.

Inside ``population_apply`` every Dense kernel ``W`` stays shared by the whole population, so the
expensive ``x @ W`` remains one dense batched matmul; each member then adds its own rank-r term
``sign * sigma / sqrt(r) * (x @ B^T) @ A``, which costs a fraction ``~2r/min(in, out)`` of the
matmul and never builds a per-member matrix. Existing Flax agents need no edit: an interceptor
routes every ``nn.Dense`` call through the same path. ``EggrollDense`` is the explicit
alternative, a drop-in ``nn.Dense`` that does it without interception.
"""

from __future__ import annotations

import contextlib
import math
import threading
from typing import Any, Callable, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax.core import meta

from eggroll_rl.noise import LowRankNoise, compute_dtype, widen

_ACTIVE = threading.local()


class EggrollDense(nn.Dense):
    """``flax.linen.Dense`` with the same fields and parameters, applied normally it is Dense.

    Inside a population evaluation it adds the member's low-rank perturbation term itself,
    which keeps it on the fast path where interception cannot reach it (for example when a
    user's own Dense subclass, or another interceptor, wraps the call).
    """

    @nn.compact
    def __call__(self, inputs: jax.Array) -> jax.Array:
        context = _active_context()
        if context is None:
            return super().__call__(inputs)
        return context.dense_call(self, super().__call__, inputs)


def _active_context() -> Optional["MemberContext"]:
    stack = getattr(_ACTIVE, "stack", None)
    return stack[-1] if stack else None


@contextlib.contextmanager
def _activated(context: "MemberContext"):
    stack = getattr(_ACTIVE, "stack", None)
    if stack is None:
        stack = _ACTIVE.stack = []
    stack.append(context)
    try:
        with nn.intercept_methods(context.intercept):
            yield
    finally:
        stack.pop()


def _kernel_of(module: nn.Module) -> Any:
    if not module.has_variable("params", "kernel"):
        return None
    return meta.unbox(module.get_variable("params", "kernel"))


def _is_plain_dense(module: nn.Module) -> bool:
    # Subclasses that override __call__ may compute something else with their kernel; they
    # are left alone and their kernel is perturbed by materialisation instead (slow, correct).
    return isinstance(module, nn.Dense) and type(module).__call__ is nn.Dense.__call__


class MemberContext:
    """What a Dense layer needs, at trace time, to add one member's low-rank term.

    Kernels are recognised by object identity with the parameter leaves passed to the model,
    so any ``apply_fn`` that hands its params to Flax unchanged works, however it nests them.
    With ``record`` set it only notes which leaves were used as Dense kernels (the discovery
    pass that decides which matrices may skip materialisation).
    """

    def __init__(
        self,
        leaves: list[Any],
        noise: Optional[list[Any]] = None,
        scale: Optional[jax.Array] = None,
        record: Optional[set[int]] = None,
    ):
        self._index_of = {id(leaf): i for i, leaf in enumerate(leaves)}
        self._noise = noise
        self._scale = scale
        self._record = record

    def intercept(self, next_fun: Callable, args, kwargs, context) -> Any:
        module = context.module
        if context.method_name != "__call__" or not _is_plain_dense(module):
            return next_fun(*args, **kwargs)
        inputs = args[0] if args else kwargs["inputs"]
        return self.dense_call(module, next_fun, inputs)

    def dense_call(self, module: nn.Module, call: Callable, inputs: jax.Array) -> jax.Array:
        """``call(inputs)`` (the Dense layer itself) plus this member's low-rank term."""
        index = self._index_of.get(id(_kernel_of(module)))
        if index is None:
            return call(inputs)
        if self._record is not None:
            self._record.add(index)
            return call(inputs)
        noise = self._noise[index]
        if not isinstance(noise, LowRankNoise):
            return call(inputs)
        outputs = call(inputs)
        dtype = jnp.result_type(inputs, outputs)
        a, b = widen(noise.a, dtype), widen(noise.b, dtype)
        scale = self._scale / math.sqrt(a.shape[-2])
        return outputs + low_rank_term(inputs, a, b, scale).astype(outputs.dtype)


def low_rank_term(x: jax.Array, a: jax.Array, b: jax.Array, scale: jax.Array) -> jax.Array:
    """``scale * (x @ b.T) @ a`` for one member: ``x (..., in)``, ``b (r, in)``, ``a (r, out)``.

    Returns an array of shape ``(..., out)`` in ``x``'s dtype. Both products are contractions
    (``einsum``) rather than a product and a sum over the features, so that batched over the
    population XLA sees a batched dot that it may lower as it likes: a multiply and row
    reduction fused with the broadcast of per-draw noise rows, instead of a per-member copy of
    ``b`` materialised at every step. ``x @ b.T`` accumulates in float32 or wider.
    """
    xb = jnp.einsum("...i,ri->...r", x, b, preferred_element_type=compute_dtype(x.dtype))
    return jnp.einsum("...r,ro->...o", xb.astype(x.dtype) * scale, a)


def dense_kernel_leaves(apply_fn: Callable, params: Any, x: Any, args, kwargs) -> frozenset[int]:
    """Indices of the parameter leaves that the model uses only as plain Dense kernels.

    Found by abstract evaluation of one member (no computation), once per trace.
    """
    used: set[int] = set()

    def probe(params, x):
        leaves = jax.tree_util.tree_leaves(params)
        context = MemberContext(leaves, record=used)
        with _activated(context):
            return apply_fn(params, x, *args, **kwargs)

    jax.eval_shape(probe, params, x)
    return frozenset(used)


def apply_member(
    apply_fn: Callable,
    params: Any,
    x: Any,
    noise: list[Any],
    scale: jax.Array,
    args,
    kwargs,
):
    """Apply the model for one member whose Dense kernels are shared and get low-rank terms.

    ``scale`` is the member's ``sign * sigma``; each layer divides it by sqrt of its own rank.
    """
    context = MemberContext(jax.tree_util.tree_leaves(params), noise=noise, scale=scale)
    with _activated(context):
        return apply_fn(params, x, *args, **kwargs)
