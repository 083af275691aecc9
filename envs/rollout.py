"""Population rollouts, the hot loop of ES: N members x k episodes in one compiled loop.

Fitness is an episode return, so evaluating a generation means running every member's episodes
to the end. All ``N x k`` episodes step together in one loop over time: the policy is
one ``population_apply`` call per step (member i sees its k observations as a batch), actions
and env steps are vmapped. Tasks auto-reset, so each slot is masked after its first episode
ends: every episode's return counts exactly once. The same scan evaluates a single policy
(``evaluate``), so training and evaluation cannot drift apart.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp

from eggroll_rl.envs import obs_norm
from eggroll_rl.envs.actions import select_action
from eggroll_rl.envs.task import Task

PolicyFn = Callable[[jax.Array], tuple[jax.Array, Optional[jax.Array]]]


class Episodes(NamedTuple):
    """Per-slot results of a batch of episodes (slots shaped ``(N, k)``)."""

    returns: jax.Array
    lengths: jax.Array
    obs_stats: Optional[obs_norm.RunningStats]


class RolloutResult(NamedTuple):
    """A generation's evaluation: what ``tell`` needs, and what curves are plotted against."""

    fitness: jax.Array  # (N,) mean return over the member's k episodes
    returns: jax.Array  # (N, k)
    lengths: jax.Array  # (N, k) steps of each episode
    env_steps: jax.Array  # scalar: steps actually consumed, the sum of the lengths
    obs_stats: Optional[obs_norm.RunningStats]  # updated with every live observation


def _broadcast_log_std(log_std: Optional[jax.Array], head: jax.Array) -> Optional[jax.Array]:
    # A learned log-std is a parameter: shape (A,) for one policy, (N, A) for a population.
    if log_std is None:
        return None
    missing = head.ndim - log_std.ndim
    return jnp.broadcast_to(log_std.reshape(log_std.shape[:-1] + (1,) * missing + log_std.shape[-1:]), head.shape)


def run_episodes(
    task: Task,
    policy: PolicyFn,
    key: jax.Array,
    slots: tuple[int, int],
    *,
    deterministic: bool,
    obs_stats: Optional[obs_norm.RunningStats] = None,
    max_steps: Optional[int] = None,
    track_stats: bool = True,
) -> Episodes:
    """Run the first episode of every slot; ``policy`` maps normalised obs ``(N, k, ...)`` to
    ``(head, log_std)``. Observations are normalised with ``obs_stats`` as given; the returned
    statistics add every observation of a live step."""
    horizon = task.max_episode_steps if max_steps is None else int(max_steps)
    count = slots[0] * slots[1]
    key_reset, key_run = jax.random.split(key)
    obs, env_state = jax.vmap(task.reset)(jax.random.split(key_reset, count))
    reshape = lambda x: x.reshape(slots + x.shape[1:])
    obs, env_state = jax.tree_util.tree_map(reshape, (obs, env_state))
    act = jax.vmap(jax.vmap(lambda h, s, k: select_action(task.action_space, h, s, k, deterministic)))
    env_step = jax.vmap(jax.vmap(task.step))

    def step(carry):
        t, env_state, obs, alive, returns, lengths, stats = carry
        key_act, key_env = jax.random.split(jax.random.fold_in(key_run, t))
        seen = obs if obs_stats is None else obs_norm.normalize(obs_stats, obs)
        head, log_std = policy(seen)
        log_std = _broadcast_log_std(log_std, head)
        if log_std is None:
            log_std = jnp.zeros_like(head)
        actions = act(head, log_std, _split(key_act, slots))
        obs_next, env_state, reward, terminated, truncated, _ = env_step(
            _split(key_env, slots), env_state, actions
        )
        live = alive.astype(reward.dtype)
        if stats is not None:
            stats = obs_norm.update(stats, obs, alive)
        returns = returns + reward * live
        lengths = lengths + alive.astype(jnp.int32)
        alive = jnp.logical_and(alive, jnp.logical_not(jnp.logical_or(terminated, truncated)))
        return (t + 1, env_state, obs_next, alive, returns, lengths, stats)

    def running(carry):
        t, alive = carry[0], carry[3]
        return jnp.logical_and(t < horizon, jnp.any(alive))

    carry = (
        jnp.zeros((), jnp.int32),
        env_state,
        obs,
        jnp.ones(slots, bool),
        jnp.zeros(slots, jnp.float32),
        jnp.zeros(slots, jnp.int32),
        obs_stats if track_stats else None,
    )
    # A while loop rather than a scan: early generations end most episodes long before the
    # time limit, and the loop stops as soon as every slot's first episode is over.
    _, _, _, _, returns, lengths, stats = jax.lax.while_loop(running, step, carry)
    return Episodes(returns=returns, lengths=lengths, obs_stats=stats if track_stats else obs_stats)


def _split(key: jax.Array, slots: tuple[int, int]) -> jax.Array:
    return jax.random.split(key, slots[0] * slots[1]).reshape(slots)


def _population_policy(strategy, population, apply_fn, obs):
    """One member's k observations at a time, laid out so XLA keeps one copy of activations.

    With a per-member batch axis (``(N, k, ...)``), XLA computes every hidden activation twice,
    once in the shape of the shared matmul and once in the shape of the low-rank term. With
    ``(N, ...)`` inputs it does not: so k = 1 passes the observation alone, and k > 1 makes one
    call per episode slot (the same work, each call on ``(N, ...)``).
    """
    outputs = [
        strategy.population_apply(population, apply_fn, obs[:, j])
        for j in range(obs.shape[1])
    ]
    head = jnp.stack([out[0] for out in outputs], axis=1)
    return head, outputs[0][1]


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
) -> RolloutResult:
    """Evaluate every member of ``population`` on ``episodes_per_member`` fresh episodes.

    ``apply_fn(params, obs)`` must return ``(head, log_std)`` like ``eggroll_rl.networks.Policy``
    (``log_std`` None for discrete actions). Call it inside ``jit``.
    """
    if episodes_per_member < 1:
        raise ValueError(f"episodes_per_member must be >= 1, got {episodes_per_member}.")
    slots = (strategy.population_size, episodes_per_member)
    episodes = run_episodes(
        task,
        lambda obs: _population_policy(strategy, population, apply_fn, obs),
        key,
        slots,
        deterministic=deterministic,
        obs_stats=obs_stats,
        max_steps=max_steps,
    )
    return RolloutResult(
        fitness=episodes.returns.mean(axis=1),
        returns=episodes.returns,
        lengths=episodes.lengths,
        env_steps=episodes.lengths.sum(),
        obs_stats=episodes.obs_stats,
    )


def evaluate(
    task: Task,
    apply_fn: Callable,
    params: Any,
    key: jax.Array,
    *,
    episodes: int = 10,
    deterministic: bool = True,
    obs_stats: Optional[obs_norm.RunningStats] = None,
    max_steps: Optional[int] = None,
) -> Episodes:
    """One policy (e.g. the ES mean) on ``episodes`` fresh episodes; statistics are not updated."""
    result = run_episodes(
        task,
        lambda obs: apply_fn(params, obs),
        key,
        (1, episodes),
        deterministic=deterministic,
        obs_stats=obs_stats,
        max_steps=max_steps,
        track_stats=False,
    )
    return Episodes(returns=result.returns[0], lengths=result.lengths[0], obs_stats=obs_stats)
