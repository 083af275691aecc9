"""Users' own Flax agents trained through ``agents.train(..., network=module)``, no adapter.

The plumbing is checked against a reference built another way: a linen module written here,
independently of ``eggroll_rl.networks``, with ``Policy``'s exact parameter tree and maths gives
the same metrics as training ``Policy`` from its hidden widths. PureJaxRL-style actor-critics
(separate actor and critic stacks, ``(logits, value)`` or ``(mean, value)``, distrax
distributions), a MinAtar CNN and an NNX module then train with EGGROLL and PPO; PPO's update
is shown to reach the user's critic; the run folder, ``load`` and ``resume`` need the module
back, and saved policies act as the trained ones do.
"""

import json

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from eggroll_rl import envs
from eggroll_rl.envs import obs_norm
from eggroll_rl.agents import api, load, loop as loop_module, resume, train

ES_TINY = {"population_size": 8, "eval_episodes": 2}
PPO_TINY = {"num_envs": 4, "num_steps": 16, "update_epochs": 1, "num_minibatches": 2}
PPO_STEPS = 128  # two updates
COMMON = {"progress": False, "iterations_per_chunk": 2}


# ---- the modules, as their authors write them ------------------------------------------------
class PolicyTwin(nn.Module):
    """``networks.Policy(action_size, hidden=hidden, layer_norm=True)`` for discrete actions,
    written with plain ``nn.Dense``: Dense -> LayerNorm -> ReLU per hidden layer, then a Dense
    head, under the names Policy's parameter tree has; returns ``(logits, None)`` as it does."""

    action_size: int
    hidden: tuple

    @nn.compact
    def __call__(self, obs):
        return _Trunk(self.hidden, self.action_size, name="MLP_0")(obs), None


class _Trunk(nn.Module):
    hidden: tuple
    out: int

    @nn.compact
    def __call__(self, x):
        for i, width in enumerate(self.hidden):
            x = nn.Dense(width, name=f"EggrollDense_{i}")(x)
            x = nn.relu(nn.LayerNorm(use_fast_variance=False, name=f"LayerNorm_{i}")(x))
        return nn.Dense(self.out, name=f"EggrollDense_{len(self.hidden)}")(x)


class ActorCritic(nn.Module):
    """PureJaxRL's discrete ActorCritic: separate tanh actor and critic stacks with orthogonal
    init; returns ``(logits, value)``, or ``(distrax.Categorical, value)`` with ``distrax``."""

    action_dim: int
    distrax: bool = False

    @nn.compact
    def __call__(self, x):
        init = nn.initializers.orthogonal
        actor = nn.tanh(nn.Dense(16, kernel_init=init(np.sqrt(2)))(x))
        logits = nn.Dense(self.action_dim, kernel_init=init(0.01))(actor)
        critic = nn.tanh(nn.Dense(16, kernel_init=init(np.sqrt(2)))(x))
        value = jnp.squeeze(nn.Dense(1, kernel_init=init(1.0))(critic), axis=-1)
        if self.distrax:
            import distrax

            return distrax.Categorical(logits=logits), value
        return logits, value


class ContinuousActorCritic(nn.Module):
    """PureJaxRL's continuous ActorCritic: a Gaussian mean, a ``log_std`` parameter and a
    value. ``returns``: "mean_value" gives ``(mean, value)`` (PPO then learns its own log-std),
    "mean_log_std_value" ``(mean, log_std, value)``."""

    action_dim: int
    returns: str = "mean_value"

    @nn.compact
    def __call__(self, x):
        mean = nn.Dense(self.action_dim)(nn.tanh(nn.Dense(16)(x)))
        value = nn.Dense(1)(nn.tanh(nn.Dense(16)(x)))[..., 0]
        if self.returns == "mean_value":
            return mean, value
        log_std = self.param("log_std", nn.initializers.zeros, (self.action_dim,))
        return mean, log_std, value


class MinAtarCNN(nn.Module):
    """A MinAtar CNN that flattens with ``x.reshape((x.shape[0], -1))``."""

    action_dim: int

    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Conv(4, (3, 3))(x))
        return nn.Dense(self.action_dim)(x.reshape((x.shape[0], -1)))


class NNXActorCritic(nnx.Module):
    """The discrete ActorCritic in Flax NNX, returning ``(distribution, value)`` (a duck-typed
    categorical, ``Greedy``)."""

    def __init__(self, obs_size, action_dim, *, rngs):
        self.actor1 = nnx.Linear(obs_size, 16, rngs=rngs)
        self.actor2 = nnx.Linear(16, action_dim, rngs=rngs)
        self.critic1 = nnx.Linear(obs_size, 16, rngs=rngs)
        self.critic2 = nnx.Linear(16, 1, rngs=rngs)

    def __call__(self, x):
        logits = self.actor2(nnx.tanh(self.actor1(x)))
        return Greedy(logits), self.critic2(nnx.tanh(self.critic1(x)))[..., 0]


class HeadOnly(nn.Module):
    action_dim: int

    @nn.compact
    def __call__(self, x):
        return nn.Dense(self.action_dim)(x)


class Greedy:
    """A duck-typed categorical distribution (no distrax): what ``is_distribution`` accepts."""

    def __init__(self, logits):
        self.logits = logits

    def sample(self, seed):
        return jax.random.categorical(seed, self.logits)

    def mode(self):
        return jnp.argmax(self.logits, axis=-1)

    def log_prob(self, value):
        logp = jax.nn.log_softmax(self.logits)
        return jnp.take_along_axis(logp, value[..., None], axis=-1)[..., 0]

    def entropy(self):
        logp = jax.nn.log_softmax(self.logits)
        return -jnp.sum(jnp.exp(logp) * logp, axis=-1)


jax.tree_util.register_pytree_node(Greedy, lambda d: ((d.logits,), None), lambda _, c: Greedy(*c))


# ---- shared runs ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def cartpole_es_run(tmp_path_factory):
    """EGGROLL on the PureJaxRL ActorCritic, written to a run folder."""
    out = tmp_path_factory.mktemp("user") / "run"
    model = ActorCritic(2)
    run = train("eggroll", "gymnax/CartPole-v1", network=model, config=ES_TINY,
                total_steps=600, out=out, **COMMON)
    return model, run, out


def _finite_rows(run, *keys):
    assert run.rows
    for row in run.rows:
        for key in keys:
            assert np.isfinite(row[key]), (key, row)


def _leaves(tree):
    return {jax.tree_util.keystr(path): np.asarray(leaf)
            for path, leaf in jax.tree_util.tree_leaves_with_path(tree)}


# ---- (a) the plumbing is exact -------------------------------------------------------------
def test_a_twin_of_policy_trains_exactly_like_policy_from_its_widths():
    common = dict(config=ES_TINY, total_steps=1_000, **COMMON)
    ours = train("eggroll", "gymnax/CartPole-v1", network=(8,), **common)
    twin = train("eggroll", "gymnax/CartPole-v1", network=PolicyTwin(2, (8,)), **common)
    assert len(ours.rows) == len(twin.rows) >= 2  # several chunks of two generations
    for mine, theirs in zip(ours.rows, twin.rows):
        mine, theirs = dict(mine), dict(theirs)
        mine.pop("wall_s"), theirs.pop("wall_s")
        assert mine == theirs
    for name, leaf in _leaves(ours.params).items():
        np.testing.assert_array_equal(_leaves(twin.params)[name], leaf, err_msg=name)


# ---- (b) a PureJaxRL ActorCritic with EGGROLL and PPO ----------------------------------------
def test_purejaxrl_actor_critic_trains_with_eggroll_and_acts(cartpole_es_run):
    model, run, _ = cartpole_es_run
    _finite_rows(run, "eval_return", "fitness_mean")
    assert json.loads((run.run_dir / "config.json").read_text())["network"] == (
        f"{__name__}.ActorCritic"
    )
    obs = np.random.default_rng(0).normal(size=(16, 4)).astype(np.float32)
    actions = run.act(obs)
    assert actions.shape == (16,) and set(np.unique(actions)) <= {0, 1}
    assert run.act(obs[5]) == actions[5]
    # act is the module's argmax on normalised observations
    stats = run.policies[0].saved.obs_norm_stats
    logits, _ = model.apply(run.params, obs_norm.normalize(stats, jnp.asarray(obs)))
    np.testing.assert_array_equal(actions, np.argmax(np.asarray(logits), axis=-1))


def test_ppo_trains_the_users_critic():
    model = ActorCritic(2)
    planned = api.plan("ppo", "gymnax/CartPole-v1", network=model, config=PPO_TINY,
                       total_steps=PPO_STEPS, **COMMON)
    start = planned.trainer.init(jax.random.key(0)).params["model"]  # seed 0's initial params
    run = api.execute(planned)
    _finite_rows(run, "eval_return", "value_loss", "policy_loss")
    assert run.rows[-1]["value_loss"] > 0
    trained = _leaves(run.params["params"])
    for name, leaf in _leaves(start).items():
        assert trained[name].shape == leaf.shape
        # every layer moved, the critic's (Dense_2, Dense_3) through the value loss alone
        assert np.max(np.abs(trained[name] - leaf)) > 1e-6, name
    assert set(run.result.state.params) == {"model"}  # discrete: no log-std of PPO's own


# ---- (c) continuous actor-critics on Pendulum ------------------------------------------------
def test_continuous_mean_value_trains_with_ppo_learning_its_own_log_std():
    run = train("ppo", "gymnax/Pendulum-v1", network=ContinuousActorCritic(1),
                config=PPO_TINY, total_steps=PPO_STEPS, **COMMON)
    _finite_rows(run, "eval_return", "value_loss", "entropy")
    log_std = np.asarray(run.result.state.params["log_std"])[0]
    assert log_std.shape == (1,) and np.all(log_std != 0.0)  # started at 0, learned
    action = run.act(np.zeros(3, np.float32))
    assert action.shape == (1,) and -2.0 <= float(action[0]) <= 2.0


def test_continuous_actor_critic_trains_with_eggroll():
    model = ContinuousActorCritic(1, returns="mean_log_std_value")
    run = train("eggroll", "gymnax/Pendulum-v1", network=model,
                config={**ES_TINY, "deterministic_policy": False}, total_steps=3_200, **COMMON)
    _finite_rows(run, "eval_return", "fitness_mean")
    assert run.rows[-1]["env_steps"] == 3_200  # two generations of 8 x 200 steps
    assert "log_std" in run.params["params"]


# ---- (d) a CNN on MinAtar ------------------------------------------------------------------
def test_minatar_cnn_trains_with_eggroll_and_acts():
    run = train("eggroll", "gymnax/Breakout-MinAtar", network=MinAtarCNN(3),
                config={"population_size": 4, "eval_episodes": 1}, total_steps=1, **COMMON)
    _finite_rows(run, "eval_return", "fitness_mean")
    obs = np.zeros((2, 10, 10, 4), np.float32)
    assert run.act(obs).shape == (2,) and run.act(obs[0]).shape == ()


# ---- (e) NNX -------------------------------------------------------------------------------
def test_nnx_module_sampling_a_distribution_trains_with_eggroll(tmp_path):
    """Also the distribution path of population rollouts: every member samples its own
    actions (``deterministic_policy=False``); deployed, the policy acts by ``mode()``."""
    model = NNXActorCritic(4, 2, rngs=nnx.Rngs(0))
    run = train("eggroll", "gymnax/CartPole-v1", network=model,
                config={**ES_TINY, "deterministic_policy": False}, total_steps=600, **COMMON)
    _finite_rows(run, "eval_return", "fitness_mean")
    own = _leaves(nnx.to_pure_dict(nnx.state(model)))
    trained = _leaves(run.params)
    assert set(trained) == set(own)
    assert any(np.max(np.abs(trained[k] - v)) > 0 for k, v in own.items())
    obs = np.random.default_rng(1).normal(size=(8, 4)).astype(np.float32)
    stats = run.policies[0].saved.obs_norm_stats
    state = nnx.state(model)
    nnx.replace_by_pure_dict(state, run.params)  # the documented way back into the module
    nnx.update(model, state)
    logits = model(obs_norm.normalize(stats, jnp.asarray(obs)))[0].logits
    np.testing.assert_array_equal(run.act(obs), np.argmax(np.asarray(logits), axis=-1))
    # (g) for NNX: the saved policy, given the module, acts as the run does
    saved = run.save(tmp_path / "nnx-policy")
    np.testing.assert_array_equal(load(saved, network=model).act(obs), run.act(obs))


# ---- (f) errors, before anything compiles ----------------------------------------------------
@pytest.fixture
def no_training(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("validation should have stopped this before training")

    monkeypatch.setattr(loop_module, "run", refuse)


@pytest.mark.parametrize(
    "algo, env, kwargs, message",
    [
        ("ppo", "gymnax/CartPole-v1", {"network": HeadOnly(2)},
         r"ppo needs a critic: .*HeadOnly returns no value \(head\); return \(logits, value\)"),
        ("ppo", "gymnax/Pendulum-v1", {"network": ContinuousActorCritic(1), "outputs": "head_log_std"},
         "ppo needs a critic"),
        ("eggroll", "gymnax/CartPole-v1", {"network": ActorCritic(2), "int8": True},
         "int8 trains its own integer MLP and cannot take your module"),
        ("eggroll", "gymnax/CartPole-v1", {"network": ActorCritic(2), "outputs": "heads"},
         "outputs must be one of"),
        ("eggroll", "gymnax/CartPole-v1", {"outputs": "head_value"},
         "pass it with network=<your"),
    ],
)
def test_bad_user_networks_raise_one_clear_value_error(no_training, algo, env, kwargs, message):
    with pytest.raises(ValueError, match=message):
        train(algo, env, progress=False, **kwargs)


def test_a_user_modules_folder_needs_the_module_to_load_or_resume(cartpole_es_run, no_training):
    model, run, out = cartpole_es_run
    with pytest.raises(ValueError, match=r"load\(path, network=<a ActorCritic instance"):
        load(out / "policy")
    with pytest.raises(ValueError, match=r"resume\(run_dir, network=<a ActorCritic instance"):
        resume(out)
    with pytest.raises(ValueError, match="does not match the module given"):
        load(out / "policy", network=ActorCritic(3))
    planned = api.plan_resume(out, network=model, total_steps=1_200, restart=True)
    assert planned.record["network"] == f"{__name__}.ActorCritic"  # validated, nothing trained


# ---- (g) save / load round trip --------------------------------------------------------------
def test_saved_user_policy_acts_like_the_run(cartpole_es_run, tmp_path):
    model, run, out = cartpole_es_run
    obs = np.random.default_rng(2).normal(size=(32, 4)).astype(np.float32)
    meta = json.loads((out / "policy" / "policy.json").read_text())
    assert meta["network"]["module"] == f"{__name__}.ActorCritic"
    np.testing.assert_array_equal(load(out / "policy", network=model).act(obs), run.act(obs))
    again = load(run.save(tmp_path / "copy"), network=model)
    np.testing.assert_array_equal(again.act(obs), run.act(obs))
    assert again.act(obs[0]) == run.act(obs[0])


# ---- distributions -------------------------------------------------------------------------
def test_a_distributions_mode_acts_as_the_argmax_of_its_logits():
    """``evaluate`` on a module returning a (duck-typed) distribution and value equals
    ``evaluate`` on the same module returning its logits: ``mode()`` was used."""
    task = envs.make("gymnax/CartPole-v1")
    model = ActorCritic(2)
    params = model.init(jax.random.key(3), jnp.zeros((1, 4)))
    as_distribution = lambda p, o: (Greedy(model.apply(p, o)[0]), model.apply(p, o)[1])
    key = jax.random.key(4)
    got = envs.evaluate(task, as_distribution, params, key, 3, max_steps=50)
    want = envs.evaluate(task, model.apply, params, key, 3, max_steps=50)
    np.testing.assert_array_equal(got.lengths, want.lengths)
    np.testing.assert_array_equal(got.returns, want.returns)


def test_distrax_actor_critic_trains_with_ppo():
    """PPO samples, scores and takes the entropy of the distrax distribution itself (ES's
    distribution path is the NNX test's, with a duck-typed distribution)."""
    pytest.importorskip("distrax")
    model = ActorCritic(2, distrax=True)
    run = train("ppo", "gymnax/CartPole-v1", network=model, config=PPO_TINY,
                total_steps=PPO_STEPS, **COMMON)
    _finite_rows(run, "eval_return", "value_loss", "entropy")
    assert 0 < run.rows[-1]["entropy"] <= np.log(2) + 1e-6  # the categorical's own entropy
    obs = np.zeros((3, 4), np.float32)
    assert set(np.unique(run.act(obs))) <= {0, 1}
