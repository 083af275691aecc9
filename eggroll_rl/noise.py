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


class LeafSpec(NamedTuple):
    """What noise a leaf gets: its shape and dtype, and a rank (None: full Gaussian noise)."""

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
        return jax.random.normal(jax.random.fold_in(epoch_key, draw), (total,), jnp.float32)

    flat = jax.vmap(one)(draws)
    out, offset = [], 0
    for spec in specs:
        piece = flat[:, offset : offset + spec.size].astype(spec.dtype)
        offset += spec.size
        if spec.rank is None:
            out.append(FullNoise(eps=piece.reshape((-1,) + tuple(spec.shape))))
        else:
            fan_in, fan_out = spec.shape
            both = piece.reshape(-1, spec.rank, fan_in + fan_out)
            out.append(LowRankNoise(a=both[..., fan_in:], b=both[..., :fan_in]))
    return out


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
