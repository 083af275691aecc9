"""population_apply against references built another way: materialised member params, and a
float64 NumPy forward of hand-built kernels."""


import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from eggroll_rl import Eggroll, EggrollDense, OpenES
from eggroll_rl.noise import widen


class DenseNet(nn.Module):
    """Two layers of the given Dense class, LayerNorm, an optional learned log-std."""

    dense: type = nn.Dense
    width: int = 6
    out: int = 3
    use_bias: bool = True
    log_std: bool = False

    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.LayerNorm()(self.dense(self.width, use_bias=self.use_bias)(x)))
        out = self.dense(self.out, use_bias=self.use_bias)(x)
        if self.log_std:
            out = out + self.param("log_std", nn.initializers.zeros, (self.out,))
        return out


class ActorCritic(nn.Module):
    """PureJaxRL-style two-headed network of plain nn.Dense layers, unchanged."""

    @nn.compact
    def __call__(self, x):
        actor = nn.tanh(nn.Dense(8)(x))
        critic = nn.tanh(nn.Dense(8)(x))
        return nn.Dense(2)(actor), nn.Dense(1)(critic)[..., 0]


class WithMatrixParam(nn.Module):
    """A matrix used without a Dense layer: materialised, with a warning, still correct."""

    @nn.compact
    def __call__(self, x):
        table = self.param("table", nn.initializers.normal(1.0), (5, 4))
        return nn.Dense(2)(x @ table)


def _check_members(strategy, model, x_shape, seed=0, atol=2e-5):
    key_p, key_s, key_x = jax.random.split(jax.random.key(seed), 3)
    params = model.init(key_p, jnp.zeros(x_shape[1:]))
    state = strategy.init(key_s, params)
    population = strategy.ask(state)
    xs = jax.random.normal(key_x, x_shape)
    ys = jax.jit(lambda p, x: strategy.population_apply(p, model.apply, x))(population, xs)

    @jax.jit
    def materialised(population, xs):
        one = lambda i: model.apply(strategy.member_params(population, i), xs[i])
        return jax.vmap(one)(jnp.arange(strategy.population_size))

    expected = materialised(population, xs)
    jax.tree_util.tree_map(
        lambda y, e: np.testing.assert_allclose(y, e, atol=atol, rtol=1e-4), ys, expected
    )
    return params, population, xs, ys


@pytest.mark.parametrize("dense", [nn.Dense, EggrollDense], ids=["intercepted", "EggrollDense"])
@pytest.mark.parametrize("rank", [1, 2, 4])
def test_low_rank_forward_matches_materialised_members(dense, rank):
    model = DenseNet(dense=dense, width=6, out=4, log_std=True)
    _, _, _, ys = _check_members(Eggroll(6, 0.3, rank=rank), model, (6, 5, 4), seed=rank)
    assert ys.shape == (6, 5, 4)


def test_cap_rank_gives_small_matrices_their_largest_rank():
    model = DenseNet(width=6, out=2)
    strategy = Eggroll(4, 0.2, rank=4, cap_rank=True)
    _, population, _, _ = _check_members(strategy, model, (4, 3, 4))
    noise = population.noise["params"]
    assert noise["Dense_0"]["kernel"].a.shape == (2, 4, 6)  # 2 antithetic draws, 4 members
    assert noise["Dense_1"]["kernel"].a.shape == (2, 2, 2)


def test_forward_without_bias_and_without_antithetic_pairs():
    model = DenseNet(use_bias=False)
    _check_members(Eggroll(5, 0.2, rank=2, antithetic=False), model, (5, 4))


def test_openes_forward_matches_its_members():
    _check_members(OpenES(4, 0.1), DenseNet(log_std=True), (4, 2, 4))


def test_existing_actor_critic_is_trainable_unchanged_with_tuple_outputs():
    _, _, _, (logits, values) = _check_members(Eggroll(8, 0.1), ActorCritic(), (8, 3))
    assert logits.shape == (8, 2) and values.shape == (8,)


def test_matrix_outside_dense_layers_is_materialised_with_a_warning():
    with pytest.warns(UserWarning, match="not use as a plain Dense kernel"):
        _check_members(Eggroll(4, 0.1), WithMatrixParam(), (4, 5))


def test_single_layer_against_a_float64_numpy_forward():
    """Member kernels built by hand from the factors: W + s * sigma * B^T A / sqrt(r)."""
    rank, sigma, population_size = 3, 0.25, 6
    layer = EggrollDense(7)
    params = layer.init(jax.random.key(1), jnp.zeros(5))
    strategy = Eggroll(population_size, sigma, rank=rank)
    population = strategy.ask(strategy.init(jax.random.key(2), params))
    xs = jax.random.normal(jax.random.key(3), (population_size, 4, 5))
    ys = np.asarray(strategy.population_apply(population, layer.apply, xs))

    w = np.asarray(params["params"]["kernel"], np.float64)
    bias = np.asarray(params["params"]["bias"], np.float64)
    kernel_noise = population.noise["params"]["kernel"]
    # a (N / 2, r, out), b (N / 2, r, in): one row per antithetic pair
    a = np.asarray(widen(kernel_noise.a), np.float64)
    b = np.asarray(widen(kernel_noise.b), np.float64)
    eps = np.asarray(widen(population.noise["params"]["bias"].eps), np.float64)
    for i in range(population_size):
        sign, d = (1.0 if i % 2 == 0 else -1.0), i // 2
        kernel = w + sign * sigma * np.einsum("ri,ro->io", b[d], a[d]) / np.sqrt(rank)
        expected = np.asarray(xs[i], np.float64) @ kernel + bias + sign * sigma * eps[d]
        np.testing.assert_allclose(ys[i], expected, atol=1e-5)


def test_eggroll_dense_is_bit_identical_to_dense_when_applied_normally():
    x = jax.random.normal(jax.random.key(0), (9, 5))
    for kwargs in ({}, {"use_bias": False}, {"dtype": jnp.float32}):
        ours = EggrollDense(4, **kwargs)
        params = ours.init(jax.random.key(1), x)
        reference = nn.Dense(4, **kwargs)
        assert jax.tree_util.tree_structure(params) == jax.tree_util.tree_structure(
            reference.init(jax.random.key(1), x)
        )
        assert bool(jnp.all(ours.apply(params, x) == reference.apply(params, x)))


def test_population_apply_runs_inside_jit_and_scan():
    model = DenseNet(dense=EggrollDense)
    strategy = Eggroll(4, 0.1)
    params = model.init(jax.random.key(0), jnp.zeros(4))
    population = strategy.ask(strategy.init(jax.random.key(1), params))
    xs = jax.random.normal(jax.random.key(2), (3, 4, 4))

    @jax.jit
    def scanned(population, xs):
        step = lambda c, x: (c, strategy.population_apply(population, model.apply, x))
        return jax.lax.scan(step, 0, xs)[1]

    eager = jnp.stack([strategy.population_apply(population, model.apply, x) for x in xs])
    np.testing.assert_allclose(scanned(population, xs), eager, atol=1e-6)


def test_population_axis_mismatch_is_a_clear_error():
    strategy = Eggroll(4, 0.1)
    params = DenseNet().init(jax.random.key(0), jnp.zeros(4))
    population = strategy.ask(strategy.init(jax.random.key(1), params))
    with pytest.raises(ValueError, match="leading axis of size population_size=4"):
        strategy.population_apply(population, DenseNet().apply, jnp.zeros((3, 4)))
