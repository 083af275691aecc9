"""Brax environments as Tasks (``brax/<name>``, every env Brax registers).

Brax envs have no time limit and no autoreset of their own (its training wrappers do that, and
its training agents no longer run on current JAX), so the adapter adds both: episodes are
truncated at ``episode_length`` (1000, as in the paper) and reset in the same step, per the
Task contract. The default physics backend is ``spring``, the cheapest of Brax's backends per
step (Brax documents it as its fastest, least accurate backend); ``backend=`` picks another.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import gymnasium
import numpy as np

from eggroll_rl.envs.source_names import literal_names
from eggroll_rl.envs.task import Task, check_action

SUITE = "brax"
DEFAULT_BACKEND = "spring"
BACKENDS = ("spring", "positional", "generalized", "mjx")
EPISODE_LENGTH = 1000


def names() -> list[str]:
    """Brax's registered env names, read from its source (no import) when the literal is found."""
    listed = literal_names("brax", "envs/__init__.py", "_envs")
    if listed is not None:
        return sorted(listed)
    import brax.envs

    return sorted(brax.envs._envs)


def make(name: str, backend: str = DEFAULT_BACKEND, episode_length: int = EPISODE_LENGTH, **env_kwargs) -> Task:
    """``env_kwargs`` go to the Brax env's constructor (e.g. ``ctrl_cost_weight``)."""
    import brax.envs

    if backend not in BACKENDS:
        raise ValueError(f"brax/{name}: backend={backend!r} is not one of {BACKENDS}.")
    if episode_length < 1:
        raise ValueError(f"brax/{name}: episode_length must be >= 1, got {episode_length}.")
    env = brax.envs.get_environment(name, backend=backend, **env_kwargs)
    env_id = f"{SUITE}/{name}"
    observation_space = gymnasium.spaces.Box(
        -np.inf, np.inf, (env.observation_size,), np.float32
    )
    action_space = gymnasium.spaces.Box(-1.0, 1.0, (env.action_size,), np.float32)

    def reset(key):
        state = env.reset(key)
        return state.obs, (state, jnp.zeros((), jnp.int32))

    def step_without_reset(key, state, action):
        action = check_action(env_id, action_space, action)
        physics, t = state
        stepped = env.step(physics, action)
        t = t + 1
        terminated = stepped.done > 0.5
        truncated = jnp.logical_and(t >= episode_length, jnp.logical_not(terminated))
        reward = jnp.asarray(stepped.reward, jnp.float32)
        return stepped.obs, (stepped, t), reward, terminated, truncated, {"final_obs": stepped.obs}

    def step(key, state, action):
        _, (stepped, t), reward, terminated, truncated, info = step_without_reset(key, state, action)
        done = jnp.logical_or(terminated, truncated)
        fresh = env.reset(key)
        physics = jax.tree_util.tree_map(lambda a, b: jnp.where(done, a, b), fresh, stepped)
        t = jnp.where(done, 0, t)
        return physics.obs, (physics, t), reward, terminated, truncated, info

    return Task(
        env_id=env_id,
        reset=reset,
        step=step,
        observation_space=observation_space,
        action_space=action_space,
        max_episode_steps=int(episode_length),
        step_without_reset=step_without_reset,
    )
