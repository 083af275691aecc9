"""Action distributions for gradient-based training (PPO): samples with log-probs and entropies.

ES never needs a log-probability, only actions (``eggroll_rl.envs.actions``); PPO does. Both use
the same policy outputs ``(head, log_std)`` of ``eggroll_rl.networks.Policy``: logits of a
categorical for Discrete spaces, the mean of a diagonal Gaussian for Box spaces. Continuous
samples are scored before clipping (the env receives the clipped action), as is standard.
"""

from __future__ import annotations

import math
from typing import Optional

import gymnasium
import jax
import jax.numpy as jnp

_LOG_2PI = math.log(2 * math.pi)


def _is_discrete(space: gymnasium.spaces.Space) -> bool:
    return isinstance(space, gymnasium.spaces.Discrete)


def sample(space, head: jax.Array, log_std: Optional[jax.Array], key: jax.Array):
    """Draw an action from the policy's distribution.

    Args:
      space: the task's action space (``gymnasium.spaces.Discrete`` or ``Box``).
      head: float logits ``(..., n)`` (Discrete) or the Gaussian mean ``(..., action_size)``.
      log_std: float ``(action_size,)`` log standard deviations (Box); ignored for Discrete.
      key: a PRNG key.

    Returns:
      ``(raw, env_action)``: what is scored (int index ``(...,)``, or the unclipped float
      sample shaped like ``head``), and what the environment receives (int32 ``raw +
      space.start``, or the sample clipped to the box in ``space.dtype``).
    """
    if _is_discrete(space):
        raw = jax.random.categorical(key, head)
        return raw, (raw + space.start).astype(jnp.int32)
    raw = head + jnp.exp(log_std) * jax.random.normal(key, head.shape, head.dtype)
    action = jnp.clip(raw.reshape(space.shape), space.low, space.high).astype(space.dtype)
    return raw, action


def log_prob(space, head: jax.Array, log_std: Optional[jax.Array], raw: jax.Array) -> jax.Array:
    """Log-probability of ``raw`` (as returned by ``sample``) under the policy's distribution.

    Args: as ``sample``, with ``raw`` an int index ``(...,)`` (Discrete) or a float sample
    shaped like ``head`` (Box, scored before clipping).

    Returns:
      float ``(...,)``: the categorical log-probability, or the diagonal Gaussian's log-density
      summed over action dimensions.
    """
    if _is_discrete(space):
        return jnp.take_along_axis(jax.nn.log_softmax(head), raw[..., None], axis=-1)[..., 0]
    z = (raw - head) * jnp.exp(-log_std)
    return jnp.sum(-0.5 * z**2 - log_std - 0.5 * _LOG_2PI, axis=-1)


def entropy(space, head: jax.Array, log_std: Optional[jax.Array]) -> jax.Array:
    """Entropy of the policy's distribution, float ``(...,)`` for ``head`` of shape ``(..., k)``.

    Categorical: ``-sum p log p`` over the logits. Diagonal Gaussian: ``sum(log_std) +
    k (1 + log 2 pi) / 2``, the same for every row (it does not depend on the mean).
    """
    if _is_discrete(space):
        logp = jax.nn.log_softmax(head)
        return -jnp.sum(jnp.exp(logp) * logp, axis=-1)
    return jnp.sum(log_std + 0.5 * (1.0 + _LOG_2PI), axis=-1) * jnp.ones(head.shape[:-1])
