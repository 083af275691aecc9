"""EGGROLL rollouts with and without XLA:CPU's multi-output fusion, in alternated processes.

Usage: python experiments/multi_output_fusion_ab.py [--population N] [--repeats R] [--rounds K]

The option can only be set for a whole process (``xla_options.configure_process``), so each arm
runs in its own subprocess, ``rounds`` times, alternating: ``XLA_FLAGS`` names the option, or
sets ``xla_backend_extra_options`` without it, which keeps it off. The compile cache is off, so
compile times are real. Each worker compiles the CartPole rollout
(EGGROLL, 3 x 256 policy, population N) and the same rollout with one shared policy, and times
them interleaved, best of ``repeats``; the ratio inside one process is what the bench reports.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import subprocess
import sys

from eggroll_rl import xla_options

ARMS = {
    "multi-output fusion": xla_options.PROCESS_FLAG,
    # a key XLA does not read: the map is set, so configure_process leaves it alone
    "XLA default": "--xla_backend_extra_options=xla_eggroll_rl_ab_placeholder",
}


def worker(population_size: int, steps: int, repeats: int) -> dict:
    import time

    import jax

    from eggroll_rl.bench_timing import time_best
    from eggroll_rl.experiments.xla_options_ab import programs

    fns, call_args = programs(population_size, steps)
    compiled, compile_s = {}, {}
    for name, fn in fns.items():
        start = time.perf_counter()
        compiled[name] = jax.jit(fn, compiler_options=xla_options.compiler_options()).lower(
            *call_args).compile()
        compile_s[name] = time.perf_counter() - start
    best = time_best({n: functools.partial(f, *call_args) for n, f in compiled.items()}, repeats)
    slots = population_size * steps
    return {
        "env_steps_per_s": {n: slots / s for n, s in best.items()},
        "compile_s": compile_s,
        "ratio": best["inference"] / best["eggroll"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--population", type=int, default=2048)
    parser.add_argument("--steps", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.population, args.steps, args.repeats)))
        return
    print(f"CartPole rollout, N={args.population}, {args.steps} steps, best of {args.repeats}:")
    print("| round | XLA:CPU | EGGROLL env steps/s | shared policy | ratio | compile s (EGGROLL) |")
    print("| --- | --- | --- | --- | --- | --- |")
    # the parent may have imported eggroll_rl, which adds the option: each arm sets its own
    base = xla_options.without_process_flag(dict(os.environ))["XLA_FLAGS"]
    for round_ in range(1, args.rounds + 1):
        for arm, flag in ARMS.items():
            env = {**os.environ, "XLA_FLAGS": f"{base} {flag}".strip(), "EGGROLL_RL_NO_COMPILE_CACHE": "1"}
            done = subprocess.run(
                [sys.executable, __file__, "--worker", "--population", str(args.population),
                 "--steps", str(args.steps), "--repeats", str(args.repeats)],
                env=env, capture_output=True, text=True, check=True,
            )
            result = json.loads(done.stdout.strip().splitlines()[-1])
            rates = result["env_steps_per_s"]
            print(
                f"| {round_} | {arm} | {rates['eggroll']:,.0f} | {rates['inference']:,.0f} | "
                f"{result['ratio']:.3f} | {result['compile_s']['eggroll']:.1f} |", flush=True,
            )


if __name__ == "__main__":
    main()
