"""The Brax adapter against Brax itself: same physics, plus the time limit and autoreset it adds."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from eggroll_rl import envs


@pytest.mark.slow
def test_brax_adapter_matches_brax_and_truncates_then_resets():
    import brax.envs

    length = 4
    task = envs.make("brax/inverted_double_pendulum", episode_length=length)
    raw = brax.envs.get_environment("inverted_double_pendulum", backend="spring")
    assert task.observation_space.shape == (raw.observation_size,)
    assert task.action_space.shape == (raw.action_size,)
    assert task.max_episode_steps == length

    actions = jnp.linspace(-0.5, 0.5, 6)[:, None].astype(jnp.float32)
    keys = jax.random.split(jax.random.key(3), 6)

    @jax.jit
    def ours():
        obs, state = task.reset(jax.random.key(0))

        def body(states, inputs):
            key, action = inputs
            state, first_episode = states
            obs, state, reward, terminated, truncated, info = task.step(key, state, action)
            obs_1, first_episode, reward_1, _, truncated_1, _ = task.step_without_reset(
                key, first_episode, action
            )
            outputs = (obs, reward, terminated, truncated, info["final_obs"])
            return (state, first_episode), (outputs, (obs_1, reward_1, truncated_1))

        return jax.lax.scan(body, (state, state), (keys, actions))[1]

    @jax.jit
    def reference():
        state = raw.reset(jax.random.key(0))
        rewards, final = [], []
        for t in range(length):
            state = raw.step(state, actions[t])
            rewards.append(state.reward)
            final.append(state.obs)
        return jnp.stack(rewards), jnp.stack(final), raw.reset(keys[length - 1]).obs

    (obs, reward, terminated, truncated, final_obs), no_reset = ours()
    ref_reward, ref_obs, ref_reset_obs = reference()
    np.testing.assert_allclose(reward[:length], ref_reward, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(final_obs[:length], ref_obs, rtol=1e-5, atol=1e-5)
    assert not bool(terminated.any())  # the pendulum stays up for a few small pushes
    assert truncated.tolist() == [False, False, False, True, False, False]
    # the step that truncates hands back the first observation of the next episode
    np.testing.assert_allclose(obs[length - 1], ref_reset_obs, rtol=1e-5, atol=1e-5)
    # without the reset (what rollouts use) the first episode is the same, and goes on
    np.testing.assert_allclose(no_reset[0][:length], ref_obs, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(no_reset[1][:length], ref_reward, rtol=1e-5, atol=1e-5)
    assert no_reset[2][:length].tolist() == truncated[:length].tolist()
    assert not np.allclose(no_reset[0][length], obs[length], atol=1e-3)


def test_brax_bad_backend_is_a_clear_error():
    with pytest.raises(ValueError, match="backend='nope'"):
        envs.make("brax/ant", backend="nope")
