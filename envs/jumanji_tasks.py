"""Jumanji environments as Tasks (``jumanji/<name>``, e.g. ``jumanji/Snake-v1``).

Jumanji's envs are pure ``reset(key) -> (state, timestep)`` and ``step(state, action)``, but
their observations are named tuples, their actions may be several integers, and most of them
report their own time limit as a *termination* (``step_type`` LAST with discount 0, e.g.
Snake at 4000 steps). The adapter therefore:

- flattens the observation: every field, in the order of the env's ``Observation`` tuple, cast
  to float32 and concatenated (Snake: grid + step count + action mask; Knapsack: weights,
  values, packed items, action mask; Game2048: board (tile exponents) + action mask). Values
  are the env's own (no rescaling); the action mask is an ordinary part of the observation.
- keeps the env's rule for invalid actions: the policy is a plain MLP and nothing is masked.
  Game2048 treats an illegal move as a no-op (board unchanged, reward 0, no new tile, the
  episode goes on); Knapsack ends the episode (terminated, reward 0) on an item already packed
  or too heavy; Snake ends it (terminated) when the snake turns back onto itself.
- turns a joint integer action (Jumanji's ``MultiDiscreteArray``, e.g. Tetris's
  (rotation, column) or Minesweeper's (row, column)) into one ``Discrete(prod(sizes))``,
  unravelled row-major, so index ``i`` is entry ``i`` of the flattened action mask.
- owns the time limit: an env with a ``time_limit`` is built with ``max_episode_steps + 1`` so
  that it never fires, and the adapter truncates at ``max_episode_steps`` (default: the env's
  own limit, else ``DEFAULT_MAX_EPISODE_STEPS``). Every other LAST step is split by its
  discount: 0 -> ``terminated``, otherwise ``truncated``.
- resets in the same step (``info["final_obs"]`` holds the last observation) per the Task
  contract.

Envs that cannot fit one scalar reward and one Discrete action are listed in ``NOT_ADAPTED``.
"""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any, Optional

import gymnasium
import jax
import jax.numpy as jnp
import numpy as np

from eggroll_rl.envs.task import Task, check_action

SUITE = "jumanji"
# Episode cap for envs with no time limit of their own. Only Game2048 gets near it: the other
# such envs (Knapsack, TSP, CVRP, BinPack, Sudoku, ...) end within a few dozen steps.
DEFAULT_MAX_EPISODE_STEPS = 1000
# A larger joint action space is no job for a categorical head on a 256-unit MLP.
MAX_JOINT_ACTIONS = 10_000

# Jumanji 1.1.2's registry, split by whether the adapter can serve the env.
_ADAPTED = (
    "BinPack-v2",
    "CVRP-v1",
    "Cleaner-v0",
    "FlatPack-v0",
    "Game2048-v1",
    "GraphColoring-v1",
    "Knapsack-v1",
    "Maze-v0",
    "Minesweeper-v0",
    "MultiCVRP-v0",
    "PacMan-v1",
    "RobotWarehouse-v0",
    "RubiksCube-partly-scrambled-v0",
    "RubiksCube-v0",
    "SlidingTilePuzzle-v0",
    "Snake-v1",
    "Sudoku-v0",
    "Sudoku-very-easy-v0",
    "TSP-v1",
    "Tetris-v0",
)
NOT_ADAPTED: dict[str, str] = {
    "Connector-v3": "one reward per agent, and 5**10 joint actions",
    "JobShop-v0": "21**10 joint actions (one job per machine)",
    "LevelBasedForaging-v0": "one reward per agent",
    "MMST-v0": f"36**3 joint actions (more than {MAX_JOINT_ACTIONS})",
    "SearchAndRescue-v0": "one reward per agent",
    "Sokoban-v0": "its levels are downloaded from the Hugging Face hub when the env is built",
}


def names() -> list[str]:
    """Adapted env names, without importing Jumanji (``registry.list_envs`` stays fast)."""
    return list(_ADAPTED)


def make(name: str, max_episode_steps: Optional[int] = None, **env_kwargs) -> Task:
    """``env_kwargs`` go to the Jumanji env's constructor (e.g. ``num_items=20``)."""
    import jumanji

    env_id = f"{SUITE}/{name}"
    if name in NOT_ADAPTED:
        raise ValueError(f"{env_id} is not adapted: {NOT_ADAPTED[name]}.")
    if "time_limit" in env_kwargs:
        raise ValueError(
            f"{env_id}: pass max_episode_steps={env_kwargs['time_limit']} instead of "
            "time_limit (the adapter enforces the limit, as a truncation)."
        )
    env = jumanji.make(name, **env_kwargs)
    has_time_limit = "time_limit" in inspect.signature(type(env).__init__).parameters
    own_limit = getattr(env, "time_limit", None) if has_time_limit else None
    if max_episode_steps is None:
        max_episode_steps = own_limit or DEFAULT_MAX_EPISODE_STEPS
    max_episode_steps = int(max_episode_steps)
    if max_episode_steps < 1:
        raise ValueError(f"{env_id}: max_episode_steps must be >= 1, got {max_episode_steps}.")
    if has_time_limit:
        # The env's own limit would end episodes as terminations: push it past ours.
        env = jumanji.make(name, time_limit=max_episode_steps + 1, **env_kwargs)

    reward_shape = tuple(env.reward_spec.shape)
    if reward_shape != ():
        raise ValueError(f"{env_id}: one reward per agent {reward_shape} cannot be adapted.")
    to_env_action, action_space = _action_adapter(env_id, env.action_spec)
    observation_space = _observation_space(env.observation_spec)

    def reset(key):
        state, timestep = env.reset(key)
        return flatten_observation(timestep.observation), (state, jnp.zeros((), jnp.int32))

    def step(key, state, action):
        action = check_action(env_id, action_space, action)
        env_state, t = state
        env_state, timestep = env.step(env_state, to_env_action(action))
        t = t + 1
        last = timestep.last()
        terminated = jnp.logical_and(last, timestep.discount == 0)
        truncated = jnp.logical_and(
            jnp.logical_or(last, t >= max_episode_steps), jnp.logical_not(terminated)
        )
        done = jnp.logical_or(terminated, truncated)
        fresh_state, fresh_timestep = env.reset(key)
        final_obs = flatten_observation(timestep.observation)
        obs = jnp.where(done, flatten_observation(fresh_timestep.observation), final_obs)
        env_state = _select(done, fresh_state, env_state)
        t = jnp.where(done, 0, t)
        return (
            obs,
            (env_state, t),
            jnp.asarray(timestep.reward, jnp.float32),
            terminated,
            truncated,
            {"final_obs": final_obs},
        )

    return Task(
        env_id=env_id,
        reset=reset,
        step=step,
        observation_space=observation_space,
        action_space=action_space,
        max_episode_steps=max_episode_steps,
    )


def flatten_observation(observation: Any) -> jax.Array:
    """Every field of a Jumanji observation, in tuple order, as one float32 vector."""
    leaves = jax.tree_util.tree_leaves(observation)
    return jnp.concatenate([jnp.asarray(leaf, jnp.float32).reshape(-1) for leaf in leaves])


def _select(done, fresh, stepped):
    return jax.tree_util.tree_map(lambda a, b: jax.lax.select(done, a, b), fresh, stepped)


def _action_adapter(env_id: str, spec):
    """``Discrete(n)`` over the env's integer action(s), and the map from index to env action."""
    from jumanji import specs

    if not isinstance(spec, specs.BoundedArray) or not jnp.issubdtype(spec.dtype, jnp.integer):
        raise ValueError(f"{env_id}: action spec {spec} is not a bounded integer array.")
    shape = tuple(spec.shape)
    low = np.broadcast_to(np.asarray(spec.minimum), shape).astype(np.int64)
    sizes = np.broadcast_to(np.asarray(spec.maximum), shape).astype(np.int64) - low + 1
    n = int(np.prod(sizes))
    if n > MAX_JOINT_ACTIONS:
        raise ValueError(
            f"{env_id}: {n} joint actions ({' x '.join(map(str, sizes.ravel()))}) exceed "
            f"MAX_JOINT_ACTIONS={MAX_JOINT_ACTIONS}."
        )
    dtype = spec.dtype

    def to_env_action(index):
        if shape == ():
            return (index + int(low)).astype(dtype)
        parts = jnp.unravel_index(index, tuple(int(s) for s in sizes.ravel()))
        return (jnp.stack(parts).reshape(shape) + jnp.asarray(low)).astype(dtype)

    return to_env_action, gymnasium.spaces.Discrete(n)


def _observation_space(spec) -> gymnasium.spaces.Box:
    """A float32 Box whose bounds are the fields' own bounds (unbounded fields: +-inf)."""
    lows, highs = [], []
    _collect_bounds(spec, spec.generate_value(), lows, highs)
    low, high = np.concatenate(lows), np.concatenate(highs)
    return gymnasium.spaces.Box(low=low, high=high, shape=low.shape, dtype=np.float32)


def _collect_bounds(spec, value, lows: list, highs: list) -> None:
    """Walk a spec alongside a value it generated, in the value's pytree (field) order."""
    from jumanji import specs

    if isinstance(spec, specs.Array):
        shape = tuple(np.shape(value))
        if tuple(spec.shape) != shape:
            raise ValueError(f"observation field {spec.name!r}: spec shape {spec.shape} != {shape}")
        if isinstance(spec, specs.BoundedArray):
            lows.append(np.broadcast_to(np.asarray(spec.minimum, np.float32), shape).ravel())
            highs.append(np.broadcast_to(np.asarray(spec.maximum, np.float32), shape).ravel())
        else:
            lows.append(np.full(int(np.prod(shape)), -np.inf, np.float32))
            highs.append(np.full(int(np.prod(shape)), np.inf, np.float32))
        return
    if hasattr(value, "_fields"):
        fields = value._fields
    elif dataclasses.is_dataclass(value):
        fields = [field.name for field in dataclasses.fields(value)]
    else:
        raise ValueError(f"cannot walk observation {type(value).__name__} (not a named tuple)")
    for name in fields:
        _collect_bounds(spec[name], getattr(value, name), lows, highs)
