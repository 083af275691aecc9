"""Gymnasium envs as ES targets: the vectorised host path against member-by-member episodes."""

import functools

import gymnasium
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from gymnasium.vector import AutoresetMode, VectorWrapper

from eggroll_rl import Eggroll
from eggroll_rl.envs import gymnasium_target as target
from eggroll_rl.envs import obs_norm
from eggroll_rl.networks import Policy

POPULATION = 8
SEED = 3


def random_params(module, obs_shape, seed=0):
    """Params of the right structure with NumPy values (``init`` would compile op by op)."""
    shapes = jax.eval_shape(module.init, jax.random.key(0), jnp.zeros(obs_shape))
    rng = np.random.default_rng(seed)
    return jax.tree_util.tree_map(
        lambda x: (rng.normal(size=x.shape) * 0.5).astype(x.dtype), shapes
    )


class Setup:
    """A tiny policy, an EGGROLL population around it, and the slow reference's pieces."""

    def __init__(self, env_id, continuous=False, population=POPULATION, sigma=0.5, craft=None):
        obs_space, act_space, self.limit = target.describe(env_id)
        size = int(np.prod(act_space.shape)) if continuous else int(act_space.n)
        self.env_id, self.act_space = env_id, act_space
        self.policy = Policy(action_size=size, continuous=continuous, hidden=(8,))
        params = random_params(self.policy, obs_space.shape)
        params = params if craft is None else craft(params)
        self.strategy = Eggroll(population, sigma, rank=1)
        self.state = self.strategy.init(jax.random.key(1), params)
        self.population = self.strategy.ask(self.state)
        self.apply = jax.jit(self.policy.apply)

    def action(self, head):
        if isinstance(self.act_space, gymnasium.spaces.Discrete):
            return int(np.argmax(head))
        return np.clip(head, self.act_space.low, self.act_space.high).astype(np.float32)

    def episode(self, params, seed, max_steps=None, seen=None):
        """One episode in its own single env, acting on the mode of the policy."""
        env = gymnasium.make(target.gymnasium_name(self.env_id))
        obs, _ = env.reset(seed=seed)
        total, length = 0.0, 0
        while True:
            if seen is not None:
                seen.append(obs)
            obs, reward, terminated, truncated, _ = env.step(
                self.action(np.asarray(self.apply(params, obs)[0]))
            )
            total, length = total + reward, length + 1
            if terminated or truncated or length == max_steps:
                return total, length, terminated

    def reference(self, k, max_steps=None, seen=None):
        """Every member's materialised params, episode by episode, seeds ``SEED + i*k + j``."""
        out = np.zeros((self.strategy.population_size, k, 3))
        member_params = jax.jit(self.strategy.member_params)
        for i in range(self.strategy.population_size):
            params = member_params(self.population, i)
            for j in range(k):
                out[i, j] = self.episode(params, SEED + i * k + j, max_steps, seen)
        return out[..., 0], out[..., 1].astype(int), out[..., 2].astype(bool)


def pumping(params):
    """Acrobot's energy pump as the mean policy (torque +1 while the second joint speeds up
    one way, -1 the other), so that members reach the goal after different numbers of steps."""
    params = jax.tree_util.tree_map(np.zeros_like, params)
    layers = params["params"]["MLP_0"]
    layers["EggrollDense_0"]["kernel"][5, :2] = [1.0, -1.0]  # hidden 0, 1: +/- joint-2 speed
    layers["LayerNorm_0"]["scale"][:] = 1.0
    layers["EggrollDense_1"]["kernel"][[0, 1], [2, 0]] = 1.0  # hidden 0 -> torque +1, 1 -> -1
    return params


@functools.lru_cache(maxsize=None)
def setup(env_id):
    if env_id == "gymnasium/Acrobot-v1":
        return Setup(env_id, sigma=0.2, craft=pumping)
    return Setup(env_id)


@pytest.mark.parametrize(
    "env_id, k, cap", [("gymnasium/CartPole-v1", 2, None), ("gymnasium/Acrobot-v1", 1, 200)]
)
def test_population_matches_member_by_member_episodes(env_id, k, cap):
    s = setup(env_id)
    result = target.host_rollout(
        env_id,
        s.strategy,
        s.population,
        s.policy.apply,
        SEED,
        episodes_per_member=k,
        deterministic=True,
        max_steps=cap,
    )
    returns, lengths, terminated = s.reference(k, max_steps=cap)
    np.testing.assert_array_equal(result.returns, returns)
    np.testing.assert_array_equal(result.lengths, lengths)
    np.testing.assert_allclose(result.fitness, returns.mean(axis=1), rtol=1e-6)
    assert int(result.env_steps) == lengths.sum() and result.obs_stats is None
    assert result.returns.shape == result.lengths.shape == (POPULATION, k)
    assert len(np.unique(returns)) > 2 and terminated.any()  # members differ, episodes end
    if env_id.endswith("CartPole-v1"):  # +1 per step, at most 500 steps
        np.testing.assert_array_equal(returns, lengths)
        assert lengths.min() >= 1 and lengths.max() <= 500
    else:  # Acrobot: -1 per step except the step that reaches the goal
        np.testing.assert_array_equal(-returns, lengths - terminated)
        assert returns.min() >= -cap and returns.max() <= 0 and lengths.max() == cap


class CountSteps(VectorWrapper):
    def __init__(self, env):
        super().__init__(env)
        self.steps = 0

    def step(self, actions):
        self.steps += 1
        return self.env.step(actions)


@pytest.mark.parametrize(
    "mode", [AutoresetMode.NEXT_STEP, AutoresetMode.SAME_STEP, AutoresetMode.DISABLED]
)
def test_every_autoreset_mode_counts_first_episodes_and_stops_when_all_are_done(mode):
    s = setup("gymnasium/CartPole-v1")
    env = CountSteps(
        target.make_vector_env(s.env_id, POPULATION * 2, vector_kwargs={"autoreset_mode": mode})
    )
    assert env.metadata["autoreset_mode"] == mode
    result = target.host_rollout(
        env,
        s.strategy,
        s.population,
        s.policy.apply,
        SEED,
        episodes_per_member=2,
        deterministic=True,
    )
    returns, lengths, _ = s.reference(2)
    np.testing.assert_array_equal(result.returns, returns)
    assert env.steps == lengths.max()
    env.close()


def test_sampled_actions_are_seeded_and_statistics_count_live_observations():
    s = setup("gymnasium/CartPole-v1")
    run = functools.partial(
        target.host_rollout,
        s.env_id,
        s.strategy,
        s.population,
        s.policy.apply,
        episodes_per_member=2,
        deterministic=False,
    )
    first, again, other = run(SEED), run(SEED), run(SEED + 100)
    np.testing.assert_array_equal(first.returns, again.returns)
    assert not np.array_equal(first.returns, other.returns)
    # Fresh statistics leave observations unchanged, so the episodes are the reference ones,
    # and come back holding exactly the observations the reference saw.
    seen = []
    returns, lengths, _ = s.reference(2, seen=seen)
    fresh = obs_norm.init((4,))
    result = target.host_rollout(
        s.env_id,
        s.strategy,
        s.population,
        s.policy.apply,
        SEED,
        episodes_per_member=2,
        deterministic=True,
        obs_stats=fresh,
    )
    np.testing.assert_array_equal(result.returns, returns)
    seen = np.stack(seen)
    assert float(result.obs_stats.count) == len(seen) == lengths.sum()
    np.testing.assert_allclose(result.obs_stats.mean, seen.mean(axis=0), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(result.obs_stats.var, seen.var(axis=0), rtol=1e-3, atol=1e-5)


def test_max_steps_caps_every_episode():
    s = setup("gymnasium/Acrobot-v1")
    result = target.host_rollout(
        s.env_id, s.strategy, s.population, s.policy.apply, SEED, max_steps=6
    )
    np.testing.assert_array_equal(result.lengths, 6)
    np.testing.assert_array_equal(result.returns, -6)


def test_host_evaluate_runs_the_mean_params():
    s = setup("gymnasium/CartPole-v1")
    evaluation = target.host_evaluate(s.env_id, s.policy.apply, s.state.mean, SEED, 3)
    expected = [s.episode(s.state.mean, SEED + j)[:2] for j in range(3)]
    np.testing.assert_array_equal(evaluation.returns, [e[0] for e in expected])
    np.testing.assert_array_equal(evaluation.lengths, [e[1] for e in expected])
    assert float(evaluation.mean_return) == pytest.approx(np.mean([e[0] for e in expected]))


def test_continuous_actions_match_the_reference():
    s = Setup("gymnasium/Pendulum-v1", continuous=True)
    result = target.host_rollout(
        s.env_id, s.strategy, s.population, s.policy.apply, SEED, deterministic=True, max_steps=40
    )
    returns, lengths, _ = s.reference(1, max_steps=40)
    np.testing.assert_array_equal(result.lengths, 40)
    np.testing.assert_allclose(result.returns, returns, rtol=1e-4)
    assert result.returns.max() <= 0 and result.returns.min() >= -40 * 16.3  # max cost per step
    sampled = target.host_rollout(
        s.env_id, s.strategy, s.population, s.policy.apply, SEED, max_steps=40
    )
    assert not np.allclose(sampled.returns, result.returns)


def test_async_vector_env_gives_the_same_result():
    s = setup("gymnasium/CartPole-v1")
    run = functools.partial(
        target.host_rollout,
        s.env_id,
        s.strategy,
        s.population,
        s.policy.apply,
        SEED,
        deterministic=True,
    )
    np.testing.assert_array_equal(run(vectorization_mode="async").returns, run().returns)


def test_mujoco_env_with_float64_observations():
    pytest.importorskip("mujoco")
    s = Setup("gymnasium/HalfCheetah-v5", continuous=True, population=2)
    result = target.host_rollout(
        s.env_id, s.strategy, s.population, s.policy.apply, SEED, max_steps=3
    )
    assert result.lengths.tolist() == [[3], [3]] and np.isfinite(result.returns).all()


def test_describe_and_errors():
    obs_space, act_space, limit = target.describe("gymnasium/Acrobot-v1")
    assert obs_space.shape == (6,) and act_space == gymnasium.spaces.Discrete(3) and limit == 500
    obs_space, act_space, limit = target.describe("gymnax/CartPole-v1")
    assert obs_space.shape == (4,) and act_space == gymnasium.spaces.Discrete(2) and limit == 500
    s = setup("gymnasium/CartPole-v1")
    with pytest.raises(ValueError, match="'gymnasium/<Gymnasium id>'"):
        target.host_rollout("CartPole-v1", s.strategy, s.population, s.policy.apply, SEED)
    with pytest.raises(gymnasium.error.Error):
        target.describe("gymnasium/NoSuchEnv-v0")
    env = target.make_vector_env(s.env_id, 3)
    with pytest.raises(ValueError, match="num_envs=16"):
        target.host_rollout(
            env, s.strategy, s.population, s.policy.apply, SEED, episodes_per_member=2
        )
    env.close()
    one_logit = lambda params, obs: (s.policy.apply(params, obs)[0][..., :1], None)
    with pytest.raises(ValueError, match=r"head has shape \(8, 1, 1\).*action_size=2"):
        target.host_rollout(s.env_id, s.strategy, s.population, one_logit, SEED)


def test_target_task_reads_spaces_and_rejects_unsupported_ones_in_one_line(tmp_path, monkeypatch):
    task = target.target_task("gymnasium/InvertedPendulum-v5")
    assert task.env_id == "gymnasium/InvertedPendulum-v5" and task.max_episode_steps == 1000
    assert not task.discrete and task.action_size == 1 and task.action_space.dtype == np.float32
    assert target.target_task("gymnasium/CartPole-v1").vector_entry_point
    for env_id, named in [
        ("gymnasium/Blackjack-v1", "Tuple"), ("gymnasium/FrozenLake-v1", r"Discrete\(16\)"),
        ("gymnasium/NoSuchEnv-v0", "NoSuchEnv"), ("gymnasium/no_such_module:X-v0", "no_such_module"),
    ]:
        with pytest.raises(ValueError, match=named) as error:
            target.target_task(env_id)
        assert "\n" not in str(error.value)
    # a user's module is imported, so that its gymnasium.register runs
    (tmp_path / "my_target_envs.py").write_text(
        "import gymnasium\n"
        "gymnasium.register('MyTargetCartPole-v0', "
        "entry_point='gymnasium.envs.classic_control:CartPoleEnv', max_episode_steps=20)\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    task = target.target_task("gymnasium/my_target_envs:MyTargetCartPole-v0")
    assert task.max_episode_steps == 20 and task.action_size == 2


def test_list_gymnasium_ids_names_only_trainable_installed_envs():
    ids = target.list_gymnasium_ids()
    assert "gymnasium/CartPole-v1" in ids and "gymnasium/Pendulum-v1" in ids
    assert "gymnasium/Blackjack-v1" not in ids and "gymnasium/CartPole-v0" not in ids
    assert not any(env_id.startswith("gymnasium/eggroll_rl/") for env_id in ids)
