"""Running observation statistics, pooled over a whole population's rollouts.

Policies learn far faster on normalised observations (Brax and MuJoCo observations span orders
of magnitude). The statistics are a pytree kept in the training state, updated with the
parallel merge of Chan et al. (batch mean and variance first, then one combination step, so no
catastrophic cancellation), restricted by a mask to the observations that were really seen (and
are finite: an observation holding NaN or inf is left out whole, so a faulty env can never poison
the statistics that are saved with the policy), and applied by one pure function, so training,
evaluation and export normalise identically.
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
    """Count, mean and (population, ddof=0) variance of every observation merged so far."""

    count: jax.Array
    mean: jax.Array
    var: jax.Array


def init(shape: tuple[int, ...], dtype=jnp.float32) -> RunningStats:
    """No data yet: ``normalize`` leaves observations unchanged until the first update."""
    return RunningStats(
        count=jnp.zeros((), dtype), mean=jnp.zeros(shape, dtype), var=jnp.ones(shape, dtype)
    )


def update(stats: RunningStats, batch: jax.Array, mask: Optional[jax.Array] = None) -> RunningStats:
    """Merge ``batch`` into ``stats``; only finite entries where ``mask`` is true count.

    ``batch`` has any number of leading sample axes followed by the observation shape
    (``stats.mean.shape``); ``mask``, if given, has exactly the leading sample axes. Masked-out
    entries may hold anything, and so may left-out ones: an observation with any NaN or inf
    element is left out whole. Neither is ever read into the sums.
    """
    feature_shape = stats.mean.shape
    batch = jnp.asarray(batch)
    if batch.shape[batch.ndim - len(feature_shape) :] != feature_shape:
        raise ValueError(
            f"batch of shape {batch.shape} does not end in the observation shape "
            f"{feature_shape} of these statistics."
        )
    leading = batch.shape[: batch.ndim - len(feature_shape)]
    batch = batch.astype(stats.mean.dtype).reshape((-1,) + feature_shape)
    if mask is None:
        mask = jnp.ones(batch.shape[0], bool)
    else:
        mask = jnp.asarray(mask)
        if mask.shape != leading:
            raise ValueError(
                f"mask of shape {mask.shape} must match the leading (sample) axes {leading} of "
                f"the batch of shape {leading + feature_shape}."
            )
        mask = mask.reshape(-1).astype(bool)
    feature_axes = tuple(range(1, batch.ndim))
    mask = mask & jnp.all(jnp.isfinite(batch), axis=feature_axes)
    mask = mask.reshape((-1,) + (1,) * len(feature_shape))
    count = jnp.sum(mask, dtype=stats.count.dtype)
    safe_count = jnp.maximum(count, 1)
    batch_mean = jnp.sum(jnp.where(mask, batch, 0), axis=0) / safe_count
    batch_var = jnp.sum(jnp.where(mask, (batch - batch_mean) ** 2, 0), axis=0) / safe_count

    total = stats.count + count
    share = count / jnp.maximum(total, 1)
    delta = batch_mean - stats.mean
    m2 = stats.var * stats.count + batch_var * count + delta**2 * stats.count * share
    merged = RunningStats(
        count=total, mean=stats.mean + delta * share, var=m2 / jnp.maximum(total, 1)
    )
    return jax.tree_util.tree_map(lambda new, old: jnp.where(count > 0, new, old), merged, stats)


def normalize(stats: RunningStats, obs: jax.Array) -> jax.Array:
    """``(obs - mean) / sqrt(var + 1e-8)`` clipped to [-10, 10]; identity before any data."""
    scaled = (obs - stats.mean) / jnp.sqrt(stats.var + EPS)
    return jnp.where(stats.count > 0, jnp.clip(scaled, -CLIP, CLIP), obs)
