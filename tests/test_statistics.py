"""The ES estimate's statistics on a quadratic with a known gradient, and optimisation.

For f(theta) = -||theta - target||^2 and antithetic pairs, f(theta + sigma E) - f(theta - sigma E)
= 2 sigma G.E exactly, with G = -2 (theta - target). With identity shaping the one-generation
estimate is therefore g = (sigma / M) sum_k (G.E_k) E_k over the M = N/2 pairs, whose mean is
sigma G and whose normalised squared error has the closed form

    E ||g / sigma - G||^2 / ||G||^2 = (c - 1) / M,   c = E[(G.E)^2 ||E||^2] / ||G||^2,

with c = m n + 2 for a full Gaussian E (OpenES) and c = m n + 2 + (2m + 2n + 2) / r for
E = B^T A / sqrt(r) with Gaussian factors (EGGROLL; for r = 1 this is (m + 2)(n + 2)). The
excess over full rank falls like 1/r, the paper's O(1/r). These formulas are the independent
reference; every estimate below comes from the strategies' own ask/member_params/tell.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from eggroll_rl import Eggroll, OpenES


def _quadratic(m, n, seed=0):
    rng = np.random.default_rng(seed)
    theta = jnp.asarray(rng.normal(size=(m, n)), jnp.float32)
    target = jnp.asarray(rng.normal(size=(m, n)), jnp.float32)
    gradient = np.asarray(-2.0 * (theta - target), np.float64).ravel()
    return theta, target, gradient


def _one_generation_estimates(strategy, theta, target, trials, seed):
    """The step (new mean - mean) of ``trials`` independent generations, one per key.

    Compiled once per strategy: a lax.map over keys of ask -> fitness of every member (from
    member_params, or OpenES's materialised members) -> tell. With optax.sgd(1.0) the step is
    the estimate g itself.
    """
    start = strategy.init(jax.random.key(0), {"w": theta})
    n = strategy.population_size

    def one(key):
        state = start.replace(key=key)
        population = strategy.ask(state)
        if population.members is not None:  # OpenES holds them (equal to member_params: tested)
            members = population.members["w"]
        else:
            members = jax.vmap(lambda i: strategy.member_params(population, i)["w"])(jnp.arange(n))
        fitness = -jnp.sum((members - target) ** 2, axis=(1, 2))
        new_state, _ = strategy.tell(state, population, fitness)
        return (new_state.mean["w"] - theta).ravel()

    keys = jax.random.split(jax.random.key(seed), trials)
    return np.asarray(jax.jit(lambda keys: jax.lax.map(one, keys))(keys), np.float64)


def _cosines(steps, gradient):
    return steps @ gradient / (np.linalg.norm(steps, axis=1) * np.linalg.norm(gradient))


def _predicted_cosine(c, pairs):
    """cos(g, G) ~ E[g.G] / sqrt(E|g|^2) |G| = 1 / sqrt(1 + (c - 1) / M) for large m n."""
    return 1.0 / np.sqrt(1.0 + (c - 1.0) / pairs)


def test_estimate_aligns_with_the_gradient_as_the_population_grows():
    """32x32 matrix, rank 1, z-scored fitness: cosine to the true gradient 0.16 -> 0.55."""
    m = n = 32
    theta, target, gradient = _quadratic(m, n)
    c = (m + 2) * (n + 2)
    cosines = {}
    for population_size in (64, 1024):
        strategy = Eggroll(
            population_size, 0.05, rank=1, optimizer=optax.sgd(1.0), fitness_shaping="zscore",
            nonfinite_fitness="skip",
        )
        steps = _one_generation_estimates(strategy, theta, target, trials=6, seed=1)
        cosines[population_size] = _cosines(steps, gradient)
        predicted = _predicted_cosine(c, population_size // 2)
        assert abs(cosines[population_size].mean() - predicted) < 0.06, (
            population_size, cosines[population_size], predicted
        )
    assert cosines[64].mean() > 0.08  # already informative with 64 members...
    assert cosines[1024].min() > cosines[64].max()  # ...and every large-population seed beats
    assert cosines[1024].mean() > cosines[64].mean() + 0.3  # every small one, by far


RANK_SHAPE = (16, 16)
RANK_POPULATION = 32  # 16 antithetic pairs
RANK_SIGMA = 0.1
RANK_TRIALS = 3000


@pytest.fixture(scope="module")
def rank_study():
    """Normalised squared error and cosine of the one-generation estimate, per rank."""
    m, n = RANK_SHAPE
    theta, target, gradient = _quadratic(m, n, seed=3)
    results = {}
    for rank in (1, 4, 16, None):
        kwargs = dict(optimizer=optax.sgd(1.0), fitness_shaping="identity", nonfinite_fitness="skip")
        if rank is None:
            strategy = OpenES(RANK_POPULATION, RANK_SIGMA, **kwargs)
        else:
            strategy = Eggroll(RANK_POPULATION, RANK_SIGMA, rank=rank, **kwargs)
        steps = _one_generation_estimates(strategy, theta, target, RANK_TRIALS, seed=7)
        scaled = steps / RANK_SIGMA  # estimates of G
        errors = np.sum((scaled - gradient) ** 2, axis=1) / np.sum(gradient**2)
        results[rank] = dict(
            mse=errors.mean(),
            mse_se=errors.std() / np.sqrt(RANK_TRIALS),
            cosine=_cosines(steps, gradient).mean(),
            bias=np.linalg.norm(scaled.mean(axis=0) - gradient) / np.linalg.norm(gradient),
        )
    return results


def _predicted_mse(rank):
    m, n = RANK_SHAPE
    c = m * n + 2 + (0.0 if rank is None else (2 * m + 2 * n + 2) / rank)
    return (c - 1) / (RANK_POPULATION // 2)


@pytest.mark.parametrize("rank", [1, 4, 16, None], ids=["r1", "r4", "r16", "openes"])
def test_estimate_is_unbiased_with_the_predicted_error(rank_study, rank):
    result = rank_study[rank]
    # E[g / sigma] = G: over 3000 generations the mean misses G by ~sqrt(mse / 3000) ~ 0.08
    assert result["bias"] < 0.12, result
    # the closed-form error (within 6%; its standard error here is about 1%)
    predicted = _predicted_mse(rank)
    assert abs(result["mse"] - predicted) < 0.06 * predicted, (result, predicted)
    assert result["mse_se"] < 0.02 * predicted


def test_low_rank_estimate_approaches_full_rank_as_rank_grows(rank_study):
    cosine = {rank: rank_study[rank]["cosine"] for rank in rank_study}
    mse = {rank: rank_study[rank]["mse"] for rank in rank_study}
    # cosine to the true gradient rises with the rank and approaches OpenES's
    assert cosine[1] + 0.006 < cosine[4] < cosine[16] < cosine[None] + 0.003, cosine
    assert cosine[None] - cosine[16] < 0.3 * (cosine[None] - cosine[1]), cosine
    # the excess error over full rank shrinks like 1/r: 4.1 -> 1.0 -> 0.26 (predicted)
    excess = {rank: mse[rank] - mse[None] for rank in (1, 4, 16)}
    assert excess[1] > 2.5 * excess[4] > 0, excess
    assert excess[16] < 0.25 * excess[1], excess


# ---- optimisation -----------------------------------------------------------------------------
def test_rank_one_eggroll_reaches_a_full_rank_target():
    """Every step of rank-1 EGGROLL on a 32x32 matrix is a sum of 64 rank-1 terms, and the
    steps of 300 generations add up to the full-rank move ``target - theta``: the distance to
    the known minimiser falls below 2% of its start, and the total move has full rank."""
    theta, target, _ = _quadratic(32, 32, seed=5)
    strategy = Eggroll(128, 0.05, rank=1, optimizer=optax.adam(0.05))
    n = strategy.population_size

    def generation(state, _):
        population = strategy.ask(state)
        members = jax.vmap(lambda i: strategy.member_params(population, i)["w"])(jnp.arange(n))
        fitness = -jnp.sum((members - target) ** 2, axis=(1, 2))
        return strategy.tell(state, population, fitness)[0], None

    start = strategy.init(jax.random.key(3), {"w": theta})
    final = jax.jit(lambda s: jax.lax.scan(generation, s, None, length=300)[0])(start)
    initial = float(jnp.sum((theta - target) ** 2))
    assert float(jnp.sum((final.mean["w"] - target) ** 2)) < 0.02 * initial
    singular = np.linalg.svd(np.asarray(final.mean["w"] - theta, np.float64), compute_uv=False)
    assert int(np.sum(singular > 1e-3 * singular[0])) == 32, singular


def test_eggroll_fits_an_mlp_regression(regression):
    """A 2-16-1 tanh MLP (plain nn.Dense, intercepted) fitted by EGGROLL alone, in a jitted scan
    of 150 generations (the ``regression`` fixture in conftest.py)."""
    initial = float(regression["loss"](regression["params"]))
    losses = np.asarray(regression["losses"])
    assert initial > 0.1
    assert losses[-1] < 0.05 * initial, (initial, losses[::25])
    # the population's own fitness improves too (fitness = -member MSE)
    fitness = np.asarray(regression["fitness_means"])
    assert fitness[-10:].mean() > 0.2 * fitness[:10].mean()
    final_mean = regression["strategy"].mean_params(regression["final"])
    assert float(regression["loss"](final_mean)) == pytest.approx(losses[-1], rel=1e-5)
