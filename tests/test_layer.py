"""EggrollDense, nn.Dense interception and ``population_apply``'s low-rank forward.

Every fast forward is compared with references built another way: the model applied the
ordinary way to each member's materialised params (``member_params``), and, for a single
layer, a float64 NumPy forward of kernels built by hand from the noise factors.
"""

import re
import warnings

import flax.linen as nn
import jax
import jax.extend as jex
import jax.numpy as jnp
import numpy as np
import pytest

from eggroll_rl import Eggroll, EggrollDense, OpenES, strategies
from eggroll_rl.noise import widen
from eggroll_rl.networks import MLP, Policy

SIGMA = 0.5  # large, so that a missing or wrong perturbation term is far outside tolerance


# ---- models -----------------------------------------------------------------------------------
class Trunk(nn.Module):
    """Dense layers (optionally LayerNorm+ReLU between), optionally a learned log-std output."""

    widths: tuple
    dense: type = nn.Dense
    head_dense: type = nn.Dense
    use_bias: bool = True
    layer_norm: bool = True
    log_std: bool = False

    @nn.compact
    def __call__(self, x):
        for i, width in enumerate(self.widths[:-1]):
            x = self.dense(width, use_bias=self.use_bias, name=f"hidden_{i}")(x)
            if self.layer_norm:
                x = nn.LayerNorm(name=f"norm_{i}")(x)
            x = nn.relu(x)
        out = self.head_dense(self.widths[-1], use_bias=self.use_bias, name="head")(x)
        if not self.log_std:
            return out
        return out, self.param("log_std", nn.initializers.normal(0.3), (self.widths[-1],))


class ActorCritic(nn.Module):
    """PureJaxRL's discrete ActorCritic, unchanged except for widths: plain nn.Dense layers."""

    action_dim: int
    hidden: int = 8

    @nn.compact
    def __call__(self, x):
        orthogonal, constant = nn.initializers.orthogonal, nn.initializers.constant
        actor = nn.Dense(self.hidden, kernel_init=orthogonal(np.sqrt(2)), bias_init=constant(0.0))(x)
        actor = nn.tanh(actor)
        actor = nn.Dense(self.hidden, kernel_init=orthogonal(np.sqrt(2)), bias_init=constant(0.0))(
            actor
        )
        actor = nn.tanh(actor)
        logits = nn.Dense(self.action_dim, kernel_init=orthogonal(0.01), bias_init=constant(0.0))(
            actor
        )
        critic = nn.Dense(self.hidden, kernel_init=orthogonal(np.sqrt(2)), bias_init=constant(0.0))(
            x
        )
        critic = nn.tanh(critic)
        critic = nn.Dense(self.hidden, kernel_init=orthogonal(np.sqrt(2)), bias_init=constant(0.0))(
            critic
        )
        critic = nn.tanh(critic)
        critic = nn.Dense(1, kernel_init=orthogonal(1.0), bias_init=constant(0.0))(critic)
        return logits, jnp.squeeze(critic, axis=-1)


class ScaledDense(nn.Dense):
    """A Dense subclass with its own __call__: not a plain Dense, so it is materialised."""

    @nn.compact
    def __call__(self, inputs):
        return 2.0 * super().__call__(inputs)


class WithMatrixOutsideDense(nn.Module):
    """A 2-D param used by a plain matmul, a custom Dense subclass, then a plain Dense."""

    @nn.compact
    def __call__(self, x):
        table = self.param("table", nn.initializers.normal(1.0), (x.shape[-1], 6))
        h = jnp.tanh(x @ table)
        h = jnp.tanh(ScaledDense(5, name="scaled")(h))
        return nn.Dense(3, name="out")(h)


class TiedDecoder(nn.Module):
    """A Dense kernel that is also used directly (weight tying: decoder = encoder^T)."""

    @nn.compact
    def __call__(self, x):
        encoder = nn.Dense(4, use_bias=False, name="encoder")
        h = jnp.tanh(encoder(x))
        return h @ encoder.variables["params"]["kernel"].T


# ---- helpers ----------------------------------------------------------------------------------
def _random_widths(seed, rank, depth):
    """Fresh but reproducible layer widths, every matrix side >= rank."""
    rng = np.random.default_rng(seed)
    low = max(rank, 3)
    return int(rng.integers(low, 11)), tuple(int(w) for w in rng.integers(low, 13, size=depth))


def _forward_check(
    strategy, model, params, xs, assert_trees_close, materialised_apply, population=None
):
    """population_apply (jitted) == the model applied to each member's materialised params."""
    if population is None:
        population = strategy.ask(strategy.init(jax.random.key(7), params))
    fast = jax.jit(lambda pop, xs: strategy.population_apply(pop, model.apply, xs))
    ys = fast(population, xs)
    reference = jax.jit(lambda pop, xs: materialised_apply(strategy, model.apply, pop, xs))
    assert_trees_close(ys, reference(population, xs), rtol=1e-4, atol=1e-4)
    # the perturbations matter: every output is far from the unperturbed model's (sigma = 0)
    unperturbed = reference(population.replace(sigma=jnp.zeros_like(population.sigma)), xs)
    gaps = jax.tree_util.tree_map(lambda y, u: float(jnp.max(jnp.abs(y - u))), ys, unperturbed)
    assert min(jax.tree_util.tree_leaves(gaps)) > 0.05, gaps
    return population, ys


def _shapes_in(jaxpr):
    """Every intermediate shape in a jaxpr, sub-jaxprs (jit, vmap bodies, custom rules) included."""
    for eqn in jaxpr.eqns:
        for var in eqn.outvars:
            yield tuple(getattr(var.aval, "shape", ()))
        for param in eqn.params.values():
            for sub in param if isinstance(param, (list, tuple)) else [param]:
                if isinstance(sub, jex.core.ClosedJaxpr):
                    yield from _shapes_in(sub.jaxpr)
                elif isinstance(sub, jex.core.Jaxpr):
                    yield from _shapes_in(sub)


# ---- EggrollDense applied normally ------------------------------------------------------------
@pytest.mark.parametrize(
    "kwargs, x_shape",
    [
        ({}, (5,)),
        ({"use_bias": False}, (3, 5)),
        ({"kernel_init": nn.initializers.normal(2.0), "bias_init": nn.initializers.ones}, (2, 3, 5)),
    ],
)
def test_eggroll_dense_applied_normally_is_bit_identical_to_dense(
    kwargs, x_shape, normal, random_params
):
    x = normal(x_shape)
    ours, reference = EggrollDense(4, **kwargs), nn.Dense(4, **kwargs)
    assert isinstance(ours, nn.Dense)
    # a drop-in replacement: the same parameter tree
    assert jax.eval_shape(ours.init, jax.random.key(1), x) == jax.eval_shape(
        reference.init, jax.random.key(1), x
    )
    params = random_params(reference, x)
    out = ours.apply(params, x)
    np.testing.assert_array_equal(out, reference.apply(params, x))
    assert out.dtype == reference.apply(params, x).dtype


def test_eggroll_dense_initialises_like_dense(normal):
    x = normal((5,))
    ours = EggrollDense(4).init(jax.random.key(1), x)
    reference = nn.Dense(4).init(jax.random.key(1), x)
    assert jax.tree_util.tree_structure(ours) == jax.tree_util.tree_structure(reference)
    for a, b in zip(jax.tree_util.tree_leaves(ours), jax.tree_util.tree_leaves(reference)):
        np.testing.assert_array_equal(a, b)


# ---- population_apply == materialised members -------------------------------------------------
FORWARD_CASES = {
    # name: (dense, head_dense, rank, cap_rank, use_bias, layer_norm, log_std, antithetic, N,
    #        batch axes, (in_features, widths) or the depth of random widths)
    "Dense-r2-nobias-layernorm": (nn.Dense, nn.Dense, 2, False, False, True, False, True, 6, (3,), 2),
    "EggrollDense-r3-nobias-nonantithetic": (
        EggrollDense, EggrollDense, 3, False, False, False, False, False, 5, (2,), 2
    ),
    # kernels (7, 9), (9, 4), (4, 6) at rank min(6, side): 6, 4 and 4; EggrollDense and
    # intercepted nn.Dense mixed
    "mixed-r6-capped-to-r4-layernorm-logstd-2d-batch": (
        EggrollDense, nn.Dense, 6, True, True, True, True, True, 6, (2, 3), (7, (9, 4, 6))
    ),
    # wider inputs (96 and 64 features), rank 2, a batch of 3 rows per member
    "wide-inputs-r2-batch": (
        EggrollDense, nn.Dense, 2, False, True, True, False, True, 4, (3,), (96, (64, 5))
    ),
}


def _build_forward_case(case, seed, random_params, normal, numpy_population):
    """``FORWARD_CASES[case]`` built with ``seed``: model, params, strategy, inputs, a
    population drawn with NumPy, and the layer widths."""
    dense, head, rank, cap, use_bias, layer_norm, log_std, antithetic, n, batch, widths = (
        FORWARD_CASES[case]
    )
    if isinstance(widths, int):
        in_features, widths = _random_widths(seed, rank, widths)
    else:
        in_features, widths = widths
    model = Trunk(widths, dense, head, use_bias, layer_norm, log_std)
    params = random_params(model, jnp.zeros((in_features,)), seed=seed)
    strategy = Eggroll(n, SIGMA, rank=rank, antithetic=antithetic, cap_rank=cap)
    xs = normal((n, *batch, in_features), seed=seed + 1)
    return model, params, strategy, xs, numpy_population(strategy, params, seed), widths


@pytest.mark.parametrize("case", FORWARD_CASES, ids=list(FORWARD_CASES))
def test_population_apply_matches_materialised_members(
    case, assert_trees_close, materialised_apply, random_params, normal, numpy_population
):
    dense, head, rank, cap, use_bias, layer_norm, log_std, antithetic, n, batch, widths = (
        FORWARD_CASES[case]
    )
    seed = sum(map(ord, case))
    model, params, strategy, xs, population, widths = _build_forward_case(
        case, seed, random_params, normal, numpy_population
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # every matrix is a Dense kernel: no materialisation
        population, ys = _forward_check(
            strategy, model, params, xs, assert_trees_close, materialised_apply, population
        )
    out = ys[0] if log_std else ys
    assert out.shape == (n, *batch, widths[-1])
    noise = population.noise["params"]["head"]["kernel"]
    head_rank = min(rank, widths[-2], widths[-1]) if cap else rank
    assert noise.a.shape == (strategy.num_draws, head_rank, widths[-1])
    assert noise.b.shape == (strategy.num_draws, head_rank, widths[-2])


@pytest.mark.parametrize("case", ["mixed-r6-capped-to-r4-layernorm-logstd-2d-batch", "EggrollDense-r3-nobias-nonantithetic"])
def test_populations_above_the_tie_limit_match_materialised_members(
    case, monkeypatch, assert_trees_close, materialised_apply, random_params, normal,
    numpy_population
):
    """Above ``TIE_TO_STEP_MAX_MEMBERS`` the per-member rows are built once
    (``materialise_once``) instead of inside each step: same members, same outputs."""
    monkeypatch.setattr(strategies, "TIE_TO_STEP_MAX_MEMBERS", 2)
    model, params, strategy, xs, population, _ = _build_forward_case(
        case, sum(map(ord, case)) + 7, random_params, normal, numpy_population
    )
    assert strategy.population_size > strategies.TIE_TO_STEP_MAX_MEMBERS
    _forward_check(strategy, model, params, xs, assert_trees_close, materialised_apply, population)


def test_the_papers_policy_network(
    assert_trees_close, materialised_apply, random_params, normal, numpy_population
):
    """eggroll_rl.networks.Policy: EggrollDense + LayerNorm trunk, Gaussian head with log-std."""
    model = Policy(action_size=3, continuous=True, hidden=(8, 7))
    params = random_params(model, jnp.zeros(5))
    assert params["params"]["log_std"].shape == (3,)
    strategy = Eggroll(6, SIGMA, rank=1)
    xs = normal((6, 4, 5), seed=1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _, (head, log_std) = _forward_check(
            strategy, model, params, xs, assert_trees_close, materialised_apply,
            numpy_population(strategy, params),
        )
    assert head.shape == (6, 4, 3) and log_std.shape == (6, 3)


def test_openes_population_apply_runs_materialised_members(
    assert_trees_close, materialised_apply, random_params, normal
):
    model = Trunk((7, 4), log_std=True)
    params = random_params(model, jnp.zeros(5))
    strategy = OpenES(6, SIGMA)
    xs = normal((6, 2, 5), seed=1)
    population, _ = _forward_check(
        strategy, model, params, xs, assert_trees_close, materialised_apply
    )
    assert population.noise is None
    assert population.members["params"]["head"]["kernel"].shape == (6, 7, 4)


def test_purejaxrl_actor_critic_with_tuple_outputs(
    assert_trees_close, materialised_apply, random_params, normal, numpy_population
):
    model = ActorCritic(action_dim=3)
    params = random_params(model, jnp.zeros(4))
    strategy = Eggroll(8, SIGMA, rank=1)
    xs = normal((8, 4), seed=1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _, (logits, values) = _forward_check(
            strategy, model, params, xs, assert_trees_close, materialised_apply,
            numpy_population(strategy, params),
        )
    assert logits.shape == (8, 3) and values.shape == (8,)


def test_matrix_outside_dense_is_materialised_with_a_warning(
    assert_trees_close, materialised_apply, random_params, normal, numpy_population
):
    model = WithMatrixOutsideDense()
    params = random_params(model, jnp.zeros(5))
    strategy = Eggroll(4, SIGMA, rank=2)
    xs = normal((4, 5), seed=1)
    population = numpy_population(strategy, params)
    with pytest.warns(UserWarning, match="not use as a plain Dense kernel") as record:
        _forward_check(
            strategy, model, params, xs, assert_trees_close, materialised_apply, population
        )
    messages = [str(w.message) for w in record if "plain Dense kernel" in str(w.message)]
    # the table (5, 6) and the custom subclass's kernel (6, 5); never the plain Dense (5, 3)
    assert any("(5, 6)" in m for m in messages) and any("(6, 5)" in m for m in messages)
    assert not any("(5, 3)" in m for m in messages)


def test_kernel_used_by_dense_and_directly_is_exact_and_named(
    assert_trees_close, materialised_apply, random_params, normal, numpy_population
):
    """Weight tying: the tied use sees the member's perturbation (the kernel is materialised),
    and the warning names the parameter by its path."""
    model = TiedDecoder()
    params = random_params(model, jnp.zeros(5))
    strategy = Eggroll(4, SIGMA, rank=2)
    xs = normal((4, 5), seed=1)
    with pytest.warns(UserWarning, match=r"params/encoder/kernel .*reads directly"):
        _forward_check(
            strategy, model, params, xs, assert_trees_close, materialised_apply,
            numpy_population(strategy, params),
        )


# ---- one layer against float64 NumPy ----------------------------------------------------------
@pytest.fixture(scope="module")
def one_layer(memo, random_params, normal):
    """One Dense layer (7 -> 9), its params and a rank-3 population of 6 (shared by classes)."""

    def build():
        params = random_params(nn.Dense(9), jnp.zeros(7))
        strategy = Eggroll(6, SIGMA, rank=3)
        population = strategy.ask(strategy.init(jax.random.key(1), params))
        xs = normal((6, 4, 7), seed=2)
        return params, strategy, population, xs

    return memo("test_layer.one_layer", build)


def _numpy_forward(params, population, xs, sigma, signs):
    """x @ (W + s sigma B^T A / sqrt(r)) + (b + s sigma eps), member by member, in float64."""
    w = np.asarray(params["params"]["kernel"], np.float64)
    bias = np.asarray(params["params"]["bias"], np.float64)
    kernel_noise = population.noise["params"]["kernel"]
    a = np.asarray(widen(kernel_noise.a), np.float64)  # (draws, r, out)
    b = np.asarray(widen(kernel_noise.b), np.float64)  # (draws, r, in)
    eps = np.asarray(widen(population.noise["params"]["bias"].eps), np.float64)  # (draws, out)
    rank = a.shape[1]
    per_draw = len(signs) // len(a)  # member i uses draw i // per_draw
    outputs = []
    for i, sign in enumerate(signs):
        d = i // per_draw
        kernel = w + sign * sigma * (b[d].T @ a[d]) / np.sqrt(rank)
        outputs.append(np.asarray(xs[i], np.float64) @ kernel + bias + sign * sigma * eps[d])
    return np.stack(outputs)


@pytest.mark.parametrize("dense", [nn.Dense, EggrollDense], ids=["intercepted", "EggrollDense"])
def test_single_layer_matches_float64_numpy(one_layer, dense, member_signs):
    params, strategy, population, xs = one_layer
    ys = strategy.population_apply(population, dense(9).apply, xs)
    expected = _numpy_forward(params, population, xs, SIGMA, member_signs(strategy))
    np.testing.assert_allclose(np.asarray(ys, np.float64), expected, rtol=1e-5, atol=1e-5)
    # and it is not the unperturbed layer
    assert np.max(np.abs(expected - np.asarray(xs) @ np.asarray(params["params"]["kernel"]))) > 0.1


def test_pytree_inputs_and_extra_arguments(one_layer, member_signs):
    """xs may be a pytree (each leaf split by member); extra args/kwargs reach every member."""
    params, strategy, population, xs = one_layer
    layer = nn.Dense(9)

    def apply_fn(p, x, scale, *, shift):
        return layer.apply(p, x["obs"]) * scale + shift + x["offset"]

    offsets = jnp.arange(6.0)[:, None, None] * jnp.ones((6, 4, 9))
    ys = strategy.population_apply(
        population, apply_fn, {"obs": xs, "offset": offsets}, 2.0, shift=-1.0
    )
    expected = _numpy_forward(params, population, xs, SIGMA, member_signs(strategy))
    np.testing.assert_allclose(
        np.asarray(ys, np.float64), expected * 2.0 - 1.0 + np.asarray(offsets), rtol=1e-5, atol=1e-5
    )


def test_wrong_leading_axis_is_a_clear_error(one_layer):
    params, strategy, population, xs = one_layer
    apply_fn = nn.Dense(9).apply
    with pytest.raises(ValueError, match="population_size=6"):
        strategy.population_apply(population, apply_fn, xs[:5])
    with pytest.raises(ValueError, match="population_size=6"):
        strategy.population_apply(population, apply_fn, xs[0])  # a single member's input
    with pytest.raises(ValueError, match="population_size"):
        strategy.population_apply(population, lambda p, x: apply_fn(p, x["a"]),
                                  {"a": xs, "b": jnp.zeros((5, 2))})
    with pytest.raises(ValueError, match="population_size"):
        strategy.population_apply(population, lambda p, x: apply_fn(p, x["a"]),
                                  {"a": xs, "b": jnp.float32(1.0)})


def test_a_failing_apply_fn_leaves_no_interceptor_behind(one_layer):
    """An exception inside population_apply must not leave members' noise active afterwards."""
    params, strategy, population, xs = one_layer
    calls = []

    def failing(p, x):
        calls.append(1)
        out = EggrollDense(9).apply(p, x)
        if len(calls) > 1:  # the first call is the shape-only discovery pass
            raise RuntimeError("boom")
        return out

    with pytest.raises(RuntimeError, match="boom"):
        strategy.population_apply(population, failing, xs)
    x = xs[0]
    np.testing.assert_array_equal(EggrollDense(9).apply(params, x), nn.Dense(9).apply(params, x))


# ---- the fast path never builds a per-member matrix -------------------------------------------
def test_dense_kernels_are_never_materialised_per_member(random_params):
    """No intermediate of shape (N, in, out) for Dense kernels; the warned table does have one."""
    n = 6
    model = WithMatrixOutsideDense()
    params = random_params(model, jnp.zeros(5))
    strategy = Eggroll(n, SIGMA, rank=2)
    population = jax.eval_shape(strategy.ask, strategy.init(jax.random.key(1), params))
    xs = jnp.zeros((n, 5))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        jaxpr = jax.make_jaxpr(
            lambda pop, xs: strategy.population_apply(pop, model.apply, xs)
        )(population, xs)
    shapes = set(_shapes_in(jaxpr.jaxpr))
    # positive controls: the table (5, 6) and the custom subclass's kernel (6, 5) are built
    assert (n, 5, 6) in shapes and (n, 6, 5) in shapes
    # the plain Dense kernel (5, 3) is not
    assert (n, 5, 3) not in shapes


def test_multi_layer_dense_model_keeps_kernels_shared(random_params):
    n = 4
    model = Trunk((7, 9, 3), dense=nn.Dense, head_dense=EggrollDense)
    params = random_params(model, jnp.zeros(5))
    strategy = Eggroll(n, SIGMA, rank=2)
    population = jax.eval_shape(strategy.ask, strategy.init(jax.random.key(1), params))
    xs = jnp.zeros((n, 5))
    jaxpr = jax.make_jaxpr(lambda pop, xs: strategy.population_apply(pop, model.apply, xs))(
        population, xs
    )
    shapes = set(_shapes_in(jaxpr.jaxpr))
    for kernel in [(5, 7), (7, 9), (9, 3)]:
        assert (n, *kernel) not in shapes, kernel


def _hoisted_vectors(hlo: str, population_size: int, width: int) -> int:
    """How many per-member ``(N, width)`` float arrays the ENTRY computation's fusions make,
    i.e. computed once before the loop and re-read at every step."""
    entry = re.search(r"\nENTRY .*?\n}\n", hlo, re.S).group(0)
    outputs = re.findall(r"= (.*?) fusion\(", entry)
    return sum(shape.count(f"f32[{population_size},{width}]") for shape in outputs)


def test_member_vectors_stay_inside_a_scan(monkeypatch):
    """``keep_in_loop`` stops XLA from hoisting each member's perturbed bias and LayerNorm
    params out of a rollout loop as ``(N, width)`` arrays (re-read every step); without it they
    are hoisted, so the check below can fail. Above ``TIE_TO_STEP_MAX_MEMBERS`` they are
    built once before the loop instead (``materialise_once``)."""
    n, width = 6, 12
    model = MLP(hidden=(width, width), out_features=2)
    params = model.init(jax.random.key(0), jnp.zeros(5))
    strategy = Eggroll(n, 0.1)
    population = strategy.ask(strategy.init(jax.random.key(1), params))
    xs = jnp.ones((3, n, 5))

    def loop(population, xs):
        step = lambda total, x: (total + strategy.population_apply(population, model.apply, x), None)
        return jax.lax.scan(step, jnp.zeros((n, 2)), xs)[0]

    def hoisted():
        fresh = lambda population, xs: loop(population, xs)  # a new trace each time
        compiled = jax.jit(fresh).lower(population, xs).compile()  # as a user's own jit
        return _hoisted_vectors(compiled.as_text(), n, width)

    assert hoisted() == 0
    with monkeypatch.context() as patched:
        patched.setattr(strategies, "keep_in_loop", lambda noise, xs: (noise, xs))
        assert hoisted() > 0
    # Above TIE_TO_STEP_MAX_MEMBERS the rows are built once, before the loop, on purpose.
    monkeypatch.setattr(strategies, "TIE_TO_STEP_MAX_MEMBERS", n - 2)
    assert hoisted() > 0


# ---- formulation under the default XLA pipeline ---------------------------------------------
def test_int8_noise_is_widened_once_outside_a_rollout_loop():
    """The int8 rows are converted to float32 before the loop, not at every step: the scan's
    body reads no int8 array (under the default compiler options)."""
    n = 6
    model = MLP(hidden=(12, 12), out_features=2)
    params = model.init(jax.random.key(0), jnp.zeros(5))
    strategy = Eggroll(n, 0.1)
    population = strategy.ask(strategy.init(jax.random.key(1), params))
    assert jnp.dtype(population.noise["params"]["EggrollDense_0"]["kernel"].a.dtype) == jnp.int8

    def loop(population, xs):
        step = lambda total, x: (total + strategy.population_apply(population, model.apply, x), None)
        return jax.lax.scan(step, jnp.zeros((n, 2)), xs)[0]

    text = jax.jit(loop).lower(population, jnp.ones((3, n, 5))).compile().as_text()
    body = re.search(r"while\(.*?body=%?([\w.\-]+)", text).group(1)
    computations = {
        c.split(" ", 1)[0].lstrip("%"): c for c in re.split(r"\n(?=\S)", text)
    }
    called = [body]
    seen = set()
    while called:  # the body and every computation it calls (fusions)
        name = called.pop()
        if name in seen or name not in computations:
            continue
        seen.add(name)
        called += re.findall(r"(?:calls|to_apply)=%?([\w.\-]+)", computations[name])
    assert not any("s8[" in computations[name] for name in seen)
