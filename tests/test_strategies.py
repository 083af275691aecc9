"""Eggroll and OpenES: ask/tell against explicit float64 references, antithetic pairs, noise
reuse, reproducibility, errors, and whole generations under jit/scan."""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import scipy.stats

from eggroll_rl import Eggroll, EvoState, FullNoise, LowRankNoise, OpenES, Population
from eggroll_rl.noise import widen

SIGMA = 0.3
LR = 0.5


def _params(seed=0):
    """Every kind of leaf: two matrices (tall and wide), a vector, a 3-D tensor and a scalar."""
    rng = np.random.default_rng(seed)
    shapes = {"w": (5, 4), "v": (3, 6), "b": (4,), "k": (2, 3, 2), "t": ()}
    return {name: jnp.asarray(rng.normal(size=shape), jnp.float32) for name, shape in shapes.items()}


def _np_tree(tree):
    return jax.tree_util.tree_map(lambda x: np.asarray(x, np.float64), tree)


# ---- one generation, six configurations ------------------------------------------------------
# Ranks 1 and 3, antithetic or not, for both strategies, in four configurations (each one
# compiles its own ask and tell).
TELL_CASES = {
    # name: (class, rank, antithetic, population size)
    "eggroll-r1-antithetic": (Eggroll, 1, True, 8),
    "eggroll-r3-plain": (Eggroll, 3, False, 7),  # without pairs an odd population is fine
    "openes-antithetic": (OpenES, None, True, 8),
    "openes-plain": (OpenES, None, False, 5),
}


def _tell_strategy(memo, case, **overrides):
    cls, rank, antithetic, n = TELL_CASES[case]
    kwargs = dict(
        optimizer=optax.sgd(LR), fitness_shaping="identity", antithetic=antithetic
    )
    kwargs.update(overrides)
    if rank is not None:
        kwargs["rank"] = rank
    key = ("test_strategies", case, tuple(sorted((k, repr(v)) for k, v in overrides.items())))
    return memo(key, lambda: cls(n, SIGMA, **kwargs))


def _generation(memo, all_member_params, case):
    """One generation of a configuration: state, population, fitness, the told state (cached)."""

    def build():
        strategy = _tell_strategy(memo, case)
        state = strategy.init(jax.random.key(3), _params())
        population = strategy.ask(state)
        fitness = np.random.default_rng(1).normal(size=strategy.population_size).astype(np.float32)
        new_state, metrics = strategy.tell(state, population, fitness)
        members = all_member_params(strategy, population)
        return dict(
            case=case, strategy=strategy, state=state, population=population, fitness=fitness,
            new_state=new_state, metrics=metrics, members=members,
        )

    return memo(("generation", case), build)


@pytest.fixture(scope="module", params=list(TELL_CASES))
def generation(request, memo, all_member_params):
    return _generation(memo, all_member_params, request.param)


def _unit_perturbations_from_members(g, member_signs):
    """E_i = (member_params(i) - mean) / (sigma * s_i), float64, stacked on axis 0."""
    signs = member_signs(g["strategy"])
    mean = _np_tree(g["state"].mean)
    members = _np_tree(g["members"])
    return jax.tree_util.tree_map(
        lambda m, mu: (m - mu) / (SIGMA * signs.reshape((-1,) + (1,) * mu.ndim)), members, mean
    )


def _unit_perturbations_from_population(g, member_signs):
    """E_i from the population's own representation: the factors (EGGROLL) or members (OpenES)."""
    population = g["population"]
    if population.noise is None:
        return _unit_perturbations_from_members(dict(g, members=population.members), member_signs)

    def per_draw(noise):
        if isinstance(noise, FullNoise):
            return np.asarray(widen(noise.eps), np.float64)
        a, b = np.asarray(widen(noise.a), np.float64), np.asarray(widen(noise.b), np.float64)
        return np.einsum("nri,nro->nio", b, a) / np.sqrt(a.shape[1])

    def one(noise):  # the population holds one row per draw; member i uses draw i // len(signs)
        return np.repeat(per_draw(noise), len(g["strategy"].signs), axis=0)

    return jax.tree_util.tree_map(
        one, population.noise, is_leaf=lambda x: isinstance(x, (FullNoise, LowRankNoise))
    )


def _estimate(perturbations, weights, signs):
    """g = (1/N) sum_i s_i w_i E_i in float64."""
    coefficients = np.asarray(signs, np.float64) * np.asarray(weights, np.float64)
    return jax.tree_util.tree_map(
        lambda e: np.tensordot(coefficients, e, axes=1) / len(coefficients), perturbations
    )


@pytest.mark.parametrize("source", ["member_params", "population"])
def test_tell_equals_explicit_estimate_times_learning_rate(
    generation, source, member_signs, assert_trees_close
):
    """With sgd(lr) and identity shaping: new mean = mean + lr * (1/N) sum_i s_i f_i E_i."""
    g = generation
    if source == "member_params":
        perturbations = _unit_perturbations_from_members(g, member_signs)
    else:
        perturbations = _unit_perturbations_from_population(g, member_signs)
    estimate = _estimate(perturbations, g["fitness"], member_signs(g["strategy"]))
    expected = jax.tree_util.tree_map(
        lambda mu, e: mu + LR * e, _np_tree(g["state"].mean), estimate
    )
    assert_trees_close(g["new_state"].mean, expected, rtol=1e-5, atol=5e-6)
    # the update is not negligible: a sign error or a dropped leaf would show
    for name, step in estimate.items():
        assert np.max(np.abs(step)) > 1e-2, name


def test_member_params_agree_with_the_population(generation, member_signs, assert_trees_close):
    """member_params(i) = mean + s_i sigma E_i with E_i from the factors or OpenES's members."""
    g = generation
    perturbations = _unit_perturbations_from_population(g, member_signs)
    signs = member_signs(g["strategy"])
    expected = jax.tree_util.tree_map(
        lambda mu, e: mu + SIGMA * signs.reshape((-1,) + (1,) * mu.ndim) * e,
        _np_tree(g["state"].mean),
        perturbations,
    )
    assert_trees_close(g["members"], expected, rtol=1e-5, atol=1e-6)


def test_population_layout(generation):
    g = generation
    strategy, population = g["strategy"], g["population"]
    n = strategy.population_size
    cls, rank, _, _ = TELL_CASES[g["case"]]
    assert isinstance(population, Population)
    if cls is OpenES:
        assert population.noise is None
        for name, leaf in population.members.items():
            assert leaf.shape == (n, *g["state"].mean[name].shape)
        return
    assert population.members is None
    noise = population.noise
    draws = n // 2 if strategy.antithetic else n  # one row per draw, not per member
    assert isinstance(noise["w"], LowRankNoise) and isinstance(noise["v"], LowRankNoise)
    assert noise["w"].a.shape == (draws, rank, 4) and noise["w"].b.shape == (draws, rank, 5)
    assert noise["v"].a.shape == (draws, rank, 6) and noise["v"].b.shape == (draws, rank, 3)
    for name in ("b", "k", "t"):
        assert isinstance(noise[name], FullNoise)
        assert noise[name].eps.shape == (draws, *g["state"].mean[name].shape)


def test_antithetic_members_mirror_each_other(generation):
    g = generation
    strategy, population = g["strategy"], g["population"]
    members, mean = _np_tree(g["members"]), _np_tree(g["state"].mean)
    for name, mu in mean.items():
        m = members[name]
        gap_from_mean = np.abs(m - mu).reshape(len(m), -1).max(axis=1)
        assert np.all(gap_from_mean > 1e-3), name  # every member is perturbed
        pair_sums = m[0::2][: len(m) // 2] + m[1::2][: len(m) // 2]
        if strategy.antithetic:
            np.testing.assert_allclose(
                pair_sums, np.broadcast_to(2 * mu, pair_sums.shape), atol=1e-6, err_msg=name
            )
        else:
            deviation = np.abs(pair_sums - 2 * mu).reshape(len(pair_sums), -1).max(axis=1)
            assert np.all(deviation > 1e-3), name
    if population.noise is not None:  # one row per draw: every row differs
        for name, leaf in population.noise.items():
            for rows in jax.tree_util.tree_leaves(leaf):
                rows = np.asarray(rows)
                assert len(rows) == strategy.num_draws, name
                assert len({r.tobytes() for r in rows}) == len(rows), name


def test_metrics_and_bookkeeping(generation, member_signs):
    g = generation
    f = np.asarray(g["fitness"], np.float64)
    metrics = g["metrics"]
    np.testing.assert_allclose(metrics["fitness_mean"], f.mean(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(metrics["fitness_std"], f.std(), rtol=1e-5)
    np.testing.assert_allclose(metrics["fitness_max"], f.max(), rtol=1e-6)
    np.testing.assert_allclose(metrics["fitness_min"], f.min(), rtol=1e-6)
    np.testing.assert_allclose(metrics["sigma"], SIGMA, rtol=1e-6)
    assert not bool(metrics["skipped"])
    estimate = _estimate(
        _unit_perturbations_from_population(g, member_signs), f, member_signs(g["strategy"])
    )
    norm = np.sqrt(sum(np.sum(e**2) for e in estimate.values()))
    np.testing.assert_allclose(metrics["estimate_norm"], norm, rtol=1e-4)
    assert int(g["state"].generation) == 0 and int(g["new_state"].generation) == 1
    assert int(g["population"].generation) == 0
    np.testing.assert_array_equal(
        jax.random.key_data(g["new_state"].key), jax.random.key_data(g["state"].key)
    )
    assert g["strategy"].mean_params(g["new_state"]) is g["new_state"].mean


def test_ask_is_a_pure_function_of_the_state(generation, assert_trees_equal):
    g = generation
    assert_trees_equal(g["strategy"].ask(g["state"]), g["population"])


def test_state_and_population_are_pytrees(generation, assert_trees_equal):
    g = generation
    for tree in (g["state"], g["population"]):
        leaves, treedef = jax.tree_util.tree_flatten(tree)
        assert all(isinstance(leaf, jax.Array) for leaf in leaves)
        assert_trees_equal(jax.tree_util.tree_unflatten(treedef, leaves), tree)
    assert isinstance(g["new_state"], EvoState)


def test_default_shaping_is_centered_rank(memo, all_member_params, assert_trees_close):
    """Default shaping == identity shaping applied to SciPy's average ranks mapped to [-.5, .5]."""
    g = _generation(memo, all_member_params, "eggroll-r1-antithetic")
    fitness = np.array([3.0, 3.0, -1.0, 7.0, 0.5, 3.0, -1.0, 2.0], np.float32)  # with ties
    ranks = (scipy.stats.rankdata(fitness) - 1) / (len(fitness) - 1) - 0.5
    default = _tell_strategy(memo, "eggroll-r1-antithetic", fitness_shaping="centered_rank")
    by_default, _ = default.tell(g["state"], g["population"], fitness)
    by_hand, _ = g["strategy"].tell(g["state"], g["population"], ranks.astype(np.float32))
    assert_trees_close(by_default.mean, by_hand.mean, rtol=1e-6, atol=1e-7)


def test_estimate_is_handed_to_the_optimiser_as_a_negated_gradient(
    memo, all_member_params, member_signs
):
    """Adam's first step is lr * sign(gradient): the mean must move by +lr * sign(g)."""
    g = _generation(memo, all_member_params, "eggroll-r3-plain")
    adam = _tell_strategy(memo, "eggroll-r3-plain", optimizer=optax.adam(0.01))
    state = adam.init(jax.random.key(3), _params())
    new_state, _ = adam.tell(state, g["population"], g["fitness"])
    estimate = _estimate(
        _unit_perturbations_from_population(g, member_signs), g["fitness"], member_signs(adam)
    )
    for name, e in estimate.items():
        step = np.asarray(new_state.mean[name], np.float64) - np.asarray(state.mean[name])
        np.testing.assert_allclose(step, 0.01 * np.sign(e), rtol=1e-3, atol=1e-6, err_msg=name)


@pytest.mark.parametrize("held_dtype", [jnp.int8, jnp.bfloat16], ids=["int8", "bfloat16"])
@pytest.mark.parametrize("cls", [Eggroll, OpenES], ids=["eggroll", "openes"])
def test_noise_is_held_as_the_float32_draws_rounded_once(
    cls, held_dtype, memo, member_signs, assert_trees_close
):
    """``noise_dtype`` rounds the float32 draws once, in ``ask``: int8 to steps of 1/16
    (round(16 z), clipped to +-127), bfloat16 to nearest. The reference is the same draws held
    in float32 (``noise_dtype=jnp.float32``), rounded in float64 NumPy. ``tell`` uses the held
    values, so the update is the exact sum over the members evaluated."""
    rank = dict(rank=2) if cls is Eggroll else {}
    params = {"w": _params()["w"], "b": _params()["b"]}  # a matrix and a vector: cheap to compile
    wide = memo(("held-wide", cls), lambda: cls(6, SIGMA, noise_dtype=jnp.float32, **rank))
    narrow = memo(
        ("held", cls, jnp.dtype(held_dtype).name),
        lambda: cls(
            6, SIGMA, optimizer=optax.sgd(LR), fitness_shaping="identity",
            noise_dtype=held_dtype, **rank,
        ),
    )
    if held_dtype == jnp.int8:
        rounded = lambda d: np.clip(np.round(np.float64(d) * 16), -127, 127) / 16
    else:
        rounded = lambda d: np.asarray(jnp.asarray(d, jnp.float32).astype(held_dtype), np.float64)
    state = narrow.init(jax.random.key(1), params)
    population = narrow.ask(state)
    wide_population = wide.ask(wide.init(jax.random.key(1), params))
    if cls is Eggroll:  # the factors themselves
        held = jax.tree_util.tree_leaves(population.noise)
        drawn = jax.tree_util.tree_leaves(wide_population.noise)
        assert {h.dtype for h in held} == {jnp.dtype(held_dtype)}
        assert {d.dtype for d in drawn} == {jnp.dtype(jnp.float32)}
        held = [np.asarray(widen(h), np.float64) for h in held]
    else:  # OpenES holds its members' weights: the + member of pair k is mean + sigma * E_k
        def unit(pop):
            members, mean = _np_tree(pop.members), _np_tree(pop.mean)
            return [(members[name][0::2] - mean[name]) / SIGMA for name in sorted(mean)]

        held, drawn = unit(population), unit(wide_population)
    for h, d in zip(held, drawn):
        np.testing.assert_allclose(h, rounded(d), rtol=1e-5, atol=1e-5)
    # the rounding did happen: the held values are not the float32 draws
    assert max(np.abs(h - np.asarray(d, np.float64)).max() for h, d in zip(held, drawn)) > 1e-4
    fitness = np.array([0.3, -1.0, 2.0, 0.5, -0.2, 1.1], np.float32)
    new_state, _ = narrow.tell(state, population, fitness)
    g = dict(strategy=narrow, state=state, population=population)
    signs = member_signs(narrow)
    estimate = _estimate(_unit_perturbations_from_population(g, member_signs), fitness, signs)
    expected = jax.tree_util.tree_map(lambda mu, e: mu + LR * e, _np_tree(state.mean), estimate)
    # OpenES's (member - mean) / sigma loses float32 digits: the error stays ~1e-5
    assert_trees_close(new_state.mean, expected, rtol=1e-5, atol=2e-5)


# ---- noise across generations ----------------------------------------------------------------
def _run(strategy, state, generations, seed=0, record=None):
    """Eager ask/tell loop with random fitness; ``record(population)`` collected per generation."""
    rng = np.random.default_rng(seed)
    seen = []
    for _ in range(generations):
        population = strategy.ask(state)
        if record is not None:
            seen.append(record(population))
        fitness = rng.normal(size=strategy.population_size).astype(np.float32)
        state, _ = strategy.tell(state, population, fitness)
    return state, seen


def _unit_noise(strategy):
    """A generation's unit perturbations as one flat float64 vector per member."""

    def record(population):
        if population.noise is not None:
            leaves = jax.tree_util.tree_leaves(population.noise)
            return np.concatenate([np.asarray(x, np.float64).reshape(len(x), -1) for x in leaves], 1)
        members = jax.tree_util.tree_leaves(population.members)
        mean = jax.tree_util.tree_leaves(population.mean)
        signs = np.tile([1.0, -1.0], strategy.population_size // 2)[:, None]
        flat = [
            (np.asarray(m, np.float64) - np.asarray(mu, np.float64)).reshape(len(m), -1)
            for m, mu in zip(members, mean)
        ]
        return np.concatenate(flat, 1) / (float(population.sigma) * signs)

    return record


def test_fresh_noise_every_generation_by_default(memo):
    strategy = _tell_strategy(memo, "eggroll-r1-antithetic")
    state = strategy.init(jax.random.key(3), _params())
    _, noise = _run(strategy, state, 3, record=_unit_noise(strategy))
    for a, b in [(0, 1), (1, 2), (0, 2)]:
        assert np.mean(np.isclose(noise[a], noise[b])) < 0.05


REUSE = 2
GENERATIONS = 5  # blocks {0, 1}, {2, 3}, {4}


@pytest.fixture(scope="module")
def reproducible(memo):
    """One configuration (adam, zscore, a sigma schedule, noise_reuse=2) and two runs of it
    from the same key, with every generation's population recorded."""

    def make():
        schedule = optax.exponential_decay(0.4, transition_steps=1, decay_rate=0.5)
        return Eggroll(
            6, schedule, rank=2, optimizer=optax.adam(0.05), fitness_shaping="zscore",
            noise_reuse=REUSE,
        )

    def run(strategy):
        start = strategy.init(jax.random.key(11), _params())
        return _run(strategy, start, GENERATIONS, seed=5, record=lambda population: population)

    # One instance run twice: any hidden state (a counter, a cached key) would show as a
    # difference, and a second instance would cost a second compilation of ask and tell.
    strategy = memo("reproducible", make)
    return strategy, memo("reproducible-run-a", lambda: run(strategy)), memo(
        "reproducible-run-b", lambda: run(strategy)
    )


def test_same_key_gives_bit_identical_runs(reproducible, assert_trees_equal):
    _, (run_a, populations_a), (run_b, populations_b) = reproducible
    assert int(run_a.generation) == GENERATIONS
    assert_trees_equal(run_a, run_b)
    assert_trees_equal(populations_a, populations_b)
    # and the runs did something
    assert np.max(np.abs(np.asarray(run_a.mean["w"]) - np.asarray(_params()["w"]))) > 1e-3


def test_different_key_gives_a_different_run(reproducible):
    strategy, (run_a, _), _ = reproducible
    run_c, _ = _run(strategy, strategy.init(jax.random.key(12), _params()), GENERATIONS, seed=5)
    for name in run_a.mean:
        assert not np.allclose(run_a.mean[name], run_c.mean[name]), name


def test_noise_reuse_holds_the_draw_for_a_block_of_generations(reproducible, assert_trees_equal):
    strategy, (_, populations), _ = reproducible
    record = _unit_noise(strategy)
    noise = [record(population) for population in populations]
    for gen in range(1, GENERATIONS):
        # the mean moves every generation, whether or not the noise is reused
        assert not np.allclose(populations[gen].mean["w"], populations[gen - 1].mean["w"])
        if gen // REUSE == (gen - 1) // REUSE:
            assert_trees_equal(populations[gen].noise, populations[gen - 1].noise)
        else:
            assert np.mean(np.isclose(noise[gen], noise[gen - 1])) < 0.05, gen
    # blocks never repeat
    assert np.mean(np.isclose(noise[0], noise[2 * REUSE])) < 0.05


def test_sigma_schedule_scales_the_perturbations(reproducible, all_member_params):
    strategy, (_, populations), _ = reproducible
    sigmas = [float(population.sigma) for population in populations]
    np.testing.assert_allclose(sigmas, [0.4 * 0.5**g for g in range(GENERATIONS)], rtol=1e-6)
    # generations 0 and 1 share their noise, so member 0's perturbation halves exactly
    perturbations = [
        np.asarray(all_member_params(strategy, p)["w"][0] - p.mean["w"], np.float64)
        for p in populations[:2]
    ]
    np.testing.assert_allclose(perturbations[1], 0.5 * perturbations[0], rtol=1e-3, atol=1e-6)
    assert 0.2 * 0.4 < np.sqrt(np.mean(perturbations[0] ** 2)) < 5 * 0.4


# ---- errors -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "build, argument",
    [
        (lambda: Eggroll(7, 0.1), "population_size"),
        (lambda: OpenES(5, 0.1), "population_size"),
        (lambda: Eggroll(0, 0.1, antithetic=False), "population_size"),
        (lambda: Eggroll(8.0, 0.1), "population_size"),
        (lambda: Eggroll(8, 0.0), "sigma"),
        (lambda: Eggroll(8, -0.1), "sigma"),
        (lambda: OpenES(8, float("nan")), "sigma"),
        (lambda: Eggroll(8, 0.1, rank=0), "rank"),
        (lambda: Eggroll(8, 0.1, rank=-2), "rank"),
        (lambda: Eggroll(8, 0.1, rank=1.5), "rank"),
        (lambda: OpenES(8, 0.1, rank=2), "rank"),
        (lambda: Eggroll(8, 0.1, noise_reuse=0), "noise_reuse"),
        (lambda: OpenES(8, 0.1, noise_reuse=-1), "noise_reuse"),
        (lambda: Eggroll(8, 0.1, fitness_shaping="best"), "fitness_shaping"),
        (lambda: Eggroll(8, 0.1, nonfinite_fitness="ignore"), "nonfinite_fitness"),
        (lambda: Eggroll(8, 0.1, noise_dtype=jnp.int16), "noise_dtype"),
        (lambda: OpenES(8, 0.1, noise_dtype="half-ish"), "noise_dtype"),
    ],
)
def test_constructor_errors_name_the_argument(build, argument):
    with pytest.raises(ValueError, match=argument):
        build()


def test_rank_is_capped_per_matrix_by_default_and_reported():
    # the paper's rank 4 on a 3-row matrix: E = A B^T cannot have rank above 3 anyway
    capped = Eggroll(4, 0.1, rank=4)
    shapes = jax.eval_shape(capped.ask, capped.init(jax.random.key(0), _params()))
    assert shapes.noise["v"].a.shape == (2, 3, 6)  # 2 antithetic draws for 4 members
    assert shapes.noise["w"].a.shape == (2, 4, 4)
    assert capped.ranks(_params()) == {"v": 3, "w": 4}
    # cap_rank=False makes it an init error naming the parameter by its path
    strategy = Eggroll(4, 0.1, rank=4, cap_rank=False)
    with pytest.raises(ValueError, match=r"rank=4.* v \(shape \(3, 6\)\)"):
        strategy.init(jax.random.key(0), _params())


def test_init_rejects_non_float_params_and_sigma_schedules_starting_at_zero():
    with pytest.raises(ValueError, match="dtype"):
        Eggroll(4, 0.1).init(jax.random.key(0), {"steps": jnp.zeros(3, jnp.int32)})
    with pytest.raises(ValueError, match="sigma"):
        Eggroll(4, lambda generation: 0.0 * generation).init(jax.random.key(0), _params())
    with pytest.raises(ValueError, match="no array leaves"):
        Eggroll(4, 0.1).init(jax.random.key(0), {})


def test_init_with_a_sigma_schedule_runs_inside_jit_and_vmap():
    # Trainers init one state per seed under jit(vmap(...)): the schedule check must not
    # need a concrete value there (it once raised ConcretizationTypeError).
    strategy = Eggroll(4, optax.exponential_decay(0.1, 1, 0.99))
    states = jax.jit(jax.vmap(lambda key: strategy.init(key, _params())))(
        jax.random.split(jax.random.key(0), 2)
    )
    assert states.generation.shape == (2,)
    with pytest.raises(ValueError, match="sigma"):
        jax.jit(lambda key: Eggroll(4, lambda g: 0.0 * g).init(key, _params()))(jax.random.key(0))


def test_a_sigma_schedule_that_turns_negative_is_never_applied():
    """A linear schedule crossing zero at generation 1: "raise" says so at top level and
    under jit; "skip" leaves the mean unchanged for that generation and reports it."""
    schedule = lambda generation: 0.1 - 0.2 * generation  # 0.1, then -0.1
    fitness = jnp.arange(4, dtype=jnp.float32)
    raising = Eggroll(4, schedule)
    state = raising.init(jax.random.key(0), _params())
    state, _ = raising.tell(state, raising.ask(state), fitness)  # generation 0: sigma 0.1
    with pytest.raises(ValueError, match="sigma is -0.1.* at generation 1"):
        raising.tell(state, raising.ask(state), fitness)
    with pytest.raises(Exception, match="sigma is -0.1.* at generation 1"):
        jax.block_until_ready(jax.jit(
            lambda state: raising.tell(state, raising.ask(state), fitness)[0]
        )(state))
    skipping = Eggroll(4, schedule, nonfinite_fitness="skip")
    new_state, metrics = jax.jit(
        lambda state: skipping.tell(state, skipping.ask(state), fitness)
    )(state)
    assert bool(metrics["skipped"])
    jax.tree_util.tree_map(np.testing.assert_array_equal, new_state.mean, state.mean)
    assert int(new_state.generation) == 2


@pytest.fixture
def told(memo, all_member_params):
    g = _generation(memo, all_member_params, "eggroll-r1-antithetic")
    return g


@pytest.mark.parametrize("shape", [(7,), (9,), (8, 1), ()])
def test_fitness_of_the_wrong_shape(told, shape):
    with pytest.raises(ValueError, match=r"fitness must have shape \(8,\)"):
        told["strategy"].tell(told["state"], told["population"], np.zeros(shape, np.float32))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nonfinite_fitness_raises_by_default(told, bad):
    fitness = np.arange(8, dtype=np.float32)
    fitness[5] = bad
    with pytest.raises(ValueError, match=r"non-finite.*\[5\]"):
        told["strategy"].tell(told["state"], told["population"], fitness)


def test_nonfinite_fitness_raises_under_jit(told, memo, assert_trees_close):
    strategy = told["strategy"]
    jitted = memo("jitted-tell", lambda: jax.jit(strategy.tell))
    # a finite fitness goes through and matches the eager tell
    new_state, _ = jitted(told["state"], told["population"], told["fitness"])
    assert_trees_close(new_state.mean, told["new_state"].mean, rtol=1e-6, atol=1e-7)
    fitness = np.array(told["fitness"])
    fitness[2] = np.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(Exception, match="non-finite") as raised:
            jax.block_until_ready(jitted(told["state"], told["population"], fitness))
    assert isinstance(raised.value, (jax.errors.JaxRuntimeError, ValueError))


def test_population_from_another_generation_is_rejected(told):
    strategy = told["strategy"]
    with pytest.raises(ValueError, match="generation"):
        strategy.tell(told["new_state"], told["population"], told["fitness"])


@pytest.fixture(scope="module")
def skipping(memo, all_member_params):
    """A "skip" strategy matching the eggroll-r1-antithetic configuration, with adam, and that
    configuration's population (no ask needed: any population of the right shapes will do)."""
    g = _generation(memo, all_member_params, "eggroll-r1-antithetic")
    strategy = memo(
        "skipping",
        lambda: Eggroll(8, SIGMA, rank=1, optimizer=optax.adam(0.05), nonfinite_fitness="skip"),
    )
    return strategy, strategy.init(jax.random.key(3), _params()), g["population"]


@pytest.mark.parametrize("jitted", [False, True], ids=["eager", "jit"])
def test_skip_leaves_params_and_optimiser_state_unchanged(skipping, jitted, assert_trees_equal):
    strategy, state, population = skipping
    tell = jax.jit(strategy.tell) if jitted else strategy.tell
    fitness = np.arange(8, dtype=np.float32)
    fitness[3] = np.nan
    new_state, metrics = tell(state, population, fitness)
    assert bool(metrics["skipped"])
    # the generation still advances, so the next ask draws fresh noise
    assert int(new_state.generation) == int(state.generation) + 1
    assert_trees_equal(new_state.mean, state.mean)
    assert_trees_equal(new_state.opt_state, state.opt_state)
    # a finite generation is not skipped: it moves the mean and adam's moments and count
    moved, metrics = tell(state, population, np.arange(8, dtype=np.float32))
    assert not bool(metrics["skipped"])
    assert np.max(np.abs(np.asarray(moved.mean["w"]) - np.asarray(state.mean["w"]))) > 1e-3
    changed = [
        not np.array_equal(a, b)
        for a, b in zip(
            jax.tree_util.tree_leaves(moved.opt_state), jax.tree_util.tree_leaves(state.opt_state)
        )
    ]
    assert sum(changed) >= 2 * len(_params()) + 1  # mu and nu of every leaf, and the count


# ---- whole generations under jit + scan == the same generations step by step ----------------
def test_scanned_generations_match_eager_generations(regression, assert_trees_close):
    """The conftest ``regression`` run is one jitted lax.scan over ask/population_apply/tell;
    its first generations, redone with plain Python calls (population_apply not jitted), agree."""
    strategy, model, xs = regression["strategy"], regression["model"], regression["xs"]
    state = regression["start"]
    for gen in range(3):
        population = strategy.ask(state)
        predictions = strategy.population_apply(population, model.apply, xs)
        state, metrics = strategy.tell(state, population, regression["fitness_of"](predictions))
        scanned_mean = jax.tree_util.tree_map(lambda m: m[gen], regression["means"])
        assert_trees_close(state.mean, scanned_mean, rtol=1e-5, atol=1e-6, err_msg=f"gen {gen}")
        np.testing.assert_allclose(
            metrics["fitness_mean"], regression["fitness_means"][gen], rtol=1e-5, atol=1e-7
        )
    assert int(state.generation) == 3 and int(regression["final"].generation) == 150
    assert not np.allclose(
        state.mean["params"]["Dense_0"]["kernel"], regression["params"]["params"]["Dense_0"]["kernel"]
    )


def test_noise_with_one_row_per_member_is_rejected(told):
    """Populations hold one noise row per draw; per-member rows (as before) name the problem."""
    strategy, population = told["strategy"], told["population"]
    per_member = population.replace(
        noise=jax.tree_util.tree_map(lambda rows: jnp.repeat(rows, 2, axis=0), population.noise)
    )
    with pytest.raises(ValueError, match=r"8 rows.*one row per draw \(4 for population_size=8"):
        strategy.tell(told["state"], per_member, told["fitness"])
    xs = jnp.zeros((8, 5))
    with pytest.raises(ValueError, match="one row per draw"):
        strategy.population_apply(per_member, lambda params, x: x @ params["w"], xs)


def test_rank_4_on_a_2_action_head_is_capped_and_recorded_by_the_trainer():
    from eggroll_rl.agents import api

    planned = api.plan("eggroll", "gymnax/CartPole-v1", config={"rank": 4, "hidden": (8, 8)},
                       progress=False)
    assert planned.record["config"]["rank"] == 4
    assert planned.record["ranks"] == {
        "params/MLP_0/EggrollDense_0/kernel": 4,  # 4 -> 8
        "params/MLP_0/EggrollDense_1/kernel": 4,  # 8 -> 8
        "params/MLP_0/EggrollDense_2/kernel": 2,  # the 2-action head
    }
