"""Population rollouts return exactly the returns that tiny fake envs with known answers give.

The fake tasks auto-reset like real ones, so a rollout that failed to mask a slot after its
first episode would keep collecting reward; known lengths, returns and observations pin down
masking, k-episode averaging, truncation, heads and the pooled observation statistics.
"""

from typing import NamedTuple

import gymnasium
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import eggroll_rl.envs as envs
from eggroll_rl.envs import obs_norm
from eggroll_rl.envs.task import Task
from eggroll_rl.networks import Policy
from eggroll_rl.strategies import Eggroll


# ---- fake tasks ---------------------------------------------------------------------------
def _auto_reset_step(env_id, reset_state, transition, max_episode_steps, obs_of):
    """Task.step from ``transition(state, action) -> (state, reward, terminated)``."""

    def step(key, state, action):
        next_state, reward, terminated = transition(state, action)
        truncated = ~terminated & (next_state["t"] >= max_episode_steps)
        done = terminated | truncated
        final_obs = obs_of(next_state)
        state = jax.tree_util.tree_map(lambda r, s: jnp.where(done, r, s), reset_state(), next_state)
        info = {"final_obs": final_obs}
        return obs_of(state), state, jnp.float32(reward), terminated, truncated, info

    return step


def length_task(lengths=(2, 5, 9, 20), max_episode_steps=12) -> Task:
    """Reward 1 per step; action a terminates the episode after ``lengths[a]`` steps.

    Observations are ``[t, 1]``, so the live observations of an episode of length L are known.
    """
    table = jnp.asarray(lengths)
    reset_state = lambda: {"t": jnp.int32(0)}
    obs_of = lambda s: jnp.stack([s["t"].astype(jnp.float32), jnp.float32(1.0)])

    def transition(state, action):
        t = state["t"] + 1
        return {"t": t}, 1.0, t >= table[action]

    return Task(
        env_id="test/lengths",
        reset=lambda key: (obs_of(reset_state()), reset_state()),
        step=_auto_reset_step("test/lengths", reset_state, transition, max_episode_steps, obs_of),
        observation_space=gymnasium.spaces.Box(-np.inf, np.inf, (2,), np.float32),
        action_space=gymnasium.spaces.Discrete(len(lengths)),
        max_episode_steps=max_episode_steps,
    )


def bandit_task(num_actions=3, best=1, max_episode_steps=10) -> Task:
    """Never terminates (always truncated); reward 1 when the action is ``best``."""
    reset_state = lambda: {"t": jnp.int32(0)}
    obs_of = lambda s: jnp.ones(1, jnp.float32)

    def transition(state, action):
        return {"t": state["t"] + 1}, (action == best).astype(jnp.float32), jnp.bool_(False)

    return Task(
        env_id="test/bandit",
        reset=lambda key: (obs_of(reset_state()), reset_state()),
        step=_auto_reset_step("test/bandit", reset_state, transition, max_episode_steps, obs_of),
        observation_space=gymnasium.spaces.Box(-np.inf, np.inf, (1,), np.float32),
        action_space=gymnasium.spaces.Discrete(num_actions),
        max_episode_steps=max_episode_steps,
    )


TARGET = np.array([0.3, -0.2], np.float32)


def track_obs(t):
    return np.array([np.cos(t), np.sin(t), 2.0 + t], np.float32)


def track_task(max_episode_steps=5) -> Task:
    """Continuous; observations follow t; reward ``-sum|a - TARGET|``; truncates, never ends."""
    reset_state = lambda: {"t": jnp.int32(0)}

    def obs_of(s):
        t = s["t"].astype(jnp.float32)
        return jnp.stack([jnp.cos(t), jnp.sin(t), 2.0 + t])

    def transition(state, action):
        return {"t": state["t"] + 1}, -jnp.sum(jnp.abs(action - TARGET)), jnp.bool_(False)

    return Task(
        env_id="test/track",
        reset=lambda key: (obs_of(reset_state()), reset_state()),
        step=_auto_reset_step("test/track", reset_state, transition, max_episode_steps, obs_of),
        observation_space=gymnasium.spaces.Box(-np.inf, np.inf, (3,), np.float32),
        action_space=gymnasium.spaces.Box(-1.0, 1.0, (2,), np.float32),
        max_episode_steps=max_episode_steps,
    )


def continuous_bandit_task(max_episode_steps=10) -> Task:
    """Box(-1, 1, (1,)); the reward is the (clipped) action itself."""
    reset_state = lambda: {"t": jnp.int32(0)}
    obs_of = lambda s: jnp.ones(1, jnp.float32)

    def transition(state, action):
        return {"t": state["t"] + 1}, action[0], jnp.bool_(False)

    return Task(
        env_id="test/continuous-bandit",
        reset=lambda key: (obs_of(reset_state()), reset_state()),
        step=_auto_reset_step("test/cb", reset_state, transition, max_episode_steps, obs_of),
        observation_space=gymnasium.spaces.Box(-np.inf, np.inf, (1,), np.float32),
        action_space=gymnasium.spaces.Box(-1.0, 1.0, (1,), np.float32),
        max_episode_steps=max_episode_steps,
    )


# ---- a fake strategy: member i's params are row i of a table --------------------------------
class TableStrategy:
    """Duck-types ``population_apply``: no noise, member i simply uses ``population[i]``."""

    def __init__(self, population_size):
        self.population_size = population_size

    def population_apply(self, population, apply_fn, xs):
        return jax.vmap(apply_fn)(population, xs)


def table_policy(params, obs):
    """Ignores the observation values: head ``params["head"]`` for each of the batch rows.

    ``params["head"]`` is ``(k, A)`` (one row per episode of the member's batch) or ``(A,)``.
    """
    head = jnp.broadcast_to(params["head"], obs.shape[:-1] + params["head"].shape[-1:])
    return head, params.get("log_std")


def one_hot_logits(actions, num_actions):
    return 5.0 * jax.nn.one_hot(jnp.asarray(actions), num_actions)


@pytest.fixture(scope="module")
def lengths():
    envs.register("test/rollout-lengths", lambda **kw: length_task(**kw), overwrite=True)
    return envs.make("test/rollout-lengths")


# ---- known returns: masking, averaging, truncation --------------------------------------------
ACTIONS = [[0, 1], [2, 2], [1, 0], [3, 2]]  # member x episode; lengths 2, 5, 9, 20 (cut at 12)
KNOWN_RETURNS = np.array([[2, 5], [9, 9], [5, 2], [12, 9]], np.float32)


@pytest.mark.parametrize("stop_when_done", [True, False])
def test_each_slot_counts_only_its_first_episode(lengths, stop_when_done):
    population = {"head": one_hot_logits(ACTIONS, 4)}  # (N=4, k=2, A=4)
    result = envs.rollout(
        lengths, TableStrategy(4), population, table_policy, jax.random.key(0),
        episodes_per_member=2, deterministic=True, stop_when_done=stop_when_done,
    )
    # Unmasked, every slot would collect 12 (the env keeps paying after its auto-reset).
    np.testing.assert_array_equal(np.asarray(result.returns), KNOWN_RETURNS)
    np.testing.assert_array_equal(np.asarray(result.lengths), KNOWN_RETURNS.astype(np.int32))
    np.testing.assert_allclose(np.asarray(result.fitness), [3.5, 9.0, 3.5, 10.5])
    assert int(result.env_steps) == int(KNOWN_RETURNS.sum()) == 53
    assert result.obs_stats is None


def test_max_steps_cuts_every_episode_short(lengths):
    population = {"head": one_hot_logits(ACTIONS, 4)}
    result = envs.rollout(
        lengths, TableStrategy(4), population, table_policy, jax.random.key(0),
        episodes_per_member=2, deterministic=True, max_steps=4,
    )
    np.testing.assert_array_equal(np.asarray(result.returns), np.minimum(KNOWN_RETURNS, 4))
    assert int(result.env_steps) == int(np.minimum(KNOWN_RETURNS, 4).sum())


def test_observation_stats_pool_only_live_steps(lengths):
    population = {"head": one_hot_logits(ACTIONS, 4)}
    start = obs_norm.init((2,))
    result = envs.rollout(
        lengths, TableStrategy(4), population, table_policy, jax.random.key(0),
        episodes_per_member=2, deterministic=True, obs_stats=start,
    )
    # An episode of length L shows the policy [t, 1] for t = 0..L-1, and nothing after.
    live = np.concatenate(
        [np.stack([np.arange(L), np.ones(L)], 1) for L in KNOWN_RETURNS.astype(int).ravel()]
    )
    stats = result.obs_stats
    assert float(stats.count) == len(live) == int(result.env_steps)
    np.testing.assert_allclose(np.asarray(stats.mean), live.mean(0), rtol=1e-5)
    np.testing.assert_allclose(np.asarray(stats.var), live.var(0), rtol=1e-5, atol=1e-6)


def test_evaluate_runs_one_policy_through_the_same_loop(lengths):
    params = {"head": one_hot_logits([2, 0, 3], 4)}  # episode j takes action [2, 0, 3][j]
    result = envs.evaluate(lengths, table_policy, params, jax.random.key(1), 3)
    np.testing.assert_array_equal(np.asarray(result.returns), [9.0, 2.0, 12.0])
    np.testing.assert_array_equal(np.asarray(result.lengths), [9, 2, 12])
    assert float(result.mean_return) == pytest.approx(23.0 / 3)
    assert int(result.env_steps) == 23


def test_policy_head_of_the_wrong_size_is_rejected(lengths):
    params = {"head": jnp.zeros(3)}  # the task has 4 actions
    with pytest.raises(ValueError, match=r"policy head has shape .*action_size=4"):
        envs.evaluate(lengths, table_policy, params, jax.random.key(0), 2)


# ---- heads: argmax/mean versus sampling ------------------------------------------------------
def test_discrete_argmax_takes_the_best_action_and_sampling_follows_softmax():
    task = bandit_task()
    logits = jnp.array([0.0, 1.0, 0.5])
    population = {"head": jnp.broadcast_to(logits, (8, 32, 3))}
    strategy = TableStrategy(8)
    greedy = envs.rollout(
        task, strategy, population, table_policy, jax.random.key(0),
        episodes_per_member=32, deterministic=True,
    )
    np.testing.assert_array_equal(np.asarray(greedy.returns), 10.0)  # truncated at 10 steps
    np.testing.assert_array_equal(np.asarray(greedy.lengths), 10)

    sampled = envs.rollout(
        task, strategy, population, table_policy, jax.random.key(0), episodes_per_member=32
    )
    p_best = np.exp(1.0) / np.exp([0.0, 1.0, 0.5]).sum()
    assert float(sampled.returns.mean()) == pytest.approx(10 * p_best, abs=0.4)  # ~4 sigma
    assert len(np.unique(np.asarray(sampled.returns))) > 3
    again = envs.rollout(
        task, strategy, population, table_policy, jax.random.key(0), episodes_per_member=32
    )
    np.testing.assert_array_equal(np.asarray(again.returns), np.asarray(sampled.returns))


def test_continuous_mean_versus_gaussian_samples_with_per_member_log_std():
    task = continuous_bandit_task()
    population = {
        "head": jnp.full((2, 64, 1), 0.2),
        "log_std": jnp.array([[-30.0], [np.log(0.5)]]),  # member 0: practically no noise
    }
    strategy = TableStrategy(2)
    mean = envs.rollout(
        task, strategy, population, table_policy, jax.random.key(3),
        episodes_per_member=64, deterministic=True,
    )
    np.testing.assert_allclose(np.asarray(mean.returns), 2.0, rtol=1e-5)

    sampled = envs.rollout(
        task, strategy, population, table_policy, jax.random.key(3), episodes_per_member=64
    )
    np.testing.assert_allclose(np.asarray(sampled.returns[0]), 2.0, rtol=1e-5)
    draws = np.random.default_rng(0).normal(0.2, 0.5, 1_000_000)
    expected = 10 * np.clip(draws, -1.0, 1.0).mean()  # clipping pulls the mean below 0.2
    assert float(sampled.fitness[1]) == pytest.approx(expected, abs=0.4)  # ~4 sigma
    assert float(sampled.returns[1].std()) > 0.5


def test_sampling_continuous_actions_without_a_log_std_is_an_error():
    task = continuous_bandit_task()
    with pytest.raises(ValueError, match="needs a log-std"):
        envs.evaluate(task, table_policy, {"head": jnp.zeros(1)}, jax.random.key(0), 2,
                      deterministic=False)


# ---- a real EGGROLL population against member-by-member references ----------------------------
class Track(NamedTuple):
    task: Task
    model: Policy
    strategy: Eggroll
    population: object
    stats: obs_norm.RunningStats


@pytest.fixture(scope="module")
def track():
    task = track_task()
    model = Policy(action_size=2, continuous=True, hidden=(8, 8))
    params = model.init(jax.random.key(0), jnp.zeros(3))
    strategy = Eggroll(6, 0.5, rank=1)
    population = strategy.ask(strategy.init(jax.random.key(1), params))
    stats = obs_norm.RunningStats(
        count=jnp.asarray(5.0), mean=jnp.array([0.1, 0.0, 3.0]), var=jnp.array([0.5, 0.5, 2.0])
    )
    return Track(task, model, strategy, population, stats)


def _reference_return(model, params, stats, steps):
    total = 0.0
    for t in range(steps):
        obs = track_obs(t).astype(np.float64)
        seen = np.clip((obs - stats.mean) / np.sqrt(np.asarray(stats.var) + 1e-8), -10, 10)
        head, _ = model.apply(params, jnp.asarray(seen, jnp.float32))
        action = np.clip(np.asarray(head, np.float64), -1.0, 1.0)
        total -= np.abs(action - TARGET).sum()
    return total


def test_member_i_acts_with_its_own_perturbed_params_on_normalised_obs(track):
    result = envs.rollout(
        track.task, track.strategy, track.population, track.model.apply, jax.random.key(2),
        episodes_per_member=2, deterministic=True, obs_stats=track.stats,
    )
    stats = jax.tree_util.tree_map(np.asarray, track.stats)
    expected = [
        _reference_return(
            track.model, track.strategy.member_params(track.population, i), stats, steps=5
        )
        for i in range(track.strategy.population_size)
    ]
    assert len(set(np.round(expected, 4))) == track.strategy.population_size  # members differ
    np.testing.assert_allclose(np.asarray(result.fitness), expected, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(np.asarray(result.returns[:, 1]), expected, rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(np.asarray(result.lengths), 5)  # truncation at 5 steps

    # Pooled stats: the given 5 samples plus 6 members x 2 episodes x obs_0..obs_4.
    seen = np.tile(np.stack([track_obs(t) for t in range(5)]).astype(np.float64), (12, 1))
    count = 5 + len(seen)
    mean = (5 * stats.mean + seen.sum(0)) / count
    m2 = 5 * stats.var + ((seen - seen.mean(0)) ** 2).sum(0)
    m2 += (seen.mean(0) - stats.mean) ** 2 * 5 * len(seen) / count
    assert float(result.obs_stats.count) == count
    np.testing.assert_allclose(np.asarray(result.obs_stats.mean), mean, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(result.obs_stats.var), m2 / count, rtol=1e-4)


def test_evaluate_of_the_mean_matches_the_reference_and_stats_stay_put(track):
    result = envs.evaluate(
        track.task, track.model.apply, track.population.mean, jax.random.key(3), 2,
        obs_stats=track.stats, max_steps=3,
    )
    stats = jax.tree_util.tree_map(np.asarray, track.stats)
    expected = _reference_return(track.model, track.population.mean, stats, steps=3)
    np.testing.assert_allclose(np.asarray(result.returns), [expected] * 2, rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(np.asarray(result.lengths), 3)


# ---- end to end: EGGROLL on CartPole -----------------------------------------------------------
def test_eggroll_trains_on_cartpole_with_finite_bounded_fitness():
    task = envs.make("gymnax/CartPole-v1")
    model = Policy(action_size=task.action_size, hidden=(32, 32))
    params = model.init(jax.random.key(0), jnp.zeros(task.observation_space.shape))
    strategy = Eggroll(64, 0.05, rank=1, optimizer=optax.adam(0.05))
    state = strategy.init(jax.random.key(1), params)
    stats = obs_norm.init(task.observation_space.shape)
    total_steps = 0
    for generation in range(3):
        population = strategy.ask(state)
        result = envs.rollout(
            task, strategy, population, model.apply, jax.random.fold_in(jax.random.key(2), generation),
            episodes_per_member=2, obs_stats=stats,
        )
        fitness = np.asarray(result.fitness)
        assert fitness.shape == (64,) and np.all(np.isfinite(fitness))
        assert np.all((fitness >= 1) & (fitness <= 500))
        # CartPole pays 1 per live step, so each return is its episode's length.
        np.testing.assert_array_equal(np.asarray(result.returns), np.asarray(result.lengths))
        assert int(result.env_steps) == int(np.asarray(result.lengths).sum())
        total_steps += int(result.env_steps)
        stats = result.obs_stats
        assert float(stats.count) == total_steps
        state, metrics = strategy.tell(state, population, result.fitness)
    assert int(state.generation) == 3


# ---- the throughput bench runs the same rollout both ways --------------------------------------
def test_bench_rollout_case_reports_the_inference_to_eggroll_time_ratio(lengths):
    import json

    from eggroll_rl.bench import suite as bench

    case = bench.RolloutCase("tiny_rollout", "test/rollout-lengths", (8,), 4, steps=3)
    larger = bench.RolloutCase("tiny_rollout_n8", "test/rollout-lengths", (8,), 8, steps=3)
    report = bench.run([case, larger], repeats=1, log=lambda *_: None)
    json.dumps(report)  # the --json output must serialise
    result, result_n8 = report["cases"]
    by_size = report["rollout_eggroll_vs_inference_by_population"]
    assert by_size == {
        "4": result["rollout_eggroll_vs_inference"], "8": result_n8["rollout_eggroll_vs_inference"]
    }
    assert report["rollout_eggroll_vs_inference"] == min(by_size.values())  # the worst size
    seconds = result["rollout_s"]
    assert seconds["rollout_eggroll"] > 0 and seconds["rollout_inference"] > 0
    # the ceiling is the faster of the two plain layouts of the shared policy, chosen once
    assert result["ceiling_variant"] in ("rollout_inference_batched", "rollout_inference_vmapped")
    assert seconds["rollout_inference"] == seconds[result["ceiling_variant"]]
    ratio = seconds["rollout_inference"] / seconds["rollout_eggroll"]
    assert result["rollout_eggroll_vs_inference"] == pytest.approx(ratio)
    assert result["env_steps_per_s"]["rollout_eggroll"] == pytest.approx(4 * 3 / seconds["rollout_eggroll"])
    # one round: the paired ratio is that round's ratio, the same calls as the best-of one
    paired = {"4": result, "8": result_n8}
    paired = {k: r["rollout_eggroll_vs_inference_paired"] for k, r in paired.items()}
    assert paired["4"]["rounds"] == 1 and paired["4"]["median"] == pytest.approx(ratio)
    assert report["rollout_eggroll_vs_inference_paired"] == min(p["median"] for p in paired.values())


def test_bench_shared_policy_baseline_takes_its_params_at_run_time():
    # Closed over, the params were compile-time constants and XLA folded the initial zero biases
    # and unit LayerNorm scales away: a ceiling no trained policy reaches. Passed in, one
    # compiled baseline must give each param set's own returns, as a plain vmapped rollout does.
    from eggroll_rl.bench.training import shared_policy_rollout
    from eggroll_rl.envs.rollout import run_episodes

    task = envs.make("gymnax/CartPole-v1")
    model = Policy(task.action_size, hidden=(8,))
    loop = dict(max_steps=30, deterministic=True, stop_when_done=False)
    run = shared_policy_rollout(task, model, (6, 1), **loop)
    key = jax.random.key(3)
    returns = []
    params = model.init(jax.random.key(0), jnp.zeros(task.observation_space.shape))
    for params in (params, jax.tree_util.tree_map(jnp.negative, params)):  # argmax flips
        expected = run_episodes(
            task, jax.vmap(lambda obs: model.apply(params, obs)), key, (6, 1), **loop
        ).returns
        got = run(params, key)
        np.testing.assert_array_equal(np.asarray(got), np.asarray(expected))
        returns.append(np.asarray(got))
    assert not np.array_equal(*returns)  # the params passed in are the ones used
