"""The EGGROLL Dense layer, and how plain Flax layers join a population evaluation.

Inside ``population_apply`` every Dense kernel ``W`` stays shared by the whole population, so the
expensive ``x @ W`` remains one dense batched matmul; each member then adds its own rank-r term
``sign * sigma / sqrt(r) * (x @ B^T) @ A``, which costs a fraction ``~2r/min(in, out)`` of the
matmul and never builds a per-member matrix. Existing Flax agents need no edit: an interceptor
routes every linen ``nn.Dense`` and ``nn.Conv`` call through the same path, and the NNX layers
(``nnx.Linear``, ``nnx.LinearGeneral`` and ``nnx.Einsum`` with a 2-D kernel, ``nnx.Conv``) get
the term through their injectable product (``dot_general``, ``einsum_op``,
``conv_general_dilated``), set on the member's own copy of the module. A convolution kernel
``(kh, kw, c_in, c_out)`` is the matrix ``(kh*kw*c_in, c_out)``: its term is a rank-r
convolution (``B`` as a ``(kh, kw, c_in, r)`` kernel) then a 1x1 projection by ``A``.
``EggrollDense`` is the explicit alternative, a drop-in ``nn.Dense`` that does it without
interception.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import math
import threading
from typing import Any, Callable, NamedTuple, Optional

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


def _is_plain_conv(module: nn.Module) -> bool:
    return (
        isinstance(module, nn.Conv)
        and type(module).__call__ is nn.Conv.__call__
        and module.mask is None
        and module.feature_group_count == 1
        and module.conv_general_dilated_cls is None
    )


def _abstract_zeros(fn: Callable, *args, **kwargs) -> jax.Array:
    """Zeros shaped like ``fn(*args, **kwargs)``, which is traced but never computed."""
    arrays = [i for i, arg in enumerate(args) if isinstance(arg, jax.Array)]

    def with_arrays(*values):
        full = list(args)
        for i, value in zip(arrays, values):
            full[i] = value
        return fn(*full, **kwargs)

    shape = jax.eval_shape(with_arrays, *(args[i] for i in arrays))
    return jnp.zeros(shape.shape, shape.dtype)


class MemberContext:
    """What a layer needs, at trace time, to add one member's low-rank term.

    Kernels are recognised by object identity with the parameter leaves passed to the model,
    so any ``apply_fn`` that hands its params to Flax unchanged works, however it nests them.
    With ``record`` set it only notes which leaves the fast-path layers use as kernels, and
    those layers return zeros of their output's shape without reading the kernel: the
    discovery pass (``discover``) then sees in the traced program whether a kernel is also
    read anywhere else (weight tying).
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

    # ---- linen ------------------------------------------------------------------------------
    def intercept(self, next_fun: Callable, args, kwargs, context) -> Any:
        module = context.module
        if context.method_name != "__call__":
            return next_fun(*args, **kwargs)
        if _is_plain_dense(module):
            inputs = args[0] if args else kwargs["inputs"]
            return self.dense_call(module, next_fun, inputs)
        if _is_plain_conv(module):
            index = self._index_of.get(id(_kernel_of(module)))
            if index is None:
                return next_fun(*args, **kwargs)
            # The module is this apply's own bound instance; its product is swapped for the
            # duration of this one call only.
            original = module.conv_general_dilated or jax.lax.conv_general_dilated
            object.__setattr__(
                module, "conv_general_dilated", functools.partial(self._conv, index, original)
            )
            try:
                return next_fun(*args, **kwargs)
            finally:
                object.__setattr__(
                    module, "conv_general_dilated",
                    None if original is jax.lax.conv_general_dilated else original,
                )
        return next_fun(*args, **kwargs)

    def dense_call(self, module: nn.Module, call: Callable, inputs: jax.Array) -> jax.Array:
        """``call(inputs)`` (the Dense layer itself) plus this member's low-rank term."""
        kernel = _kernel_of(module)
        index = self._index_of.get(id(kernel))
        if index is None:
            return call(inputs)
        if self._record is not None:
            self._record.add(index)
            dtype = module.dtype or jnp.result_type(inputs, kernel)
            return jnp.zeros(jnp.shape(inputs)[:-1] + (module.features,), dtype)
        noise = self._noise[index]
        if not isinstance(noise, LowRankNoise):
            return call(inputs)
        outputs = call(inputs)
        return outputs + self._term(inputs, outputs, noise)

    def _term(self, inputs: jax.Array, outputs: jax.Array, noise: LowRankNoise) -> jax.Array:
        dtype = jnp.result_type(inputs, outputs)
        a, b = widen(noise.a, dtype), widen(noise.b, dtype)
        scale = self._scale / math.sqrt(a.shape[-2])
        return low_rank_term(inputs, a, b, scale).astype(outputs.dtype)

    # ---- injected products (NNX layers, linen Conv) -------------------------------------------
    def _dot(self, index, original, inputs, kernel, dimension_numbers, *args, **kwargs):
        (lhs_contract, rhs_contract), (lhs_batch, rhs_batch) = dimension_numbers
        plain = (
            jnp.ndim(kernel) == 2 and len(lhs_contract) == 1 and tuple(rhs_contract) == (0,)
            and not lhs_batch and not rhs_batch
        )
        if not plain:  # not recorded: the kernel is materialised per member instead
            return original(inputs, kernel, dimension_numbers, *args, **kwargs)
        if self._record is not None:
            self._record.add(index)
            return _abstract_zeros(original, inputs, kernel, dimension_numbers, *args, **kwargs)
        outputs = original(inputs, kernel, dimension_numbers, *args, **kwargs)
        noise = self._noise[index]
        if not isinstance(noise, LowRankNoise):
            return outputs
        features_last = jnp.moveaxis(inputs, lhs_contract[0], -1)
        return outputs + self._term(features_last, outputs, noise)

    def _einsum(self, index, original, subscripts, inputs, kernel, *args, **kwargs):
        operands, _, result = subscripts.replace(" ", "").partition("->")
        lhs, _, rhs = operands.partition(",")
        plain = jnp.ndim(kernel) == 2 and len(rhs) == 2 and "." not in rhs and result
        if not plain:
            return original(subscripts, inputs, kernel, *args, **kwargs)
        if self._record is not None:
            self._record.add(index)
            return _abstract_zeros(original, subscripts, inputs, kernel, *args, **kwargs)
        outputs = original(subscripts, inputs, kernel, *args, **kwargs)
        noise = self._noise[index]
        if not isinstance(noise, LowRankNoise):
            return outputs
        dtype = jnp.result_type(inputs, outputs)
        a, b = widen(noise.a, dtype), widen(noise.b, dtype)
        rank_letter = next(c for c in "rstuvwxyzabcdefghijklmnopq" if c not in subscripts)
        term = jnp.einsum(
            f"{lhs},{rank_letter}{rhs[0]},{rank_letter}{rhs[1]}->{result}", inputs, b, a,
            preferred_element_type=compute_dtype(dtype),
        )
        scale = self._scale / math.sqrt(a.shape[-2])
        return outputs + (term * scale).astype(outputs.dtype)

    def _conv(self, index, original, lhs, rhs, *args, **kwargs):
        if kwargs.get("feature_group_count", 1) != 1:
            return original(lhs, rhs, *args, **kwargs)
        if self._record is not None:
            self._record.add(index)
            return _abstract_zeros(original, lhs, rhs, *args, **kwargs)
        outputs = original(lhs, rhs, *args, **kwargs)
        noise = self._noise[index]
        if not isinstance(noise, LowRankNoise):
            return outputs
        dtype = jnp.result_type(lhs, outputs)
        a, b = widen(noise.a, dtype), widen(noise.b, dtype)
        rank = a.shape[-2]
        features = _patch_features(original, lhs, rhs, b, args, kwargs)
        if features is None:
            # B (r, kh*kw*c_in) as a convolution kernel (kh, kw, c_in, r): rank-r feature maps.
            b_kernel = jnp.moveaxis(b.reshape((rank,) + jnp.shape(rhs)[:-1]), 0, -1)
            features = original(lhs, b_kernel.astype(jnp.result_type(rhs)), *args, **kwargs)
        scale = self._scale / math.sqrt(rank)
        term = jnp.einsum("...r,ro->...o", features.astype(dtype) * scale, a)
        return outputs + term.astype(outputs.dtype)

    # ---- NNX ----------------------------------------------------------------------------------
    def bind(self, model: Any) -> None:
        """Route the NNX layers of ``model`` (this member's own merged copy) through this context.

        Each plain ``nnx.Linear``/``LinearGeneral``/``Einsum``/``Conv`` whose kernel is one of
        the leaves gets its product replaced by one that adds the member's term; anything else
        (linen variables, a pytree) is left as it is.
        """
        nnx = _nnx()
        if nnx is None or not isinstance(model, nnx.Module):
            return
        for _, node in nnx.iter_graph(model):
            kind = _nnx_product(nnx, node)
            if kind is None:
                continue
            index = self._index_of.get(id(node.kernel.get_value()))
            if index is None:
                continue
            wrapper = {"dot_general": self._dot, "einsum_op": self._einsum,
                       "conv_general_dilated": self._conv}[kind]
            original = getattr(node, kind) or _DEFAULT_PRODUCTS[kind]
            setattr(node, kind, functools.partial(wrapper, index, original))


def _patch_features(original, lhs, rhs, b, args, kwargs) -> Optional[jax.Array]:
    """The rank-r convolution by ``B``: the input's patches (its shifted windows, one per
    kernel tap, side by side) contracted with ``B``.

    The same numbers as convolving with ``B`` as a ``(kh, kw, c_in, r)`` kernel; but batched
    over the population, a convolution with a per-member kernel becomes a grouped convolution
    (slow on CPU), where this is one batched matrix-vector product per member.
    Only for ``lax.conv_general_dilated`` with channels-last inputs and outputs, a
    ``(..., c_in, c_out)`` kernel (linen's and NNX's layout) and no input dilation; None
    otherwise (the caller convolves instead).
    """
    if original is not jax.lax.conv_general_dilated or len(args) > 2:
        return None
    options = dict(zip(("window_strides", "padding"), args), **kwargs)
    known = {"window_strides", "padding", "lhs_dilation", "rhs_dilation", "dimension_numbers",
             "precision", "feature_group_count"}
    if set(options) - known or options.get("feature_group_count", 1) != 1:
        return None
    ndim, spatial = jnp.ndim(lhs), tuple(jnp.shape(rhs)[:-2])
    numbers = jax.lax.conv_dimension_numbers(
        jnp.shape(lhs), jnp.shape(rhs), options.get("dimension_numbers")
    )
    channels_last = (
        tuple(numbers.lhs_spec) == (0, ndim - 1, *range(1, ndim - 1))
        and tuple(numbers.out_spec) == (0, ndim - 1, *range(1, ndim - 1))
        and tuple(numbers.rhs_spec) == (ndim - 1, ndim - 2, *range(ndim - 2))
    )
    lhs_dilation = options.get("lhs_dilation") or (1,) * len(spatial)
    if not channels_last or any(d != 1 for d in lhs_dilation):
        return None
    strides = tuple(options.get("window_strides") or (1,) * len(spatial))
    dilation = tuple(options.get("rhs_dilation") or (1,) * len(spatial))
    window = tuple((k - 1) * d + 1 for k, d in zip(spatial, dilation))
    in_shape = jnp.shape(lhs)[1:-1]
    padding = options.get("padding", "VALID")
    if isinstance(padding, str):
        padding = jax.lax.padtype_to_pads(in_shape, window, strides, padding)
    padded = jnp.pad(lhs, [(0, 0)] + [tuple(p) for p in padding] + [(0, 0)])
    out_shape = [
        (size + lo + hi - w) // s + 1
        for size, (lo, hi), w, s in zip(in_shape, padding, window, strides)
    ]
    slices = []
    for tap in itertools.product(*(range(k) for k in spatial)):
        index = [slice(None)] + [
            slice(t * d, t * d + (o - 1) * s + 1, s)
            for t, d, o, s in zip(tap, dilation, out_shape, strides)
        ] + [slice(None)]
        slices.append(padded[tuple(index)])
    # patch features ordered (*spatial, c_in), as B's columns are
    patches = jnp.concatenate(slices, axis=-1)
    return jnp.einsum(
        "...p,rp->...r", patches, b.astype(patches.dtype),
        preferred_element_type=compute_dtype(patches.dtype),
    )


_DEFAULT_PRODUCTS = {
    "dot_general": jax.lax.dot_general,
    "einsum_op": jnp.einsum,
    "conv_general_dilated": jax.lax.conv_general_dilated,
}


def _nnx():
    try:
        from flax import nnx
    except ImportError:  # pragma: no cover - flax ships nnx
        return None
    return nnx


def _nnx_product(nnx, node) -> Optional[str]:
    """The attribute holding ``node``'s injectable product if it may take the fast path."""
    plain = lambda cls: isinstance(node, cls) and type(node).__call__ is cls.__call__
    if plain(nnx.Linear):
        return "dot_general"
    if plain(nnx.LinearGeneral) and node.dot_general_cls is None and not node.batch_axis:
        return "dot_general"
    if plain(nnx.Einsum):
        return "einsum_op"
    if plain(nnx.Conv) and node.mask is None and node.feature_group_count == 1:
        return "conv_general_dilated"
    return None


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


class Discovery(NamedTuple):
    """Which parameter leaves (indices) the model uses as fast-path kernels."""

    fast: frozenset  # used only as kernels of fast-path layers: never materialised
    tied: frozenset  # used by a fast-path layer and also read directly (weight tying)


def discover(
    apply_fn: Callable, rebuild: Callable, leaves: list, x: Any, args, kwargs
) -> Discovery:
    """Trace one member (no computation) to find the leaves used as fast-path kernels.

    ``rebuild(leaves)`` gives what ``apply_fn`` takes (the params pytree, a linen variables
    dict or an NNX module). Fast-path layers return zeros without reading their kernel in
    this pass, so a kernel that still appears in the traced program is also read elsewhere:
    it is reported as ``tied``, and must be materialised for the tied use to see the
    perturbation.
    """
    used: set[int] = set()

    def probe(leaves, x):
        context = MemberContext(leaves, record=used)
        model = rebuild(leaves)
        context.bind(model)
        with _activated(context):
            return apply_fn(model, x, *args, **kwargs)

    closed = jax.make_jaxpr(probe)(list(leaves), x)
    jaxpr = closed.jaxpr
    read = {v for eqn in jaxpr.eqns for v in eqn.invars if not hasattr(v, "val")}
    read |= {v for v in jaxpr.outvars if not hasattr(v, "val")}
    tied = frozenset(i for i in used if jaxpr.invars[i] in read)
    return Discovery(fast=frozenset(used) - tied, tied=tied)


def apply_member(
    apply_fn: Callable,
    rebuild: Callable,
    leaves: list,
    x: Any,
    noise: list[Any],
    scale: jax.Array,
    args,
    kwargs,
):
    """Apply the model for one member whose fast-path kernels are shared and get low-rank terms.

    ``leaves`` are the member's parameter leaves (shared kernels unchanged), ``rebuild`` turns
    them into what ``apply_fn`` takes, ``noise[i]`` is leaf i's ``LowRankNoise`` where it takes
    the fast path (else None). ``scale`` is the member's ``sign * sigma``; each layer divides
    it by sqrt of its own rank.
    """
    context = MemberContext(leaves, noise=noise, scale=scale)
    model = rebuild(leaves)
    context.bind(model)
    with _activated(context):
        return apply_fn(model, x, *args, **kwargs)
