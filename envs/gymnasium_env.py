"""Our JAX tasks as Gymnasium environments: ``gymnasium.make("eggroll_rl/CartPole-v1")``.

Users of Gymnasium know ``make``, ``reset(seed=...)``, the five-tuple ``step``, ``check_env`` and
``make_vec``; this module lets them use every task of ``eggroll_rl.envs`` through exactly that
API, with NumPy in and out. ``TaskEnv`` is one episode at a time, like any Gymnasium env (the
task's same-step autoreset is held back until ``reset()``); ``TaskVectorEnv`` is the task itself,
vmapped and jitted (one compiled call per step for all sub-envs), with Gymnasium's same-step
autoreset convention (``info["final_obs"]``, ``info["final_info"]`` and their ``_`` masks).
Every id ``<suite>/<name>`` of ``list_envs()`` is registered as ``eggroll_rl/<name>``; if two
suites share a name, the one first in ``list_envs()`` order keeps it (the other is still
reachable as ``gymnasium.make("eggroll_rl/<name>", env_id="<suite>/<name>")``).
"""

from __future__ import annotations

import functools
import warnings
from typing import Any, Iterable, Optional

import gymnasium
import jax
import jax.numpy as jnp
import numpy as np
from gymnasium.vector import AutoresetMode
from gymnasium.vector.utils import batch_space

from eggroll_rl.envs import registry
from eggroll_rl.envs.task import Task

NAMESPACE = "eggroll_rl"
RENDER_FPS = 30  # frames per second for videos: the Task interface carries no frame rate
ENTRY_POINT = "eggroll_rl.envs.gymnasium_env:TaskEnv"
VECTOR_ENTRY_POINT = "eggroll_rl.envs.gymnasium_env:TaskVectorEnv"

# gymnasium id -> our id, for every id this process registered (or found registered by us).
_REGISTERED: dict[str, str] = {}


def key_for_seed(seed: int) -> jax.Array:
    """The JAX key a Gymnasium seed stands for: ``jax.random.key(seed)`` for seeds below 2**32.

    Larger seeds fold their high bits in, so that they do not alias small ones.
    """
    seed = int(seed)
    if seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed}.")
    key = jax.random.key(seed & 0xFFFFFFFF)
    while seed := seed >> 32:
        key = jax.random.fold_in(key, seed & 0xFFFFFFFF)
    return key


def gymnasium_id(env_id: str) -> str:
    """The Gymnasium id of one of our ids: ``gymnax/CartPole-v1`` -> ``eggroll_rl/CartPole-v1``."""
    if "/" not in env_id:
        raise ValueError(f"env id {env_id!r} has no suite prefix (e.g. 'gymnax/{env_id}').")
    return f"{NAMESPACE}/{env_id.split('/', 1)[1]}"


def register_gymnasium(env_ids: Optional[Iterable[str]] = None) -> dict[str, str]:
    """Register our ids with Gymnasium (default: every id of ``list_envs()``); idempotent.

    Returns ``{our id: gymnasium id}`` for the ids now available. Nothing is constructed: a
    registration is a name and an entry point. An id that Gymnasium already has from someone
    else, or whose name another suite took first, is skipped with a warning.
    """
    env_ids = registry.list_envs() if env_ids is None else list(env_ids)
    available = {}
    for env_id in env_ids:
        gym_id = gymnasium_id(env_id)
        owner = _REGISTERED.get(gym_id)
        existing = gymnasium.registry.get(gym_id)
        if owner is None and existing is not None and _is_ours(existing):
            owner = _REGISTERED[gym_id] = existing.kwargs["env_id"]
        if owner == env_id:
            available[env_id] = gym_id
            continue
        if owner is not None:
            warnings.warn(
                f"{env_id} is not registered with Gymnasium as {gym_id}: that name belongs to "
                f"{owner}. Make it with gymnasium.make({gym_id!r}, env_id={env_id!r}).",
                stacklevel=2,
            )
            continue
        if existing is not None:
            warnings.warn(
                f"Gymnasium already has an env {gym_id!r} (entry point {existing.entry_point!r}); "
                f"{env_id} is left out of Gymnasium's registry.",
                stacklevel=2,
            )
            continue
        try:
            gymnasium.register(
                id=gym_id,
                entry_point=ENTRY_POINT,
                vector_entry_point=VECTOR_ENTRY_POINT,
                kwargs={"env_id": env_id},
            )
        except gymnasium.error.Error as error:
            warnings.warn(f"Gymnasium refused {gym_id!r} for {env_id}: {error}", stacklevel=2)
            continue
        _REGISTERED[gym_id] = env_id
        available[env_id] = gym_id
    return available


def _is_ours(spec: gymnasium.envs.registration.EnvSpec) -> bool:
    return spec.entry_point == ENTRY_POINT and "env_id" in (spec.kwargs or {})


def _check_render_mode(task: Task, render_mode: Optional[str]) -> None:
    if render_mode is None:
        return
    if render_mode != "rgb_array":
        raise ValueError(
            f"{task.env_id}: render_mode={render_mode!r} is not supported; the only mode is "
            "'rgb_array' (gymnasium.make adds 'human' and 'rgb_array_list' on top of it)."
        )
    if task.render is None:
        raise ValueError(
            f"{task.env_id} cannot render: its Task has no render function (Task.render is None). "
            "Make it without render_mode, or give its suite adapter a render function."
        )


def _metadata(task: Task) -> dict[str, Any]:
    # A fresh dict per instance: SyncVectorEnv writes its autoreset mode into the first
    # sub-env's metadata, which must not leak into the class.
    return {
        "render_modes": ["rgb_array"] if task.render is not None else [],
        "render_fps": RENDER_FPS,
    }


def _to_numpy(space: gymnasium.spaces.Space, value: Any) -> Any:
    """A JAX value (batched or not) as NumPy in the dtype of ``space``."""
    if isinstance(space, gymnasium.spaces.Dict):
        return {name: _to_numpy(sub, value[name]) for name, sub in space.spaces.items()}
    if isinstance(space, gymnasium.spaces.Tuple):
        return tuple(_to_numpy(sub, v) for sub, v in zip(space.spaces, value))
    array = np.asarray(value)
    return array.astype(space.dtype, copy=False) if space.dtype is not None else array


def _check_actions(
    env_id: str, space: gymnasium.spaces.Space, actions: Any, batch: tuple
) -> np.ndarray:
    """``actions`` as NumPy in the space's dtype and shape ``batch + space.shape``, checked."""
    if not isinstance(space, (gymnasium.spaces.Discrete, gymnasium.spaces.Box)):
        return actions
    shape = batch + tuple(space.shape)
    raw = np.asarray(actions)
    if raw.shape != shape:
        raise ValueError(
            f"{env_id}: actions must have shape {shape} for {space}, got shape {raw.shape}."
        )
    if isinstance(space, gymnasium.spaces.Discrete):
        if not np.issubdtype(raw.dtype, np.integer):
            raise ValueError(
                f"{env_id}: actions for {space} must be integers, got dtype {raw.dtype}."
            )
        bad = (raw < space.start) | (raw >= space.start + space.n)
    else:
        raw = raw.astype(space.dtype, copy=False)
        bad = np.isnan(raw) | (raw < space.low) | (raw > space.high)
    if np.any(bad):
        raise ValueError(
            f"{env_id}: action(s) {raw[bad].tolist()[:8]} are outside the action space {space}."
        )
    return raw.astype(space.dtype, copy=False)


def _single_step_fn(task: Task):
    """``(key, state, action) -> (key, obs, state, reward, terminated, truncated, final_obs)``."""

    def advance(key, state, action):
        key, step_key = jax.random.split(key)
        obs, state, reward, terminated, truncated, info = task.step(step_key, state, action)
        if "final_obs" not in info:
            raise ValueError(
                f"{task.env_id}: Task.step must return info['final_obs'], the last observation of "
                "an episode that ended this step (see the Task contract in eggroll_rl.envs.task)."
            )
        return key, obs, state, reward, terminated, truncated, info["final_obs"]

    return advance


def _single_reset_fn(task: Task):
    def reset(key):
        key, reset_key = jax.random.split(key)
        obs, state = task.reset(reset_key)
        return key, obs, state

    return reset


def _masked_reset(task: Task, keys, states, obs, mask):
    """Reset every sub-env (``states`` None) or those where ``mask`` is true."""
    new_keys, new_obs, new_states = jax.vmap(_single_reset_fn(task))(keys)
    if states is None:
        return new_keys, new_obs, new_states
    pick = lambda new, old: jnp.where(mask.reshape(mask.shape + (1,) * (new.ndim - 1)), new, old)
    return jax.tree_util.tree_map(pick, (new_keys, new_obs, new_states), (keys, obs, states))


class _Compiled:
    """A task and its jitted functions, shared by every env made with the same id and kwargs,
    so that ``SyncVectorEnv`` over ``TaskEnv``s or repeated ``make`` calls compile once."""

    def __init__(self, task: Task):
        self.task = task
        self.reset = jax.jit(_single_reset_fn(task))
        self.step = jax.jit(_single_step_fn(task))
        self.vector_reset = jax.jit(functools.partial(_masked_reset, task))
        self.vector_step = jax.jit(jax.vmap(_single_step_fn(task)))


_COMPILED: dict[tuple, _Compiled] = {}


def _compiled(env_id: str, task_kwargs: dict) -> _Compiled:
    # The factory is part of the key: re-registering an id (overwrite=True) gives a new task.
    factory = getattr(registry, "_FACTORIES", {}).get(env_id)
    try:
        key = (env_id, factory, tuple(sorted(task_kwargs.items())))
        hash(key)
    except TypeError:  # unhashable kwargs: no sharing
        return _Compiled(registry.make(env_id, **task_kwargs))
    if factory is None or key not in _COMPILED:
        compiled = _Compiled(registry.make(env_id, **task_kwargs))
        if factory is None:
            return compiled
        _COMPILED[key] = compiled
    return _COMPILED[key]


class TaskEnv(gymnasium.Env):
    """One episode at a time of the task ``env_id`` (any id of ``eggroll_rl.envs.list_envs()``).

    ``task_kwargs`` go to ``eggroll_rl.envs.make``. Steps are jitted; observations, rewards and
    flags come back as NumPy and Python scalars. After ``terminated or truncated`` the env holds
    the finished episode and ``step`` raises until ``reset()``.

    Seeding: ``reset(seed=s)`` starts the key chain ``key_for_seed(s)``; every reset and step
    splits it, ``key, subkey = jax.random.split(key)``, and hands ``subkey`` to the task.
    ``reset()`` without a seed right after an episode ended continues into the episode the task
    already started in its same-step autoreset, so the episodes of a ``TaskEnv`` are the JAX
    task's own stream for that key. Sub-env ``i`` of a ``TaskVectorEnv`` reset with seed ``s``
    behaves exactly like a ``TaskEnv`` reset with seed ``s + i`` (as in ``SyncVectorEnv``).
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": RENDER_FPS}

    def __init__(self, env_id: str, render_mode: Optional[str] = None, **task_kwargs):
        compiled = _compiled(env_id, task_kwargs)
        self.task = compiled.task
        _check_render_mode(self.task, render_mode)
        self.env_id = env_id
        self.metadata = _metadata(self.task)
        self.render_mode = render_mode
        self.observation_space = self.task.observation_space
        self.action_space = self.task.action_space
        self.max_episode_steps = self.task.max_episode_steps
        self._reset_fn, self._step_fn = compiled.reset, compiled.step
        self._key = None
        self._state = None
        self._render_state = None
        self._episode_over = False

    def reset(self, *, seed: Optional[int] = None, options: Optional[dict] = None):
        super().reset(seed=seed)
        if seed is not None:
            self._key = key_for_seed(seed)
        elif self._key is None:
            self._key = key_for_seed(int(self.np_random.integers(2**32)))
        elif self._episode_over:
            # The task already started the next episode in its same-step autoreset.
            self._episode_over = False
            self._render_state = self._state
            return _to_numpy(self.observation_space, self._next_obs), {}
        self._key, obs, self._state = self._reset_fn(self._key)
        self._render_state = self._state
        self._episode_over = False
        return _to_numpy(self.observation_space, obs), {}

    def step(self, action):
        if self._state is None:
            raise RuntimeError(f"{self.env_id}: call reset() before step().")
        if self._episode_over:
            raise RuntimeError(
                f"{self.env_id}: the episode has ended (terminated or truncated); call reset() "
                "before stepping again."
            )
        action = _check_actions(self.env_id, self.action_space, action, ())
        previous = self._state
        self._key, obs, self._state, reward, terminated, truncated, final_obs = self._step_fn(
            self._key, self._state, action
        )
        terminated, truncated = bool(terminated), bool(truncated)
        if terminated or truncated:
            # The task has reset itself: keep its new episode for reset(), show the last frame
            # we have of the finished one (the state before the final step).
            self._episode_over = True
            self._next_obs = obs
            self._render_state = previous
            obs = final_obs
        else:
            self._render_state = self._state
        return _to_numpy(self.observation_space, obs), float(reward), terminated, truncated, {}

    def render(self):
        if self.render_mode is None:
            gymnasium.logger.warn(
                f"{self.env_id}: render() was called without a render_mode; make the env with "
                "render_mode='rgb_array'."
            )
            return None
        if self._render_state is None:
            raise RuntimeError(f"{self.env_id}: call reset() before render().")
        return np.asarray(self.task.render(self._render_state))


class TaskVectorEnv(gymnasium.vector.VectorEnv):
    """``num_envs`` copies of the task ``env_id``, vmapped: one jitted call per step for all.

    Same-step autoreset (the task's own): when sub-env ``i`` ends, the returned observation
    already starts its next episode, ``info["final_obs"][i]`` is the last observation of the
    finished one and ``info["_final_obs"][i]`` is true (likewise ``final_info``/``_final_info``),
    as in Gymnasium's ``SyncVectorEnv(autoreset_mode=AutoresetMode.SAME_STEP)``.
    """

    metadata = {
        "render_modes": ["rgb_array"],
        "render_fps": RENDER_FPS,
        "autoreset_mode": AutoresetMode.SAME_STEP,
    }

    def __init__(
        self, num_envs: int, env_id: str, render_mode: Optional[str] = None, **task_kwargs
    ):
        if not isinstance(num_envs, (int, np.integer)) or num_envs < 1:
            raise ValueError(f"num_envs must be a positive int, got {num_envs!r}.")
        compiled = _compiled(env_id, task_kwargs)
        self.task = compiled.task
        _check_render_mode(self.task, render_mode)
        self.env_id = env_id
        self.num_envs = int(num_envs)
        self.metadata = {**_metadata(self.task), "autoreset_mode": AutoresetMode.SAME_STEP}
        self.render_mode = render_mode
        self.single_observation_space = self.task.observation_space
        self.single_action_space = self.task.action_space
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.action_space = batch_space(self.single_action_space, self.num_envs)
        self.max_episode_steps = self.task.max_episode_steps
        self._reset_fn, self._step_fn = compiled.vector_reset, compiled.vector_step
        self._keys = None
        self._states = None

    def reset(self, *, seed: Optional[int] = None, options: Optional[dict] = None):
        super().reset(seed=seed)
        options = dict(options or {})
        mask = options.pop("reset_mask", None)
        if mask is not None:
            mask = np.asarray(mask)
            if mask.shape != (self.num_envs,) or mask.dtype != np.bool_:
                raise ValueError(
                    f"options['reset_mask'] must be a bool array of shape ({self.num_envs},), got "
                    f"{mask.dtype} {mask.shape}."
                )
            if self._states is None:
                raise RuntimeError(f"{self.env_id}: reset every sub-env (no reset_mask) first.")
        if seed is not None:
            keys = jnp.stack([key_for_seed(seed + i) for i in range(self.num_envs)])
        elif self._keys is None:
            keys = jnp.stack(
                [key_for_seed(s) for s in self.np_random.integers(2**32, size=self.num_envs)]
            )
        else:
            keys = self._keys
        if mask is None:
            self._keys, self._obs, self._states = self._reset_fn(keys, None, None, None)
        else:
            self._keys, self._obs, self._states = self._reset_fn(
                keys, self._states, self._obs, jnp.asarray(mask)
            )
        return _to_numpy(self.single_observation_space, self._obs), {}

    def step(self, actions):
        if self._states is None:
            raise RuntimeError(f"{self.env_id}: call reset() before step().")
        actions = _check_actions(self.env_id, self.single_action_space, actions, (self.num_envs,))
        self._keys, self._obs, self._states, rewards, terminated, truncated, final_obs = (
            self._step_fn(self._keys, self._states, actions)
        )
        terminated, truncated = np.asarray(terminated), np.asarray(truncated)
        done = terminated | truncated
        infos: dict[str, Any] = {}
        if done.any():
            final = _to_numpy(self.single_observation_space, final_obs)
            per_env = np.full(self.num_envs, None, dtype=object)
            for i in np.flatnonzero(done):
                per_env[i] = jax.tree_util.tree_map(lambda x: x[i], final)
            infos = {
                "final_obs": per_env,
                "_final_obs": done,
                "final_info": {},
                "_final_info": done.copy(),
            }
        return (
            _to_numpy(self.single_observation_space, self._obs),
            np.asarray(rewards),
            terminated,
            truncated,
            infos,
        )

    def render(self):
        if self.render_mode is None:
            gymnasium.logger.warn(f"{self.env_id}: render() needs render_mode='rgb_array'.")
            return None
        if self._states is None:
            raise RuntimeError(f"{self.env_id}: call reset() before render().")
        return tuple(
            np.asarray(self.task.render(jax.tree_util.tree_map(lambda x: x[i], self._states)))
            for i in range(self.num_envs)
        )


def register_on_import() -> None:
    """``register_gymnasium()`` for ``import eggroll_rl.envs``: a failure warns, never breaks."""
    try:
        register_gymnasium()
    except Exception as error:  # e.g. a broken optional suite: the rest of envs must still import
        warnings.warn(
            f"could not register eggroll_rl envs with Gymnasium ({type(error).__name__}: {error}); "
            "call eggroll_rl.envs.register_gymnasium() to see the full error.",
            stacklevel=2,
        )
