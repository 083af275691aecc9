"""Perturbation noise: regenerated from keys, held in compact form, never materialised per member.

Every noise draw is a pure function of ``(key, epoch, draw index)``, so any process can
rebuild any member's perturbation without storing or communicating it (the property that lets
ES scale out by sending fitness scalars only). A matrix leaf of shape ``(in, out)`` gets
low-rank noise ``E = B^T A / sqrt(r)`` from two factors ``B (r, in)`` and ``A (r, out)``; every
other leaf gets a full Gaussian draw of its own shape.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple, Optional, Sequence, Union

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct


@struct.dataclass
class LowRankNoise:
    """Factors of ``E = B^T A / sqrt(r)`` for one matrix leaf, one row per noise draw.

    ``a`` has shape ``(draws, r, out)`` and ``b`` has shape ``(draws, r, in)``: the rank axis
    sits before the feature axis so each factor row is contiguous in memory.
    """

    a: jax.Array
    b: jax.Array


@struct.dataclass
class FullNoise:
    """A full Gaussian draw per noise draw: ``eps`` has shape ``(draws, *leaf.shape)``."""

    eps: jax.Array


LeafNoise = Union[LowRankNoise, FullNoise]


# Noise held in int8 is the Gaussian draw in steps of 1/16, as the paper's integer training holds
# its noise (N(0, 1) scaled by 16): round(16 z) clipped to +-127, read back as that over 16.
INT8_STEPS_PER_UNIT = 16


def hold(normal: jax.Array, dtype: Any) -> jax.Array:
    """Float32 standard-normal draws as held in ``dtype``: rounded once, here and nowhere else.

    A float dtype rounds to nearest; int8 keeps ``round(16 z)``, clipped to +-127 (a draw beyond
    7.97 sigma, about one number in 6 x 10^14), and ``widen`` reads it back over 16. Those
    values have variance 1 + 1/(12 * 16^2) and are 0 for 2.5% of draws; ES needs only a
    symmetric noise whose exact values the update uses, which ``tell`` does. Why int8: the
    population (and a checkpoint or transfer of it) is a quarter of its float32 size, and the
    values are those of the paper's integer training; the forward pass widens them once.
    """
    if jnp.dtype(dtype) == jnp.int8:
        steps = jnp.round(normal * INT8_STEPS_PER_UNIT)
        return jnp.clip(steps, -127, 127).astype(jnp.int8)
    return normal.astype(dtype)


def widen(held: jax.Array, dtype: Any = None) -> jax.Array:
    """The noise values ``held`` stands for, in ``dtype`` (default ``compute_dtype``)."""
    dtype = compute_dtype(held.dtype) if dtype is None else dtype
    if held.dtype == jnp.int8:
        return held.astype(dtype) * jnp.asarray(1 / INT8_STEPS_PER_UNIT, dtype)
    return held.astype(dtype)


def check_noise_dtype(dtype: Any) -> Any:
    """``dtype`` as a numpy dtype if noise can be held in it (any float, or int8), else raise."""
    try:
        held = jnp.dtype(dtype)
    except TypeError:
        held = None
    if held is None or not (jnp.issubdtype(held, jnp.floating) or held == jnp.int8):
        raise ValueError(
            "noise_dtype must be int8 or a floating-point dtype (jnp.bfloat16, jnp.float32 ...), "
            f"got {dtype!r}."
        )
    return held


class LeafSpec(NamedTuple):
    """What noise a leaf gets: its shape, the dtype its noise is held in (see ``hold``), and a
    rank (None: full Gaussian noise)."""

    shape: tuple[int, ...]
    dtype: Any
    rank: Optional[int]

    @property
    def size(self) -> int:
        if self.rank is None:
            return math.prod(self.shape)
        return self.rank * (self.shape[0] + self.shape[1])


def draw_noise(
    key: jax.Array, epoch: jax.Array, draws: jax.Array, specs: Sequence[LeafSpec]
) -> list[LeafNoise]:
    """Noise of every leaf for the draw indices ``draws`` (an integer array of shape ``(d,)``).

    Draw ``k`` of epoch ``e`` is one Gaussian vector from ``fold_in(fold_in(key, e), k)``, cut
    into the leaves' pieces: a single random-number kernel for the whole model, which compiles
    and runs far faster than one per leaf, and still lets anyone rebuild any member's noise.
    """
    total = sum(spec.size for spec in specs)
    epoch_key = jax.random.fold_in(key, epoch)

    def one(draw):
        return standard_normal(jax.random.fold_in(epoch_key, draw), total)

    flat = jax.vmap(one)(draws)
    out, offset = [], 0
    for spec in specs:
        piece = hold(flat[:, offset : offset + spec.size], spec.dtype)
        offset += spec.size
        if spec.rank is None:
            out.append(FullNoise(eps=piece.reshape((-1,) + tuple(spec.shape))))
        else:
            fan_in, fan_out = spec.shape
            both = piece.reshape(-1, spec.rank, fan_in + fan_out)
            out.append(LowRankNoise(a=both[..., fan_in:], b=both[..., :fan_in]))
    return out


def standard_normal(key: jax.Array, size: int) -> jax.Array:
    """``jax.random.normal(key, (size,))``, bit for bit: float32 of shape ``(size,)``.

    Drawing noise is most of ``ask``. With threefry keys (JAX's default, partitionable since
    JAX 0.5) each number is the XOR of the two words of the hash of its index, mapped to a
    uniform and through the inverse error function. On CPU, JAX lowers the hash as a rolled
    loop of 5 iterations that XLA runs as separate passes over memory; ``threefry2x32`` writes
    the 20 rounds out, and with a single output (the XOR, not one number per word) XLA fuses
    hash and mapping into one pass. Other backends unroll the hash themselves, so they, other
    key types and non-partitionable threefry use ``jax.random.normal`` (decided at trace time).
    """
    partitionable = jax.config.jax_threefry_partitionable
    if (
        jax.default_backend() != "cpu"
        or str(jax.random.key_impl(key)) != "threefry2x32"
        or not partitionable
        or size >= 2**32
    ):
        return jax.random.normal(key, (size,), jnp.float32)
    index = jnp.arange(size, dtype=jnp.uint32)
    first, second = threefry2x32(jax.random.key_data(key), jnp.zeros_like(index), index)
    # JAX's uniform in [lo, 1): the top 23 bits as a float in [1, 2), shifted and scaled
    unit = jax.lax.bitcast_convert_type(
        ((first ^ second) >> 9) | np.uint32(0x3F800000), jnp.float32
    ) - np.float32(1)
    lo = np.nextafter(np.float32(-1), np.float32(0))
    uniform = jnp.maximum(lo, unit * (np.float32(1) - lo) + lo)
    return np.float32(np.sqrt(2)) * jax.lax.erf_inv(uniform)


_ROTATIONS = ((13, 15, 26, 6), (17, 29, 16, 24))


def threefry2x32(
    key_words: jax.Array, x0: jax.Array, x1: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """Threefry-2x32 with 20 rounds (Salmon et al., SC'11), the hash of JAX's default keys:
    ``key_words`` uint32 ``(2,)``, counter words ``x0``, ``x1`` uint32 of one shape; returns the
    two hashed words, of that shape.

    Bit-identical to JAX's own (tested). Written out round by round so that XLA:CPU can fuse
    all 20 rounds into one pass, where JAX's rolled loop becomes several passes over memory.
    """
    k0, k1 = key_words[0], key_words[1]
    keys = (k0, k1, k0 ^ k1 ^ np.uint32(0x1BD11BDA))
    x0, x1 = x0 + keys[0], x1 + keys[1]
    for block in range(5):
        for r in _ROTATIONS[block % 2]:
            x0 = x0 + x1
            x1 = ((x1 << np.uint32(r)) | (x1 >> np.uint32(32 - r))) ^ x0
        x0 = x0 + keys[(block + 1) % 3]
        x1 = x1 + keys[(block + 2) % 3] + np.uint32(block + 1)
    return x0, x1


def perturbation(noise: LeafNoise, draw: Union[int, jax.Array]) -> jax.Array:
    """The materialised perturbation ``E`` of one draw (a slow reference path: tests, debugging)."""
    return materialise(jax.tree_util.tree_map(lambda rows: rows[draw], noise))


def compute_dtype(*dtypes: Any) -> Any:
    """Float32 or wider: what noise held in any dtype (int8 by default) is used in."""
    return jnp.promote_types(jnp.result_type(*dtypes), jnp.float32)


def materialise(noise: LeafNoise) -> jax.Array:
    """``E`` built in full from noise of any leading draw axes (``(..., in, out)`` if low-rank).

    In float32 or wider (``widen``), as the fast path computes its terms, whatever dtype the
    noise is held in.
    """
    if isinstance(noise, FullNoise):
        return widen(noise.eps)
    a, b = widen(noise.a), widen(noise.b)
    product = jnp.einsum("...ri,...ro->...io", b, a)
    return product / jnp.sqrt(jnp.asarray(a.shape[-2], a.dtype))


def weighted_sum(noise: LeafNoise, weights: jax.Array) -> jax.Array:
    """``sum_d weights[d] * E_d`` without building any ``E_d``.

    For low-rank noise this is one matmul over the draw and rank axes together, so the result
    has rank ``min(draws * r, in, out)``: full rank in practice. Computed in float32 or wider
    (``widen``), never in the dtype the noise is held in.
    """
    held = noise.eps if isinstance(noise, FullNoise) else noise.a
    dtype = compute_dtype(held.dtype, weights.dtype)
    weights = weights.astype(dtype)
    if isinstance(noise, FullNoise):
        return jnp.tensordot(weights, widen(noise.eps, dtype), axes=1)
    a, b = widen(noise.a, dtype), widen(noise.b, dtype)
    scaled_b = b * weights[:, None, None]
    fan_in, fan_out = b.shape[-1], a.shape[-1]
    total = scaled_b.reshape(-1, fan_in).T @ a.reshape(-1, fan_out)
    return total / jnp.sqrt(jnp.asarray(a.shape[-2], a.dtype))
