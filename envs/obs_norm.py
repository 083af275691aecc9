"""Running observation statistics, pooled over a whole population's rollouts.

Policies learn far faster on normalised observations (Brax and MuJoCo observations span orders
of magnitude). The statistics are a pytree kept in the training state, updated with a parallel
merge (Chan et al.) from every live step of every member, and applied by one pure function, so
training, evaluation and export normalise identically.
"""

from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp
from flax import struct

CLIP = 10.0
EPS = 1e-8


@struct.dataclass
class RunningStats:
    count: jax.Array
    mean: jax.Array
    var: jax.Array


def init(shape: tuple[int, ...]) -> RunningStats:
    """No data yet: normalising leaves observations unchanged."""
    return RunningStats(
        count=jnp.zeros((), jnp.float32), mean=jnp.zeros(shape, jnp.float32), var=jnp.ones(shape, jnp.float32)
    )


def update(stats: RunningStats, batch: jax.Array, mask: Optional[jax.Array] = None) -> RunningStats:
    """Merge a batch (leading axes: samples; ``mask`` the same leading shape) into ``stats``."""
    feature_ndim = stats.mean.ndim
    batch = jnp.asarray(batch, jnp.float32)
    batch = batch.reshape((-1,) + batch.shape[batch.ndim - feature_ndim :])
    weights = jnp.ones(batch.shape[0]) if mask is None else jnp.asarray(mask, jnp.float32).reshape(-1)
    weights = weights.reshape((-1,) + (1,) * feature_ndim)
    count = jnp.sum(weights.reshape(-1))
    safe = jnp.maximum(count, 1.0)
    mean = jnp.sum(weights * batch, axis=0) / safe
    var = jnp.sum(weights * (batch - mean) ** 2, axis=0) / safe
    total = stats.count + count
    delta = mean - stats.mean
    share = count / jnp.maximum(total, 1.0)
    m2 = stats.var * stats.count + var * count + delta**2 * stats.count * share
    merged = RunningStats(count=total, mean=stats.mean + delta * share, var=m2 / jnp.maximum(total, 1.0))
    return jax.tree_util.tree_map(lambda new, old: jnp.where(count > 0, new, old), merged, stats)


def normalize(stats: RunningStats, obs: jax.Array) -> jax.Array:
    """``(obs - mean) / std``, clipped to [-10, 10]; identity until data has been seen."""
    scaled = (obs - stats.mean) / jnp.sqrt(stats.var + EPS)
    return jnp.where(stats.count > 0, jnp.clip(scaled, -CLIP, CLIP), obs)
