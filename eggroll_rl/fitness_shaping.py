"""Fitness shaping: turn raw episode returns into update weights.

ES updates are only as robust as the weights they use: raw returns differ in scale between tasks
and generations, and a single outlier episode can dominate. These pure functions map a fitness
vector of shape ``(population_size,)`` (higher is better) to shaped weights of the same shape.
They compose (``compose(zscore, my_clip)``), and anything with the signature ``f -> shaped f``
can be used in their place.
"""

from __future__ import annotations

import functools
from typing import Callable, Union

import jax
import jax.numpy as jnp

FitnessShaping = Callable[[jax.Array], jax.Array]

_EPS = 1e-8


def identity(fitness: jax.Array) -> jax.Array:
    """Raw returns as weights (what the plain ES estimator uses)."""
    return jnp.asarray(fitness, jnp.float32)


def centered_rank(fitness: jax.Array) -> jax.Array:
    """Ranks mapped linearly onto [-0.5, 0.5]; tied values share their average rank.

    Sharing ranks matters for antithetic pairs: two members that both hit the return cap
    (CartPole's 500) must get the same weight, or arbitrary tie-breaking injects noise into the
    update.
    """
    fitness = jnp.asarray(fitness, jnp.float32)
    n = fitness.shape[0]
    if n < 2:
        return jnp.zeros_like(fitness)
    ordered = jnp.sort(fitness)
    first = jnp.searchsorted(ordered, fitness, side="left")
    past_last = jnp.searchsorted(ordered, fitness, side="right")
    rank = (first + past_last - 1).astype(jnp.float32) / 2.0
    return rank / (n - 1) - 0.5


def _standardised(centered: jax.Array, informative: jax.Array) -> jax.Array:
    std = jnp.sqrt(jnp.mean(centered**2))
    return jnp.where(informative & (std > _EPS), centered / jnp.maximum(std, _EPS), 0.0)


def zscore(fitness: jax.Array) -> jax.Array:
    """Subtract the population mean, divide by the population standard deviation.

    A population with identical fitness carries no information and maps to zeros; this is
    decided by comparing values, not by the standard deviation, which float32 rounding of the
    mean makes tiny but non-zero (500.0 x 1000 members would otherwise map to all -1).
    """
    fitness = jnp.asarray(fitness, jnp.float32)
    return _standardised(fitness - fitness.mean(), jnp.max(fitness) > jnp.min(fitness))


def grouped_zscore(fitness: jax.Array, group_size: int) -> jax.Array:
    """Subtract each group's own mean, divide by the global standard deviation.

    Groups are consecutive members (``group_size`` of them). Useful when each group was
    evaluated on its own environment seed: the group mean removes the seed's difficulty.
    Use as ``functools.partial(grouped_zscore, group_size=4)``.
    """
    fitness = jnp.asarray(fitness, jnp.float32)
    n = fitness.shape[0]
    if group_size < 1 or n % group_size:
        raise ValueError(
            f"grouped_zscore: group_size={group_size} must be >= 1 and divide the population "
            f"size {n}."
        )
    groups = fitness.reshape(n // group_size, group_size)
    centered = (groups - groups.mean(axis=1, keepdims=True)).reshape(n)
    informative = jnp.any(jnp.max(groups, axis=1) > jnp.min(groups, axis=1))
    return _standardised(centered, informative)


def compose(*shapings: FitnessShaping) -> FitnessShaping:
    """Apply the shapings left to right: ``compose(f, g)(x) == g(f(x))``."""

    def composed(fitness: jax.Array) -> jax.Array:
        return functools.reduce(lambda acc, shaping: shaping(acc), shapings, fitness)

    return composed


BY_NAME: dict[str, FitnessShaping] = {
    "centered_rank": centered_rank,
    "zscore": zscore,
    "identity": identity,
}


def resolve(shaping: Union[str, FitnessShaping]) -> FitnessShaping:
    """Accept a shaping by name or as a callable; reject anything else with the known names."""
    if callable(shaping):
        return shaping
    if isinstance(shaping, str) and shaping in BY_NAME:
        return BY_NAME[shaping]
    raise ValueError(
        f"fitness_shaping={shaping!r} is not known: use one of {sorted(BY_NAME)} or a callable "
        "mapping a fitness vector to shaped weights (e.g. functools.partial(grouped_zscore, "
        "group_size=4))."
    )
