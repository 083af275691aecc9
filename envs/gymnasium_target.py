"""Any Gymnasium env as an ES training target (``gymnasium/<Id>``), evaluated on the host.

Most environments people care about (MuJoCo, Box2D, Atari, their own) are ordinary Gymnasium
envs that step in Python, not JAX functions, so they cannot live inside the compiled rollout of
``eggroll_rl.envs.rollout``. Here the population is laid over the sub-envs of one Gymnasium
vector env (``N x k`` of them, member ``i``'s episode ``j`` in sub-env ``i*k + j``, seeded
``seed + i*k + j`` as ``SyncVectorEnv`` does), the vector env's own loop steps them, and each
step's actions for the whole population come from ONE jitted call (``population_apply`` on
observations shaped ``(N, k, ...)``, then ``select_action``). Each sub-env's first episode is
counted once, whatever the vector env's autoreset mode, and the loop stops as soon as every
first episode is over. The result is the JAX path's ``RolloutResult``, so trainers can swap
one path for the other (``agents.gymnasium_trainers`` does, for every algorithm).
``target_task`` reads and checks an env's spaces once; ``list_gymnasium_ids`` names the envs
installed here that trainers accept.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
from typing import Any, Callable, Optional, Union

import gymnasium
import jax
import jax.numpy as jnp
import numpy as np
from gymnasium.vector import AutoresetMode, VectorEnv

from eggroll_rl.envs import obs_norm
from eggroll_rl.envs.actions import select_action
from eggroll_rl.envs.rollout import Episodes, Evaluation, RolloutResult

PREFIX = "gymnasium/"
VECTORIZATION_MODES = ("sync", "async", "vector_entry_point")


def is_gymnasium_target(env_id: str) -> bool:
    """Whether ``env_id`` names a Gymnasium env evaluated on the host (``gymnasium/<Id>``)."""
    return env_id.startswith(PREFIX)


def gymnasium_name(env_id: str) -> str:
    """``gymnasium/Acrobot-v1`` -> ``Acrobot-v1``, the id ``gymnasium.make`` takes.

    A ``module:`` before the id (``gymnasium/my_package.envs:MyEnv-v0``) is imported here, as
    ``gymnasium.make`` does, so that its ``gymnasium.register`` runs; it stays in the name.
    """
    if not is_gymnasium_target(env_id):
        raise ValueError(
            f"{env_id!r} is not a Gymnasium target: host-side ids look like "
            f"'{PREFIX}<Gymnasium id>', e.g. '{PREFIX}Acrobot-v1'."
        )
    name = env_id[len(PREFIX) :]
    module, _, registered = name.rpartition(":")
    if module:  # "my_package.envs:MyEnv-v0": importing the module registers the env
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as error:
            raise ValueError(
                f"{env_id!r}: cannot import {module!r} ({error}); put the module that calls "
                "gymnasium.register on the Python path."
            ) from None
    gymnasium.spec(registered)  # raises Gymnasium's own error, naming close ids, if unknown
    return name


def describe(env_id: str) -> tuple[gymnasium.spaces.Space, gymnasium.spaces.Space, Optional[int]]:
    """``(observation_space, action_space, max_episode_steps)`` of any env id we can train on.

    ``gymnasium/<Id>`` builds the Gymnasium env once to read its spaces (``max_episode_steps``
    is None if it has no time limit); any other id is one of ours (``eggroll_rl.envs.make``).
    """
    if not is_gymnasium_target(env_id):
        from eggroll_rl.envs.registry import make

        task = make(env_id)
        return task.observation_space, task.action_space, task.max_episode_steps
    name = gymnasium_name(env_id)
    env = gymnasium.make(name)
    try:
        limit = env.spec.max_episode_steps if env.spec is not None else None
        if limit is None:
            limit = getattr(env.unwrapped, "max_episode_steps", None)
        return env.observation_space, env.action_space, limit
    finally:
        env.close()


@dataclasses.dataclass(frozen=True, eq=False)
class GymnasiumTask:
    """What trainers and exported policies need to know of a ``gymnasium/<Id>`` env, read
    once from the env itself: its spaces and time limit, in the attribute names of ``Task``
    (``observation_space``, ``action_space``, ``max_episode_steps``, ``discrete``,
    ``action_size``). Nothing steps here: the env runs in a Gymnasium vector env
    (``make_vector_env``). ``action_space`` is the float32 ``policy_action_space``; the env's
    own is ``env_action_space``."""

    env_id: str
    observation_space: gymnasium.spaces.Box
    action_space: gymnasium.spaces.Space
    env_action_space: gymnasium.spaces.Space
    max_episode_steps: Optional[int]
    """The env's time limit, None if it has none."""
    vector_entry_point: bool = False
    """Whether the env registers a ``vector_entry_point`` (a natively vectorised version)."""

    @property
    def discrete(self) -> bool:
        return isinstance(self.action_space, gymnasium.spaces.Discrete)

    @property
    def action_size(self) -> int:
        """Policy outputs: logits (Discrete) or action means (Box)."""
        return int(self.action_space.n) if self.discrete else int(np.prod(self.action_space.shape))


def target_task(env_id: str) -> GymnasiumTask:
    """The ``GymnasiumTask`` of ``gymnasium/<Id>``, with its spaces checked.

    ``<Id>`` may name a module to import first, ``gymnasium/my_package.envs:MyEnv-v0``, as
    ``gymnasium.make`` accepts it, so that the module's ``gymnasium.register`` runs.

    Raises:
        ValueError: (one line) an unknown id, an observation space that is not a flat (1-D)
            ``Box``, or an action space that is neither ``Box`` nor ``Discrete``.
    """
    name = env_id[len(PREFIX) :] if is_gymnasium_target(env_id) else env_id
    try:
        observation_space, action_space, limit = describe(PREFIX + name)
    except (gymnasium.error.Error, ImportError) as error:
        reason = str(error).splitlines()[0]
        raise ValueError(
            f"{env_id!r} is not a Gymnasium env that can be made here ({reason}); "
            "`eggroll-rl envs` lists the Gymnasium ids available."
        ) from None
    if not isinstance(observation_space, gymnasium.spaces.Box) or len(observation_space.shape) != 1:
        raise ValueError(
            f"{env_id}: the observation space is {observation_space}, but trainers' MLPs need a "
            "flat Box; wrap the env (e.g. gymnasium.wrappers.FlattenObservation) and register "
            "the wrapped one."
        )
    if not isinstance(action_space, (gymnasium.spaces.Box, gymnasium.spaces.Discrete)):
        raise ValueError(
            f"{env_id}: the action space is {action_space}, but trainers act in Box or Discrete "
            "spaces only; wrap the env to expose one of those."
        )
    spec = gymnasium.spec(name.rpartition(":")[2])
    return GymnasiumTask(
        env_id=PREFIX + name,
        observation_space=observation_space,
        action_space=policy_action_space(action_space),
        env_action_space=action_space,
        max_episode_steps=limit,
        vector_entry_point=spec.vector_entry_point is not None,
    )


def list_gymnasium_ids() -> list[str]:
    """``gymnasium/<Id>`` for every registered Gymnasium env that trains here: the newest
    version of each, made once to check that its dependencies are installed and its spaces
    are supported (flat Box observations, Box or Discrete actions). Our own ``eggroll_rl/`` ids
    are left out (they are ``<suite>/<name>`` tasks already)."""
    import warnings

    newest: dict[tuple, tuple[int, str]] = {}
    for name, spec in gymnasium.registry.items():
        if spec.namespace == "eggroll_rl":
            continue
        key = (spec.namespace, spec.name)
        version = -1 if spec.version is None else spec.version
        if key not in newest or version > newest[key][0]:
            newest[key] = (version, name)
    usable = []
    for _, name in sorted(newest.values(), key=lambda pair: pair[1]):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                env = gymnasium.make(name)
        except Exception:  # a missing dependency (Box2D, mujoco-py, gym, ...) of that env
            continue
        try:
            observations, actions = env.observation_space, env.action_space
            supported = (
                isinstance(observations, gymnasium.spaces.Box) and len(observations.shape) == 1
                and isinstance(actions, (gymnasium.spaces.Box, gymnasium.spaces.Discrete))
            )
        finally:
            env.close()
        if supported:
            usable.append(PREFIX + name)
    return usable


def make_vector_env(
    env_id: str, num_envs: int, vectorization_mode: str = "sync", **kwargs
) -> VectorEnv:
    """``gymnasium.make_vec`` for ``gymnasium/<Id>``; build it once and reuse it across generations.

    ``sync`` (the default) and ``async`` seed sub-env ``j`` with ``seed + j``, which is what the
    member/episode layout of ``host_rollout`` documents; a ``vector_entry_point`` env (e.g.
    Gymnasium's own ``CartPoleVectorEnv``) is faster but seeds its sub-envs its own way.
    ``async`` starts its workers with ``spawn`` unless ``vector_kwargs`` names a ``context``:
    forking a process that runs JAX can deadlock (JAX is multithreaded).
    """
    if vectorization_mode not in VECTORIZATION_MODES:
        raise ValueError(
            f"vectorization_mode must be one of {VECTORIZATION_MODES}, got {vectorization_mode!r}."
        )
    if vectorization_mode == "async":
        kwargs["vector_kwargs"] = {"context": "spawn", **kwargs.get("vector_kwargs", {})}
    return gymnasium.make_vec(
        gymnasium_name(env_id), num_envs=num_envs, vectorization_mode=vectorization_mode, **kwargs
    )


def policy_action_space(space: gymnasium.spaces.Space) -> gymnasium.spaces.Space:
    """The action space as ``select_action`` sees it: float32 bounds (JAX runs without x64)."""
    if isinstance(space, gymnasium.spaces.Discrete):
        return space
    if isinstance(space, gymnasium.spaces.Box):
        if space.dtype == np.float32:
            return space
        return gymnasium.spaces.Box(
            space.low.astype(np.float32), space.high.astype(np.float32), space.shape, np.float32
        )
    raise ValueError(
        f"the host path drives Discrete or Box action spaces only, got {space}. Wrap the env "
        "(e.g. gymnasium.wrappers.FlattenObservation for observations) or use another env."
    )


class _SpaceKey:
    """A Gymnasium space as a cache key (spaces compare by value but are not hashable)."""

    def __init__(self, space: gymnasium.spaces.Space):
        self.space = space
        if isinstance(space, gymnasium.spaces.Box):
            self._id = (
                "Box",
                space.shape,
                str(space.dtype),
                space.low.tobytes(),
                space.high.tobytes(),
            )
        else:
            self._id = ("Discrete", int(space.n), int(space.start))

    def __hash__(self):
        return hash(self._id)

    def __eq__(self, other):
        return isinstance(other, _SpaceKey) and self._id == other._id


def _per_slot_log_std(space, head, log_std, slots, deterministic) -> jax.Array:
    """Check the head's shape; give every slot its log-std (zeros where none is needed)."""
    discrete = isinstance(space, gymnasium.spaces.Discrete)
    action_size = int(space.n) if discrete else int(np.prod(space.shape))
    expected = tuple(slots) + (action_size,)
    if head.shape != expected:
        raise ValueError(
            f"the policy head has shape {head.shape}, expected {expected} (members, episodes, "
            f"{'logits' if discrete else 'action means'}) for {space}: build the policy with "
            f"action_size={action_size}."
        )
    if discrete or deterministic:
        return jnp.zeros_like(head)
    if log_std is None:
        raise ValueError(
            f"{space} is continuous: sampling actions needs a log-std, but the policy returned "
            "None. Return (mean, log_std) like eggroll_rl.networks.Policy(continuous=True), or "
            "pass deterministic=True to act with the mean."
        )
    # A learned log-std is a parameter: (A,) for one policy, (N, A) for a population.
    log_std = jnp.asarray(log_std, head.dtype)
    shape = log_std.shape[:-1] + (1,) * (head.ndim - log_std.ndim) + log_std.shape[-1:]
    return jnp.broadcast_to(log_std.reshape(shape), head.shape)


def _act_and_track(space, deterministic, policy, obs, key, step, alive, norm, stats, track):
    """Act for every slot on ``obs`` (slots ``(N, k)`` + obs shape) normalised with ``norm``;
    merge the live observations into ``stats`` if ``track``."""
    seen = obs if norm is None else obs_norm.normalize(norm, obs)
    head, log_std = policy(seen)
    slots = obs.shape[:2]
    log_std = _per_slot_log_std(space, head, log_std, slots, deterministic)
    keys = jax.random.split(jax.random.fold_in(key, step), slots[0] * slots[1]).reshape(slots)
    act = jax.vmap(jax.vmap(lambda h, s, k: select_action(space, h, s, k, deterministic)))
    actions = act(head, log_std, keys)
    if track and stats is not None:
        stats = obs_norm.update(stats, obs, alive)
    return actions, stats


@functools.lru_cache(maxsize=32)
def _population_actor(strategy, apply_fn, space_key: _SpaceKey, deterministic: bool):
    """One jitted call per step for the whole population, compiled once per configuration."""

    def actor(population, obs, key, step, alive, norm, stats):
        policy = lambda seen: strategy.population_apply(population, apply_fn, seen)
        return _act_and_track(
            space_key.space, deterministic, policy, obs, key, step, alive, norm, stats, True
        )

    return jax.jit(actor)


@functools.lru_cache(maxsize=32)
def _single_actor(apply_fn, space_key: _SpaceKey, deterministic: bool):
    def actor(params, obs, key, step, alive, norm, stats):
        policy = lambda seen: apply_fn(params, seen)  # all (1, k, *obs_shape) at once
        return _act_and_track(
            space_key.space, deterministic, policy, obs, key, step, alive, norm, stats, False
        )

    return jax.jit(actor)


def _cached(builder, *args):
    try:
        return builder(*args)
    except TypeError as error:  # an unhashable apply_fn: compile for this call only
        if "unhashable" not in str(error):
            raise
        return builder.__wrapped__(*args)


def _time_limit(env: VectorEnv) -> Optional[int]:
    spec = getattr(env, "spec", None)
    return None if spec is None else spec.max_episode_steps


def run_first_episodes(
    env: VectorEnv,
    act: Callable,
    slots: tuple[int, int],
    seed: int,
    *,
    obs_stats: Optional[obs_norm.RunningStats] = None,
    max_steps: Optional[int] = None,
) -> Episodes:
    """Step ``env`` until every sub-env's first episode is over (or ``max_steps`` steps).

    ``act(obs, key, step, alive, norm, stats) -> (actions, stats)`` sees observations shaped
    ``slots + obs_shape``, normalises them with ``norm`` (``obs_stats`` as given, fixed for the
    whole call, as in ``rollout``) and merges live ones into ``stats``. Works in every autoreset
    mode: slots are masked once done, and in ``DISABLED`` mode finished sub-envs are reset so
    that stepping them stays legal.
    """
    count = slots[0] * slots[1]
    if env.num_envs != count:
        raise ValueError(
            f"the vector env has {env.num_envs} sub-envs but {slots[0]} members x {slots[1]} "
            f"episodes need {count}: build it with num_envs={count}."
        )
    observation_space = env.single_observation_space
    if not isinstance(observation_space, gymnasium.spaces.Box):
        raise ValueError(
            f"the host path feeds Box observations to the policy, got {observation_space}; wrap "
            "the env with gymnasium.wrappers.FlattenObservation."
        )
    action_dtype = env.single_action_space.dtype
    mode = env.metadata.get("autoreset_mode", AutoresetMode.NEXT_STEP)
    horizon = max_steps if max_steps is not None else _time_limit(env)
    obs, _ = env.reset(seed=int(seed))
    key = jax.random.key(int(seed))
    alive = np.ones(count, bool)
    returns = np.zeros(count, np.float64)
    lengths = np.zeros(count, np.int64)
    stats = obs_stats
    step = 0
    while alive.any() and (horizon is None or step < horizon):
        batch = jnp.asarray(np.asarray(obs, np.float32).reshape(slots + observation_space.shape))
        actions, stats = act(batch, key, step, jnp.asarray(alive.reshape(slots)), obs_stats, stats)
        actions = np.asarray(actions).reshape((count,) + env.single_action_space.shape)
        obs, reward, terminated, truncated, _ = env.step(actions.astype(action_dtype))
        returns += np.where(alive, reward, 0.0)
        lengths += alive
        ended = np.logical_or(terminated, truncated)
        alive &= ~ended
        step += 1
        if mode == AutoresetMode.DISABLED and ended.any() and alive.any():
            obs, _ = env.reset(options={"reset_mask": ended})
    return Episodes(
        returns=jnp.asarray(returns.reshape(slots), jnp.float32),
        lengths=jnp.asarray(lengths.reshape(slots), jnp.int32),
        obs_stats=stats,
    )


def _with_env(env_or_id: Union[str, VectorEnv], num_envs: int, vectorization_mode: str, run):
    if isinstance(env_or_id, str):
        env = make_vector_env(env_or_id, num_envs, vectorization_mode)
        try:
            return run(env)
        finally:
            env.close()
    if not isinstance(env_or_id, VectorEnv):
        raise TypeError(
            "expected a 'gymnasium/<Id>' string or a gymnasium.vector.VectorEnv, got "
            f"{type(env_or_id)}."
        )
    return run(env_or_id)


def host_rollout(
    env: Union[str, VectorEnv],
    strategy: Any,
    population: Any,
    apply_fn: Callable,
    seed: int,
    *,
    episodes_per_member: int = 1,
    deterministic: bool = False,
    max_steps: Optional[int] = None,
    obs_stats: Optional[obs_norm.RunningStats] = None,
    vectorization_mode: str = "sync",
) -> RolloutResult:
    """Evaluate every member of ``population`` on ``episodes_per_member`` Gymnasium episodes.

    ``env`` is ``gymnasium/<Id>`` (a vector env is built and closed here) or a vector env with
    ``population_size * episodes_per_member`` sub-envs (build it once with ``make_vector_env``
    in a training loop). ``apply_fn(params, obs) -> (head, log_std)`` as for ``rollout``. Member
    ``i``'s episode ``j`` runs in sub-env ``i*k + j`` reset with seed ``seed + i*k + j``;
    stochastic actions draw from ``jax.random.key(seed)``. ``obs_stats``, if given, normalise
    observations and come back updated with every observation of a live step.
    """
    if episodes_per_member < 1:
        raise ValueError(f"episodes_per_member must be >= 1, got {episodes_per_member}.")
    slots = (strategy.population_size, episodes_per_member)

    def run(vector_env):
        space = policy_action_space(vector_env.single_action_space)
        actor = _cached(
            _population_actor, strategy, apply_fn, _SpaceKey(space), bool(deterministic)
        )
        act = functools.partial(actor, population)
        return run_first_episodes(
            vector_env, act, slots, seed, obs_stats=obs_stats, max_steps=max_steps
        )

    episodes = _with_env(env, slots[0] * slots[1], vectorization_mode, run)
    return RolloutResult(
        fitness=episodes.returns.mean(axis=1),
        returns=episodes.returns,
        lengths=episodes.lengths,
        env_steps=episodes.lengths.sum(),
        obs_stats=episodes.obs_stats,
    )


def host_evaluate(
    env: Union[str, VectorEnv],
    apply_fn: Callable,
    params: Any,
    seed: int,
    num_episodes: int = 10,
    *,
    deterministic: bool = True,
    max_steps: Optional[int] = None,
    obs_stats: Optional[obs_norm.RunningStats] = None,
    vectorization_mode: str = "sync",
) -> Evaluation:
    """One policy (e.g. the ES mean) on ``num_episodes`` Gymnasium episodes, sub-env ``j``
    seeded ``seed + j``; as in ``evaluate``, ``apply_fn`` sees ``(1, num_episodes, *obs_shape)``
    observations, normalised with ``obs_stats``, which are not updated."""
    if num_episodes < 1:
        raise ValueError(f"num_episodes must be >= 1, got {num_episodes}.")

    def run(vector_env):
        space = policy_action_space(vector_env.single_action_space)
        actor = _cached(_single_actor, apply_fn, _SpaceKey(space), bool(deterministic))
        act = functools.partial(actor, params)
        return run_first_episodes(
            vector_env, act, (1, num_episodes), seed, obs_stats=obs_stats, max_steps=max_steps
        )

    episodes = _with_env(env, num_episodes, vectorization_mode, run)
    returns, lengths = episodes.returns[0], episodes.lengths[0]
    return Evaluation(
        mean_return=returns.mean(), returns=returns, lengths=lengths, env_steps=lengths.sum()
    )
