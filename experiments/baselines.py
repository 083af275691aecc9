"""The random policy's return on a task: the zero point of PPO-normalised scores.

A normalised score ``(R - R_random) / (R_PPO - R_random)`` needs a return that means "learned
nothing"; a uniform-random policy (uniform over discrete actions, N(0, 1) clipped to the box
for continuous ones) is measured on the same task, with the same evaluation loop as training.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from eggroll_rl.envs.rollout import evaluate
from eggroll_rl.envs.task import Task


def random_return(task: Task, key: jax.Array, episodes: int = 32) -> float:
    """Mean return of the uniform-random policy over ``episodes`` fresh episodes."""

    def apply(_, obs):
        batch = obs.shape[: obs.ndim - len(task.observation_space.shape)]
        head = jnp.zeros(batch + (task.action_size,), jnp.float32)
        return head, None if task.discrete else jnp.zeros((task.action_size,), jnp.float32)

    run = jax.jit(lambda k: evaluate(task, apply, None, k, episodes, deterministic=False))
    return float(run(key).mean_return)
