"""Navix (MiniGrid in JAX) environments as Tasks (``navix/<name>``, e.g. ``navix/DoorKey-8x8``).

Ids drop Navix's ``Navix-`` prefix and ``-v0`` suffix: ``navix/DoorKey-8x8`` is
``Navix-DoorKey-8x8-v0``. Navix already separates the two ends of an episode
(``Timestep.step_type``: 1 truncation at ``max_steps``, 2 termination, termination winning a
tie), and the adapter reads them as they are. Its public ``step`` resets on the call *after* an
episode ends (that call's action is dropped), which breaks the Task contract and, under
``vmap``, computes a reset inside every step; the adapter therefore steps with the env's
transition ``Environment._step`` and resets in the same step itself, keeping the final
observation in ``info["final_obs"]``.

Observations are Navix's default (``symbolic``: the full grid as (object, colour, state)
triples, uint8 ``H x W x 3``), flattened to float32; minigrid has no action mask and all 7
actions are always allowed. ``max_episode_steps`` is the env's ``max_steps``: 100, the default
of ``navix.make`` for every env (``max_episode_steps=`` overrides it).
"""

from __future__ import annotations

from typing import Optional

import gymnasium
import jax
import jax.numpy as jnp
import numpy as np

from eggroll_rl.envs.task import Task, check_action

SUITE = "navix"

# Navix 0.7.4's registry, without the "Navix-" prefix and the "-v0" suffix.
_NAMES = (
    "DistShift1",
    "DistShift2",
    "DoorKey-16x16",
    "DoorKey-5x5",
    "DoorKey-6x6",
    "DoorKey-8x8",
    "DoorKey-Random-16x16",
    "DoorKey-Random-5x5",
    "DoorKey-Random-6x6",
    "DoorKey-Random-8x8",
    "Dynamic-Obstacles-16x16",
    "Dynamic-Obstacles-5x5",
    "Dynamic-Obstacles-5x5-Random",
    "Dynamic-Obstacles-6x6",
    "Dynamic-Obstacles-6x6-Random",
    "Dynamic-Obstacles-8x8",
    "Empty-16x16",
    "Empty-5x5",
    "Empty-6x6",
    "Empty-8x8",
    "Empty-Random-16x16",
    "Empty-Random-5x5",
    "Empty-Random-6x6",
    "Empty-Random-8x8",
    "FourRooms",
    "GoToDoor-5x5",
    "GoToDoor-6x6",
    "GoToDoor-8x8",
    "KeyCorridorS3R1",
    "KeyCorridorS3R2",
    "KeyCorridorS3R3",
    "KeyCorridorS4R3",
    "KeyCorridorS5R3",
    "KeyCorridorS6R3",
    "LavaGapS5",
    "LavaGapS6",
    "LavaGapS7",
    "SimpleCrossingS11N5",
    "SimpleCrossingS9N1",
    "SimpleCrossingS9N2",
    "SimpleCrossingS9N3",
)


def names() -> list[str]:
    """Adapted env names, without importing Navix (``registry.list_envs`` stays fast)."""
    return list(_NAMES)


def navix_id(name: str) -> str:
    """``DoorKey-8x8`` -> ``Navix-DoorKey-8x8-v0``, the id ``navix.make`` knows."""
    return f"Navix-{name}-v0"


def make(name: str, max_episode_steps: Optional[int] = None, **env_kwargs) -> Task:
    """``env_kwargs`` go to ``navix.make`` (e.g. ``observation_fn=navix.observations.rgb``)."""
    import navix

    env_id = f"{SUITE}/{name}"
    if "max_steps" in env_kwargs:
        raise ValueError(f"{env_id}: pass max_episode_steps= instead of max_steps=.")
    if max_episode_steps is not None:
        if int(max_episode_steps) < 1:
            raise ValueError(f"{env_id}: max_episode_steps must be >= 1, got {max_episode_steps}.")
        env_kwargs["max_steps"] = int(max_episode_steps)
    env = navix.make(navix_id(name), **env_kwargs)

    action_space = gymnasium.spaces.Discrete(int(env.action_space.n))
    observation_space = _observation_space(env.observation_space.shape, env.observation_space.dtype)

    def reset(key):
        timestep = env.reset(key)
        return _flat(timestep.observation), timestep

    def step(key, timestep, action):
        action = check_action(env_id, action_space, action)
        stepped = env._step(timestep, action)
        terminated = stepped.is_termination()
        truncated = stepped.is_truncation()
        done = jnp.logical_or(terminated, truncated)
        fresh = env.reset(key)
        timestep = jax.tree_util.tree_map(
            lambda a, b: jax.lax.select(done, a, b), fresh, stepped
        )
        return (
            _flat(timestep.observation),
            timestep,
            jnp.asarray(stepped.reward, jnp.float32),
            terminated,
            truncated,
            {"final_obs": _flat(stepped.observation)},
        )

    return Task(
        env_id=env_id,
        reset=reset,
        step=step,
        observation_space=observation_space,
        action_space=action_space,
        max_episode_steps=int(env.max_steps),
    )


def _flat(observation: jax.Array) -> jax.Array:
    return jnp.asarray(observation, jnp.float32).reshape(-1)


def _observation_space(shape, dtype) -> gymnasium.spaces.Box:
    # Navix's own space says symbolic values stop at 8; object tags reach 10. Integer
    # observations are bounded by their dtype, float ones are not bounded.
    size = int(np.prod(shape))
    if jnp.issubdtype(dtype, jnp.integer):
        info = np.iinfo(dtype)
        low, high = float(info.min), float(info.max)
    else:
        low, high = -np.inf, np.inf
    return gymnasium.spaces.Box(low=low, high=high, shape=(size,), dtype=np.float32)
