"""Running observation statistics agree with numpy's mean/var (float64) of the data they saw."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from eggroll_rl.envs import obs_norm

update = jax.jit(obs_norm.update)  # one compile per shape instead of one per primitive


def _assert_matches(stats, data):
    data = np.asarray(data, np.float64)
    assert float(stats.count) == len(data)
    np.testing.assert_allclose(np.asarray(stats.mean), data.mean(axis=0), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.asarray(stats.var), data.var(axis=0), rtol=1e-4, atol=1e-6)


def test_one_batch_gives_numpy_mean_and_population_variance():
    data = np.random.default_rng(0).normal([1.0, -3.0, 50.0], [0.5, 2.0, 10.0], size=(200, 3))
    stats = update(obs_norm.init((3,)), data.astype(np.float32))
    _assert_matches(stats, data.astype(np.float32))


def test_masked_entries_are_excluded_even_when_they_hold_nan_or_huge_values():
    rng = np.random.default_rng(1)
    data = rng.normal(2.0, 3.0, size=(6, 7, 3)).astype(np.float32)
    mask = rng.random((6, 7)) < 0.6
    polluted = data.copy()
    polluted[~mask] = np.nan
    polluted[~mask & (np.arange(7) % 2 == 0)] = 1e30
    stats = update(obs_norm.init((3,)), polluted, mask)
    _assert_matches(stats, data[mask])


def test_merging_in_uneven_chunks_equals_one_batch():
    rng = np.random.default_rng(2)
    data = rng.normal(-1.0, 4.0, size=(120, 2)).astype(np.float32)
    stats = obs_norm.init((2,))
    for chunk in np.split(data, [1, 11, 11, 70]):  # sizes 1, 10, 0, 59, 50
        stats = update(stats, chunk)
    stats = update(stats, data[:5], np.zeros(5, bool))  # all masked: no change
    _assert_matches(stats, data)
    one = update(obs_norm.init((2,)), data)
    np.testing.assert_allclose(np.asarray(stats.mean), np.asarray(one.mean), rtol=1e-5)
    np.testing.assert_allclose(np.asarray(stats.var), np.asarray(one.var), rtol=1e-4)


def test_chunked_merge_is_stable_with_a_large_offset():
    # Sum-of-squares formulas lose everything here in float32 (1e8 +- 1 has no digits left).
    rng = np.random.default_rng(3)
    data = (1e4 + rng.normal(0.0, 1.0, size=(2000, 1))).astype(np.float32)
    stats = obs_norm.init((1,))
    for chunk in np.split(data, 20):
        stats = update(stats, chunk)
    reference = data.astype(np.float64)
    np.testing.assert_allclose(float(stats.mean[0]), reference.mean(), rtol=1e-6)
    np.testing.assert_allclose(float(stats.var[0]), reference.var(), rtol=2e-3)


def test_an_all_masked_batch_changes_nothing_even_before_any_data():
    fresh = update(obs_norm.init((2,)), np.full((3, 2), np.nan, np.float32), np.zeros(3, bool))
    assert float(fresh.count) == 0
    np.testing.assert_array_equal(np.asarray(fresh.mean), [0.0, 0.0])
    np.testing.assert_array_equal(np.asarray(fresh.var), [1.0, 1.0])
    obs = np.array([3.0, -4.0], np.float32)
    np.testing.assert_array_equal(np.asarray(obs_norm.normalize(fresh, obs)), obs)


def test_feature_axes_of_any_rank_and_several_sample_axes():
    rng = np.random.default_rng(4)
    data = rng.normal(size=(4, 5, 2, 3)).astype(np.float32)
    mask = rng.random((4, 5)) < 0.5
    stats = update(obs_norm.init((2, 3)), data, mask)
    _assert_matches(stats, data[mask])


def test_update_under_jit_matches_eager():
    rng = np.random.default_rng(5)
    data = rng.normal(size=(30, 4)).astype(np.float32)
    mask = rng.random(30) < 0.7
    eager = obs_norm.update(obs_norm.init((4,)), data, mask)
    jitted = update(obs_norm.init((4,)), data, mask)
    for a, b in zip(jax.tree_util.tree_leaves(eager), jax.tree_util.tree_leaves(jitted)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6)


def test_normalize_is_identity_before_data_then_standardises_and_clips():
    obs = np.array([[0.5, -2.0, 100.0], [3.0, 1.0, -100.0]], np.float32)
    np.testing.assert_array_equal(np.asarray(obs_norm.normalize(obs_norm.init((3,)), obs)), obs)

    stats = obs_norm.RunningStats(
        count=jnp.asarray(10.0), mean=jnp.array([1.0, 0.0, 0.0]), var=jnp.array([4.0, 1.0, 1.0])
    )
    expected = (obs.astype(np.float64) - [1.0, 0.0, 0.0]) / np.sqrt(np.array([4.0, 1.0, 1.0]) + 1e-8)
    expected = np.clip(expected, -10.0, 10.0)
    np.testing.assert_allclose(np.asarray(obs_norm.normalize(stats, obs)), expected, rtol=1e-6)
    assert np.asarray(obs_norm.normalize(stats, obs))[:, 2].tolist() == [10.0, -10.0]


def test_shape_mismatches_are_reported():
    stats = obs_norm.init((3,))
    with pytest.raises(ValueError, match="observation shape"):
        obs_norm.update(stats, np.zeros((5, 4), np.float32))
    with pytest.raises(ValueError, match="mask of shape"):
        obs_norm.update(stats, np.zeros((5, 3), np.float32), np.ones(4, bool))
