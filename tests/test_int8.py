"""Tests of the int8 network, integer EGGROLL and the NumPy inference, against references
computed a different way (materialised member kernels in NumPy int64, a per-pair loop for the
update), plus a structural check that no float op sits between the quantiser and the action.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from eggroll_rl import int8_numpy
from eggroll_rl.envs import obs_norm
from eggroll_rl.int8 import Int8MLP, Int8Noise, materialised_kernel, save
from eggroll_rl.int8_strategy import Int8Eggroll, accumulate, apply_step, sign_step
from jaxpr_walk import sub_jaxprs

POP, EPISODES = 6, 3


@pytest.fixture(scope="module")
def nets():
    """A discrete and a continuous net with random full-range int8 kernels."""
    generator = np.random.default_rng(0)
    made = {}
    for name, continuous in (("discrete", False), ("continuous", True)):
        model = Int8MLP(5, 3, hidden=(12, 7), continuous=continuous,
                        action_scale=(0.5, 1.0, 2.0) if continuous else None)
        params = tuple(
            jnp.asarray(generator.integers(-127, 128, size=shape), jnp.int8)
            for shape in model.kernel_shapes
        )
        made[name] = (model, params)
    return made


@pytest.fixture(scope="module")
def noise(nets):
    """int8 factors of a POP-member population (POP / 2 pairs), rank 2, from NumPy."""
    model, _ = nets["discrete"]
    generator = np.random.default_rng(1)
    draw = lambda *s: jnp.asarray(np.clip(np.round(generator.normal(size=s) * 16), -127, 127), jnp.int8)
    return tuple(
        Int8Noise(a=draw(POP // 2, 2, fan_out), b=draw(POP // 2, 2, fan_in))
        for fan_in, fan_out in model.kernel_shapes
    )


def _is_integer(aval) -> bool:
    dtype = getattr(aval, "dtype", None)
    return dtype is not None and (jnp.issubdtype(dtype, jnp.integer) or dtype == jnp.bool_)


def _non_integer_vars(jaxpr) -> list[str]:
    """Every var (inputs, outputs, literals, sub-jaxprs included) whose dtype is not int/bool."""
    bad = []
    for var in list(jaxpr.invars) + list(jaxpr.constvars) + list(jaxpr.outvars):
        if not _is_integer(var.aval):
            bad.append(f"{var}: {var.aval}")
    for eqn in jaxpr.eqns:
        for var in list(eqn.invars) + list(eqn.outvars):
            if not _is_integer(var.aval):
                bad.append(f"{eqn.primitive}: {var.aval}")
        for sub in sub_jaxprs(eqn):
            bad.extend(_non_integer_vars(sub))
    return bad


def test_integer_check_sees_floats_insidesub_jaxprs():
    """Negative control: a float op hidden in a nested jit is reported."""
    inner = jax.jit(lambda y: (y.astype(jnp.float32) * 2).astype(jnp.int32))
    closed = jax.make_jaxpr(lambda x: inner(x) + 1)(jnp.ones(3, jnp.int8))
    assert any(v.startswith("mul") for v in _non_integer_vars(closed.jaxpr))


@pytest.mark.parametrize("kind", ["discrete", "continuous"])
def test_forward_is_integer_only(nets, noise, kind):
    model, params = nets[kind]
    x = jnp.zeros((EPISODES, model.obs_size), jnp.int8)
    mean = jax.make_jaxpr(model.forward)(params, x)
    assert not _non_integer_vars(mean.jaxpr)
    strategy = Int8Eggroll(model, POP, rank=2)
    xs = jnp.zeros((POP, EPISODES, model.obs_size), jnp.int8)
    population = jax.make_jaxpr(strategy.population_forward)(params, noise, xs)
    assert not _non_integer_vars(population.jaxpr)


def test_apply_has_floats_only_before_the_quantiser(nets):
    """In the float-in, action-out policy, everything downstream of the int8 cast is integer."""
    model, params = nets["discrete"]
    closed = jax.make_jaxpr(model.apply)(params, jnp.zeros((EPISODES, model.obs_size)))
    jaxpr = closed.jaxpr
    casts = [
        eqn for eqn in jaxpr.eqns
        if eqn.primitive.name == "convert_element_type" and eqn.outvars[0].aval.dtype == jnp.int8
        and not _is_integer(eqn.invars[0].aval)
    ]
    assert len(casts) == 1, "expected exactly one float -> int8 quantiser"
    tainted = {casts[0].outvars[0]}
    downstream = 0
    for eqn in jaxpr.eqns:
        if any(v in tainted for v in eqn.invars if not isinstance(v, jax.extend.core.Literal)):
            downstream += 1
            for var in list(eqn.invars) + list(eqn.outvars):
                assert _is_integer(var.aval), f"{eqn.primitive} handles {var.aval}"
            for sub in sub_jaxprs(eqn):
                assert not _non_integer_vars(sub), eqn.primitive
            tainted.update(eqn.outvars)
    assert downstream >= len(params) and jaxpr.outvars[0] in tainted


def _reference_population(model, params, noise, signs, noise_shift, x):
    """Member i: materialised fixed-point kernels ``(W << s) + sign * B^T A`` in int64."""
    heads = []
    for i in range(x.shape[0]):
        h = np.asarray(x[i], np.int64)
        for layer, (w, shift) in enumerate(zip(params, model.shifts)):
            n = noise[layer]
            kernel = materialised_kernel(w, n.a[i // 2], n.b[i // 2], int(signs[i]), noise_shift)
            h = np.concatenate([h, np.full(h.shape[:-1] + (1,), 2**model.input_bits)], -1)
            acc = (h @ kernel) >> (noise_shift + shift)
            if layer < len(params) - 1:
                h = np.clip(acc, 0, 127)
            else:
                h = np.clip(acc, -127, 127) if model.continuous else acc
        heads.append(h)
    return np.stack(heads)


@pytest.mark.parametrize("kind", ["discrete", "continuous"])
def test_population_forward_matches_materialised_members(nets, noise, kind):
    model, params = nets[kind]
    strategy = Int8Eggroll(model, POP, rank=2, noise_shift=5)
    rng = np.random.default_rng(2)
    xs = jnp.asarray(rng.integers(-127, 128, size=(POP, EPISODES, model.obs_size)), jnp.int8)
    got = np.asarray(jax.jit(strategy.population_forward)(params, noise, xs))
    assert got.dtype == np.int32
    expected = _reference_population(
        model, params, noise, np.asarray(strategy.member_signs()), 5, np.asarray(xs)
    )
    np.testing.assert_array_equal(got, expected)
    assert not np.array_equal(got[0], got[1])  # antithetic partners differ


def test_update_moves_one_step_within_bounds(nets, noise):
    model, params = nets["discrete"]
    # push some weights to the rails so that clipping is exercised
    params = tuple(w.at[0].set(127).at[1].set(-127) for w in params)
    strategy = Int8Eggroll(model, POP, rank=2, alpha=0.3, alpha_decay=1.0, alpha_min=0.3)
    returns = jnp.asarray([3.0, 1.0, 2.0, 2.0, 0.0, 5.0])
    new, metrics = jax.jit(strategy.update)(params, noise, returns, jnp.int32(0))
    fitness = np.sign([3.0 - 1.0, 0.0, 0.0 - 5.0]).astype(np.int64)
    for w_old, w_new, n in zip(params, new, noise):
        w_old, w_new = np.asarray(w_old, np.int64), np.asarray(w_new)
        assert w_new.dtype == np.int8
        step = w_new.astype(np.int64) - w_old
        assert set(np.unique(step)) <= {-1, 0, 1}
        assert np.abs(w_new.astype(np.int64)).max() <= 127
        # reference Z from materialised per-pair products
        z = sum(f * (np.asarray(n.b[p], np.int64).T @ np.asarray(n.a[p], np.int64))
                for p, f in enumerate(fitness))
        unclipped = np.where(step != 0, step, 0)
        assert (np.sign(z)[unclipped != 0] == unclipped[unclipped != 0]).all()
        # weights on the rails only move inward, and only where Z points inward
        assert (w_new[0][np.sign(z[0]) > 0] == 127).all()
        assert (w_new[1][np.sign(z[1]) < 0] == -127).all()
        moved = np.sum((np.sign(z) != 0) & (np.abs(z) >= np.sort(np.abs(z).ravel())[::-1][
            int(np.ceil(0.3 * z.size)) - 1]))
        assert moved >= np.ceil(0.3 * z.size) * 0.9
    assert 0.2 < float(metrics["moved_fraction"]) < 0.45


def test_accumulate_and_sign_step_against_loops():
    rng = np.random.default_rng(3)
    a = rng.integers(-127, 128, size=(4, 2, 5))
    b = rng.integers(-127, 128, size=(4, 2, 6))
    f = np.array([1, -1, 0, 1])
    z, step = jax.jit(lambda f, n: (accumulate(f, n), sign_step(accumulate(f, n), 0.2)))(
        jnp.asarray(f, jnp.int32), Int8Noise(a=jnp.asarray(a, jnp.int8), b=jnp.asarray(b, jnp.int8))
    )
    z, step = np.asarray(z), np.asarray(step)
    expected = np.zeros((6, 5), np.int64)
    for p in range(4):
        for r in range(2):
            expected += f[p] * np.outer(b[p, r], a[p, r])
    np.testing.assert_array_equal(z, expected)
    assert np.count_nonzero(step) == int(np.ceil(0.2 * z.size))  # distinct |Z| here
    assert (np.abs(z)[step != 0].min() >= np.abs(z)[step == 0].max())
    rails = jnp.asarray([[127, -127, 0]], jnp.int8)
    np.testing.assert_array_equal(
        np.asarray(jax.jit(apply_step)(rails, jnp.asarray([[1, -1, -1]]))), [[127, -127, -1]]
    )


def test_draw_is_int8_keyed_and_independent_of_population_size(nets):
    model, _ = nets["discrete"]
    small, large = Int8Eggroll(model, 4), Int8Eggroll(model, 8)
    key = jax.random.key(7)
    both = jax.jit(jax.vmap(small.draw, (None, 0)))(key, jnp.asarray([3, 4]))
    first, other = (jax.tree_util.tree_map(lambda v, i=i: v[i], both) for i in (0, 1))
    again = jax.jit(large.draw)(key, jnp.int32(3))
    for f, g, o in zip(first, again, other):
        assert f.a.dtype == jnp.int8 and f.b.dtype == jnp.int8
        np.testing.assert_array_equal(np.asarray(f.a), np.asarray(g.a)[:2])
        np.testing.assert_array_equal(np.asarray(f.b), np.asarray(g.b)[:2])
        assert not np.array_equal(np.asarray(f.a), np.asarray(o.a))
    values = np.concatenate([np.asarray(n.b, np.float64).ravel() for n in again])
    assert 12 < values.std() < 20 and np.abs(values).max() <= 127


@pytest.mark.parametrize("kind", ["discrete", "continuous"])
def test_numpy_inference_matches_jax_bit_for_bit(nets, kind, tmp_path):
    model, params = nets[kind]
    rng = np.random.default_rng(4)
    stats = obs_norm.RunningStats(
        count=jnp.float32(100.0),
        mean=jnp.asarray(rng.normal(size=model.obs_size), jnp.float32),
        var=jnp.asarray(rng.uniform(0.01, 5.0, size=model.obs_size), jnp.float32),
    )
    obs = rng.normal(size=(500, model.obs_size)).astype(np.float32) * rng.choice(
        [0.1, 1.0, 10.0, 100.0], size=(500, 1)
    ).astype(np.float32)

    @jax.jit
    def jax_policy(params, stats, obs):
        x = model.quantize(obs_norm.normalize(stats, obs))
        head = model.forward(params, x)
        return x, head, model.dequantize(head)

    x, head, action_input = (np.asarray(v) for v in jax_policy(params, stats, jnp.asarray(obs)))
    path = save(tmp_path / "policy", model, params, stats, "test/Env")
    policy = int8_numpy.load(path)
    np.testing.assert_array_equal(int8_numpy.quantize(policy, obs), x)
    np.testing.assert_array_equal(int8_numpy.forward(policy, x), head)
    actions = int8_numpy.act(policy, obs)
    if model.continuous:
        np.testing.assert_array_equal(actions, action_input)
    else:
        np.testing.assert_array_equal(actions, np.argmax(head, axis=-1))
        assert len(np.unique(actions)) > 1  # the check is not vacuous
