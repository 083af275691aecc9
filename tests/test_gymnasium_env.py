"""Our tasks through Gymnasium's API: check_env, exact agreement with the JAX task, vector env."""

import warnings

import gymnasium
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env
from gymnasium.vector import AutoresetMode, SyncVectorEnv
from gymnasium.vector.utils import batch_space

from eggroll_rl import envs
from eggroll_rl.envs import gymnasium_env
from eggroll_rl.envs.task import Task

COUNTER = "test/Counter-v0"
TRACES = {"step": 0}
HORIZON = 4
TARGET = 5


def counter_task(**kwargs) -> Task:
    """Obs (t, total); total starts at 0 or 1 (from the key) and adds each action (0, 1, 2).

    Terminates when total >= 5, truncates at t = 4; auto-resets in the same step.
    """

    def observe(state):
        return jnp.stack(state).astype(jnp.float32)

    def reset(key):
        state = (jnp.zeros((), jnp.int32), jax.random.randint(key, (), 0, 2))
        return observe(state), state

    def step(key, state, action):
        TRACES["step"] += 1
        stepped = (state[0] + 1, state[1] + action)
        terminated = stepped[1] >= TARGET
        truncated = jnp.logical_and(stepped[0] >= HORIZON, jnp.logical_not(terminated))
        fresh_obs, fresh = reset(key)
        done = jnp.logical_or(terminated, truncated)
        state = jax.tree_util.tree_map(lambda a, b: jnp.where(done, a, b), fresh, stepped)
        reward = action.astype(jnp.float32) + 0.5
        return observe(state), state, reward, terminated, truncated, {"final_obs": observe(stepped)}

    return Task(
        env_id=COUNTER,
        reset=reset,
        step=step,
        observation_space=gymnasium.spaces.Box(0.0, 10.0, (2,), np.float32),
        action_space=gymnasium.spaces.Discrete(3),
        max_episode_steps=HORIZON,
        render=lambda state: np.full((4, 6, 3), 40 * int(state[0]), np.uint8),
    )


@pytest.fixture(scope="module")
def counter_id():
    envs.register(COUNTER, counter_task, overwrite=True)
    ids = gymnasium_env.register_gymnasium([COUNTER])
    yield ids[COUNTER]
    gymnasium.registry.pop(ids[COUNTER], None)
    gymnasium_env._REGISTERED.pop(ids[COUNTER], None)


def test_every_listed_id_is_a_gymnasium_id():
    built_in = [env_id for env_id in envs.list_envs() if env_id.split("/")[0] in ("gymnax", "brax")]
    assert "brax/ant" in built_in
    for env_id in built_in:  # registered by `import eggroll_rl.envs`
        suite, name = env_id.split("/", 1)
        spec = gymnasium.spec(f"eggroll_rl/{name}")
        if spec.kwargs["env_id"] != env_id:  # another suite took the name first
            assert spec.kwargs["env_id"] < env_id
            continue
        assert spec.entry_point == "eggroll_rl.envs.gymnasium_env:TaskEnv"
        assert spec.vector_entry_point == "eggroll_rl.envs.gymnasium_env:TaskVectorEnv"
    assert gymnasium.spec("eggroll_rl/CartPole-v1").kwargs == {"env_id": "gymnax/CartPole-v1"}


@pytest.mark.parametrize("gym_id", ["eggroll_rl/CartPole-v1", "eggroll_rl/Pendulum-v1"])
def test_check_env_passes(gym_id):
    env = gymnasium.make(gym_id)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        check_env(env.unwrapped)
    complaints = [
        str(w.message) for w in caught if "recommend using a symmetric" not in str(w.message)
    ]
    assert complaints == []


def jax_stream(task, key, actions):
    """The task's own auto-resetting stream for a key chain, in one compiled scan."""
    key, reset_key = jax.random.split(key)
    obs0, state = task.reset(reset_key)

    def body(carry, action):
        key, state = carry
        key, step_key = jax.random.split(key)
        obs, state, reward, terminated, truncated, info = task.step(step_key, state, action)
        return (key, state), (obs, reward, terminated, truncated, info["final_obs"])

    _, outs = jax.jit(lambda k, s, a: jax.lax.scan(body, (k, s), a))(key, state, actions)
    return obs0, jax.tree_util.tree_map(np.asarray, outs)


@pytest.mark.parametrize(
    "gym_id, kwargs, actions",
    [
        (
            "eggroll_rl/CartPole-v1",
            {"max_steps_in_episode": 12},
            np.random.default_rng(0).integers(0, 2, 60).astype(np.int32),
        ),
        (
            "eggroll_rl/Pendulum-v1",
            {"max_steps_in_episode": 7},
            np.random.default_rng(1).uniform(-2, 2, (20, 1)).astype(np.float32),
        ),
    ],
)
def test_gymnasium_episodes_reproduce_the_jax_task(gym_id, kwargs, actions):
    env = gymnasium.make(gym_id, **kwargs)
    task = envs.make(env.unwrapped.env_id, **kwargs)
    obs0, (next_obs, rewards, terminated, truncated, final_obs) = jax_stream(
        task, jax.random.key(7), jnp.asarray(actions)
    )
    obs, _ = env.reset(seed=7)
    np.testing.assert_array_equal(obs, obs0)
    episodes_ended = 0
    for t, action in enumerate(actions):
        action = int(action) if actions.ndim == 1 else action
        obs, reward, term, trunc, info = env.step(action)
        assert (reward, term, trunc) == (rewards[t], terminated[t], truncated[t])
        assert isinstance(reward, float) and isinstance(term, bool) and obs.dtype == np.float32
        if term or trunc:
            np.testing.assert_array_equal(obs, final_obs[t])
            with pytest.raises(RuntimeError, match="call reset"):
                env.step(action)
            obs, _ = env.reset()
            episodes_ended += 1
        np.testing.assert_array_equal(obs, next_obs[t])
    assert episodes_ended >= 2  # the comparison crossed episode boundaries


def test_same_seed_same_episode_other_seed_other_episode():
    env = gymnasium.make("eggroll_rl/CartPole-v1")
    first = [env.reset(seed=3)[0]] + [env.step(1)[0] for _ in range(5)]
    again = [env.reset(seed=3)[0]] + [env.step(1)[0] for _ in range(5)]
    np.testing.assert_array_equal(np.stack(first), np.stack(again))
    assert not np.array_equal(env.reset(seed=4)[0], first[0])
    assert not np.array_equal(env.reset(seed=2**32 + 3)[0], first[0])  # large seeds do not alias


def test_render_rgb_array_and_a_clear_error_without_a_render_function(counter_id):
    env = gymnasium.make(counter_id, render_mode="rgb_array")
    env.reset(seed=0)
    env.step(0)
    frame = env.render()
    assert frame.shape == (4, 6, 3) and frame.dtype == np.uint8 and frame[0, 0, 0] == 40
    assert gymnasium.make(counter_id).unwrapped.metadata["render_modes"] == ["rgb_array"]
    assert gymnasium.make("eggroll_rl/Breakout-MinAtar").unwrapped.metadata["render_modes"] == []
    with pytest.raises(ValueError, match="Task.render is None"):
        gymnasium.make("eggroll_rl/Breakout-MinAtar", render_mode="rgb_array")


def test_out_of_space_actions_are_clear_errors(counter_id):
    env = gymnasium.make(counter_id)
    env.reset(seed=0)
    with pytest.raises(ValueError, match="outside the action space"):
        env.step(3)
    vec = gymnasium.make_vec(counter_id, num_envs=2)
    vec.reset(seed=0)
    with pytest.raises(ValueError, match=r"shape \(2,\)"):
        vec.step(np.zeros(3, np.int64))


def run_vector_env(vec, seed, actions):
    obs, _ = vec.reset(seed=seed)
    outputs = []
    for row in actions:
        outputs.append(vec.step(row))
    return obs, outputs


def test_vector_env_matches_gymnasium_sync_vector_env_over_single_envs(counter_id):
    num_envs, steps = 5, 12
    actions = np.random.default_rng(2).integers(0, 3, (steps, num_envs))
    actions[:, 0], actions[:, 1] = 2, 0  # env 0 terminates, env 1 always truncates at t = 4
    vec = gymnasium.make_vec(counter_id, num_envs=num_envs)
    assert isinstance(vec.unwrapped, gymnasium_env.TaskVectorEnv)
    assert vec.metadata["autoreset_mode"] == AutoresetMode.SAME_STEP
    assert vec.single_observation_space == gymnasium.spaces.Box(0.0, 10.0, (2,), np.float32)
    assert vec.single_action_space == gymnasium.spaces.Discrete(3)
    assert vec.observation_space == batch_space(vec.single_observation_space, num_envs)
    assert vec.action_space == gymnasium.spaces.MultiDiscrete([3] * num_envs)
    TRACES["step"] = 0
    obs, outputs = run_vector_env(vec, 11, actions)
    assert TRACES["step"] == 1  # one vmapped, jitted step for every sub-env and every call
    reference = SyncVectorEnv(
        [lambda: gymnasium_env.TaskEnv(COUNTER) for _ in range(num_envs)],
        autoreset_mode=AutoresetMode.SAME_STEP,
    )
    ref_obs, ref_outputs = run_vector_env(reference, 11, actions)
    np.testing.assert_array_equal(obs, ref_obs)
    assert obs.shape == (num_envs, 2) and obs.dtype == np.float32
    seen_done = np.zeros(num_envs, bool)
    for (obs, reward, term, trunc, info), (
        ref_obs,
        ref_reward,
        ref_term,
        ref_trunc,
        ref_info,
    ) in zip(outputs, ref_outputs):
        assert reward.shape == (num_envs,) and term.dtype == np.bool_ and trunc.dtype == np.bool_
        np.testing.assert_array_equal(obs, ref_obs)
        np.testing.assert_array_equal(reward, ref_reward)
        np.testing.assert_array_equal(term, ref_term)
        np.testing.assert_array_equal(trunc, ref_trunc)
        done = term | trunc
        assert set(info) == (set(ref_info) if done.any() else set())
        if done.any():
            np.testing.assert_array_equal(info["_final_obs"], done)
            np.testing.assert_array_equal(info["_final_info"], done)
            for i in range(num_envs):
                if done[i]:
                    np.testing.assert_array_equal(info["final_obs"][i], ref_info["final_obs"][i])
                    assert obs[i, 0] == 0  # the returned obs starts the next episode
                else:
                    assert info["final_obs"][i] is None
        seen_done |= done
    assert seen_done.all()


def test_vector_env_flags_follow_the_task_rules(counter_id):
    vec = gymnasium.make_vec(counter_id, num_envs=2)
    obs, _ = vec.reset(seed=0)
    totals = obs[:, 1].copy()
    flags = []
    for _ in range(8):
        obs, reward, term, trunc, info = vec.step(np.array([2, 0]))
        np.testing.assert_array_equal(reward, [2.5, 0.5])
        flags.append((term.tolist(), trunc.tolist()))
    # env 1 adds nothing: truncated every 4th step, never terminated.
    assert [f[1][1] for f in flags] == [False, False, False, True] * 2
    assert not any(f[0][1] for f in flags)
    # env 0 adds 2 per step: from total 0 or 1 it terminates at step 3 or 3 - 1.
    first_end = 3 if totals[0] == 0 else 2
    assert [f[0][0] for f in flags][:first_end] == [False] * (first_end - 1) + [True]
    assert not any(f[1][0] for f in flags)
    # A masked reset restarts only the chosen sub-envs.
    obs = vec.step(np.array([0, 0]))[0]
    reset_obs, _ = vec.reset(options={"reset_mask": np.array([False, True])})
    np.testing.assert_array_equal(reset_obs[0], obs[0])
    assert obs[1, 0] == 1 and reset_obs[1, 0] == 0


def test_registration_constructs_nothing_and_skips_foreign_or_taken_names():
    def boom(**kwargs):
        raise RuntimeError("constructed")

    envs.register("test/Boom-v0", boom, overwrite=True)
    gymnasium.register(
        "eggroll_rl/Foreign-v0", entry_point="gymnasium.envs.classic_control:CartPoleEnv"
    )
    envs.register("test/Foreign-v0", counter_task, overwrite=True)
    envs.register("other/Boom-v0", counter_task, overwrite=True)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            ids = gymnasium_env.register_gymnasium(
                ["test/Boom-v0", "test/Foreign-v0", "other/Boom-v0"]
            )
            again = gymnasium_env.register_gymnasium(["test/Boom-v0"])
        assert ids == {"test/Boom-v0": "eggroll_rl/Boom-v0"} == again
        messages = " ".join(str(w.message) for w in caught)
        assert "already has an env 'eggroll_rl/Foreign-v0'" in messages
        assert "belongs to test/Boom-v0" in messages
        assert gymnasium.spec("eggroll_rl/Foreign-v0").entry_point.endswith("CartPoleEnv")
        with pytest.raises(RuntimeError, match="constructed"):
            gymnasium.make("eggroll_rl/Boom-v0")
        # The shadowed id is still reachable by naming it.
        env = gymnasium.make("eggroll_rl/Boom-v0", env_id="other/Boom-v0")
        assert env.unwrapped.env_id == "other/Boom-v0"
    finally:
        for gym_id in ("eggroll_rl/Boom-v0", "eggroll_rl/Foreign-v0"):
            gymnasium.registry.pop(gym_id, None)
            gymnasium_env._REGISTERED.pop(gym_id, None)


def test_gymnax_classic_control_renders_the_same_frame_as_gymnasium():
    """CartPole's observation is its state: our frame must be Gymnasium's frame of that state."""
    env = gymnasium.make("eggroll_rl/CartPole-v1", render_mode="rgb_array")
    obs, _ = env.reset(seed=3)
    obs, *_ = env.step(1)
    frame = env.render()
    reference = gymnasium.make("CartPole-v1", render_mode="rgb_array").unwrapped
    reference.reset(seed=0)
    reference.state = np.asarray(obs, np.float64)
    np.testing.assert_array_equal(frame, reference.render())
    assert frame.shape == (400, 600, 3) and frame.dtype == np.uint8
    assert "rgb_array" in env.metadata["render_modes"]
