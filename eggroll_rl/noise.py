"""Perturbation noise: regenerated from keys, held in compact form, never materialised per member.

Every noise draw is a pure function of ``(key, leaf index, epoch, draw index)``, so any process can
rebuild any member's perturbation without storing or communicating it (the property that lets
ES scale out by sending fitness scalars only). A matrix leaf of shape ``(in, out)`` gets
low-rank noise ``E = B^T A / sqrt(r)`` from two factors ``B (r, in)`` and ``A (r, out)``; every
other leaf gets a full Gaussian draw of its own shape.
"""

from __future__ import annotations

from typing import Optional, Union

import jax
import jax.numpy as jnp
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


def _draw_key(key: jax.Array, leaf_index: int, epoch: jax.Array, draw: jax.Array) -> jax.Array:
    return jax.random.fold_in(jax.random.fold_in(jax.random.fold_in(key, leaf_index), epoch), draw)


def draw_leaf_noise(
    key: jax.Array,
    leaf_index: int,
    epoch: jax.Array,
    draws: jax.Array,
    shape: tuple[int, ...],
    dtype,
    rank: Optional[int],
) -> LeafNoise:
    """Noise of one leaf for the draw indices ``draws`` (any integer array of shape ``(d,)``).

    ``rank=None`` means full Gaussian noise; otherwise the leaf must be a matrix ``(in, out)``.
    """

    def one(draw):
        k = _draw_key(key, leaf_index, epoch, draw)
        if rank is None:
            return jax.random.normal(k, shape, dtype)
        fan_in, fan_out = shape
        both = jax.random.normal(k, (rank, fan_in + fan_out), dtype)
        return both[:, fan_in:], both[:, :fan_in]

    out = jax.vmap(one)(draws)
    if rank is None:
        return FullNoise(eps=out)
    return LowRankNoise(a=out[0], b=out[1])


def perturbation(noise: LeafNoise, draw: Union[int, jax.Array]) -> jax.Array:
    """The materialised perturbation ``E`` of one draw (a slow reference path: tests, debugging)."""
    return materialise(jax.tree_util.tree_map(lambda rows: rows[draw], noise))


def materialise(noise: LeafNoise) -> jax.Array:
    """``E`` built in full from noise of any leading draw axes (``(..., in, out)`` if low-rank)."""
    if isinstance(noise, FullNoise):
        return noise.eps
    a, b = noise.a, noise.b
    product = jnp.einsum("...ri,...ro->...io", b, a)
    return product / jnp.sqrt(jnp.asarray(a.shape[-2], a.dtype))


def weighted_sum(noise: LeafNoise, weights: jax.Array) -> jax.Array:
    """``sum_d weights[d] * E_d`` without building any ``E_d``.

    For low-rank noise this is one matmul over the draw and rank axes together, so the result
    has rank ``min(draws * r, in, out)``: full rank in practice.
    """
    if isinstance(noise, FullNoise):
        return jnp.tensordot(weights.astype(noise.eps.dtype), noise.eps, axes=1)
    a, b = noise.a, noise.b
    scaled_b = b * weights.astype(b.dtype)[:, None, None]
    fan_in, fan_out = b.shape[-1], a.shape[-1]
    total = scaled_b.reshape(-1, fan_in).T @ a.reshape(-1, fan_out)
    return total / jnp.sqrt(jnp.asarray(a.shape[-2], a.dtype))
