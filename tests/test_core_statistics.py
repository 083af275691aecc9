"""The estimator's statistics on a quadratic with a known gradient, and optimisation that works.

For f(theta) = -||theta - target||^2 the antithetic difference is exactly 2 sigma grad.E, so the
ES estimate is an average of (grad.E) E over draws: its direction tends to the true gradient as
the population grows, and its low-rank version tends to the full-rank one as the rank grows.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax

from eggroll_rl import Eggroll, OpenES

SIZE = 32
THETA = jax.random.normal(jax.random.key(0), (SIZE, SIZE))
TARGET = jax.random.normal(jax.random.key(1), (SIZE, SIZE))
TRUE_GRADIENT = np.ravel(-2 * (THETA - TARGET))


def _fitness(strategy, population):
    members = jax.vmap(lambda i: strategy.member_params(population, i))(
        jnp.arange(strategy.population_size)
    )
    return -jnp.sum((members["w"] - TARGET) ** 2, axis=(1, 2))


def _mean_cosine(strategy, seeds=8):
    """Average cosine between the one-generation ES step (sgd, lr 1) and the true gradient."""

    def cosine(key):
        state = strategy.init(key, {"w": THETA})
        population = strategy.ask(state)
        new, _ = strategy.tell(state, population, _fitness(strategy, population))
        step = jnp.ravel(new.mean["w"] - THETA)
        return step @ TRUE_GRADIENT / (jnp.linalg.norm(step) * np.linalg.norm(TRUE_GRADIENT))

    keys = jax.random.split(jax.random.key(42), seeds)
    return float(jnp.mean(jax.jit(jax.vmap(cosine))(keys)))


def _strategy(cls, population_size, **kwargs):
    return cls(
        population_size, 0.1, optimizer=optax.sgd(1.0), fitness_shaping="identity",
        nonfinite_fitness="skip", **kwargs,
    )


def test_estimate_aligns_with_true_gradient_as_population_grows():
    small = _mean_cosine(_strategy(Eggroll, 64, rank=1))
    large = _mean_cosine(_strategy(Eggroll, 2048, rank=1))
    assert 0.05 < small < large
    assert large > small + 0.3


def _mean_squared_error(strategy, theta, target, seeds=512):
    """E||step - sigma * grad||^2 of one generation: the estimate's spread around its mean."""
    expected = strategy.sigma * -2 * (theta - target)

    def error(key):
        state = strategy.init(key, {"w": theta})
        population = strategy.ask(state)
        members = jax.vmap(lambda i: strategy.member_params(population, i))(
            jnp.arange(strategy.population_size)
        )
        fitness = -jnp.sum((members["w"] - target) ** 2, axis=(1, 2))
        new, _ = strategy.tell(state, population, fitness)
        return jnp.sum((new.mean["w"] - theta - expected) ** 2)

    keys = jax.random.split(jax.random.key(5), seeds)
    return float(jnp.mean(jax.jit(jax.vmap(error))(keys)))


def test_low_rank_estimate_approaches_full_rank_as_rank_grows():
    """The excess error over full-rank ES shrinks roughly like 1/r (the paper's O(1/r))."""
    theta = jax.random.normal(jax.random.key(0), (8, 8))
    target = jax.random.normal(jax.random.key(1), (8, 8))
    full = _mean_squared_error(_strategy(OpenES, 32), theta, target)
    excess = {
        r: _mean_squared_error(_strategy(Eggroll, 32, rank=r), theta, target) - full
        for r in (1, 2, 4, 8)
    }
    assert excess[1] > excess[2] > excess[4] > excess[8]
    assert excess[1] > 0.3 * full  # rank 1 is visibly noisier on a small matrix...
    assert excess[8] < 0.25 * excess[1]  # ...and the gap closes as the rank grows


def test_eggroll_minimises_a_matrix_quadratic():
    strategy = Eggroll(128, 0.05, rank=1, optimizer=optax.adam(0.05))
    state = strategy.init(jax.random.key(3), {"w": THETA})
    initial = float(jnp.sum((THETA - TARGET) ** 2))

    def generation(state, _):
        population = strategy.ask(state)
        state, metrics = strategy.tell(state, population, _fitness(strategy, population))
        return state, -metrics["fitness_mean"]

    state, losses = jax.jit(lambda s: jax.lax.scan(generation, s, None, length=300))(state)
    final = float(jnp.sum((state.mean["w"] - TARGET) ** 2))
    assert final < 0.02 * initial
    assert float(losses[-1]) < float(losses[0])
