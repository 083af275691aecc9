"""Gymnax environments as Tasks (``gymnax/<name>`` for every registered gymnax env).

Gymnax 1.0.1 already separates termination from truncation and auto-resets in the same step;
the adapter binds the env params, converts spaces to Gymnasium's and checks actions.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from eggroll_rl.envs.gymnax_render import renderer
from eggroll_rl.envs.source_names import literal_names
from eggroll_rl.envs.spaces import to_gymnasium
from eggroll_rl.envs.task import Task, check_action, check_env_params

SUITE = "gymnax"


def names() -> list[str]:
    """gymnax's built-in env ids, read from its source (no import) when the literal is found."""
    listed = literal_names("gymnax", "registration.py", "_BUILTIN_ENV_IDS")
    if listed is not None:
        return listed
    import gymnax

    return list(gymnax.registered_envs)


def make(name: str, **env_params) -> Task:
    """``env_params`` override fields of the env's default params (e.g. max_steps_in_episode)."""
    import gymnax

    env, params = gymnax.make(name)
    if env_params:
        check_env_params(f"{SUITE}/{name}", params, env_params)
        params = params.replace(**env_params)
    env_id = f"{SUITE}/{name}"
    action_space = to_gymnasium(env.action_space(params))

    def reset(key):
        return env.reset(key, params)

    def step(key, state, action):
        action = check_action(env_id, action_space, action)
        obs, state, reward, terminated, truncated, info = env.step(key, state, action, params)
        return _outputs(obs, state, reward, terminated, truncated, info["final_observation"])

    def step_without_reset(key, state, action):
        # gymnax's own step minus its reset: the same key split, so trajectories match.
        action = check_action(env_id, action_space, action)
        key_step, _ = jax.random.split(key)
        obs, state, reward, terminated, _ = env.step_env(key_step, state, action, params)
        truncated = env.is_truncated(state, params)
        return _outputs(obs, state, reward, terminated, truncated, obs)

    return Task(
        env_id=env_id,
        reset=reset,
        step=step,
        observation_space=to_gymnasium(env.observation_space(params)),
        action_space=action_space,
        max_episode_steps=int(params.max_steps_in_episode),
        render=renderer(name),
        step_without_reset=step_without_reset,
    )


def _outputs(obs, state, reward, terminated, truncated, final_obs):
    return (
        obs,
        state,
        jnp.asarray(reward, jnp.float32),
        jnp.asarray(terminated, bool),
        jnp.asarray(truncated, bool),
        {"final_obs": final_obs},
    )
