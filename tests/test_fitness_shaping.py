"""eggroll_rl.fitness_shaping against hand-computed values and float64 NumPy/SciPy references."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats

from eggroll_rl import Eggroll, OpenES, centered_rank, compose, grouped_zscore, identity, zscore
from eggroll_rl import fitness_shaping as shaping_lib


def _np(x):
    return np.asarray(x, np.float64)


# Compiled once and called with a handful of shapes: every new length costs a compilation, and
# eager (op-by-op) calls cost several.
RANK = jax.jit(centered_rank)
Z = jax.jit(zscore)
GZ = jax.jit(grouped_zscore, static_argnums=1)


# ---- identity ---------------------------------------------------------------------------------
def test_identity_returns_the_fitness_as_float32():
    out = identity(jnp.array([3, -1, 2], jnp.int32))
    assert out.dtype == jnp.float32
    np.testing.assert_array_equal(out, [3.0, -1.0, 2.0])


# ---- centered_rank ----------------------------------------------------------------------------
# All hand-computed cases have six members: each new length costs a compilation.
@pytest.mark.parametrize(
    "fitness, expected",
    [
        # distinct values: ranks 2 0 1 5 4 3 over n - 1 = 5
        ([3.0, 1.0, 2.0, 6.0, 5.0, 4.0], [-0.1, -0.5, -0.3, 0.5, 0.3, 0.1]),
        # ties share their average rank: sorted 0 | 1 1 | 3 3 3 -> ranks 0 | 1.5 | 4
        ([1.0, 1.0, 3.0, 3.0, 3.0, 0.0], [-0.2, -0.2, 0.3, 0.3, 0.3, -0.5]),
        # ranks 0 | 1.5 1.5 | 3.5 3.5 | 5
        ([1.0, 2.0, 2.0, 5.0, 5.0, 9.0], [-0.5, -0.2, -0.2, 0.2, 0.2, 0.5]),
        # the CartPole case: members capped at 500 share one weight (ranks 3, 4, 5 -> 4)
        ([500.0, 500.0, 20.0, 500.0, 20.0, 100.0], [0.3, 0.3, -0.4, 0.3, -0.4, -0.1]),
        ([7.0] * 6, [0.0] * 6),
        ([-0.0, 0.0, -0.0, 0.0, 0.0, 0.0], [0.0] * 6),
    ],
)
def test_centered_rank_hand_computed(fitness, expected):
    out = RANK(jnp.array(fitness, jnp.float32))
    assert out.shape == (len(fitness),)
    np.testing.assert_allclose(out, expected, atol=1e-7)


def test_centered_rank_of_a_single_member_is_zero():
    np.testing.assert_array_equal(RANK(jnp.array([4.0])), [0.0])


@pytest.mark.parametrize("n", [6, 64])
def test_centered_rank_matches_scipy_average_ranks(rng, n):
    # few distinct values so that ties are frequent
    fitness = rng.integers(-3, 4, size=n).astype(np.float32) * 0.5
    expected = (scipy.stats.rankdata(fitness, method="average") - 1) / (n - 1) - 0.5
    out = RANK(fitness)
    np.testing.assert_allclose(out, expected, atol=1e-6)
    # properties that follow: zero sum, within [-0.5, 0.5]
    assert abs(float(jnp.sum(out))) < 1e-5
    assert float(jnp.min(out)) >= -0.5 and float(jnp.max(out)) <= 0.5


def test_centered_rank_is_invariant_to_monotone_transforms(rng):
    fitness = rng.normal(size=64).astype(np.float32)
    np.testing.assert_array_equal(RANK(fitness), RANK(np.exp(fitness) * 100.0 - 7.0))
    np.testing.assert_allclose(RANK(fitness), -RANK(-fitness), atol=1e-7)


# ---- zscore -----------------------------------------------------------------------------------
def test_zscore_hand_computed():
    # mean 2, population std sqrt(2/3)
    expected = np.array([-1.0, 0.0, 1.0, -1.0, 0.0, 1.0]) * np.sqrt(1.5)
    np.testing.assert_allclose(Z(jnp.array([1.0, 2.0, 3.0, 1.0, 2.0, 3.0])), expected, rtol=1e-6)


@pytest.mark.parametrize("scale, offset", [(1.0, 0.0), (0.01, 3.0), (300.0, -1e3)])
def test_zscore_matches_numpy_float64(rng, scale, offset):
    fitness = (rng.normal(size=64) * scale + offset).astype(np.float32)
    f = _np(fitness)
    expected = (f - f.mean()) / f.std()
    out = Z(fitness)
    assert out.dtype == jnp.float32
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("value, n", [(3.0, 6), (0.0, 6), (-2.5, 6), (1.0, 1)])
def test_zscore_of_constant_fitness_is_zero(value, n):
    # values whose float32 mean is exact: a population with no information gets zero weights
    np.testing.assert_array_equal(Z(jnp.full(n, value, jnp.float32)), np.zeros(n))


def test_zscore_of_constant_fitness_is_zero_for_any_value():
    # Regression test: the float32 mean of these constant vectors is inexact, and an absolute
    # threshold on the standard deviation once mapped them to all +1 or all -1. Realistic
    # cases: every member capped at CartPole's 500 with a population of 1000, a constant 0.1
    # reward with 64 members. None carries information: zero weights.
    cases = [(500.0, 1000), (0.1, 64), (0.1, 1000), (12345.678, 64), (1e6 + 0.3, 3)]
    for value, n in cases:
        fitness = jnp.full(n, value, jnp.float32)
        np.testing.assert_array_equal(Z(fitness), np.zeros(n), err_msg=f"zscore {value} x {n}")
    for value, n, group in [(500.0, 21, 7), (0.1, 1000, 10), (1e6 + 0.3, 12, 3)]:
        fitness = jnp.full(n, value, jnp.float32)
        np.testing.assert_array_equal(
            GZ(fitness, group), np.zeros(n), err_msg=f"grouped {value} x {n}/{group}"
        )


# ---- grouped_zscore ---------------------------------------------------------------------------
@pytest.mark.parametrize("n, group", [(12, 3), (12, 4)])
def test_grouped_zscore_matches_numpy_float64(rng, n, group):
    fitness = (rng.normal(size=n) * 4.0 + np.repeat(rng.normal(size=n // group) * 10, group))
    fitness = fitness.astype(np.float32)
    f = _np(fitness).reshape(n // group, group)
    centered = (f - f.mean(axis=1, keepdims=True)).ravel()
    expected = centered / np.sqrt(np.mean(centered**2))
    np.testing.assert_allclose(GZ(fitness, group), expected, rtol=1e-4, atol=1e-5)


def test_grouped_zscore_hand_computed():
    # groups [1, 2, 3], [10, 12, 14], [0, 0, 0], [5, 4, 3]:
    # centered [-1, 0, 1, -2, 0, 2, 0, 0, 0, 1, 0, -1], global std sqrt(12 / 12) = 1
    fitness = jnp.array([1.0, 2.0, 3.0, 10.0, 12.0, 14.0, 0.0, 0.0, 0.0, 5.0, 4.0, 3.0])
    expected = [-1, 0, 1, -2, 0, 2, 0, 0, 0, 1, 0, -1]
    np.testing.assert_allclose(GZ(fitness, 3), expected, rtol=1e-6, atol=1e-7)


def test_grouped_zscore_special_group_sizes(rng):
    fitness = rng.normal(size=12).astype(np.float32)
    # one group is the plain z-score; groups of one carry nothing
    np.testing.assert_allclose(GZ(fitness, 12), Z(fitness), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(GZ(fitness, 1), np.zeros(12))
    # constant within each group (exactly representable values): nothing to learn
    fitness = jnp.repeat(jnp.array([1.0, 5.0, -2.0, 0.0]), 3)
    np.testing.assert_array_equal(GZ(fitness, 3), np.zeros(12))


@pytest.mark.parametrize("group", [0, 5, -2])
def test_grouped_zscore_rejects_group_size_not_dividing(group):
    with pytest.raises(ValueError, match="group_size"):
        GZ(jnp.zeros(12), group)


# ---- compose / resolve ------------------------------------------------------------------------
def test_compose_applies_left_to_right():
    add_one = lambda f: f + 1.0
    double = lambda f: f * 2.0
    x = jnp.array([0.0, 1.0])
    np.testing.assert_array_equal(compose(add_one, double)(x), [2.0, 4.0])
    np.testing.assert_array_equal(compose(double, add_one)(x), [1.0, 3.0])
    np.testing.assert_array_equal(compose()(x), x)


def test_compose_with_library_shapings(rng):
    fitness = rng.normal(size=64).astype(np.float32)
    clip = lambda w: jnp.clip(w, -1.0, 1.0)
    np.testing.assert_allclose(
        jax.jit(compose(zscore, clip))(fitness), np.clip(Z(fitness), -1, 1), rtol=1e-6
    )
    # zscore of ranks: ranks are evenly spaced, so the result is a known z-score of 0..n-1
    ranks_then_z = jax.jit(compose(centered_rank, zscore))(fitness)
    order = np.argsort(np.argsort(fitness))
    expected = (order - order.mean()) / order.std()
    np.testing.assert_allclose(ranks_then_z, expected, rtol=1e-5, atol=1e-6)


def test_resolve_by_name_and_callable():
    assert shaping_lib.resolve("centered_rank") is centered_rank
    assert shaping_lib.resolve("zscore") is zscore
    assert shaping_lib.resolve("identity") is identity
    grouped = functools.partial(grouped_zscore, group_size=2)
    assert shaping_lib.resolve(grouped) is grouped
    assert Eggroll(4, 0.1, fitness_shaping="zscore").fitness_shaping is zscore
    assert OpenES(4, 0.1).fitness_shaping is centered_rank  # the documented default


@pytest.mark.parametrize("bad", ["rank", "centered-rank", "", 3, None])
def test_unknown_fitness_shaping_is_a_clear_error(bad):
    with pytest.raises(ValueError, match="fitness_shaping"):
        Eggroll(4, 0.1, fitness_shaping=bad)
    with pytest.raises(ValueError, match="fitness_shaping"):
        OpenES(4, 0.1, fitness_shaping=bad)
