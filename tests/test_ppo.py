"""PPO: advantages against a plain-loop reference, distributions and evaluation against closed
forms, and a real run that solves CartPole with the defaults."""

import math

import gymnasium
import jax
import jax.numpy as jnp
import flax.linen as nn
import numpy as np
import pytest

from eggroll_rl import envs
from eggroll_rl.agents import distributions
from eggroll_rl.agents.loop import LoopConfig, run
from eggroll_rl.agents.ppo import PPO, PPOConfig, Transition
from eggroll_rl.envs.task import Task


def _reference_gae(reward, value, terminated, truncated, final_value, last_value, gamma, lam):
    """Generalised advantage estimation written as the textbook backwards loop, in float64."""
    steps, envs_ = reward.shape
    advantages = np.zeros((steps, envs_))
    for e in range(envs_):
        running = 0.0
        for t in reversed(range(steps)):
            if terminated[t, e]:
                next_value = 0.0
            elif truncated[t, e]:
                next_value = final_value[t, e]
            else:
                next_value = value[t + 1, e] if t + 1 < steps else last_value[e]
            delta = reward[t, e] + gamma * next_value - value[t, e]
            boundary = terminated[t, e] or truncated[t, e]
            running = delta + gamma * lam * (0.0 if boundary else running)
            advantages[t, e] = running
    return advantages


def test_advantages_match_the_textbook_loop_with_termination_and_truncation():
    rng = np.random.default_rng(0)
    steps, num_envs = 12, 3
    reward, value, final_value = (rng.normal(size=(steps, num_envs)) for _ in range(3))
    terminated = rng.random((steps, num_envs)) < 0.15
    truncated = (rng.random((steps, num_envs)) < 0.15) & ~terminated
    last_value = rng.normal(size=num_envs)
    zeros = np.zeros((steps, num_envs))
    transitions = Transition(
        obs=zeros, raw_action=zeros, log_prob=zeros, value=value.astype(np.float32),
        reward=reward.astype(np.float32), terminated=terminated, truncated=truncated,
        final_value=final_value.astype(np.float32), episode_return=zeros,
        episode_done=terminated | truncated,
    )
    config = PPOConfig(gamma=0.97, gae_lambda=0.9)
    ppo = PPO(envs.make("gymnax/CartPole-v1"), config)
    advantages, targets = ppo._advantages(
        transitions, jnp.asarray(last_value, jnp.float32), jnp.asarray(reward, jnp.float32)
    )
    expected = _reference_gae(
        reward, value, terminated, truncated, final_value, last_value, 0.97, 0.9
    )
    np.testing.assert_allclose(advantages, expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(targets, expected + value, rtol=1e-5, atol=1e-5)


def test_distributions_match_closed_forms():
    discrete = gymnasium.spaces.Discrete(3)
    logits = jnp.array([0.5, -1.0, 2.0])
    p = np.exp(logits) / np.exp(logits).sum()
    assert distributions.log_prob(discrete, logits, None, jnp.array(2)) == pytest.approx(
        math.log(p[2]), rel=1e-5
    )
    assert distributions.entropy(discrete, logits, None) == pytest.approx(
        -(p * np.log(p)).sum(), rel=1e-5
    )

    box = gymnasium.spaces.Box(-1.0, 1.0, (2,))
    mean, log_std, raw = jnp.array([0.1, -0.3]), jnp.array([-0.5, 0.2]), jnp.array([0.4, 2.0])
    std = np.exp(np.asarray(log_std))
    density = np.prod(
        np.exp(-0.5 * ((np.asarray(raw) - mean) / std) ** 2) / (std * math.sqrt(2 * math.pi))
    )
    assert distributions.log_prob(box, mean, log_std, raw) == pytest.approx(
        math.log(density), rel=1e-5
    )
    # the env gets the sample clipped to the bounds, the score is of the raw sample
    raw, action = distributions.sample(box, jnp.array([5.0, -5.0]), jnp.full(2, -8.0), jax.random.key(0))
    np.testing.assert_allclose(action, [1.0, -1.0])
    assert abs(float(raw[0]) - 5.0) < 0.01


def test_bad_ppo_config_is_rejected_before_anything_compiles():
    with pytest.raises(ValueError, match="lr must be > 0"):
        PPO(envs.make("gymnax/CartPole-v1"), PPOConfig(lr=-1e-3))
    with pytest.raises(ValueError, match="divisible by num_minibatches"):
        PPOConfig(num_envs=3, num_steps=5, num_minibatches=4).validate()


def test_ppo_defaults_solve_cartpole():
    """PureJaxRL's CartPole recipe solves it within ~150k steps; two seeds in one program."""
    config = PPOConfig(total_steps=150_000)
    result = run(
        PPO(envs.make("gymnax/CartPole-v1"), config),
        LoopConfig(total_steps=config.total_steps, iterations_per_chunk=25, seeds=(0, 1),
                   progress=False),
    )
    for seed in (0, 1):
        returns = [row["eval_return"] for row in result.rows if row["seed"] == seed]
        assert max(returns) >= 475, (seed, returns)
    assert np.mean(result.final()) >= 400, result.final()
    # training returns are tracked across updates, not only inside one rollout window
    assert max(row["train_return"] for row in result.rows) >= 400


def _one_step_task(action_space, reward_of) -> Task:
    """Every episode is one step from the observation (0,): reward ``reward_of(action)``."""

    def reset(key):
        return jnp.zeros((1,), jnp.float32), jnp.zeros((), jnp.int32)

    def step(key, state, action):
        obs, fresh = reset(key)
        done = jnp.ones((), bool)
        return obs, fresh, reward_of(action), done, ~done, {"final_obs": obs}

    return Task(env_id="test/OneStep-v0", reset=reset, step=step,
                observation_space=gymnasium.spaces.Box(-1.0, 1.0, (1,), np.float32),
                action_space=action_space, max_episode_steps=1)


def _constant_head(params, bias):
    """``params`` with every kernel zeroed and the biases of width ``len(bias)`` set to
    ``bias``: a policy whose head is ``bias`` whatever it observes."""
    def set_leaf(path, leaf):
        name = jax.tree_util.keystr(path)
        if name.endswith("['kernel']"):
            return jnp.zeros_like(leaf)
        if name.endswith("['bias']") and leaf.shape == (len(bias),):
            return jnp.asarray(bias, leaf.dtype)
        return leaf
    return jax.tree_util.tree_map_with_path(set_leaf, params)


EPISODES = 4000  # standard error of a success rate p: sqrt(p (1 - p) / 4000) <= 0.008


def _eval_pair(task, make_ppo, set_params):
    """(mode return, sampled return) of the same state."""
    returns = []
    for deterministic in (True, False):
        ppo = make_ppo(PPOConfig(deterministic_eval=deterministic, num_envs=4))
        state = ppo.init(jax.random.key(0))
        state = state.replace(params=set_params(state.params))
        returns.append(float(jax.jit(ppo.evaluate)(state, jax.random.key(1))))
    return returns


def test_evaluation_samples_the_trained_policy_unless_asked_for_its_mode():
    """Against closed forms: logits log(0.7, 0.3) with reward 1 for action 0 return 1 by
    argmax and 0.7 by sampling; a Gaussian of mean 0 and std 1 with reward 1 above 0.5 returns
    0 by its mean and P(N(0, 1) > 0.5) = 0.3085 by sampling."""
    bandit = _one_step_task(gymnasium.spaces.Discrete(2), lambda a: (a == 0).astype(jnp.float32))
    mode, sampled = _eval_pair(
        bandit, lambda c: PPO(bandit, c, eval_episodes=EPISODES),
        lambda p: _constant_head(p, np.log([0.7, 0.3])),
    )
    assert mode == 1.0 and abs(sampled - 0.7) < 0.04, (mode, sampled)

    above = 0.5 * math.erfc(0.5 / math.sqrt(2))
    box = gymnasium.spaces.Box(-3.0, 3.0, (1,), np.float32)
    gauss = _one_step_task(box, lambda a: (a[0] > 0.5).astype(jnp.float32))
    mode, sampled = _eval_pair(
        gauss, lambda c: PPO(gauss, c, eval_episodes=EPISODES), lambda p: _constant_head(p, [0.0])
    )
    assert mode == 0.0 and abs(sampled - above) < 0.04, (mode, sampled)

    # a user model returning (mean, value) samples with the log-std PPO learns for it (0: std 1)
    class MeanValue(nn.Module):
        @nn.compact
        def __call__(self, obs):
            return nn.Dense(1)(obs), nn.Dense(1)(obs)[..., 0]

    mode, sampled = _eval_pair(
        gauss, lambda c: PPO(gauss, c, eval_episodes=EPISODES, model=MeanValue()),
        lambda p: _constant_head(p, [0.0]),
    )
    assert mode == 0.0 and abs(sampled - above) < 0.04, (mode, sampled)
