"""Flax NNX modules and linen variables with several collections, handed to the strategies as is.

Only parameters evolve: NNX ``nnx.Param`` state and linen's ``params`` collection. Every fast
forward is compared with the model applied the ordinary way to ``member_params`` (which
carries the untouched statistics), and the NNX fast path with the same network in linen.
"""

import warnings

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from eggroll_rl import Eggroll

SIGMA = 0.5


def call(model, x):
    return model(x)


class NNXPolicy(nnx.Module):
    """The paper's pqn MLP written as in the Flax docs, plus dropout and batch norm (eval mode)
    and the other plain contractions (LinearGeneral, Einsum)."""

    def __init__(self, din, width, dout, *, rngs):
        self.linear1 = nnx.Linear(din, width, rngs=rngs)
        self.norm1 = nnx.LayerNorm(width, rngs=rngs)
        self.bn = nnx.BatchNorm(width, rngs=rngs)
        self.dropout = nnx.Dropout(0.3, rngs=rngs)
        self.general = nnx.LinearGeneral(width, width, rngs=rngs)
        self.einsum = nnx.Einsum("...i,io->...o", (width, width), (width,), rngs=rngs)
        self.head = nnx.Linear(width, dout, rngs=rngs)

    def __call__(self, x):
        x = self.dropout(nnx.relu(self.bn(self.norm1(self.linear1(x)))))
        x = nnx.relu(self.einsum(nnx.relu(self.general(x))))
        return self.head(x)


def _members(strategy, population, apply, xs):
    """The reference: ``apply(member_params(i), xs[i])`` for every member, in one program."""
    def one(i):
        return apply(strategy.member_params(population, i), xs[i])

    return jax.jit(jax.vmap(one))(jnp.arange(strategy.population_size))


def _randomise_stats(model):
    model.bn.mean[...] = jnp.linspace(-1.0, 1.0, model.bn.mean.shape[0])
    model.bn.var[...] = jnp.linspace(0.5, 2.0, model.bn.var.shape[0])


def test_nnx_module_takes_the_fast_path_and_matches_member_params():
    model = NNXPolicy(5, 8, 3, rngs=nnx.Rngs(0))
    _randomise_stats(model)
    model.eval()
    strategy = Eggroll(6, SIGMA, rank=4)  # rank 4 on the 3-output head: capped to 3
    state = strategy.init(jax.random.key(1), model)
    assert strategy.ranks(model)["head/kernel"] == 3
    population = strategy.ask(state)
    xs = jax.random.normal(jax.random.key(2), (6, 4, 5))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # every matrix is on the fast path: no warning
        fast = jax.jit(lambda p, xs: strategy.population_apply(p, call, xs))(population, xs)
    reference = _members(strategy, population, call, xs)
    np.testing.assert_allclose(fast, reference, rtol=1e-4, atol=1e-4)
    unperturbed = jax.vmap(strategy.mean_params(state))(xs)
    assert float(jnp.min(jnp.max(jnp.abs(reference - unperturbed), axis=(1, 2)))) > 0.05
    # no per-member kernel is ever built: no (members, 8, 8) array in the program
    jaxpr = jax.make_jaxpr(lambda p, xs: strategy.population_apply(p, call, xs))(population, xs)
    assert "f32[6,8,8]" not in str(jaxpr)

    # only nnx.Param evolves: batch statistics and the dropout RNG state pass through
    new_state, _ = strategy.tell(state, population, jnp.arange(6.0))
    deployed = strategy.mean_params(new_state)
    assert isinstance(deployed, NNXPolicy)
    np.testing.assert_array_equal(deployed.bn.mean[...], model.bn.mean[...])
    np.testing.assert_array_equal(deployed.bn.var[...], model.bn.var[...])
    assert int(deployed.dropout.rngs.count[...]) == int(model.dropout.rngs.count[...])
    assert not np.allclose(deployed.linear1.kernel[...], model.linear1.kernel[...])


class LinenTwin(nn.Module):
    """The same 3-layer LayerNorm MLP in linen, named so that its leaves sort like NNX's."""

    width: int
    dout: int

    @nn.compact
    def __call__(self, x):
        for i in range(2):
            x = nn.relu(nn.LayerNorm(name=f"l{i}_norm")(nn.Dense(self.width, name=f"l{i}")(x)))
        return nn.Dense(self.dout, name="l2")(x)


class NNXTwin(nnx.Module):
    def __init__(self, din, width, dout, *, rngs):
        self.l0 = nnx.Linear(din, width, rngs=rngs)
        self.l0_norm = nnx.LayerNorm(width, rngs=rngs)
        self.l1 = nnx.Linear(width, width, rngs=rngs)
        self.l1_norm = nnx.LayerNorm(width, rngs=rngs)
        self.l2 = nnx.Linear(width, dout, rngs=rngs)

    def __call__(self, x):
        for linear, norm in ((self.l0, self.l0_norm), (self.l1, self.l1_norm)):
            x = nnx.relu(norm(linear(x)))
        return self.l2(x)


def test_nnx_and_linen_versions_of_one_policy_give_equal_outputs_for_every_member():
    nnx_model = NNXTwin(4, 16, 2, rngs=nnx.Rngs(0))
    linen_model = LinenTwin(16, 2)
    _, nnx_params = nnx.split(nnx_model, nnx.Param)
    linen_params = {"params": nnx.to_pure_dict(nnx_params)}
    strategy = Eggroll(8, SIGMA, rank=2)
    nnx_pop = strategy.ask(strategy.init(jax.random.key(3), nnx_model))
    linen_pop = strategy.ask(strategy.init(jax.random.key(3), linen_params))
    xs = jax.random.normal(jax.random.key(4), (8, 3, 4))
    from_nnx = jax.jit(lambda p, xs: strategy.population_apply(p, call, xs))(nnx_pop, xs)
    from_linen = jax.jit(
        lambda p, xs: strategy.population_apply(p, linen_model.apply, xs))(linen_pop, xs)
    np.testing.assert_allclose(from_nnx, from_linen, rtol=1e-5, atol=1e-5)


class ScaledLinear(nnx.Linear):
    def __call__(self, x):
        return 2.0 * x @ self.kernel[...]


class WithSubclass(nnx.Module):
    def __init__(self, *, rngs):
        self.inner = ScaledLinear(3, 4, use_bias=False, rngs=rngs)
        self.head = nnx.Linear(4, 2, rngs=rngs)

    def __call__(self, x):
        return self.head(self.inner(x))


def test_nnx_matrix_off_the_fast_path_warns_with_its_path_and_an_nnx_fix():
    model = WithSubclass(rngs=nnx.Rngs(0))
    strategy = Eggroll(4, SIGMA, rank=2)
    population = strategy.ask(strategy.init(jax.random.key(0), model))
    xs = jax.random.normal(jax.random.key(1), (4, 3))
    with pytest.warns(UserWarning, match=r"inner/kernel \(shape \(3, 4\)\).*nnx\.Linear") as record:
        fast = strategy.population_apply(population, call, xs)
    assert not any("head/kernel" in str(w.message) for w in record)
    np.testing.assert_allclose(fast, _members(strategy, population, call, xs), rtol=1e-5, atol=1e-5)


class LinenBatchNormNet(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = nn.BatchNorm(use_running_average=True)(nn.Dense(6)(x))
        return nn.Dense(2)(nn.relu(x))


def test_linen_variables_evolve_params_only_and_batch_stats_pass_through():
    model = LinenBatchNormNet()
    variables = model.init(jax.random.key(0), jnp.zeros(3))
    stats = {"BatchNorm_0": {"mean": jnp.linspace(-1, 1, 6), "var": jnp.linspace(0.5, 2, 6)}}
    variables = {"params": variables["params"], "batch_stats": stats}
    strategy = Eggroll(4, SIGMA, rank=2)
    state = strategy.init(jax.random.key(1), variables)
    population = strategy.ask(state)
    # noise for the parameters only (the statistics get none)
    assert jax.tree_util.tree_structure(population.mean.params) == jax.tree_util.tree_structure(
        variables["params"])
    assert population.noise.keys() == variables["params"].keys()
    xs = jax.random.normal(jax.random.key(2), (4, 5, 3))
    fast = jax.jit(lambda p, xs: strategy.population_apply(p, model.apply, xs))(population, xs)
    # reference: each member's materialised params with the untouched statistics
    def reference(member, x):
        return model.apply({"params": member["params"], "batch_stats": stats}, x)
    np.testing.assert_allclose(
        fast, _members(strategy, population, reference, xs), rtol=1e-5, atol=1e-5)
    new_state, _ = strategy.tell(state, population, jnp.arange(4.0))
    deployed = strategy.mean_params(new_state)
    assert list(deployed) == ["params", "batch_stats"]
    jax.tree_util.tree_map(np.testing.assert_array_equal, deployed["batch_stats"], stats)
