"""Which Brax physics backend to use by default on CPU: env steps/s of each, side by side.

Usage: python experiments/brax_backend_speed.py [ENV ...] [--envs-per-batch N] [--steps T]
Runs N envs vmapped for T steps of zero actions through the Task adapter, after a warm-up
compile, and prints steps/s and compile seconds per backend (with ``xla_options``, as training).
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp

from eggroll_rl import envs, xla_options


def physics_loop(task, batch: int, steps: int):
    """``key -> total reward`` of ``batch`` envs stepped ``steps`` times with zero actions."""

    def run(key):
        _, state = jax.vmap(task.reset)(jax.random.split(key, batch))
        action = jnp.zeros((batch,) + task.action_space.shape, jnp.float32)

        def body(state, key):
            keys = jax.random.split(key, batch)
            _, state, reward, *_ = jax.vmap(task.step)(keys, state, action)
            return state, reward.sum()

        return jax.lax.scan(body, state, jax.random.split(key, steps))[1].sum()

    return run


def measure(env_id: str, backend: str, batch: int, steps: int) -> tuple[float, float]:
    task = envs.make(env_id, backend=backend)
    run = xla_options.jit(physics_loop(task, batch, steps))  # as the train loop compiles

    start = time.perf_counter()
    run(jax.random.key(0)).block_until_ready()
    compile_s = time.perf_counter() - start
    start = time.perf_counter()
    run(jax.random.key(1)).block_until_ready()
    return batch * steps / (time.perf_counter() - start), compile_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("env", nargs="*", default=["inverted_double_pendulum"])
    parser.add_argument("--backends", default="spring,positional,generalized")
    parser.add_argument("--envs-per-batch", type=int, default=256)
    parser.add_argument("--steps", type=int, default=100)
    args = parser.parse_args()
    print(f"| env | backend | env steps/s | compile s |  ({args.envs_per_batch} envs x {args.steps} steps, {jax.devices()[0].device_kind})")
    print("| --- | --- | --- | --- |")
    for name in args.env:
        for backend in args.backends.split(","):
            rate, compile_s = measure(f"brax/{name}", backend, args.envs_per_batch, args.steps)
            print(f"| {name} | {backend} | {rate:,.0f} | {compile_s:.1f} |", flush=True)


if __name__ == "__main__":
    main()
