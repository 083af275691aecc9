"""Agents as their communities write them go through ``rollout``/``evaluate`` with no adapter.

Each convention (logits alone, ``(logits, value)``, ``(mean, value)``, ``(mean, log_std)``, a CNN
that flattens with ``x.reshape((x.shape[0], -1))``) is checked against the same rollout of an
explicit ``(head, log_std)`` adapter: equal fitness means the outputs were used as intended.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from eggroll_rl import Eggroll, envs

STEPS = 12  # a few env steps: these tests check wiring, not learning


class ActorCritic(nn.Module):
    """PureJaxRL's ActorCritic shape: discrete logits and a squeezed value, or a continuous mean
    with a learned log-std parameter that it does not return."""

    action_dim: int
    continuous: bool = False

    @nn.compact
    def __call__(self, x):
        actor = nn.Dense(self.action_dim)(nn.tanh(nn.Dense(16)(x)))
        critic = nn.Dense(1)(nn.tanh(nn.Dense(16)(x)))
        if self.continuous:
            self.param("log_std", nn.initializers.zeros, (self.action_dim,))
        return actor, jnp.squeeze(critic, axis=-1)


class MeanLogStd(nn.Module):
    action_dim: int

    @nn.compact
    def __call__(self, x):
        return nn.Dense(self.action_dim)(x), self.param("log_std", nn.initializers.zeros, (self.action_dim,))


class CNN(nn.Module):
    """A MinAtar CNN that flattens with ``x.reshape((x.shape[0], -1))``: needs (batch, H, W, C)."""

    action_dim: int

    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Conv(8, (3, 3))(x))
        x = x.reshape((x.shape[0], -1))
        return nn.Dense(self.action_dim)(nn.relu(nn.Dense(16)(x)))


def _run(task, model, params, apply_fn, deterministic, key=0, with_evaluate=False, **kwargs):
    """Returns of a 4-member rollout (and of ``evaluate`` on the mean, if asked)."""
    strategy = Eggroll(4, 0.3, rank=4)  # rank 4 on 1-, 2- and 3-output heads: capped per matrix
    state = strategy.init(jax.random.key(1), params)
    result = envs.rollout(task, strategy, strategy.ask(state), apply_fn, jax.random.key(key),
                          deterministic=deterministic, max_steps=STEPS, **kwargs)
    if not with_evaluate:
        return (np.asarray(result.returns),)
    evaluation = envs.evaluate(task, apply_fn, strategy.mean_params(state), jax.random.key(key),
                               2, deterministic=deterministic, max_steps=STEPS, **kwargs)
    return np.asarray(result.returns), np.asarray(evaluation.returns)


def _init(model, task):
    return model.init(jax.random.key(0), jnp.zeros((1,) + task.observation_space.shape))


def _same(a, b):
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)


def test_discrete_logits_value_actor_critic_needs_no_adapter():
    task = envs.make("gymnax/CartPole-v1")
    model = ActorCritic(2)
    params = _init(model, task)
    adapter = lambda p, o: (model.apply(p, o)[0], None)
    reference = _run(task, model, params, adapter, False, with_evaluate=True)
    _same(_run(task, model, params, model.apply, False, with_evaluate=True), reference)
    # logits alone
    logits_only = lambda p, o: model.apply(p, o)[0]
    _same(_run(task, model, params, logits_only, False), reference)


def test_continuous_mean_value_never_uses_the_value_as_log_std():
    task = envs.make("gymnax/Pendulum-v1")  # 1-D action, 1 episode per member: the old trap
    model = ActorCritic(1, continuous=True)
    params = _init(model, task)
    reference = _run(task, model, params, lambda p, o: (model.apply(p, o)[0], None), True)
    _same(_run(task, model, params, model.apply, True), reference)
    with pytest.raises(ValueError, match="needs a log-std"):
        _run(task, model, params, model.apply, False)


def test_continuous_mean_log_std_parameter_is_used_as_log_std():
    task = envs.make("gymnax/Pendulum-v1")
    model = MeanLogStd(1)
    params = _init(model, task)
    explicit = _run(task, model, params, model.apply, False, outputs="head_log_std")
    _same(_run(task, model, params, model.apply, False), explicit)
    shifted = lambda p, o: (model.apply(p, o)[0], jnp.full((1,), -3.0))
    assert not np.array_equal(_run(task, model, params, shifted, False)[0], explicit[0])


def test_ambiguous_or_bare_outputs_are_clear_errors():
    task = envs.make("gymnax/Pendulum-v1")
    model = MeanLogStd(1)
    params = _init(model, task)
    per_obs = lambda p, o: (model.apply(p, o)[0], o[..., :1])  # (k, 1): value or log-std?
    with pytest.raises(ValueError, match="outputs='head_value' or outputs='head_log_std'"):
        _run(task, model, params, per_obs, False)
    _run(task, model, params, per_obs, True, outputs="head_value")
    triple = lambda p, o: (model.apply(p, o)[0], None, None)
    with pytest.raises(ValueError, match="a tuple of 3"):
        _run(task, model, params, triple, True)


def test_cnn_flattening_by_batch_axis_runs_under_rollout_and_evaluate():
    task = envs.make("gymnax/Breakout-MinAtar")
    model = CNN(task.action_size)
    params = _init(model, task)
    returns, evaluation = _run(task, model, params, model.apply, True, with_evaluate=True)
    assert returns.shape == (4, 1) and evaluation.shape == (2,)


def test_a_new_lambda_around_the_same_model_does_not_recompile():
    task = envs.make("gymnax/CartPole-v1")
    model = ActorCritic(2)
    params = _init(model, task)
    strategy = Eggroll(4, 0.3)
    population = strategy.ask(strategy.init(jax.random.key(1), params))
    traces = []

    def run():
        def apply(p, o):  # a new function object every call, as in a user's loop
            traces.append(1)
            return model.apply(p, o)

        return envs.rollout(task, strategy, population, apply, jax.random.key(0), max_steps=4)

    first = run()
    count = len(traces)
    second = run()
    assert len(traces) == count  # not traced again: the compiled rollout was reused
    np.testing.assert_array_equal(first.returns, second.returns)
