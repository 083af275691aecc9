"""ask/tell against explicit references: the update equals sum_i s_i f_i E_i built from
materialised members in float64; pairing, noise reuse, determinism, and input errors."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from eggroll_rl import Eggroll, OpenES
from eggroll_rl.noise import widen
from eggroll_rl.fitness_shaping import centered_rank, grouped_zscore, zscore


class TwoLayer(nn.Module):
    @nn.compact
    def __call__(self, x):
        return nn.Dense(3)(nn.tanh(nn.Dense(5)(x)))


@pytest.fixture(scope="module")
def params():
    return TwoLayer().init(jax.random.key(0), jnp.zeros(4))


def _flat(tree):
    return np.concatenate([np.ravel(np.asarray(leaf, np.float64)) for leaf in jax.tree_util.tree_leaves(tree)])


def _reference_update(strategy, population, fitness, lr):
    """Mean + lr * (1/N) sum_i s_i f_i E_i, with s_i E_i = (member_i - mean) / sigma in float64."""
    mean = _flat(population.mean)
    sigma = float(population.sigma)
    total = np.zeros_like(mean)
    for i in range(strategy.population_size):
        signed_noise = (_flat(strategy.member_params(population, i)) - mean) / sigma
        total += float(fitness[i]) * signed_noise
    return mean + lr * total / strategy.population_size


@pytest.mark.parametrize(
    "make",
    [
        functools.partial(Eggroll, rank=1),
        functools.partial(Eggroll, rank=3),
        functools.partial(Eggroll, rank=2, antithetic=False),
        OpenES,
    ],
    ids=["eggroll-r1", "eggroll-r3", "eggroll-r2-plain", "openes"],
)
def test_tell_equals_explicit_sum_over_members(params, make):
    lr = 0.5
    strategy = make(6, 0.1, optimizer=optax.sgd(lr), fitness_shaping="identity")
    state = strategy.init(jax.random.key(1), params)
    population = strategy.ask(state)
    fitness = jnp.array([0.3, -1.0, 2.0, 0.5, -0.2, 1.1])
    new_state, metrics = strategy.tell(state, population, fitness)
    expected = _reference_update(strategy, population, np.asarray(fitness), lr)
    # member_params - mean loses float32 digits; divided by sigma the error stays ~1e-5
    np.testing.assert_allclose(_flat(new_state.mean), expected, atol=5e-5)
    assert int(new_state.generation) == 1 and not bool(metrics["skipped"])


@pytest.mark.parametrize("held_dtype", [None, jnp.bfloat16], ids=["default-int8", "bfloat16"])
@pytest.mark.parametrize("make", [functools.partial(Eggroll, rank=2), OpenES], ids=["eggroll", "openes"])
def test_noise_is_held_as_the_float32_draws_rounded_once(params, make, held_dtype):
    """The held noise is the float32 stream rounded once: by default to int8 steps of 1/16
    (round(16 z), clipped to +-127), or to bfloat16. The forward pass (through member_params,
    checked against the fast path elsewhere) and tell use those same values, so the update is
    the exact sum over the members evaluated."""
    wide = make(6, 0.1, noise_dtype=jnp.float32)
    options = {} if held_dtype is None else dict(noise_dtype=held_dtype)
    narrow = make(6, 0.1, optimizer=optax.sgd(0.5), fitness_shaping="identity", **options)
    if held_dtype is None:
        rounded = lambda d: np.clip(np.round(np.float64(d) * 16), -127, 127) / 16
    else:
        rounded = lambda d: np.asarray(jnp.asarray(d, jnp.float32).astype(held_dtype), np.float64)
    state = narrow.init(jax.random.key(1), params)
    population = narrow.ask(state)
    wide_population = wide.ask(wide.init(jax.random.key(1), params))
    if population.noise is not None:  # EGGROLL: the factors themselves
        held = jax.tree_util.tree_leaves(population.noise)
        drawn = jax.tree_util.tree_leaves(wide_population.noise)
        assert {h.dtype for h in held} == {jnp.dtype(held_dtype or jnp.int8)}
        held = [widen(h) for h in held]
    else:  # OpenES holds its members' weights; member_params regenerates their noise
        delta = lambda s, p, i: (_flat(s.member_params(p, i)) - _flat(params)) / 0.1
        held = [delta(narrow, population, i) for i in range(0, 6, 2)]
        drawn = [delta(wide, wide_population, i) for i in range(0, 6, 2)]
    for h, d in zip(held, drawn):
        np.testing.assert_allclose(np.asarray(h, np.float64), rounded(d), rtol=1e-5, atol=1e-5)
        assert np.abs(np.asarray(h, np.float64) - np.asarray(d, np.float64)).max() > 1e-4
    fitness = jnp.array([0.3, -1.0, 2.0, 0.5, -0.2, 1.1])
    new_state, _ = narrow.tell(state, population, fitness)
    # in float32 from the held values, the difference to the float64 sum stays ~1e-5
    expected = _reference_update(narrow, population, np.asarray(fitness), 0.5)
    np.testing.assert_allclose(_flat(new_state.mean), expected, atol=5e-5)


def test_antithetic_pairs_share_noise_with_opposite_signs(params):
    strategy = Eggroll(8, 0.2, rank=2)
    population = strategy.ask(strategy.init(jax.random.key(1), params))
    mean = _flat(params)
    for k in range(4):
        plus, minus = (_flat(strategy.member_params(population, 2 * k + j)) for j in (0, 1))
        np.testing.assert_allclose(plus + minus, 2 * mean, atol=1e-6)
        assert np.abs(plus - mean).max() > 1e-3
    assert not np.allclose(
        _flat(strategy.member_params(population, 0)), _flat(strategy.member_params(population, 2))
    )


def _noise_of(population):
    return _flat(population.noise)


def test_noise_reuse_keeps_noise_for_k_generations(params):
    strategy = Eggroll(4, 0.1, noise_reuse=3)
    state = strategy.init(jax.random.key(1), params)
    noises = []
    for _ in range(4):
        population = strategy.ask(state)
        noises.append(_noise_of(population))
        state, _ = strategy.tell(state, population, jnp.arange(4.0))
    np.testing.assert_array_equal(noises[0], noises[1])
    np.testing.assert_array_equal(noises[0], noises[2])
    assert not np.allclose(noises[2], noises[3])


def test_fresh_noise_every_generation_by_default(params):
    strategy = Eggroll(4, 0.1)
    state = strategy.init(jax.random.key(1), params)
    population = strategy.ask(state)
    state, _ = strategy.tell(state, population, jnp.arange(4.0))
    assert not np.allclose(_noise_of(population), _noise_of(strategy.ask(state)))


def _run(strategy, params, key, generations=3):
    state = strategy.init(key, params)
    for g in range(generations):
        population = strategy.ask(state)
        fitness = -jnp.sum(jnp.square(_member_outputs(strategy, population)), axis=(1, 2))
        state, _ = strategy.tell(state, population, fitness)
    return state


def _member_outputs(strategy, population):
    xs = jnp.ones((strategy.population_size, 2, 4))
    return strategy.population_apply(population, TwoLayer().apply, xs)


def test_same_key_gives_bit_identical_state_and_other_keys_differ(params):
    strategy = Eggroll(6, 0.1, optimizer=optax.adam(0.01))
    first = _run(strategy, params, jax.random.key(7))
    second = _run(strategy, params, jax.random.key(7))
    for a, b in zip(jax.tree_util.tree_leaves(first), jax.tree_util.tree_leaves(second)):
        np.testing.assert_array_equal(np.asarray(jax.random.key_data(a) if a.dtype == jax.random.key(0).dtype else a),
                                      np.asarray(jax.random.key_data(b) if b.dtype == jax.random.key(0).dtype else b))
    other = _run(strategy, params, jax.random.key(8))
    assert not np.allclose(_flat(first.mean), _flat(other.mean))


def test_generation_in_jitted_scan_matches_eager_steps(params):
    strategy = Eggroll(6, 0.1, optimizer=optax.adam(0.01))
    state = strategy.init(jax.random.key(3), params)

    def generation(state, _):
        population = strategy.ask(state)
        fitness = -jnp.sum(jnp.square(_member_outputs(strategy, population)), axis=(1, 2))
        return strategy.tell(state, population, fitness)

    scanned, _ = jax.jit(lambda s: jax.lax.scan(generation, s, None, length=3))(state)
    eager = state
    for _ in range(3):
        eager, _ = generation(eager, None)
    np.testing.assert_allclose(_flat(scanned.mean), _flat(eager.mean), atol=1e-6)


# ---- errors ------------------------------------------------------------------------------

@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(population_size=5, sigma=0.1), "population_size=5 is odd"),
        (dict(population_size=4, sigma=0.0), "sigma must be > 0"),
        (dict(population_size=4, sigma=-1.0), "sigma must be > 0"),
        (dict(population_size=4, sigma=0.1, rank=0), "rank must be an int >= 1"),
        (dict(population_size=4, sigma=0.1, noise_reuse=0), "noise_reuse=0"),
        (dict(population_size=4, sigma=0.1, fitness_shaping="rankz"), "fitness_shaping='rankz'"),
        (dict(population_size=4, sigma=0.1, nonfinite_fitness="ignore"), "nonfinite_fitness"),
        (dict(population_size=4, sigma=0.1, noise_dtype=jnp.int16), "noise_dtype must be int8 or"),
        (dict(population_size=4, sigma=0.1, noise_dtype="half-ish"), "noise_dtype must be int8 or"),
    ],
)
def test_bad_arguments_fail_at_construction(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Eggroll(**kwargs)


def test_rank_larger_than_a_matrix_side_fails_at_init(params):
    with pytest.raises(ValueError, match=r"rank=4 is larger than the smaller side of params\['params'\]\['Dense_0'\]\['kernel'\] \(shape \(5, 3\)\)"):
        Eggroll(4, 0.1, rank=4).init(jax.random.key(0), params)


def test_openes_takes_no_rank():
    with pytest.raises(ValueError, match="no rank"):
        OpenES(4, 0.1, rank=2)


@pytest.fixture(scope="module")
def started(params):
    strategy = Eggroll(4, 0.1, optimizer=optax.adam(0.1))
    state = strategy.init(jax.random.key(0), params)
    return strategy, state, strategy.ask(state)


def test_fitness_of_wrong_shape_is_rejected(started):
    strategy, state, population = started
    with pytest.raises(ValueError, match=r"fitness must have shape \(4,\)"):
        strategy.tell(state, population, jnp.zeros(5))


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_nonfinite_fitness_raises_by_default(started, bad):
    strategy, state, population = started
    with pytest.raises(ValueError, match=r"non-finite value\(s\).*member\(s\) \[2\]"):
        strategy.tell(state, population, jnp.array([1.0, 0.0, bad, 2.0]))


def test_nonfinite_fitness_under_jit_raises_at_run_time(started):
    strategy, state, population = started
    with pytest.raises(Exception, match="non-finite"):
        jax.block_until_ready(
            jax.jit(strategy.tell)(state, population, jnp.array([1.0, jnp.nan, 0.0, 2.0]))
        )


def test_skip_leaves_params_and_optimiser_state_unchanged(params):
    strategy = Eggroll(4, 0.1, optimizer=optax.adam(0.1), nonfinite_fitness="skip")
    state = strategy.init(jax.random.key(0), params)
    state, _ = strategy.tell(state, strategy.ask(state), jnp.arange(4.0))  # non-trivial adam state
    new, metrics = strategy.tell(state, strategy.ask(state), jnp.array([1.0, jnp.nan, 0.0, 2.0]))
    assert bool(metrics["skipped"]) and int(new.generation) == int(state.generation) + 1
    np.testing.assert_array_equal(_flat(new.mean), _flat(state.mean))
    np.testing.assert_array_equal(_flat(new.opt_state), _flat(state.opt_state))


def test_population_from_another_generation_is_rejected(started):
    strategy, state, population = started
    later, _ = strategy.tell(state, population, jnp.arange(4.0))
    with pytest.raises(ValueError, match="asked at generation 0 but the state is at generation 1"):
        strategy.tell(later, population, jnp.arange(4.0))


# ---- fitness shaping ---------------------------------------------------------------------

def test_centered_rank_averages_ties_and_spans_half_interval():
    shaped = np.asarray(centered_rank(jnp.array([10.0, 500.0, 500.0, -3.0, 7.0])))
    # ranks: -3 -> 0, 7 -> 1, 10 -> 2, 500/500 -> 3.5 each; divided by 4, minus 0.5
    np.testing.assert_allclose(shaped, [0.0, 0.375, 0.375, -0.5, -0.25])


def test_zscore_and_constant_fitness():
    f = jnp.array([1.0, 2.0, 3.0, 6.0])
    ref = (np.asarray(f) - 3.0) / np.std(np.asarray(f))
    np.testing.assert_allclose(zscore(f), ref, rtol=1e-6)
    np.testing.assert_array_equal(zscore(jnp.full(4, 5.0)), np.zeros(4))
    np.testing.assert_array_equal(centered_rank(jnp.full(4, 5.0)), np.zeros(4))


def test_grouped_zscore_subtracts_group_means_and_divides_by_global_std():
    f = np.array([1.0, 3.0, 10.0, 14.0, -2.0, 2.0])
    centered = f - np.repeat(f.reshape(3, 2).mean(axis=1), 2)
    np.testing.assert_allclose(grouped_zscore(jnp.asarray(f), 2), centered / centered.std(), rtol=1e-6)
    with pytest.raises(ValueError, match="group_size=4"):
        grouped_zscore(jnp.asarray(f), 4)
