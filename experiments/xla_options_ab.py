"""Each XLA:CPU option of ``xla_options`` against the rest, in one process, interleaved.

Usage: python experiments/xla_options_ab.py [--workload W] [--population N] [--repeats R]
Workloads: ``rollout`` (default), the CartPole population rollout (EGGROLL, 3 x 256 policy) and
the same rollout with one shared policy; ``brax``, Brax inverted_double_pendulum physics
(spring, 2048 envs, 50 steps); ``ppo_brax``, one PPO update on it with the batch sizes of
``experiments/brax_ppo_speed.py``. Each is compiled once with every option of
``xla_options.OPTIONS`` and once with each option left out; all are timed in turn, ``repeats``
rounds, best time kept. Programs timed side by side in one process share whatever load the
machine has, which separate runs of ``eggroll-rl bench`` do not.
"""

from __future__ import annotations

import argparse
import functools

import jax
import jax.numpy as jnp

from eggroll_rl import envs, xla_options
from eggroll_rl.bench_timing import time_best
from eggroll_rl.envs.rollout import run_episodes
from eggroll_rl.networks import Policy
from eggroll_rl.strategies import Eggroll


def programs(population_size: int, steps: int) -> tuple[dict, tuple]:
    task = envs.make("gymnax/CartPole-v1")
    model = Policy(task.action_size, hidden=(256, 256, 256))
    params = model.init(jax.random.key(0), jnp.zeros(task.observation_space.shape))
    strategy = Eggroll(population_size, 0.05, rank=1)
    population = strategy.ask(strategy.init(jax.random.key(1), params))
    loop = dict(max_steps=steps, stop_when_done=False, deterministic=False)
    slots = (population_size, 1)

    def eggroll(population, key):
        policy = lambda obs: strategy.population_apply(population, model.apply, obs)
        return run_episodes(task, policy, key, slots, **loop).returns

    def inference(population, key):
        # The mean params come in as an argument, as in training: closed over, they would be
        # constants, and XLA would fold the initial zero biases and unit LayerNorm scales away.
        shared = jax.vmap(lambda obs: model.apply(population.mean, obs))
        return run_episodes(task, shared, key, slots, **loop).returns

    return {"eggroll": eggroll, "inference": inference}, (population, jax.random.key(2))


def brax_programs(steps: int = 50, batch: int = 2048) -> tuple[dict, tuple, int]:
    from eggroll_rl.experiments.brax_backend_speed import physics_loop

    physics = physics_loop(envs.make("brax/inverted_double_pendulum"), batch, steps)
    return {"brax physics": physics}, (jax.random.key(0),), batch * steps


def ppo_programs() -> tuple[dict, tuple, int]:
    from eggroll_rl.experiments import brax_ppo_speed as speed

    trainer = speed.our_trainer()
    state = jax.jit(trainer.init)(jax.random.key(0))
    return {"ppo update": lambda s: trainer.train_chunk(s, 1)[0]}, (state,), speed.STEPS_PER_UPDATE


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--workload", choices=("rollout", "brax", "ppo_brax"), default="rollout")
    parser.add_argument("--population", type=int, default=2048)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--steps", type=int, default=64)
    args = parser.parse_args()
    if args.workload == "rollout":
        fns, call_args = programs(args.population, args.steps)
        slots = args.population * args.steps
        title = f"CartPole rollout, N={args.population}, {args.steps} steps"
    else:
        fns, call_args, slots = brax_programs() if args.workload == "brax" else ppo_programs()
        title = args.workload
    every = xla_options.compiler_options()
    variants = {"all options": every}
    variants.update({f"without {name}": {k: v for k, v in every.items() if k != name} for name in every})
    compiled = {
        (variant, kind): jax.jit(fn, compiler_options=options).lower(*call_args).compile()
        for variant, options in variants.items()
        for kind, fn in fns.items()
    }
    best = time_best({
        name: functools.partial(fn, *call_args) for name, fn in compiled.items()
    }, args.repeats)
    print(f"{title}, env steps/s, best of {args.repeats}:")
    print("| options | " + " | ".join(fns) + (" | EGGROLL/inference |" if len(fns) == 2 else " |"))
    print("| --- " * (len(fns) + 1 + (len(fns) == 2)) + "|")
    for variant in variants:
        rates = [slots / best[(variant, kind)] for kind in fns]
        ratio = [f"{rates[0] / rates[1]:.3f}"] if len(fns) == 2 else []
        print("| " + " | ".join([variant] + [f"{r:,.0f}" for r in rates] + ratio) + " |")


if __name__ == "__main__":
    main()
