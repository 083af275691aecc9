"""Population rollouts, the hot loop of ES: N members x k episodes in one compiled loop.

Fitness is an episode return, so evaluating a generation means running every member's episodes
to the end. All ``N x k`` episodes step together in one loop over time: the policy is one
``population_apply`` call per step (member i sees its k observations as one batch), actions
and env steps are vmapped. Each slot is masked after its first episode ends (tasks that
can skip their autoreset, ``Task.episode_step``, do): every episode's return counts exactly once
and ``env_steps`` counts only live steps.
The loop stops as soon as every slot is done (early generations end most episodes long before
the time limit). The same loop evaluates a single policy (``evaluate``), so training and
evaluation cannot drift apart.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp

from eggroll_rl.envs import obs_norm
from eggroll_rl.envs.actions import select_action
from eggroll_rl.envs.task import Task

PolicyFn = Callable[[jax.Array], tuple[jax.Array, Optional[jax.Array]]]


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
    env_steps: jax.Array  # scalar int32: steps actually consumed, the sum of the lengths
    obs_stats: Optional[obs_norm.RunningStats]  # updated with every live observation


class Evaluation(NamedTuple):
    """One policy on fresh episodes (normalisation statistics are read, never updated)."""

    mean_return: jax.Array  # scalar
    returns: jax.Array  # (num_episodes,)
    lengths: jax.Array  # (num_episodes,)
    env_steps: jax.Array  # scalar int32


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
) -> Episodes:
    """Run the first episode of each of ``slots = (N, k)`` envs; the loop under ``rollout``.

    ``policy`` maps observations ``(N, k, *obs_shape)`` (normalised with ``obs_stats`` when
    given) to ``(head, log_std)``: head ``(N, k, action_size)``, log-std ``(action_size,)``,
    ``(N, action_size)`` or ``(N, k, action_size)``, or None for discrete actions. Episodes
    end at termination, at the task's truncation, or after ``max_steps`` steps. With
    ``stop_when_done=False`` the loop always runs the full horizon (fixed cost; the results
    are the same).
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

    def step(carry):
        t, env_state, obs, alive, returns, lengths, stats = carry
        key_act, key_env = jax.random.split(jax.random.fold_in(key_run, t))
        seen = obs if obs_stats is None else obs_norm.normalize(obs_stats, obs)
        head, log_std = policy(seen)
        log_std = _per_slot_log_std(task, head, log_std, slots, deterministic)
        actions = select(head, log_std, _slot_keys(key_act, slots))
        obs_next, env_state, reward, terminated, truncated, _ = env_step(
            _slot_keys(key_env, slots), env_state, actions
        )
        if track_stats:
            stats = obs_norm.update(stats, obs, alive)
        returns = returns + jnp.where(alive, reward, 0).astype(returns.dtype)
        lengths = lengths + alive.astype(lengths.dtype)
        alive = alive & ~(terminated | truncated)
        return t + 1, env_state, obs_next, alive, returns, lengths, stats

    def running(carry):
        t, alive = carry[0], carry[3]
        return (t < horizon) & jnp.any(alive) if stop_when_done else t < horizon

    carry = (
        jnp.zeros((), jnp.int32),
        env_state,
        obs,
        jnp.ones(slots, bool),
        jnp.zeros(slots, jnp.float32),
        jnp.zeros(slots, jnp.int32),
        obs_stats if track_stats else None,
    )
    *_, returns, lengths, stats = jax.lax.while_loop(running, step, carry)
    return Episodes(returns=returns, lengths=lengths, obs_stats=stats if track_stats else obs_stats)


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
            "policy returned None. Return (mean, log_std) like eggroll_rl.networks.Policy("
            "continuous=True), or pass deterministic=True to act with the mean."
        )
    log_std = jnp.asarray(log_std, head.dtype)
    if log_std.ndim == 2:  # one per member: (N, A)
        log_std = log_std[:, None, :]
    return jnp.broadcast_to(log_std, head.shape)


@functools.partial(
    jax.jit,
    static_argnames=(
        "task", "strategy", "apply_fn", "episodes_per_member", "deterministic", "max_steps",
        "stop_when_done",
    ),
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
) -> RolloutResult:
    """Every member of ``population`` on ``episodes_per_member`` fresh episodes, one compiled call.

    ``apply_fn(params, obs)`` gets one member's params and its ``(k, *obs_shape)`` observations
    and returns ``(head, log_std)`` like ``eggroll_rl.networks.Policy`` (log-std None for
    discrete actions). ``task``, ``strategy`` and ``apply_fn`` are static: pass the same objects
    every generation (e.g. ``model.apply``, not a new lambda) or each call recompiles.
    ``obs_stats``, when given, normalises what the policy sees and comes back updated with every
    observation of every live step of the whole population.
    """
    if episodes_per_member < 1:
        raise ValueError(f"episodes_per_member must be >= 1, got {episodes_per_member}.")
    episodes = run_episodes(
        task,
        lambda obs: strategy.population_apply(population, apply_fn, obs),
        key,
        (strategy.population_size, episodes_per_member),
        deterministic=deterministic,
        obs_stats=obs_stats,
        max_steps=max_steps,
        stop_when_done=stop_when_done,
    )
    return RolloutResult(
        fitness=episodes.returns.mean(axis=1),
        returns=episodes.returns,
        lengths=episodes.lengths,
        env_steps=episodes.lengths.sum(),
        obs_stats=episodes.obs_stats,
    )


@functools.partial(
    jax.jit,
    static_argnames=(
        "task", "apply_fn", "num_episodes", "deterministic", "max_steps", "stop_when_done",
    ),
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
) -> Evaluation:
    """One policy (e.g. the ES mean) on ``num_episodes`` fresh episodes, batched in one call.

    ``apply_fn(params, obs)`` sees all ``(1, num_episodes, *obs_shape)`` observations at once.
    Observations are normalised with ``obs_stats`` exactly as in ``rollout``; the statistics
    are not updated. ``deterministic`` defaults to True: deploy-time behaviour (argmax/mean).
    """
    if num_episodes < 1:
        raise ValueError(f"num_episodes must be >= 1, got {num_episodes}.")
    episodes = run_episodes(
        task,
        lambda obs: apply_fn(params, obs),
        key,
        (1, num_episodes),
        deterministic=deterministic,
        obs_stats=obs_stats,
        update_stats=False,
        max_steps=max_steps,
        stop_when_done=stop_when_done,
    )
    returns, lengths = episodes.returns[0], episodes.lengths[0]
    return Evaluation(
        mean_return=returns.mean(), returns=returns, lengths=lengths, env_steps=lengths.sum()
    )
