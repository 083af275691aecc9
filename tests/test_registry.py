"""Env ids, registration and the errors users see for bad ids and bad actions."""

import jax
import jax.numpy as jnp
import gymnasium
import numpy as np
import pytest

from eggroll_rl import envs
from eggroll_rl.envs.task import Task


def test_paper_ids_are_listed():
    ids = envs.list_envs()
    for env_id in ("gymnax/CartPole-v1", "gymnax/Pendulum-v1", "brax/ant", "brax/humanoid",
                   "brax/inverted_double_pendulum"):
        assert env_id in ids


@pytest.mark.slow
def test_suite_names_read_from_source_are_the_packages_own_and_need_no_import():
    import subprocess
    import sys

    code = (
        "import sys, eggroll_rl.envs as e; ids = e.list_envs(); "
        "print(sorted(m for m in ('gymnax', 'brax') if m in sys.modules)); print(len(ids))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.splitlines()[0] == "[]"  # importing and listing imported no suite
    import brax.envs
    import gymnax

    from eggroll_rl.envs import brax_tasks, gymnax_tasks

    assert sorted(gymnax_tasks.names()) == sorted(gymnax.registered_envs)
    assert brax_tasks.names() == sorted(brax.envs._envs)


def test_source_names_fall_back_when_the_literal_is_missing_or_not_strings(tmp_path, monkeypatch):
    from eggroll_rl.envs.source_names import literal_names

    package = tmp_path / "fakesuite"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "reg.py").write_text("IDS = ['a', 'b']\nENVS = {'x': 1, 'y': 2}\nMIXED = ['a', f()]\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert literal_names("fakesuite", "reg.py", "IDS") == ["a", "b"]
    assert literal_names("fakesuite", "reg.py", "ENVS") == ["x", "y"]
    assert literal_names("fakesuite", "reg.py", "MIXED") is None
    assert literal_names("fakesuite", "reg.py", "ABSENT") is None
    assert literal_names("fakesuite", "missing.py", "IDS") is None
    assert literal_names("no_such_package_here", "reg.py", "IDS") is None


def test_unknown_id_names_the_closest_ones():
    with pytest.raises(ValueError, match="unknown env id 'gymnax/CartPol-v1'.*gymnax/CartPole-v1"):
        envs.make("gymnax/CartPol-v1")


def test_missing_optional_suite_names_its_extra(monkeypatch):
    from eggroll_rl.envs import suites

    monkeypatch.setitem(suites.OPTIONAL_EXTRAS, "nosuchsuite", ("nosuchsuite", "no_such_package_x"))
    with pytest.raises(ValueError, match=r'pip install -e "\.\[nosuchsuite\]"'):
        envs.make("nosuchsuite/Thing-v0")


def test_register_custom_env_and_reject_duplicates_and_bare_ids():
    def factory(**kwargs):
        return Task(
            env_id="custom/Const-v0",
            reset=lambda key: (jnp.zeros(2), jnp.zeros((), jnp.int32)),
            step=lambda key, s, a: (jnp.zeros(2), s + 1, jnp.float32(1), s >= 2, jnp.bool_(False), {}),
            observation_space=gymnasium.spaces.Box(-1, 1, (2,), np.float32),
            action_space=gymnasium.spaces.Discrete(2),
            max_episode_steps=10,
        )

    envs.register("custom/Const-v0", factory, overwrite=True)
    assert "custom/Const-v0" in envs.list_envs()
    assert envs.make("custom/Const-v0").max_episode_steps == 10
    with pytest.raises(ValueError, match="already registered"):
        envs.register("custom/Const-v0", factory)
    with pytest.raises(ValueError, match="suite prefix"):
        envs.register("Const-v0", factory)


@pytest.fixture(scope="module")
def cartpole():
    return envs.make("gymnax/CartPole-v1")


def test_gymnax_spaces_are_gymnasium_spaces(cartpole):
    assert isinstance(cartpole.observation_space, gymnasium.spaces.Box)
    assert cartpole.observation_space.shape == (4,)
    assert cartpole.action_space == gymnasium.spaces.Discrete(2)
    assert cartpole.max_episode_steps == 500
    pendulum = envs.make("gymnax/Pendulum-v1")
    assert pendulum.action_space.shape == (1,) and pendulum.max_episode_steps == 200
    assert not pendulum.discrete and pendulum.action_size == 1


@pytest.mark.parametrize(
    "action, message",
    [
        (jnp.float32(1.0), "integer scalar"),
        (jnp.array([0, 1], jnp.int32), "integer scalar"),
        (jnp.int32(2), "outside Discrete"),
    ],
)
def test_bad_discrete_actions_are_clear_errors(cartpole, action, message):
    _, state = cartpole.reset(jax.random.key(0))
    with pytest.raises(ValueError, match=message):
        cartpole.step(jax.random.key(1), state, action)


def test_bad_action_shape_fails_at_trace_time(cartpole):
    _, state = cartpole.reset(jax.random.key(0))
    traced = jax.jit(lambda s, a: cartpole.step(jax.random.key(1), s, a))
    with pytest.raises(ValueError, match="integer scalar"):
        traced.lower(state, jnp.zeros(3, jnp.int32))


def test_continuous_action_out_of_bounds_is_rejected():
    pendulum = envs.make("gymnax/Pendulum-v1")
    _, state = pendulum.reset(jax.random.key(0))
    with pytest.raises(ValueError, match="outside the action space bounds"):
        pendulum.step(jax.random.key(1), state, jnp.array([5.0]))
    with pytest.raises(ValueError, match="float array of shape"):
        pendulum.step(jax.random.key(1), state, jnp.zeros(2))


def test_gymnax_env_params_override_and_typo():
    short = envs.make("gymnax/CartPole-v1", max_steps_in_episode=7)
    assert short.max_episode_steps == 7
    with pytest.raises(ValueError, match="no env params"):
        envs.make("gymnax/CartPole-v1", max_step_in_episode=7)


def test_gymnax_truncation_is_not_termination():
    task = envs.make("gymnax/CartPole-v1", max_steps_in_episode=3)
    obs, state = task.reset(jax.random.key(0))
    flags = []
    for t in range(4):
        obs, state, reward, terminated, truncated, info = task.step(
            jax.random.key(t + 1), state, jnp.int32(t % 2)
        )
        flags.append((bool(terminated), bool(truncated)))
    assert flags == [(False, False), (False, False), (False, True), (False, False)]


@pytest.mark.parametrize("env_id", ["gymnax/CartPole-v1", "gymnax/Pendulum-v1"])
def test_gymnax_step_without_reset_is_the_first_episode_of_step(env_id):
    """Rollouts step without the autoreset: same episode, same flags, then no fresh start."""
    task = envs.make(env_id, max_steps_in_episode=6)
    space = task.action_space
    action = jnp.int32(1) if task.discrete else jnp.full(space.shape, 0.5, jnp.float32)

    @jax.jit
    def both(key):
        obs, state = task.reset(key)

        def body(states, key):
            with_reset, without = states
            a = task.step(key, with_reset, action)
            b = task.step_without_reset(key, without, action)
            done = a[3] | a[4]
            return (a[1], b[1]), (a[0], a[5]["final_obs"], a[2], a[3], a[4], done, b[0], b[2], b[3], b[4])

        return jax.lax.scan(body, (state, state), jax.random.split(key, 8))[1]

    obs, final_obs, reward, terminated, truncated, done, obs_b, reward_b, term_b, trunc_b = both(
        jax.random.key(5)
    )
    first = int(np.argmax(np.asarray(done)))
    assert bool(done[first])  # the first episode ends within the 8 steps (6-step limit)
    span = slice(0, first + 1)
    np.testing.assert_array_equal(obs_b[span], final_obs[span])
    # XLA may fuse the two paths differently: Pendulum's reward can differ in the last bit
    np.testing.assert_allclose(reward_b[span], reward[span], rtol=1e-6, atol=0)
    np.testing.assert_array_equal(term_b[span], terminated[span])
    np.testing.assert_array_equal(trunc_b[span], truncated[span])
    assert not np.array_equal(obs_b[first + 1], obs[first + 1])  # the reset episode differs


def test_envs_command_lists_gymnasium_ids_as_their_own_group(capsys):
    from eggroll_rl.envs import registry

    registry.main([])
    lines = capsys.readouterr().out.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("# gymnasium/<Id>"))
    assert "gymnasium/CartPole-v1" in lines[header + 1 :]
    assert not any(line.startswith("gymnasium/") for line in lines[:header])
