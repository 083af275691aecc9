"""Craftax's symbolic environments as Tasks (``craftax/Craftax-Symbolic-AutoReset-v1`` and
``craftax/Craftax-Classic-Symbolic-AutoReset-v1``, the paper's ids).

Craftax's ``AutoReset`` envs reset inside ``step`` but hand back only the new episode's
observation, and their ``done`` lumps death (Classic: also lava; full: also beating the final
boss) together with the time limit (``EnvParams.max_timesteps``: 10,000 steps in Classic,
100,000 in Craftax). The adapter runs the matching ``NoAutoReset`` env and repeats the
``AutoReset`` step exactly (the key split in two, the step with the first half, a reset with
the second, the reset chosen on ``done``), so rollouts are those of the paper's AutoReset env,
step for step and key for key, with:

- ``terminated``: the env's ``is_terminal`` with the time limit lifted (death, lava, boss);
- ``truncated``: ``done`` without those (the time limit, ``max_episode_steps``);
- ``info["final_obs"]``: the observation of the step that ended the episode.

Observations are Craftax's symbolic ones, already a flat float32 vector in [0, 1] (Classic:
1345 values; Craftax: 8268). Every action (Classic: 17; Craftax: 43) is always allowed: an
action that does not apply (crafting without materials) does nothing.
"""

from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp

from eggroll_rl.envs.spaces import to_gymnasium
from eggroll_rl.envs.task import Task, check_action, check_env_params

SUITE = "craftax"

# Our id -> the Craftax env without autoreset that the adapter runs.
_VARIANTS = {
    "Craftax-Classic-Symbolic-AutoReset-v1": "Craftax-Classic-Symbolic-v1",
    "Craftax-Symbolic-AutoReset-v1": "Craftax-Symbolic-v1",
}
NO_TIME_LIMIT = 2**31 - 1


def names() -> list[str]:
    """Adapted env names, without importing Craftax."""
    return sorted(_VARIANTS)


def make(name: str, max_episode_steps: Optional[int] = None, **env_params) -> Task:
    """``env_params`` override fields of Craftax's ``EnvParams``; ``max_episode_steps`` sets
    ``max_timesteps``."""
    from craftax.craftax_env import make_craftax_env_from_name

    env_id = f"{SUITE}/{name}"
    if name not in _VARIANTS:
        raise ValueError(f"unknown Craftax env {name!r}; known: {names()}.")
    env = make_craftax_env_from_name(_VARIANTS[name], auto_reset=False)
    params = env.default_params
    check_env_params(env_id, params, env_params, episode_limit_field="max_timesteps")
    if max_episode_steps is not None:
        if int(max_episode_steps) < 1:
            raise ValueError(f"{env_id}: max_episode_steps must be >= 1, got {max_episode_steps}.")
        env_params["max_timesteps"] = int(max_episode_steps)
    params = params.replace(**env_params)
    without_time_limit = params.replace(max_timesteps=NO_TIME_LIMIT)
    action_space = to_gymnasium(env.action_space(params))

    def reset(key):
        return env.reset(key, params)

    def step(key, state, action):
        action = check_action(env_id, action_space, action)
        key_step, key_reset = jax.random.split(key)
        obs, state, reward, done, _ = env.step(key_step, state, action, params)
        fresh_obs, fresh_state = env.reset(key_reset, params)
        terminated, truncated = split_done(env, state, done, without_time_limit)
        next_obs = jax.lax.select(done, fresh_obs, obs)
        state = jax.tree_util.tree_map(lambda a, b: jax.lax.select(done, a, b), fresh_state, state)
        return (
            next_obs,
            state,
            jnp.asarray(reward, jnp.float32),
            terminated,
            truncated,
            {"final_obs": obs},
        )

    return Task(
        env_id=env_id,
        reset=reset,
        step=step,
        observation_space=to_gymnasium(env.observation_space(params)),
        action_space=action_space,
        max_episode_steps=int(params.max_timesteps),
    )


def split_done(env, state, done, params_without_time_limit):
    """``(terminated, truncated)`` of a step whose new ``state`` Craftax called ``done``.

    ``params_without_time_limit`` are the env params with ``max_timesteps`` out of reach, so
    ``env.is_terminal`` sees only the episode's real ends (death, lava, the final boss).
    """
    terminated = jnp.asarray(env.is_terminal(state, params_without_time_limit), bool)
    return terminated, jnp.logical_and(done, jnp.logical_not(terminated))
