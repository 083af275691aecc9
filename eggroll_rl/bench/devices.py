"""Scaling benchmark: EGGROLL throughput as the population is split over 1, 2, 4, ... devices.

``eggroll-rl bench --devices N`` runs each device count in its own subprocess, because JAX fixes
the device count when it starts (on a CPU the devices are simulated with
``XLA_FLAGS=--xla_force_host_platform_device_count=n``). Each worker times two cases with the
population sharded over a ``make_population_mesh(n)``: the paper's 3x256 MLP population forward
(``population_apply`` in a ``lax.scan``) and a whole CartPole population rollout. The report
gives member steps per second per device count and the speedup over one device. Simulated CPU
devices share the machine's cores, so on a CPU this measures partitioning overhead, not the
speedup that real accelerators give. Every program is compiled by a plain ``jax.jit``.
"""

from __future__ import annotations

import json
import os
import platform
import re
import subprocess
import sys
from typing import Optional

CASES = ("mlp_3x256", "rollout_cartpole_3x256")


def device_counts(max_devices: int) -> list[int]:
    """1, 2, 4, ... up to ``max_devices``, and ``max_devices`` itself."""
    if max_devices < 1:
        raise ValueError(f"--devices must be >= 1 (the most devices to try), got {max_devices}.")
    counts, n = [], 1
    while n < max_devices:
        counts.append(n)
        n *= 2
    return counts + [max_devices]


def _population(size: float, scale: float, multiple: int) -> int:
    return max(multiple, int(size * scale) // multiple * multiple)


def worker(devices: int, population_size: int, repeats: int, cases) -> dict:
    """Time the cases on ``devices`` devices of this process (run by ``run`` in a subprocess)."""
    import jax
    import jax.numpy as jnp
    from jax.sharding import NamedSharding, PartitionSpec

    from eggroll_rl import distributed, envs
    from eggroll_rl.bench.suite import _scan_total
    from eggroll_rl.bench.timing import time_best
    from eggroll_rl.networks import MLP, Policy
    from eggroll_rl.strategies import Eggroll

    mesh = distributed.make_population_mesh(devices)
    key_params, key_es, key_x, key_run = jax.random.split(jax.random.key(0), 4)
    result = {
        "devices": devices,
        "backend": jax.default_backend(),
        "device_kind": jax.devices()[0].device_kind,
        "population_size": population_size,
        "cases": {},
    }
    fns, work = {}, {}
    if "mlp_3x256" in cases:
        steps = 16
        model = MLP(hidden=(256, 256, 256), out_features=2)
        params = model.init(key_params, jnp.ones((4,)))
        strategy = Eggroll(population_size, 0.05, mesh=mesh)
        population = strategy.ask(strategy.init(key_es, params))
        xs = jax.random.normal(key_x, (steps, population_size, 4))
        xs = jax.device_put(xs, NamedSharding(mesh, PartitionSpec(None, distributed.AXIS)))
        forward = jax.jit(
            lambda population, xs: _scan_total(
                lambda x: strategy.population_apply(population, model.apply, x), xs
            )
        )
        fns["mlp_3x256"] = lambda population=population, xs=xs: forward(population, xs)
        work["mlp_3x256"] = steps * population_size
    if "rollout_cartpole_3x256" in cases:
        steps = 32
        task = envs.make("gymnax/CartPole-v1")
        policy = Policy(task.action_size, continuous=False, hidden=(256, 256, 256))
        params = policy.init(key_params, jnp.zeros(task.observation_space.shape))
        strategy = Eggroll(population_size, 0.05, mesh=mesh)
        population = strategy.ask(strategy.init(key_es, params))
        fns["rollout_cartpole_3x256"] = lambda strategy=strategy, population=population: envs.rollout(
            task, strategy, population, policy.apply, key_run,
            max_steps=steps, stop_when_done=False,
        ).fitness
        work["rollout_cartpole_3x256"] = steps * population_size
    seconds = time_best(fns, repeats)
    for name, s in seconds.items():
        result["cases"][name] = {"seconds": s, "member_steps_per_s": work[name] / s}
    return result


def run(
    max_devices: int, scale: float = 1.0, repeats: int = 3, cases: Optional[list] = None, log=print
) -> dict:
    """Every device count in 1..``max_devices`` in a fresh subprocess; speedups over 1 device."""
    cases = [c for c in CASES if not cases or c in cases]
    if not cases:
        raise ValueError(f"--devices benchmarks the cases {CASES}; --case named none of them.")
    counts = device_counts(max_devices)
    population_size = _population(2048, scale, 2 * max_devices)
    report = {
        "what": "EGGROLL population sharded over n devices; member steps per second",
        "machine": platform.machine(),
        "cpu_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "population_size": population_size,
        "repeats": repeats,
        "runs": [],
    }
    for n in counts:
        env = dict(os.environ)
        flags = re.sub(r"--xla_force_host_platform_device_count=\d+", "", env.get("XLA_FLAGS", ""))
        env["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count={n}".strip()
        command = [
            sys.executable, "-m", "eggroll_rl.bench.devices", "--worker", str(n),
            "--population", str(population_size), "--repeats", str(repeats), *cases,
        ]
        done = subprocess.run(command, env=env, capture_output=True, text=True)
        lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
        if done.returncode or not lines:
            raise RuntimeError(f"the {n}-device worker failed:\n{done.stderr[-3000:]}")
        report["runs"].append(json.loads(lines[-1]))
    base = report["runs"][0]["cases"]
    for result in report["runs"]:
        for name, case in result["cases"].items():
            case["speedup"] = case["member_steps_per_s"] / base[name]["member_steps_per_s"]
            case["efficiency"] = case["speedup"] / result["devices"]
            log(
                f"{name:<24} devices={result['devices']:<3} N={population_size:<5} "
                f"{case['member_steps_per_s']:>12.4g} member steps/s   speedup "
                f"{case['speedup']:.2f}x   efficiency {case['efficiency']:.2f}"
            )
    return report


def main(argv=None) -> None:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m eggroll_rl.bench.devices")
    parser.add_argument("--worker", type=int, required=True)
    parser.add_argument("--population", type=int, required=True)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("cases", nargs="*", default=list(CASES))
    args = parser.parse_args(argv)
    import contextlib

    with contextlib.redirect_stdout(sys.stderr):  # suites that print on import
        result = worker(args.worker, args.population, args.repeats, args.cases)
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
