"""Shared fixtures and session settings for the tests (the ``slow`` marker, GPU precision).

Compilation dominates the run time of these tests on a CPU: ``Eggroll.ask`` and ``tell`` are
``jit``-compiled per strategy *instance* (the instance is a static argument, hashed by
identity) and per parameter shapes. ``memo`` therefore keeps one instance per configuration
for the whole session, and the ``*_fn`` fixtures hand out compiled helpers that are built once.
"""

from __future__ import annotations

import os
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from eggroll_rl import Eggroll
from eggroll_rl import noise as noise_lib


def pytest_configure(config):
    """Register the ``slow`` marker and pin float32 matmul precision on GPUs.

    ``slow`` only labels long end-to-end runs (``-m slow`` selects them, ``-m "not slow"``
    skips them); they are part of the default run.

    On recent NVIDIA GPUs float32 matmuls and convolutions default to TF32 (about 10 mantissa
    bits). The tests compare fast paths with references built another way (float64 NumPy,
    materialised member params) at 1e-5 to 1e-6 tolerances: TF32 would hide no real error
    but would break those comparisons, so on a GPU the whole session runs matmuls at full
    float32 precision. CPU runs are left unchanged.
    """
    config.addinivalue_line("markers", "slow: long end-to-end run (still part of the default run)")
    _share_compiled_programs()
    if jax.default_backend() == "gpu":
        jax.config.update("jax_default_matmul_precision", "highest")


def _share_compiled_programs() -> None:
    """One JAX persistent compilation cache for the whole test run: the xdist workers and the
    CLI subprocesses they start (which inherit the environment) compile many identical
    programs (the same tiny CartPole runs), and compiling dominates the suite's time. The
    folder is per run (xdist's run id), so nothing carries over between runs; a cache the user
    already set is left alone."""
    import tempfile

    if os.environ.get("JAX_COMPILATION_CACHE_DIR"):
        return
    run_id = os.environ.get("PYTEST_XDIST_TESTRUNUID") or f"pid{os.getpid()}"
    folder = os.path.join(tempfile.gettempdir(), f"eggroll-rl-tests-jax-cache-{run_id}")
    os.environ["JAX_COMPILATION_CACHE_DIR"] = folder
    os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
    os.environ["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"] = "0"
    jax.config.update("jax_compilation_cache_dir", folder)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


def pytest_xdist_auto_num_workers(config):
    """``-n auto``: one worker per core, at most 4 (each worker holds its own JAX runtime and
    compile caches, so more workers cost memory and repeated compiles for little gain)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, min(4, cores or 1))


@pytest.fixture(scope="session")
def memo() -> Callable[[Any, Callable[[], Any]], Any]:
    """``memo(name, factory)``: build once per session and hand back the same object after.

    Use it for strategies (so jit caches keyed on the instance stay warm), for prepared
    populations and for compiled functions shared by several tests or modules.
    """
    cache: dict[Any, Any] = {}

    def get(name, factory):
        if name not in cache:
            cache[name] = factory()
        return cache[name]

    return get


def _assert_same_structure(actual, expected):
    assert jax.tree_util.tree_structure(actual) == jax.tree_util.tree_structure(expected)


@pytest.fixture(scope="session")
def assert_trees_close():
    """``assert_trees_close(actual, expected, rtol=1e-5, atol=1e-6)`` leaf by leaf, same structure."""

    def check(actual, expected, rtol=1e-5, atol=1e-6, err_msg=""):
        _assert_same_structure(actual, expected)
        for (path, a), e in zip(
            jax.tree_util.tree_leaves_with_path(actual), jax.tree_util.tree_leaves(expected)
        ):
            np.testing.assert_allclose(
                np.asarray(a, np.float64), np.asarray(e, np.float64), rtol=rtol, atol=atol,
                err_msg=f"{err_msg} at {jax.tree_util.keystr(path)}",
            )

    return check


@pytest.fixture(scope="session")
def assert_trees_equal():
    """Bit-identical leaves (values and dtypes), same structure."""

    def as_numpy(x):
        if jnp.issubdtype(jnp.result_type(x), jax.dtypes.prng_key):
            return np.asarray(jax.random.key_data(x))
        return np.asarray(x)

    def check(actual, expected):
        _assert_same_structure(actual, expected)
        for (path, a), e in zip(
            jax.tree_util.tree_leaves_with_path(actual), jax.tree_util.tree_leaves(expected)
        ):
            a, e = as_numpy(a), as_numpy(e)
            assert a.dtype == e.dtype, jax.tree_util.keystr(path)
            np.testing.assert_array_equal(a, e, err_msg=jax.tree_util.keystr(path))

    return check


@pytest.fixture(scope="session")
def all_member_params(memo):
    """``all_member_params(strategy, population)``: every member's params stacked on axis 0.

    Built from ``strategy.member_params`` (the slow reference path), compiled once per strategy.
    """

    def get(strategy, population):
        fn = memo(
            ("all_member_params", id(strategy)),
            lambda: jax.jit(
                lambda pop: jax.vmap(lambda i: strategy.member_params(pop, i))(
                    jnp.arange(strategy.population_size)
                )
            ),
        )
        return fn(population)

    return get


@pytest.fixture(scope="session")
def materialised_apply():
    """``materialised_apply(strategy, apply_fn, population, xs)``: ``apply_fn(member_params(i), xs[i])``.

    The reference every fast forward path is compared with: each member's params are built in
    full by ``member_params`` and the model is applied to them the ordinary way. Not jitted
    itself: wrap the call in ``jax.jit`` (once per model) to compile it as one program.
    """

    def run(strategy, apply_fn, population, xs):
        def one(i):
            x = jax.tree_util.tree_map(lambda leaf: leaf[i], xs)
            return apply_fn(strategy.member_params(population, i), x)

        return jax.vmap(one)(jnp.arange(strategy.population_size))

    return run


@pytest.fixture(scope="session")
def member_signs():
    """The sign ``s_i`` of every member as documented: +1/-1 alternating when antithetic."""

    def signs(strategy):
        if strategy.antithetic:
            return np.tile([1.0, -1.0], strategy.population_size // 2)
        return np.ones(strategy.population_size)

    return signs


@pytest.fixture(scope="session")
def random_params():
    """``random_params(model, *example_inputs, seed=0, scale=0.5)``: a model's params, no init.

    ``model.init`` runs the initialisers op by op, and every new shape of a JAX random op is a
    slow compilation on a CPU; the tests only need *some* params of the right structure, so the
    shapes come from ``jax.eval_shape`` and the values from NumPy. Every leaf (LayerNorm scales
    and biases included) gets a random value, which exercises more than the usual init.
    """

    def make(model, *example_inputs, seed=0, scale=0.5):
        shapes = jax.eval_shape(model.init, jax.random.key(0), *example_inputs)
        generator = np.random.default_rng(seed)
        return jax.tree_util.tree_map(
            lambda s: jnp.asarray(generator.normal(size=s.shape) * scale, s.dtype), shapes
        )

    return make


@pytest.fixture(scope="session")
def numpy_population():
    """``numpy_population(strategy, params, seed=0)``: an EGGROLL population with NumPy noise.

    Same structure and shapes as ``strategy.ask`` (one row per draw), but the noise comes from
    NumPy, which skips compiling ``ask``'s random-number kernel. For forward tests only:
    ``population_apply`` must agree with ``member_params`` for any noise, and the tests of
    ``ask`` itself use the real thing.
    """

    def make(strategy, params, seed=0):
        state = strategy.init(jax.random.key(seed), params)
        shapes = jax.eval_shape(strategy.ask, state)
        assert shapes.members is None, "numpy_population is for EGGROLL populations"
        generator = np.random.default_rng(seed)

        def fill(s):  # held as ask holds it (int8: steps of 1/16)
            return noise_lib.hold(jnp.asarray(generator.normal(size=s.shape), jnp.float32), s.dtype)

        return shapes.replace(
            mean=state.mean,
            noise=jax.tree_util.tree_map(fill, shapes.noise),
            sigma=jnp.asarray(strategy.sigma, jnp.float32),
            key=state.key,
            generation=state.generation,
        )

    return make


@pytest.fixture(scope="session")
def normal():
    """``normal(shape, seed=0)``: a float32 standard-normal array made with NumPy (no compile)."""

    def make(shape, seed=0):
        return jnp.asarray(np.random.default_rng(seed).normal(size=shape), jnp.float32)

    return make


@pytest.fixture
def rng(request) -> np.random.Generator:
    """A NumPy generator seeded from the test's name: different per test, stable across runs."""
    seed = sum(ord(c) * (i + 1) for i, c in enumerate(request.node.nodeid)) % (2**32)
    return np.random.default_rng(seed)


# ---- one EGGROLL optimisation run shared by test_strategies and test_statistics -----------------
class Regressor(nn.Module):
    """A 2-16-1 tanh MLP of plain nn.Dense layers (so the interception path is used)."""

    @nn.compact
    def __call__(self, x):
        return nn.Dense(1)(jnp.tanh(nn.Dense(16)(x)))[..., 0]


@pytest.fixture(scope="session")
def regression(random_params):
    """150 generations of EGGROLL on a small MLP regression, in one jitted ``lax.scan``.

    Each member sees the whole batch and its fitness is minus its mean squared error (default
    centered-rank shaping, adam). Returns the pieces and, per generation, the mean params after
    ``tell``, the ``fitness_mean`` metric and the loss of the mean params.
    """
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.uniform(-1, 1, size=(32, 2)), jnp.float32)
    y = jnp.sin(2 * x[:, 0]) * x[:, 1] + 0.5 * x[:, 0]
    model = Regressor()
    params = random_params(model, x, seed=1)
    population_size = 32
    strategy = Eggroll(population_size, 0.05, rank=1, optimizer=optax.adam(0.03))
    xs = jnp.broadcast_to(x, (population_size, *x.shape))

    def loss(p):
        return jnp.mean((model.apply(p, x) - y) ** 2)

    def fitness_of(predictions):
        return -jnp.mean((predictions - y) ** 2, axis=1)

    def generation(state, _):
        population = strategy.ask(state)
        predictions = strategy.population_apply(population, model.apply, xs)
        state, metrics = strategy.tell(state, population, fitness_of(predictions))
        mean = strategy.mean_params(state)
        return state, (mean, metrics["fitness_mean"], loss(mean))

    start = strategy.init(jax.random.key(2), params)
    final, (means, fitness_means, losses) = jax.jit(
        lambda s: jax.lax.scan(generation, s, None, length=150)
    )(start)
    return dict(
        model=model, params=params, strategy=strategy, xs=xs, loss=loss, fitness_of=fitness_of,
        start=start, final=final, means=means, fitness_means=fitness_means, losses=losses,
    )
