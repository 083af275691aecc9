"""eggroll_rl.noise: layout, reproducibility and statistics of the draws; materialise,
perturbation and weighted_sum against float64 NumPy built from the factors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.special import ndtri

from eggroll_rl import FullNoise, LowRankNoise
from eggroll_rl import noise as noise_lib
from eggroll_rl.noise import LeafSpec, widen

# One spec list covers every kind of leaf: matrices of ranks 1..4 (square, tall, wide), a
# vector, a scalar and a 3-D tensor. Calling draw_noise once for all of them keeps compilation
# to a couple of shapes.
SPECS = (
    LeafSpec((6, 5), jnp.float32, 1),
    LeafSpec((7,), jnp.float32, None),
    LeafSpec((5, 9), jnp.float32, 2),
    LeafSpec((), jnp.float32, None),
    LeafSpec((8, 8), jnp.float32, 3),
    LeafSpec((2, 3, 4), jnp.float32, None),
    LeafSpec((12, 4), jnp.float32, 4),
)
DRAWS = 256


@pytest.fixture(scope="module")
def draw():
    """draw_noise(key, epoch, draws, SPECS), compiled once per length of ``draws``."""
    return jax.jit(lambda key, epoch, draws: noise_lib.draw_noise(key, epoch, draws, SPECS))


@pytest.fixture(scope="module")
def noise(draw):
    return draw(jax.random.key(0), jnp.int32(0), jnp.arange(DRAWS))


@pytest.fixture(scope="module")
def materialised(noise):
    """materialise() of every leaf and perturbation() of draws 0, 7 and the last, in one call."""

    @jax.jit
    def build(noise):
        return [
            (noise_lib.materialise(leaf), [noise_lib.perturbation(leaf, d) for d in PICKED])
            for leaf in noise
        ]

    return build(noise)


PICKED = (0, 7, DRAWS - 1)
WEIGHTED_SUM = jax.jit(lambda noise, w: [noise_lib.weighted_sum(leaf, w) for leaf in noise])


def _materialise_np(leaf):
    """E = B^T A / sqrt(r) per draw, in float64 NumPy from the factors."""
    if isinstance(leaf, FullNoise):
        return np.asarray(widen(leaf.eps), np.float64)
    a, b = np.asarray(widen(leaf.a), np.float64), np.asarray(widen(leaf.b), np.float64)
    return np.einsum("dri,dro->dio", b, a) / np.sqrt(a.shape[-2])


def test_leaf_spec_size_counts_the_numbers_drawn():
    assert LeafSpec((6, 5), jnp.float32, 2).size == 2 * (6 + 5)
    assert LeafSpec((2, 3, 4), jnp.float32, None).size == 24
    assert LeafSpec((), jnp.float32, None).size == 1


def _threefry2x32_numpy(key: np.ndarray, x0: np.ndarray, x1: np.ndarray):
    """Threefry-2x32, 20 rounds, from its specification (Salmon et al., SC'11), in NumPy."""
    rotations = (13, 15, 26, 6, 17, 29, 16, 24)
    k = [np.uint32(key[0]), np.uint32(key[1])]
    k.append(np.uint32(k[0] ^ k[1] ^ np.uint32(0x1BD11BDA)))
    x = [x0.astype(np.uint32) + k[0], x1.astype(np.uint32) + k[1]]
    for block in range(5):
        for r in rotations[4 * (block % 2) : 4 * (block % 2) + 4]:
            x[0] = x[0] + x[1]
            x[1] = ((x[1] << np.uint32(r)) | (x[1] >> np.uint32(32 - r))) ^ x[0]
        x[0] = x[0] + k[(block + 1) % 3]
        x[1] = x[1] + k[(block + 2) % 3] + np.uint32(block + 1)
    return x


@pytest.mark.parametrize("size", [1, 7, 10])
def test_standard_normal_matches_threefry_and_inverse_cdf_in_numpy(size):
    """Number i: the XOR of the two words of the hash of counter pair (0, i); its top 23 bits,
    mapped through the normal quantile function (float64 SciPy here)."""
    key = jax.random.key(42)
    got = np.asarray(noise_lib.standard_normal(key, size), np.float64)
    with np.errstate(over="ignore"):
        first, second = _threefry2x32_numpy(
            np.asarray(jax.random.key_data(key)), np.zeros(size), np.arange(size)
        )
    bits = first ^ second
    # 23 bits m give the float32 uniform -1 + m / 2^22 (nudged off -1), whose sqrt(2) erfinv is
    # the normal quantile at m / 2^23
    expected = ndtri(np.maximum((bits >> 9) / 2.0**23, 2.0**-25))
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("size", [1, 10, 3848])
def test_standard_normal_is_bit_identical_to_jax_random_normal(size):
    """Eager, jitted and vmapped over draws as ``draw_noise`` runs it."""
    key = jax.random.fold_in(jax.random.key(9), 4)
    theirs = lambda key: jax.random.normal(key, (size,))
    ours = lambda key: noise_lib.standard_normal(key, size)
    np.testing.assert_array_equal(ours(key), theirs(key))
    np.testing.assert_array_equal(jax.jit(ours)(key), theirs(key))
    draws = lambda f: jax.jit(jax.vmap(lambda d: f(jax.random.fold_in(key, d))))(jnp.arange(5))
    np.testing.assert_array_equal(draws(ours), draws(theirs))


def test_threefry2x32_is_bit_identical_to_jaxs():
    from jax.extend.random import threefry_2x32

    key_words = jax.random.key_data(jax.random.key(7))
    counters = jax.random.bits(jax.random.key(8), (2, 1000), jnp.uint32)
    ours = jax.jit(noise_lib.threefry2x32)(key_words, counters[0], counters[1])
    # JAX's hashes the first half of ``count`` with the second half as the counter pairs
    theirs = threefry_2x32((key_words[0], key_words[1]), counters.ravel())
    np.testing.assert_array_equal(np.concatenate(ours), np.asarray(theirs))


def test_standard_normal_accepts_other_key_types():
    """Other key types (rbg, raw uint32 keys) give jax.random.normal's numbers too, bit for bit."""
    for key in (jax.random.key(0, impl="rbg"), jax.random.PRNGKey(0)):
        x = noise_lib.standard_normal(key, 5)
        assert x.dtype == jnp.float32
        np.testing.assert_array_equal(x, jax.random.normal(key, (5,), jnp.float32))


def test_draw_noise_layout(noise):
    assert len(noise) == len(SPECS)
    for spec, leaf in zip(SPECS, noise):
        if spec.rank is None:
            assert isinstance(leaf, FullNoise)
            assert leaf.eps.shape == (DRAWS, *spec.shape)
            assert leaf.eps.dtype == spec.dtype
        else:
            fan_in, fan_out = spec.shape
            assert isinstance(leaf, LowRankNoise)
            assert leaf.a.shape == (DRAWS, spec.rank, fan_out)
            assert leaf.b.shape == (DRAWS, spec.rank, fan_in)


def test_draw_noise_is_standard_normal_and_independent(noise):
    """Every number drawn is N(0, 1), and no two leaves, factors or draws reuse numbers."""
    pieces = []
    for leaf in noise:
        for part in jax.tree_util.tree_leaves(leaf):
            pieces.append(np.asarray(part, np.float64).reshape(DRAWS, -1))
    everything = np.concatenate(pieces, axis=1)  # (draws, numbers per draw)
    assert everything.shape[1] == sum(spec.size for spec in SPECS)
    # ~32k samples: the standard errors of the mean and std are about 0.006 and 0.004
    assert abs(everything.mean()) < 0.03
    assert abs(everything.std() - 1.0) < 0.03
    # fourth moment of a Gaussian is 3 (catches e.g. uniform or sign noise)
    assert abs(np.mean(everything**4) - 3.0) < 0.2
    # no column is a copy of another, within a draw or across draws
    corr = np.corrcoef(everything, rowvar=False)
    off_diagonal = corr[~np.eye(corr.shape[0], dtype=bool)]
    assert np.max(np.abs(off_diagonal)) < 0.35  # 256 samples: |r| of independent pairs < ~0.3
    across_draws = np.corrcoef(everything[:-1].ravel(), everything[1:].ravel())[0, 1]
    assert abs(across_draws) < 0.03


def test_any_draw_can_be_regenerated_alone(draw, noise, assert_trees_equal):
    """Draw k's noise does not depend on which other draws are generated with it."""
    # a permutation of the draws with a few repeats (same length: no new compilation)
    picked = (jnp.arange(DRAWS) * 7 + 3) % DRAWS
    picked = picked.at[:4].set(jnp.array([200, 3, 3, 77]))
    alone = draw(jax.random.key(0), jnp.int32(0), picked)
    expected = [jax.tree_util.tree_map(lambda rows: rows[picked], leaf) for leaf in noise]
    assert_trees_equal(alone, expected)


def test_draws_depend_on_key_and_epoch(draw, noise):
    def first_rows(leaves):
        return np.concatenate([np.ravel(x[:4]) for x in jax.tree_util.tree_leaves(leaves)])

    base = first_rows(noise)
    same = first_rows(draw(jax.random.key(0), jnp.int32(0), jnp.arange(DRAWS)))
    other_epoch = first_rows(draw(jax.random.key(0), jnp.int32(1), jnp.arange(DRAWS)))
    other_key = first_rows(draw(jax.random.key(1), jnp.int32(0), jnp.arange(DRAWS)))
    np.testing.assert_array_equal(same, base)
    for other in (other_epoch, other_key):
        # unrelated draws: almost no coordinate coincides, and they are uncorrelated
        assert np.mean(other == base) < 0.01
        assert abs(np.corrcoef(other, base)[0, 1]) < 0.2


def test_materialise_and_perturbation_match_numpy(noise, materialised):
    for leaf, (full, singles) in zip(noise, materialised):
        expected = _materialise_np(leaf)
        assert full.shape == expected.shape
        np.testing.assert_allclose(full, expected, rtol=1e-5, atol=1e-5)
        for d, single in zip(PICKED, singles):
            np.testing.assert_allclose(single, expected[d], rtol=1e-5, atol=1e-5)


def test_materialise_keeps_extra_leading_axes(noise):
    leaf = noise[4]  # rank 3, (8, 8)
    paired = jax.tree_util.tree_map(lambda rows: rows[:12].reshape(3, 4, *rows.shape[1:]), leaf)
    out = noise_lib.materialise(paired)
    assert out.shape == (3, 4, 8, 8)
    np.testing.assert_allclose(
        out.reshape(12, 8, 8), _materialise_np(leaf)[:12], rtol=1e-5, atol=1e-5
    )


@pytest.mark.parametrize("index", range(len(SPECS)))
def test_perturbation_entries_have_unit_variance(noise, index):
    """E_ij has variance 1 for every rank (the 1/sqrt(r) scaling), and mean 0."""
    entries = _materialise_np(noise[index])
    # rank-1 entries are products of two Gaussians (kurtosis 9): the variance estimate over
    # ~256 draws x (>= 24 entries) stays within about 10% of 1.
    assert abs(entries.var() - 1.0) < 0.15, entries.var()
    assert abs(entries.mean()) < 0.1


def test_weighted_sum_matches_sum_of_materialised_perturbations(noise, rng):
    weights = rng.normal(size=DRAWS).astype(np.float32)
    for leaf, got in zip(noise, WEIGHTED_SUM(noise, jnp.asarray(weights))):
        expected = np.tensordot(weights.astype(np.float64), _materialise_np(leaf), axes=1)
        assert got.shape == expected.shape
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)


def test_weighted_sum_of_low_rank_noise_is_full_rank(noise, materialised):
    """Each draw is rank r, but the weighted sum over many draws has full rank (paper's claim)."""

    def rank(matrix):
        singular = np.linalg.svd(np.asarray(matrix, np.float64), compute_uv=False)
        return int(np.sum(singular > 1e-4 * singular[0]))

    total = WEIGHTED_SUM(noise, jnp.ones(DRAWS))
    for index, expected_rank in [(0, 1), (2, 2), (4, 3), (6, 4)]:
        assert rank(materialised[index][1][0]) == expected_rank  # one draw: rank r
        assert rank(total[index]) == min(SPECS[index].shape)  # their sum: full rank


def test_weighted_sum_in_float64(noise, rng):
    """Under jax.enable_x64 the sum is computed in float64 and matches NumPy to 1e-12."""
    weights = rng.normal(size=DRAWS)
    with jax.enable_x64(True):
        for leaf in (noise[2], noise[5]):
            leaf64 = jax.tree_util.tree_map(lambda x: jnp.asarray(x, jnp.float64), leaf)
            got = noise_lib.weighted_sum(leaf64, jnp.asarray(weights, jnp.float64))
            assert got.dtype == jnp.float64
            expected = np.tensordot(weights, _materialise_np(leaf), axes=1)
            np.testing.assert_allclose(np.asarray(got), expected, rtol=1e-12, atol=1e-12)


def test_int8_holds_sixteenths_of_the_draw_clipped_to_127():
    """``hold`` rounds once (to nearest sixteenth, clipped to +-127 steps); ``widen`` reads the
    values back exactly. Reference: the same rule in float64 NumPy."""
    z = jnp.array([0.0, 0.03, 0.032, -0.5, 1.234, -2.97, 7.9, 9.0, -100.0], jnp.float32)
    held = noise_lib.hold(z, jnp.int8)
    steps = np.clip(np.round(np.asarray(z, np.float64) * 16), -127, 127)
    assert held.dtype == jnp.int8
    np.testing.assert_array_equal(np.asarray(held, np.int64), steps)
    assert widen(held).dtype == jnp.float32
    np.testing.assert_array_equal(np.asarray(widen(held), np.float64), steps / 16)
    # a float dtype is plain rounding to nearest, and widen gives those values unchanged
    rounded = np.asarray(z.astype(jnp.bfloat16), np.float32)
    np.testing.assert_array_equal(np.asarray(widen(noise_lib.hold(z, jnp.bfloat16))), rounded)
