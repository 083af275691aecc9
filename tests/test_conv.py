"""Convolutions on the low-rank path: a rank-r convolution then a 1x1 projection per member.

A 2-D conv kernel ``(kh, kw, c_in, c_out)`` is the matrix ``(kh*kw*c_in, c_out)``; the fast path
must equal the model applied to ``member_params`` (the materialised kernel), for linen
``nn.Conv`` and ``nnx.Conv``, without building a per-member kernel or warning.
"""

import warnings

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from eggroll_rl import Eggroll


class LinenCNN(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Conv(6, (3, 3), strides=2, padding="SAME")(x))
        x = nn.relu(nn.Conv(5, (2, 2), padding="VALID")(x))
        return nn.Dense(3)(x.reshape((x.shape[0], -1)))


class NNXCNN(nnx.Module):
    def __init__(self, *, rngs):
        self.conv1 = nnx.Conv(4, 6, (3, 3), strides=2, padding="SAME", rngs=rngs)
        self.conv2 = nnx.Conv(6, 5, (2, 2), padding="VALID", rngs=rngs)
        self.head = nnx.Linear(4 * 4 * 5, 3, rngs=rngs)

    def __call__(self, x):
        x = nnx.relu(self.conv2(nnx.relu(self.conv1(x))))
        return self.head(x.reshape((x.shape[0], -1)))


def _check(strategy, params, apply_fn, xs):
    population = strategy.ask(strategy.init(jax.random.key(1), params))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # every kernel is on the fast path
        fast = jax.jit(lambda p, xs: strategy.population_apply(p, apply_fn, xs))(population, xs)

    def one(i):
        return apply_fn(strategy.member_params(population, i), xs[i])

    reference = jax.jit(jax.vmap(one))(jnp.arange(strategy.population_size))
    np.testing.assert_allclose(fast, reference, rtol=2e-4, atol=2e-4)
    mean = jax.vmap(lambda x: apply_fn(strategy.member_params(population.replace(
        sigma=jnp.zeros_like(population.sigma)), 0), x))(xs)
    assert float(jnp.min(jnp.max(jnp.abs(reference - mean), axis=(1, 2)))) > 0.05
    jaxpr = str(jax.make_jaxpr(lambda p, xs: strategy.population_apply(p, apply_fn, xs))(population, xs))
    assert "f32[4,3,3,4,6]" not in jaxpr and "f32[4,2,2,6,5]" not in jaxpr  # no per-member kernel


def test_linen_conv_low_rank_matches_member_params():
    model = LinenCNN()
    xs = jax.random.uniform(jax.random.key(2), (4, 2, 10, 10, 4))
    params = model.init(jax.random.key(0), xs[0])
    _check(Eggroll(4, 0.5, rank=2), params, model.apply, xs)


def test_nnx_conv_low_rank_matches_member_params():
    model = NNXCNN(rngs=nnx.Rngs(0))
    xs = jax.random.uniform(jax.random.key(2), (4, 2, 10, 10, 4))
    _check(Eggroll(4, 0.5, rank=2), model, lambda m, x: m(x), xs)
