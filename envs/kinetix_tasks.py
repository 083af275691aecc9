"""The paper's three Kinetix levels as Tasks (``kinetix/s-h1_thrust_over_ball``,
``kinetix/m-h17_thrustcontrol_left``, ``kinetix/l-hard_pinball``).

An id is the level's name in Kinetix (``s/h1_thrust_over_ball``: size group ``s``, ``m`` or
``l``, then the level) with its ``/`` written ``-``, because Gymnasium ids (``eggroll_rl/<name>``)
allow one slash only. Each level is the JSON file kinetix-env ships
(``kinetix/levels/<size>/<level>.json``, read by ``kinetix.util.saving.load_from_json_file``),
which also holds the level's physics and size parameters; ``make_kinetix_env`` builds the env,
and every episode starts from that one level (a reset draws nothing).

Settings (the paper's notes name the levels but not these, so they are Kinetix's defaults for
an MLP policy): flat symbolic observations (``ObservationType.SYMBOLIC_FLAT``, one float32
vector per level, clipped by Kinetix to [-10, 10]); continuous actions (``ActionType.CONTINUOUS``:
``Box(-1, 1, (6,))``, one value per motor binding (4) and thruster binding (2); Kinetix clips
thrusters to [0, 1]); episodes of 256 steps (the levels' ``max_timesteps``); Kinetix's reward
(+1 on reaching the goal, -1 on touching a forbidden shape, plus its dense distance shaping,
``dense_reward_scale`` 0.1). ``make(..., action_type="discrete")`` gives Kinetix's
``Discrete(11)`` actions instead.

Kinetix's ``done`` lumps the goal, the forbidden shape and NaN physics together with the time
limit. The adapter steps the env with the time limit lifted (``max_timesteps`` out of reach, the
only thing that field changes for these observations), so that

- ``terminated``: Kinetix's own end of an episode (goal, forbidden shape, NaN state);
- ``truncated``: ``max_episode_steps`` steps without one (default 256, the level's own limit);
- ``info["final_obs"]``: the last observation of the finished episode; the returned ``obs`` and
  state already belong to the next episode (same-step autoreset, the Task contract).

Rewards, observations and ``terminated | truncated`` equal those of Kinetix's own auto-resetting
env step for step. Installing: ``pip install -e ".[kinetix]"`` then
``pip install --no-deps kinetix-env==3.0.2`` (kinetix-env declares jax<=0.9, see ``suites``).
"""

from __future__ import annotations

from typing import Optional

import gymnasium
import jax
import jax.numpy as jnp
import numpy as np

from eggroll_rl.envs.task import Task, check_action, check_env_params

SUITE = "kinetix"
# Our name -> the level file kinetix-env ships (the paper's three levels).
_LEVELS = {
    "s-h1_thrust_over_ball": "s/h1_thrust_over_ball",
    "m-h17_thrustcontrol_left": "m/h17_thrustcontrol_left",
    "l-hard_pinball": "l/hard_pinball",
}
ACTION_TYPES = ("continuous", "discrete")
NO_TIME_LIMIT = 2**31 - 1
OBS_CLIP = 10.0  # Kinetix clips symbolic observations to [-10, 10]


def names() -> list[str]:
    """Adapted level names, without importing Kinetix (``registry.list_envs`` stays fast)."""
    return sorted(_LEVELS)


def level_file(name: str) -> str:
    """``s-h1_thrust_over_ball`` -> ``s/h1_thrust_over_ball``, the level's name in Kinetix."""
    if name not in _LEVELS:
        raise ValueError(f"unknown Kinetix level {name!r}; known: {names()}.")
    return _LEVELS[name]


def make(
    name: str,
    max_episode_steps: Optional[int] = None,
    action_type: str = "continuous",
    **env_params,
) -> Task:
    """``env_params`` override fields of the level's Kinetix ``EnvParams`` (e.g.
    ``dense_reward_scale=0.0``); ``max_episode_steps`` replaces ``max_timesteps``."""
    env_id = f"{SUITE}/{name}"
    try:
        from kinetix.environment.env import make_kinetix_env
        from kinetix.environment.spaces import ActionType, ObservationType
        from kinetix.util.saving import load_from_json_file
    except ImportError as error:  # kinetix-env installed with --no-deps, but not the extra
        raise ImportError(
            f"{env_id}: importing Kinetix failed ({error}); its dependencies come with "
            'pip install -e ".[kinetix]" (then pip install --no-deps kinetix-env==3.0.2).'
        ) from error
    level, static_params, params = load_from_json_file(level_file(name))
    check_env_params(env_id, params, env_params, episode_limit_field="max_timesteps")
    if action_type not in ACTION_TYPES:
        raise ValueError(
            f"{env_id}: action_type must be one of {ACTION_TYPES}, got {action_type!r} "
            "(multi_discrete has no single Discrete or Box space)."
        )
    if max_episode_steps is None:
        max_episode_steps = int(params.max_timesteps)
    max_episode_steps = int(max_episode_steps)
    if max_episode_steps < 1:
        raise ValueError(f"{env_id}: max_episode_steps must be >= 1, got {max_episode_steps}.")
    params = params.replace(max_timesteps=max_episode_steps, **env_params)
    lifted = params.replace(max_timesteps=NO_TIME_LIMIT)
    env = make_kinetix_env(
        action_type=ActionType.from_string(action_type),
        observation_type=ObservationType.SYMBOLIC_FLAT,
        reset_fn=lambda key: level,
        env_params=params,
        static_env_params=static_params,
        auto_reset=False,
    )
    kinetix_space = env.action_space(params)
    if action_type == "discrete":
        action_space = gymnasium.spaces.Discrete(int(kinetix_space.n))
    else:
        size = int(np.prod(kinetix_space.shape))
        action_space = gymnasium.spaces.Box(-1.0, 1.0, (size,), np.float32)
    size = int(np.prod(env.observation_space(params).shape))
    observation_space = gymnasium.spaces.Box(-OBS_CLIP, OBS_CLIP, (size,), np.float32)

    def reset(key):
        obs, state = env.reset(key, params)
        return _flat(obs), state

    def transition(key, state, action):
        action = check_action(env_id, action_space, action)
        obs, state, reward, done, _ = env.step(key, state, action, lifted)
        terminated = jnp.asarray(done, bool)  # the time limit cannot fire: Kinetix's own ends
        truncated = jnp.logical_and(state.timestep >= max_episode_steps, jnp.logical_not(terminated))
        return _flat(obs), state, jnp.asarray(reward, jnp.float32), terminated, truncated

    def step_without_reset(key, state, action):
        obs, state, reward, terminated, truncated = transition(key, state, action)
        return obs, state, reward, terminated, truncated, {"final_obs": obs}

    def step(key, state, action):
        key_step, key_reset = jax.random.split(key)
        obs, stepped, reward, terminated, truncated = transition(key_step, state, action)
        done = jnp.logical_or(terminated, truncated)
        fresh_obs, fresh_state = reset(key_reset)
        next_obs = jnp.where(done, fresh_obs, obs)
        state = jax.tree_util.tree_map(
            lambda a, b: jax.lax.select(done, a, b), fresh_state, stepped
        )
        return next_obs, state, reward, terminated, truncated, {"final_obs": obs}

    return Task(
        env_id=env_id,
        reset=reset,
        step=step,
        observation_space=observation_space,
        action_space=action_space,
        max_episode_steps=max_episode_steps,
        step_without_reset=step_without_reset,
    )


def _flat(obs: jax.Array) -> jax.Array:
    return jnp.asarray(obs, jnp.float32).reshape(-1)
