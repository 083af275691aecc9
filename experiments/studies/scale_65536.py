"""One EGGROLL generation at N = 65,536 members of the paper's 3 x 256 policy on one machine.

ask -> rollout (gymnax CartPole-v1, one episode per member, at most ``MAX_STEPS`` steps) -> tell,
each compiled once and run once. Prints one JSON object to stdout: the peak resident memory of
the process (``VmHWM``), the wall time of compiling and of running the generation, and what was
run. Usage: ``python experiments/studies/scale_65536.py [--members N] [--max-steps T]``.
"""

from __future__ import annotations

import argparse
import json
import resource
import time


def peak_rss_bytes() -> int:
    """The process's peak resident set size (``VmHWM``; ``ru_maxrss`` where /proc is absent)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=65_536)
    parser.add_argument("--max-steps", type=int, default=50)
    parser.add_argument("--rank", type=int, default=1)
    args = parser.parse_args()

    import jax
    import jax.numpy as jnp
    import optax

    from eggroll_rl import Eggroll, envs
    from eggroll_rl.envs import obs_norm
    from eggroll_rl.networks import Policy

    task = envs.make("gymnax/CartPole-v1")
    model = Policy(action_size=task.action_size, hidden=(256, 256, 256))
    strategy = Eggroll(args.members, 0.05, rank=args.rank, optimizer=optax.adam(0.03))
    params = model.init(jax.random.key(0), jnp.zeros(task.observation_space.shape))
    state = strategy.init(jax.random.key(1), params)
    stats = obs_norm.init(task.observation_space.shape)
    key = jax.random.key(2)

    def generation(state, stats, key):
        population = strategy.ask(state)
        result = envs.rollout(
            task, strategy, population, model.apply, key, obs_stats=stats,
            deterministic=True, max_steps=args.max_steps,
        )
        state, metrics = strategy.tell(state, population, result.fitness)
        return state, result.obs_stats, result.env_steps, metrics["fitness_mean"]

    start = time.perf_counter()
    compiled = jax.jit(generation).lower(state, stats, key).compile()
    compile_s = time.perf_counter() - start
    start = time.perf_counter()
    state, stats, env_steps, fitness_mean = jax.block_until_ready(compiled(state, stats, key))
    run_s = time.perf_counter() - start
    memory = compiled.memory_analysis()
    print(json.dumps({
        "members": args.members,
        "policy": "3 x 256, EGGROLL rank %d" % args.rank,
        "env": task.env_id,
        "max_steps": args.max_steps,
        "env_steps": int(env_steps),
        "fitness_mean": float(fitness_mean),
        "compile_s": round(compile_s, 2),
        "generation_s": round(run_s, 2),
        "env_steps_per_s": round(int(env_steps) / run_s),
        "peak_rss_bytes": peak_rss_bytes(),
        "peak_rss_gib": round(peak_rss_bytes() / 2**30, 3),
        "xla_temp_bytes": memory.temp_size_in_bytes,
        "devices": [str(d) for d in jax.devices()],
    }))


if __name__ == "__main__":
    main()
