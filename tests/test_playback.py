"""Saved policies: exact round trip, playback against a hand-written loop, GIF/MP4 recording."""

import json

import gymnasium
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from eggroll_rl.envs import obs_norm, playback
from eggroll_rl.networks import Policy

NETWORK = {"action_size": 2, "continuous": False, "hidden": [8], "layer_norm": True}


def random_params(module, obs_size, seed=0):
    """Params of the right structure with NumPy values (``init`` would compile op by op)."""
    shapes = jax.eval_shape(module.init, jax.random.key(0), jnp.zeros(obs_size))
    rng = np.random.default_rng(seed)
    return jax.tree_util.tree_map(lambda x: rng.normal(size=x.shape).astype(x.dtype), shapes)


@pytest.fixture(scope="module")
def cartpole_policy(tmp_path_factory):
    module = Policy(2, hidden=(8,))
    params = random_params(module, 4, seed=4)
    path = playback.save_policy(
        tmp_path_factory.mktemp("policy") / "cartpole", params, NETWORK, "CartPole-v1"
    )
    return path, params, jax.jit(module.apply)


def manual_returns(apply, params, env_id, episodes, seed, normalise=lambda obs: obs):
    """Episodes of the greedy policy written out by hand: seed once, then plain resets."""
    env = gymnasium.make(env_id)
    returns = []
    for episode in range(episodes):
        obs, _ = env.reset(seed=seed) if episode == 0 else env.reset()
        total, done = 0.0, False
        while not done:
            head, _ = apply(params, normalise(obs))
            obs, reward, terminated, truncated, _ = env.step(int(np.argmax(head)))
            total, done = total + reward, terminated or truncated
        returns.append(total)
    return returns


def test_round_trip_is_bit_exact(tmp_path):
    module = Policy(3, continuous=True, hidden=(16, 8), layer_norm=False)
    params = random_params(module, 5)  # arbitrary bit patterns, not just an init's round ones
    rng = np.random.default_rng(0)
    stats = obs_norm.RunningStats(
        count=np.float32(64),
        mean=rng.normal(size=5).astype(np.float32),
        var=rng.uniform(size=5).astype(np.float32),
    )
    playback.save_policy(tmp_path / "p", params, module, "brax/ant", obs_norm_stats=stats)
    loaded = playback.load_policy(tmp_path / "p")
    assert loaded.env_id == "brax/ant"
    assert loaded.network == {
        "action_size": 3,
        "continuous": True,
        "hidden": [16, 8],
        "layer_norm": False,
    }
    assert loaded.module == module
    saved_leaves, saved_tree = jax.tree_util.tree_flatten(params)
    loaded_leaves, loaded_tree = jax.tree_util.tree_flatten(loaded.params)
    assert saved_tree == loaded_tree
    for saved, back in zip(saved_leaves, loaded_leaves):
        saved = np.asarray(saved)
        assert back.dtype == saved.dtype and back.shape == saved.shape
        assert back.tobytes() == saved.tobytes()
    for name in ("count", "mean", "var"):
        assert (
            np.asarray(getattr(loaded.obs_norm_stats, name)).tobytes()
            == np.asarray(getattr(stats, name)).tobytes()
        )
    meta = json.loads((tmp_path / "p" / "policy.json").read_text())
    assert meta["format"] == playback.FORMAT


def test_loading_something_else_is_a_clear_error(tmp_path, cartpole_policy):
    with pytest.raises(FileNotFoundError, match="not a saved policy"):
        playback.load_policy(tmp_path)
    path, params, _ = cartpole_policy
    playback.save_policy(tmp_path / "future", params, NETWORK, "CartPole-v1")
    meta = json.loads((tmp_path / "future" / "policy.json").read_text())
    (tmp_path / "future" / "policy.json").write_text(json.dumps({**meta, "format": 99}))
    with pytest.raises(ValueError, match="format 99"):
        playback.load_policy(tmp_path / "future")
    with pytest.raises(ValueError, match="lacks"):
        playback.save_policy(tmp_path / "bad", params, {"action_size": 2}, "CartPole-v1")


def test_play_returns_one_return_per_episode_as_a_manual_loop_does(cartpole_policy):
    path, params, apply = cartpole_policy
    returns = playback.play(path, episodes=3, seed=5)
    assert len(returns) == 3 and all(1 <= r <= 500 for r in returns)
    assert returns == manual_returns(apply, params, "CartPole-v1", 3, 5)
    # Raw params with a network description play the same.
    assert (
        playback.play(params, "gymnasium/CartPole-v1", episodes=3, seed=5, network=NETWORK)
        == returns
    )


def test_observation_statistics_are_applied(cartpole_policy):
    _, params, apply = cartpole_policy
    mean = np.array([0.3, -0.5, 0.02, 0.4], np.float32)
    var = np.array([0.01, 0.5, 0.0004, 1e-9], np.float32)  # the last one clips at +-10
    stats = {"mean": mean, "var": var, "count": 10.0}
    normalise = lambda obs: np.clip((obs - mean) / np.sqrt(var + 1e-8), -10, 10)
    expected = manual_returns(apply, params, "CartPole-v1", 2, 1, normalise)
    assert expected != manual_returns(apply, params, "CartPole-v1", 2, 1)  # the stats matter
    returns = playback.play(
        params, "CartPole-v1", episodes=2, seed=1, network=NETWORK, obs_norm_stats=stats
    )
    assert returns == expected


def test_play_our_own_tasks_by_either_id(cartpole_policy, tmp_path):
    path, _, _ = cartpole_policy
    ours = playback.play(path, "gymnax/CartPole-v1", episodes=2, seed=2)
    assert ours == playback.play(path, "eggroll_rl/CartPole-v1", episodes=2, seed=2)
    assert len(ours) == 2 and all(1 <= r <= 500 and r == int(r) for r in ours)
    # our gymnax CartPole draws frames (through Gymnasium's renderer): the reset frame and one
    # per step, of Gymnasium's CartPole size (Pillow may merge identical consecutive frames)
    import imageio.v3 as iio

    playback.play(path, "gymnax/CartPole-v1", episodes=1, seed=2, max_steps=3,
                  video_path=tmp_path / "ours.gif")
    gif = iio.imread(tmp_path / "ours.gif")
    assert 2 <= gif.shape[0] <= 1 + 3 and gif.shape[1:] == (400, 600, 3)
    assert gif.std() > 0  # a drawn scene, not a blank canvas


def test_gif_and_mp4_hold_the_frames(tmp_path, cartpole_policy):
    import imageio.v3 as iio

    path, _, _ = cartpole_policy
    reference = gymnasium.make("CartPole-v1", render_mode="rgb_array")
    reference.reset(seed=0)
    first = reference.render()
    returns = playback.play(path, episodes=2, seed=0, max_steps=3, video_path=tmp_path / "run.gif")
    assert returns == [3.0, 3.0]
    gif = iio.imread(tmp_path / "run.gif")
    # Pillow merges identical consecutive frames (CartPole moves less than a pixel per step).
    assert 2 <= gif.shape[0] <= 2 * (1 + 3) and gif.shape[1:] == (400, 600, 3)
    assert np.abs(gif[0].astype(int) - first).mean() < 1.0
    pytest.importorskip("av")
    playback.play(path, episodes=2, seed=0, max_steps=3, video_path=tmp_path / "run.mp4")
    video = iio.imread(tmp_path / "run.mp4")
    assert video.shape == (2 * (1 + 3), 400, 600, 3)


def test_bad_arguments_are_clear_errors(cartpole_policy):
    path, params, _ = cartpole_policy
    with pytest.raises(ValueError, match="needs network="):
        playback.play(params, "CartPole-v1")
    with pytest.raises(ValueError, match="must end in one of"):
        playback.play(path, video_path="run.avi")
