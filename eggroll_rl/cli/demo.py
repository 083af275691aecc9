"""Install check: EGGROLL fits a small regression MLP without a single gradient.

The fitness of a member is minus its mean squared error on a fixed batch; the population is
evaluated with one population_apply call and the mean network's loss is printed as it falls.
It is small on purpose (a quick check that JAX, Flax and EGGROLL work together); eggroll-rl
train is the RL trainer.
"""

from __future__ import annotations

import argparse
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from eggroll_rl.layer import EggrollDense
from eggroll_rl.strategies import Eggroll


class RegressionMLP(nn.Module):
    width: int = 32

    @nn.compact
    def __call__(self, x):
        x = jnp.tanh(EggrollDense(self.width)(x))
        return EggrollDense(1)(x)


def make_problem(key: jax.Array, samples: int = 64):
    xs = jnp.linspace(-2.0, 2.0, samples)[:, None]
    ys = jnp.sin(2.0 * xs) + 0.3 * xs
    return xs, ys


def run(
    generations: int = 120,
    population_size: int = 64,
    sigma: float = 0.05,
    learning_rate: float = 0.03,
    rank: int = 1,
    seed: int = 0,
    log_every: int = 30,
    log=print,
) -> list[float]:
    """Train; returns the mean network's loss at generation 0 and after every ``log_every``
    generations (``generations // log_every + 1`` values)."""
    key_init, key_es = jax.random.split(jax.random.key(seed))
    model = RegressionMLP()
    xs, ys = make_problem(key_init)
    params = model.init(key_init, xs)
    strategy = Eggroll(population_size, sigma, rank=rank, optimizer=optax.adam(learning_rate))
    loss = lambda out: jnp.mean((out - ys) ** 2, axis=(-2, -1))

    @jax.jit
    def generations_chunk(state):
        def one(state, _):
            population = strategy.ask(state)
            batch = jnp.broadcast_to(xs, (population_size,) + xs.shape)
            predictions = strategy.population_apply(population, model.apply, batch)
            state, _ = strategy.tell(state, population, -loss(predictions))
            return state, None

        state = jax.lax.scan(one, state, None, length=log_every)[0]
        return state, loss(model.apply(strategy.mean_params(state), xs))

    state = strategy.init(key_es, params)
    start = time.perf_counter()
    history = [float(loss(model.apply(params, xs)))]
    log(f"EGGROLL regression demo: population {population_size}, rank {rank}, sigma {sigma}")
    log(f"generation {0:4d}  mse {history[0]:.4f}")
    for done in range(log_every, generations + 1, log_every):
        state, current = generations_chunk(state)
        history.append(float(current))
        log(f"generation {done:4d}  mse {history[-1]:.4f}  ({time.perf_counter() - start:.1f} s)")
    return history


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="eggroll-rl demo", description=__doc__)
    parser.add_argument("--generations", type=int, default=120, help="ES generations")
    parser.add_argument("--population-size", type=int, default=64, help="members per generation (even)")
    parser.add_argument("--rank", type=int, default=1, help="rank of each member's perturbation")
    parser.add_argument("--seed", type=int, default=0, help="random seed")
    args = parser.parse_args(argv)
    history = run(args.generations, args.population_size, rank=args.rank, seed=args.seed)
    print(f"mse {history[0]:.4f} -> {history[-1]:.4f} without a single gradient")
