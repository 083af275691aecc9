"""The chunked rollout loop gives bit-identical episodes to the one-check-per-step loop it replaced,
and its compiled program checks the data-dependent stop condition once per chunk, not per step.

``_reference_run_episodes`` is a verbatim copy of ``run_episodes`` as it was before the loop was
chunked (a ``lax.while_loop`` whose condition ``t < horizon & any(alive)`` ran after every env
step); every configuration below must give exactly its returns, lengths and statistics.
"""

from __future__ import annotations

import functools
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import eggroll_rl.envs as envs
from eggroll_rl.envs import obs_norm
from eggroll_rl.envs.actions import select_action
from eggroll_rl.envs.rollout import (
    _per_slot_log_std,
    _slot_keys,
    rollout,
    run_episodes,
    steps_per_check,
)
from eggroll_rl.networks import Policy
from jaxpr_walk import sub_jaxprs


def _reference_run_episodes(
    task, policy, key, slots, *, deterministic=False, obs_stats=None, update_stats=True,
    max_steps=None, stop_when_done=True,
):
    """The pre-chunking ``run_episodes``: one env step per ``while_loop`` iteration."""
    horizon = task.max_episode_steps if max_steps is None else int(max_steps)
    key_reset, key_run = jax.random.split(key)
    obs, env_state = jax.vmap(jax.vmap(task.reset))(_slot_keys(key_reset, slots))
    select = functools.partial(select_action, task.action_space, deterministic=deterministic)
    select = jax.vmap(jax.vmap(select))
    env_step = jax.vmap(jax.vmap(task.episode_step))
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
        jnp.zeros((), jnp.int32), env_state, obs, jnp.ones(slots, bool),
        jnp.zeros(slots, jnp.float32), jnp.zeros(slots, jnp.int32),
        obs_stats if track_stats else None,
    )
    *_, returns, lengths, stats = jax.lax.while_loop(running, step, carry)
    return returns, lengths, stats if track_stats else obs_stats


class MemberTable:
    """A population of whole parameter sets, member i = row i (independent of any strategy)."""

    def __init__(self, population_size):
        self.population_size = population_size

    def population_apply(self, population, apply_fn, xs):
        return jax.vmap(apply_fn)(population, xs)


MEMBERS = 8


@functools.lru_cache(maxsize=None)
def _setup(env_id):
    task = envs.make(env_id)
    model = Policy(task.action_size, continuous=not task.discrete, hidden=(16,), layer_norm=False)
    params = model.init(jax.random.key(0), jnp.zeros(task.observation_space.shape))
    keys = jax.random.split(jax.random.key(1), MEMBERS)
    leaves, tree = jax.tree_util.tree_flatten(params)

    def member(key):  # large perturbations: members differ, some survive long, some do not
        ks = jax.random.split(key, len(leaves))
        return [x + 0.8 * jax.random.normal(k, x.shape, x.dtype) for x, k in zip(leaves, ks)]

    population = jax.tree_util.tree_unflatten(tree, jax.vmap(member)(keys))
    dim = task.observation_space.shape[0]
    stats = obs_norm.RunningStats(
        count=jnp.asarray(10.0), mean=jnp.linspace(-0.3, 0.4, dim), var=jnp.linspace(0.5, 2.0, dim)
    )
    return task, model, population, stats


# (env, episodes_per_member, stop_when_done, max_steps, deterministic, with obs_stats)
CONFIGS = [
    ("gymnax/CartPole-v1", 1, True, None, True, False),
    ("gymnax/CartPole-v1", 3, True, None, False, True),
    ("gymnax/CartPole-v1", 3, False, 25, True, True),  # 25: chunks overrun the horizon
    ("gymnax/CartPole-v1", 1, True, 25, False, False),
    ("gymnax/CartPole-v1", 3, True, 5, True, True),  # horizon below one chunk
    ("gymnax/Pendulum-v1", 1, True, None, False, True),  # never terminates: 200 steps
    ("gymnax/Pendulum-v1", 3, False, 45, True, False),
    ("gymnax/Pendulum-v1", 3, True, 45, False, True),
]


@pytest.mark.parametrize("env_id,k,stop,max_steps,deterministic,with_stats", CONFIGS)
def test_chunked_loop_matches_the_per_step_loop_exactly(env_id, k, stop, max_steps, deterministic,
                                                       with_stats):
    task, model, population, stats = _setup(env_id)
    obs_stats = stats if with_stats else None
    key = jax.random.key(7)
    loop = dict(deterministic=deterministic, max_steps=max_steps, stop_when_done=stop)

    @jax.jit
    def reference(population, key, obs_stats):
        policy = lambda obs: jax.vmap(model.apply)(population, obs)
        return _reference_run_episodes(task, policy, key, (MEMBERS, k), obs_stats=obs_stats, **loop)

    want_returns, want_lengths, want_stats = reference(population, key, obs_stats)
    got = rollout(
        task, MemberTable(MEMBERS), population, model.apply, key, episodes_per_member=k,
        obs_stats=obs_stats, **loop,
    )
    np.testing.assert_array_equal(np.asarray(got.returns), np.asarray(want_returns))
    np.testing.assert_array_equal(np.asarray(got.lengths), np.asarray(want_lengths))
    assert int(got.env_steps) == int(np.asarray(want_lengths).sum())
    if with_stats:
        for name in ("count", "mean", "var"):
            np.testing.assert_array_equal(
                np.asarray(getattr(got.obs_stats, name)), np.asarray(getattr(want_stats, name))
            )
        assert float(got.obs_stats.count) == 10 + int(got.env_steps)
    else:
        assert got.obs_stats is None
    # The configurations exercise what the chunks must get right: some episodes end inside a
    # chunk, and with a cut horizon some slots are still alive when it is reached.
    lengths = np.asarray(got.lengths)
    horizon = task.max_episode_steps if max_steps is None else max_steps
    if env_id.endswith("CartPole-v1") and max_steps is None:
        assert lengths.min() < horizon and len(np.unique(lengths)) > 2
    if max_steps is not None:
        assert lengths.max() == horizon


def test_steps_per_check_prefers_a_divisor_of_the_horizon():
    assert steps_per_check(500) == 20 and steps_per_check(1000) == 20 and steps_per_check(200) == 20
    assert steps_per_check(128) == 16 and steps_per_check(5) == 5 and steps_per_check(16) == 16
    assert steps_per_check(37) == 16  # no divisor in [16, 24]: steps past the horizon are masked
    for horizon in range(1, 300):
        k = steps_per_check(horizon)
        assert 1 <= k <= 24 and (k == min(horizon, 16) or horizon % k == 0)


# ---- the compiled program: one stop check per chunk ------------------------------------------
def _primitives(jaxpr) -> set[str]:
    """Every primitive in ``jaxpr``, nested ones included."""
    names = set()
    for eqn in jaxpr.eqns:
        names.add(eqn.primitive.name)
        for sub in sub_jaxprs(eqn):
            names |= _primitives(sub)
    return names


def _loops(jaxpr):
    """Top-level ``while``/``scan`` equations of ``jaxpr``, looking through ``pjit``."""
    for eqn in jaxpr.eqns:
        if eqn.primitive.name in ("while", "scan"):
            yield eqn
        elif eqn.primitive.name in ("pjit", "jit", "closed_call"):
            for sub in sub_jaxprs(eqn):
                yield from _loops(sub)


def _episode_loop(stop_when_done, max_steps=None):
    task, model, population, stats = _setup("gymnax/CartPole-v1")
    fn = lambda population, key: run_episodes(
        task, lambda obs: jax.vmap(model.apply)(population, obs), key, (MEMBERS, 2),
        obs_stats=stats, max_steps=max_steps, stop_when_done=stop_when_done,
    )
    jaxpr = jax.make_jaxpr(fn)(population, jax.random.key(0)).jaxpr
    return task, list(_loops(jaxpr)), fn, population


@pytest.mark.parametrize("max_steps", [None, 37])
def test_the_stop_condition_runs_once_per_chunk_of_env_steps(max_steps):
    task, loops, fn, population = _episode_loop(True, max_steps)
    horizon = task.max_episode_steps if max_steps is None else max_steps
    k = steps_per_check(horizon)
    assert len(loops) == 1 and loops[0].primitive.name == "while"
    outer = loops[0]
    # The condition is data dependent: it reduces the alive mask.
    assert "reduce_or" in _primitives(outer.params["cond_jaxpr"].jaxpr)
    # Its body is one K-step scan, and the env step and the policy live inside that scan.
    inner = list(_loops(outer.params["body_jaxpr"].jaxpr))
    assert [(e.primitive.name, e.params.get("length")) for e in inner] == [("scan", k)]
    body = outer.params["body_jaxpr"].jaxpr
    outside_scan = {e.primitive.name for e in body.eqns if e.primitive.name != "scan"}
    assert "dot_general" not in outside_scan  # no env step or policy outside the inner loop
    step = inner[0].params["jaxpr"].jaxpr
    assert "dot_general" in _primitives(step)  # the policy runs once per inner step
    assert "while" not in _primitives(step) and "reduce_or" not in _primitives(step)

    # The compiled program says the same: of the loops that carry the (N, k) alive mask, the
    # outer one has no known trip count (its condition depends on data) and the one inside its
    # body runs exactly K steps, a trip count XLA knows, so no predicate goes to the host.
    text = jax.jit(fn).lower(population, jax.random.key(0)).compile().as_text()
    carrying = [line for line in text.splitlines() if " while(" in line and "pred[8,2]" in line]
    trips = sorted(
        (re.search(r'op_name="([^"]*)"', line).group(1),
         (re.search(r'"known_trip_count":\{"n":"(\d+)"', line) or [None, None])[1])
        for line in carrying
    )
    assert len(trips) == 2, trips
    (outer_name, outer_trips), (inner_name, inner_trips) = trips
    assert outer_trips is None and inner_trips == str(k)
    assert inner_name.startswith(outer_name + "/body/")


def test_a_fixed_horizon_has_no_data_dependent_condition_at_all():
    task, loops, *_ = _episode_loop(False)
    k = steps_per_check(task.max_episode_steps)
    assert [(e.primitive.name, e.params.get("length")) for e in loops] == [
        ("scan", -(-task.max_episode_steps // k))
    ]
    inner = list(_loops(loops[0].params["jaxpr"].jaxpr))
    assert [(e.primitive.name, e.params.get("length")) for e in inner] == [("scan", k)]
