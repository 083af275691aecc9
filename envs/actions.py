"""Policy outputs -> valid actions: categorical for Discrete, clipped diagonal Gaussian for Box.

The paper's ``deterministic_policy`` switch picks the mode (argmax / mean) instead of sampling.
Actions always come out inside the space, with the dtype and shape ``Task.step`` checks.
"""

from __future__ import annotations

from typing import Optional

import gymnasium
import jax
import jax.numpy as jnp


def select_action(
    space: gymnasium.spaces.Space,
    head: jax.Array,
    log_std: Optional[jax.Array],
    key: jax.Array,
    deterministic: bool,
) -> jax.Array:
    """One action for one policy output (vmap it for a batch)."""
    if isinstance(space, gymnasium.spaces.Discrete):
        index = jnp.argmax(head) if deterministic else jax.random.categorical(key, head)
        return (index + space.start).astype(jnp.int32)
    if isinstance(space, gymnasium.spaces.Box):
        mean = head.reshape(space.shape)
        if deterministic:
            action = mean
        else:
            std = jnp.exp(log_std.reshape(space.shape))
            action = mean + std * jax.random.normal(key, space.shape, mean.dtype)
        return jnp.clip(action, space.low, space.high).astype(space.dtype)
    raise ValueError(f"no policy head for action space {space!r}")
