"""Population rollouts, the hot loop of ES: N members x k episodes in one compiled loop.

Fitness is an episode return, so evaluating a generation means running every member's episodes
to the end. All ``N x k`` episodes step together in one loop over time: the policy is one
``population_apply`` call per step (member i sees its k observations as one batch), actions
and env steps are vmapped. Each slot is masked after its first episode ends (tasks that
can skip their autoreset, ``Task.episode_step``, do): every episode's return counts exactly once
and ``env_steps`` counts only live steps.

The loop stops early once every slot is done (early generations end most episodes long before
the time limit), but it looks at that data-dependent condition only once per chunk of
``steps_per_check(horizon)`` env steps: a ``lax.while_loop`` over chunks, each chunk a
``lax.scan`` of masked steps. On an accelerator a loop condition that depends on data is read
back by the host on every iteration, and on several devices ``any(alive)`` is a cross-device
reduction; per chunk, both cost a fraction of a step. Steps after every slot is done, or past
the horizon, change nothing, so the results are those of a loop that checked after every step.
The same loop evaluates a single policy (``evaluate``), so training and evaluation cannot drift
apart.
"""

from __future__ import annotations

import functools
import types
from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from eggroll_rl.envs import obs_norm
from eggroll_rl.envs.actions import (
    distribution_of, env_action, resolve_outputs, select_action, split_outputs,
)
from eggroll_rl.envs.task import Task

PolicyFn = Callable[[jax.Array], tuple[jax.Array, Optional[jax.Array]]]

CHECK_EVERY = 16
"""Env steps per stop check when the horizon has no divisor in [16, 24] (see ``steps_per_check``)."""


def check_steps_per_generation(num_slots: int, horizon: int, what: str) -> None:
    """Raise if ``num_slots`` episodes of ``horizon`` steps could overflow the uint32 step sum."""
    if num_slots * horizon >= 2**32:
        raise ValueError(
            f"{what}: {num_slots} episodes x {horizon} steps can exceed 2^32 env steps in one "
            "generation, more than its uint32 step count holds; use fewer members or episodes."
        )


def steps_per_check(horizon: int) -> int:
    """Env steps run between two looks at the early-stop condition, for a ``horizon``-step loop.

    The smallest divisor of ``horizon`` in [16, 24] (20 for the common 200, 500 and 1000), else
    16; ``horizon`` itself when it is at most 16. Larger chunks mean fewer host round trips and
    cross-device reductions; smaller ones waste fewer steps after the last episode ends (at most
    ``K - 1``). A divisor of the horizon also means no chunk runs past it; otherwise the last
    chunk's steps past the horizon are masked (at most ``K - 1`` extra steps, and only when some
    slot lives that long).
    """
    horizon = int(horizon)
    if horizon <= CHECK_EVERY:
        return max(horizon, 1)
    for k in range(CHECK_EVERY, 25):
        if horizon % k == 0:
            return k
    return CHECK_EVERY


@struct.dataclass
class StepCount:
    """An exact count of env steps, up to 2^62, in two int32 words: ``high * 2^31 + low``.

    Training runs pass 2^31 env steps quickly (65,536 members x 1,000-step episodes do in 33
    generations), and JAX has no 64-bit integers unless ``jax_enable_x64`` is set for the whole
    process. This pytree works under ``jit``, ``scan`` and ``vmap`` (each word gets the same
    leading axes), and on the host ``np.asarray(count)`` gives the exact total as int64 with
    those axes, so code that reads ``state.env_steps`` with ``np.asarray`` needs no change.

    Fields: ``high`` int32, the number of whole 2^31s; ``low`` int32 in ``[0, 2^31)``.
    """

    high: jax.Array
    low: jax.Array

    @classmethod
    def zero(cls) -> "StepCount":
        return cls(high=jnp.zeros((), jnp.int32), low=jnp.zeros((), jnp.int32))

    def add(self, steps: jax.Array | int) -> "StepCount":
        """The count plus ``steps``: a non-negative int32 or uint32 (below 2^32), exactly."""
        steps = jnp.uint32(steps) if isinstance(steps, int) else jnp.asarray(steps).astype(jnp.uint32)
        mask = jnp.uint32(2**31 - 1)
        low = self.low.astype(jnp.uint32) + (steps & mask)  # < 2^32: no wrap-around
        high = self.high + (steps >> 31).astype(jnp.int32) + (low >> 31).astype(jnp.int32)
        return StepCount(high=high, low=(low & mask).astype(jnp.int32))

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        total = np.asarray(np.asarray(self.high, np.int64) * 2**31 + np.asarray(self.low, np.int64))
        return total if dtype is None else total.astype(dtype)

    def __int__(self) -> int:
        return int(np.asarray(self))


class Episodes(NamedTuple):
    """The first episode of every slot of a ``(N, k)`` grid, as ``run_episodes`` returns it."""

    returns: jax.Array  # (N, k) float32, undiscounted
    lengths: jax.Array  # (N, k) int32, steps taken
    obs_stats: Optional[obs_norm.RunningStats]  # given stats plus every live observation


class RolloutResult(NamedTuple):
    """A generation's evaluation: what ``tell`` needs, and what curves are plotted against."""

    fitness: jax.Array  # (N,) mean return over the member's k episodes
    returns: jax.Array  # (N, k)
    lengths: jax.Array  # (N, k)
    env_steps: jax.Array  # scalar uint32: steps consumed, the sum of the lengths (< 2^32)
    obs_stats: Optional[obs_norm.RunningStats]  # updated with every live observation


class Evaluation(NamedTuple):
    """One policy on fresh episodes (normalisation statistics are read, never updated)."""

    mean_return: jax.Array  # scalar
    returns: jax.Array  # (num_episodes,)
    lengths: jax.Array  # (num_episodes,)
    env_steps: jax.Array  # scalar uint32, the sum of the lengths


def run_episodes(
    task: Task,
    policy: PolicyFn,
    key: jax.Array,
    slots: tuple[int, int],
    *,
    deterministic: bool = False,
    obs_stats: Optional[obs_norm.RunningStats] = None,
    update_stats: bool = True,
    max_steps: Optional[int] = None,
    stop_when_done: bool = True,
    outputs: str = "auto",
    act_fn: Optional[Callable[[jax.Array, jax.Array], jax.Array]] = None,
) -> Episodes:
    """Run the first episode of each of ``slots = (N, k)`` envs; the loop under ``rollout``.

    ``policy`` maps observations ``(N, k, *obs_shape)`` (normalised with ``obs_stats`` when
    given) to the head ``(N, k, action_size)`` alone, or to a pair: ``(head, log_std)`` with
    log-std ``(action_size,)``, ``(N, action_size)`` or ``(N, k, action_size)``, or None for
    discrete actions; or ``(head, value)`` / ``(head, log_std, value)``, the value ignored.
    ``outputs`` says which (``actions.POLICY_OUTPUTS``; "auto" tells them apart by shape,
    ``actions.resolve_outputs``). A policy whose output is a distribution (alone or with a
    value) acts through ``act_fn(obs, keys)``: ``keys`` holds one PRNG key per member
    ``(N,)``, and it returns each slot's draw (or mode, when deterministic) ``(N, k)`` /
    ``(N, k, A)``, computed inside the member's own call so that no distribution object
    crosses a ``vmap`` (its shape metadata would not follow); ``rollout`` and ``evaluate``
    give it. Episodes end at termination, at the task's truncation, or after ``max_steps``
    steps. The loop runs chunks of ``steps_per_check(horizon)`` steps while some slot is alive; with
    ``stop_when_done=False`` it always runs the full horizon instead, as a loop with a fixed
    trip count and no data-dependent condition (fixed cost; the results are the same).

    Returns ``Episodes``: ``returns`` float32 ``(N, k)``, ``lengths`` int32 ``(N, k)``, and
    ``obs_stats`` merged with every live observation (unchanged when ``update_stats=False``).
    """
    horizon = task.max_episode_steps if max_steps is None else int(max_steps)
    if horizon < 1:
        raise ValueError(f"max_steps must be >= 1, got {max_steps}.")
    num_members, num_episodes = slots
    if num_members < 1 or num_episodes < 1:
        raise ValueError(f"slots must be two positive sizes (members, episodes), got {slots}.")
    key_reset, key_run = jax.random.split(key)
    obs, env_state = jax.vmap(jax.vmap(task.reset))(_slot_keys(key_reset, slots))
    select = functools.partial(select_action, task.action_space, deterministic=deterministic)
    select = jax.vmap(jax.vmap(select))
    env_step = jax.vmap(jax.vmap(task.episode_step))  # slots are masked after one episode
    track_stats = obs_stats is not None and update_stats
    chunk = steps_per_check(horizon)
    convention = _policy_convention(task, policy, obs, outputs)
    if convention == "distribution" and act_fn is None:
        raise ValueError(
            "the policy returns a distribution: run_episodes acts on it through act_fn(obs, "
            "keys) (rollout and evaluate give one); pass act_fn, or return logits / a mean."
        )

    # Steps past the horizon can only happen in the last chunk, and only when the chunk size
    # does not divide the horizon; they are masked like the steps of a finished slot.
    overrun = horizon % chunk != 0

    def step(carry, _):
        t, env_state, obs, alive, returns, lengths, stats = carry
        key_act, key_env = jax.random.split(jax.random.fold_in(key_run, t))
        seen = obs if obs_stats is None else obs_norm.normalize(obs_stats, obs)
        if convention == "distribution":
            raw = act_fn(seen, jax.random.split(key_act, num_members))
            actions = env_action(task.action_space, raw, slots)
        else:
            head, log_std = split_outputs(policy(seen), convention)
            log_std = _per_slot_log_std(task, head, log_std, slots, deterministic)
            actions = select(head, log_std, _slot_keys(key_act, slots))
        obs_next, env_state, reward, terminated, truncated, _ = env_step(
            _slot_keys(key_env, slots), env_state, actions
        )
        if overrun:
            alive = alive & (t < horizon)
        if track_stats:
            stats = obs_norm.update(stats, obs, alive)  # an all-false mask changes nothing
        returns = returns + jnp.where(alive, reward, 0).astype(returns.dtype)
        lengths = lengths + alive.astype(lengths.dtype)
        alive = alive & ~(terminated | truncated)
        return (t + 1, env_state, obs_next, alive, returns, lengths, stats), None

    def run_chunk(carry):
        return jax.lax.scan(step, carry, None, chunk)[0]

    def running(carry):  # evaluated once per chunk
        t, alive = carry[0], carry[3]
        return (t < horizon) & jnp.any(alive)

    carry = (
        jnp.zeros((), jnp.int32),
        env_state,
        obs,
        jnp.ones(slots, bool),
        jnp.zeros(slots, jnp.float32),
        jnp.zeros(slots, jnp.int32),
        obs_stats if track_stats else None,
    )
    if stop_when_done:
        carry = jax.lax.while_loop(running, run_chunk, carry)
    else:
        num_chunks = -(-horizon // chunk)
        carry = jax.lax.scan(lambda c, _: (run_chunk(c), None), carry, None, num_chunks)[0]
    *_, returns, lengths, stats = carry
    return Episodes(returns=returns, lengths=lengths, obs_stats=stats if track_stats else obs_stats)


def _policy_convention(task: Task, policy: PolicyFn, obs: jax.Array, outputs: str) -> str:
    """Which of ``actions.POLICY_OUTPUTS`` the policy follows (decided at trace time, from
    abstract evaluations: nothing is computed)."""
    out = jax.eval_shape(policy, obs)
    more = jax.ShapeDtypeStruct((obs.shape[0], obs.shape[1] + 1) + obs.shape[2:], obs.dtype)
    return resolve_outputs(
        outputs, task.action_space, out, lambda: jax.eval_shape(policy, more)
    )


def _slot_keys(key: jax.Array, slots: tuple[int, int]) -> jax.Array:
    keys = jax.random.split(key, slots[0] * slots[1])
    return keys.reshape(slots + keys.shape[1:])  # raw uint32 keys keep their trailing axis


def _per_slot_log_std(task, head, log_std, slots, deterministic) -> Optional[jax.Array]:
    """Check the head's shape and give every slot its log-std (None where none is needed)."""
    expected = slots + (task.action_size,)
    if head.shape != expected:
        raise ValueError(
            f"{task.env_id}: the policy head has shape {head.shape}, expected {expected} "
            f"(members, episodes, {'logits' if task.discrete else 'action means'}); build the "
            f"policy with action_size={task.action_size}."
        )
    if task.discrete or deterministic:
        return None
    if log_std is None:
        raise ValueError(
            f"{task.env_id} has continuous actions: sampling them needs a log-std, but the "
            "policy returned none (an action mean alone, (mean, None) or (mean, value)). Return "
            "(mean, log_std) like eggroll_rl.networks.Policy(continuous=True), or pass "
            "deterministic=True to act with the mean."
        )
    log_std = jnp.asarray(log_std, head.dtype)
    if log_std.ndim == 2:  # one per member: (N, A)
        log_std = log_std[:, None, :]
    return jnp.broadcast_to(log_std, head.shape)


class SameFunction:
    """``fn`` as a jit cache key: equal to another ``SameFunction`` whose function does the same.

    Two functions are the same when they have the same code, globals and defaults and their
    closures hold the same values (identical objects, or equal hashable ones such as a linen
    module and its fields); a bound method when its function and ``self`` are; a
    ``functools.partial`` when its function and arguments are. So ``lambda p, o:
    model.apply(p, o)`` written in a loop, or ``Policy(...).apply`` rebuilt each generation,
    compiles once. Anything else (a callable object) is compared by its own ``==``/``hash``.
    """

    def __init__(self, fn: Callable):
        self.fn = fn
        self.key = _function_key(fn)

    def __call__(self, *args, **kwargs):
        return self.fn(*args, **kwargs)

    def __eq__(self, other) -> bool:
        return isinstance(other, SameFunction) and self.key == other.key

    def __hash__(self) -> int:
        return hash(self.key)


class _Identity:
    __slots__ = ("value",)

    def __init__(self, value):
        self.value = value

    def __eq__(self, other) -> bool:
        return isinstance(other, _Identity) and other.value is self.value

    def __hash__(self) -> int:
        return id(self.value)


def _value_key(value: Any) -> Any:
    if callable(value) and not isinstance(value, type):
        return _function_key(value)
    if isinstance(value, (jax.Array, np.ndarray)):
        return _Identity(value)
    try:
        hash(value)
    except TypeError:
        return _Identity(value)
    return value


def _function_key(fn: Any) -> Any:
    if isinstance(fn, SameFunction):
        return fn.key
    if isinstance(fn, types.FunctionType):
        cells = []
        for cell in fn.__closure__ or ():
            try:
                cells.append(_value_key(cell.cell_contents))
            except ValueError:  # an empty cell
                cells.append(None)
        kwdefaults = tuple(sorted((fn.__kwdefaults__ or {}).items()))
        return ("function", fn.__code__, _Identity(fn.__globals__),
                _value_key(fn.__defaults__), _value_key(kwdefaults), tuple(cells))
    if isinstance(fn, types.MethodType):
        return ("method", _function_key(fn.__func__), _value_key(fn.__self__))
    if isinstance(fn, functools.partial):
        keywords = tuple(sorted((k, _value_key(v)) for k, v in fn.keywords.items()))
        return ("partial", _function_key(fn.func), tuple(map(_value_key, fn.args)), keywords)
    try:
        hash(fn)
    except TypeError:
        return _Identity(fn)
    return ("object", fn)


def _stacked(out: Any) -> Any:
    """One policy's output with a leading member axis of 1, as ``population_apply``'s has."""
    return jax.tree_util.tree_map(lambda y: jnp.asarray(y)[None], out)


def _acting(apply_fn: Callable, deterministic: bool, impl: Any) -> Callable:
    """``(params, (obs, key)) -> draws``: the mode (``deterministic``) or a sample of the
    distribution ``apply_fn(params, obs)`` returns (alone or first of a pair), for one member.
    ``key`` is raw key data, rewrapped with ``impl`` (None: a raw key already)."""

    def act(params, inputs):
        obs, key = inputs
        dist = distribution_of(apply_fn(params, obs))
        if deterministic:
            return dist.mode()
        return dist.sample(seed=key if impl is None else jax.random.wrap_key_data(key, impl=impl))

    return act


def _key_parts(keys: jax.Array) -> tuple[jax.Array, Any]:
    """``(raw key data, impl)`` of typed keys; raw keys come back as they are, impl None."""
    if jnp.issubdtype(keys.dtype, jax.dtypes.prng_key):
        return jax.random.key_data(keys), jax.random.key_impl(keys)
    return keys, None


@functools.partial(
    jax.jit,
    static_argnames=(
        "task", "strategy", "apply_fn", "episodes_per_member", "deterministic", "max_steps",
        "stop_when_done", "outputs",
    ),
)
def _rollout(
    task, strategy, population, apply_fn, key, *, episodes_per_member, deterministic,
    obs_stats, max_steps, stop_when_done, outputs,
) -> RolloutResult:
    if episodes_per_member < 1:
        raise ValueError(f"episodes_per_member must be >= 1, got {episodes_per_member}.")
    def act_fn(obs, keys):  # distribution outputs: each member draws its own actions
        data, impl = _key_parts(keys)
        acting = _acting(apply_fn, deterministic, impl)
        return strategy.population_apply(population, acting, (obs, data))

    episodes = run_episodes(
        task,
        lambda obs: strategy.population_apply(population, apply_fn, obs),
        key,
        (strategy.population_size, episodes_per_member),
        deterministic=deterministic,
        obs_stats=obs_stats,
        max_steps=max_steps,
        stop_when_done=stop_when_done,
        outputs=outputs,
        act_fn=act_fn,
    )
    return RolloutResult(
        fitness=episodes.returns.mean(axis=1),
        returns=episodes.returns,
        lengths=episodes.lengths,
        env_steps=episodes.lengths.sum(dtype=jnp.uint32),
        obs_stats=episodes.obs_stats,
    )


def rollout(
    task: Task,
    strategy: Any,
    population: Any,
    apply_fn: Callable,
    key: jax.Array,
    *,
    episodes_per_member: int = 1,
    deterministic: bool = False,
    obs_stats: Optional[obs_norm.RunningStats] = None,
    max_steps: Optional[int] = None,
    stop_when_done: bool = True,
    outputs: str = "auto",
) -> RolloutResult:
    """Every member of ``population`` on ``episodes_per_member`` fresh episodes, one compiled call.

    ``apply_fn(params, obs)`` gets one member's params (the form the strategy's ``init`` was
    given: pytree, linen variables dict, or NNX module) and its ``(k, *obs_shape)``
    observations, as ``evaluate``'s does. It returns logits or an action mean ``(k, A)``
    alone, ``(head, log_std)`` like ``eggroll_rl.networks.Policy`` (log-std None for discrete
    actions, else ``(A,)`` or ``(k, A)``), ``(head, value)`` or ``(head, log_std, value)`` as
    actor-critics do (the value is ignored), or a distribution (``actions.is_distribution``),
    alone or as ``(distribution, value)``: its ``mode()`` when ``deterministic``, else
    ``sample(seed=key)``, clipped to the space like the others. ``outputs``
    (``envs.actions.POLICY_OUTPUTS``) says which, "auto" tells them apart by type and shape and
    raises when it cannot. ``task`` and ``strategy`` are static;
    ``apply_fn`` is compared as a ``SameFunction``, so a new lambda around the same model
    does not recompile. ``obs_stats``, when given, normalises what the policy sees and comes
    back updated with every observation of every live step of the whole population.
    """
    return _rollout(
        task, strategy, population, SameFunction(apply_fn), key,
        episodes_per_member=episodes_per_member, deterministic=deterministic,
        obs_stats=obs_stats, max_steps=max_steps, stop_when_done=stop_when_done, outputs=outputs,
    )


def _lower_rollout(task, strategy, population, apply_fn, key, **kwargs):
    """``rollout``'s ``jax.jit(...).lower``, for inspecting the compiled program."""
    options = dict(episodes_per_member=1, deterministic=False, obs_stats=None, max_steps=None,
                   stop_when_done=True, outputs="auto")
    options.update(kwargs)
    return _rollout.lower(task, strategy, population, SameFunction(apply_fn), key, **options)


rollout.lower = _lower_rollout


@functools.partial(
    jax.jit,
    static_argnames=(
        "task", "apply_fn", "num_episodes", "deterministic", "max_steps", "stop_when_done",
        "outputs",
    ),
)
def _evaluate(
    task, apply_fn, params, key, num_episodes, *, deterministic, obs_stats, max_steps,
    stop_when_done, outputs,
) -> Evaluation:
    if num_episodes < 1:
        raise ValueError(f"num_episodes must be >= 1, got {num_episodes}.")
    def act_fn(obs, keys):  # distribution outputs
        data, impl = _key_parts(keys)
        return _acting(apply_fn, deterministic, impl)(params, (obs[0], data[0]))[None]

    episodes = run_episodes(
        task,
        lambda obs: _stacked(apply_fn(params, obs[0])),
        key,
        (1, num_episodes),
        deterministic=deterministic,
        obs_stats=obs_stats,
        update_stats=False,
        max_steps=max_steps,
        stop_when_done=stop_when_done,
        outputs=outputs,
        act_fn=act_fn,
    )
    returns, lengths = episodes.returns[0], episodes.lengths[0]
    return Evaluation(
        mean_return=returns.mean(), returns=returns, lengths=lengths,
        env_steps=lengths.sum(dtype=jnp.uint32),
    )


def evaluate(
    task: Task,
    apply_fn: Callable,
    params: Any,
    key: jax.Array,
    num_episodes: int = 10,
    *,
    deterministic: bool = True,
    obs_stats: Optional[obs_norm.RunningStats] = None,
    max_steps: Optional[int] = None,
    stop_when_done: bool = True,
    outputs: str = "auto",
) -> Evaluation:
    """One policy (e.g. the ES mean) on ``num_episodes`` fresh episodes, batched in one call.

    ``apply_fn(params, obs)`` sees all ``(num_episodes, *obs_shape)`` observations at once:
    the per-member shape ``rollout`` gives, so one ``apply_fn`` serves both. Its outputs
    follow ``outputs`` as in ``rollout``. Observations are normalised with ``obs_stats``
    exactly as in ``rollout``; the statistics are not updated. ``deterministic`` defaults to
    True: deploy-time behaviour (argmax/mean). ``apply_fn`` is compared as a ``SameFunction``.
    """
    return _evaluate(
        task, SameFunction(apply_fn), params, key, num_episodes, deterministic=deterministic,
        obs_stats=obs_stats, max_steps=max_steps, stop_when_done=stop_when_done, outputs=outputs,
    )
