"""Throughput benchmark: EGGROLL and OpenES population evaluation against plain batched inference.

The speed claim of EGGROLL is a ratio: evaluating N perturbed policies should cost about as much
as evaluating one policy on a batch of N inputs. Absolute times on a shared machine vary, so
every case times its variants side by side, interleaved, in one process, and reports ratios.
Each timed call is what an RL generation does: ``ask`` (noise for the generation; OpenES also
builds every member's weights) then T steps of ``lax.scan`` over fresh inputs.
"""

from __future__ import annotations

import dataclasses
import json
import platform
import time
from typing import Callable, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from eggroll_rl.layer import EggrollDense
from eggroll_rl.networks import MLP
from eggroll_rl.strategies import Eggroll, OpenES


@dataclasses.dataclass(frozen=True)
class Case:
    """One benchmarked model: a name, the network, its input width, population and steps."""

    name: str
    model: nn.Module
    in_features: int
    population_size: int
    steps: int
    openes: bool = True


def default_cases(scale: float = 1.0) -> list[Case]:
    """The paper's RL policy (CartPole-sized input) and single wide layers."""
    n = lambda size: max(2, int(size * scale) // 2 * 2)
    return [
        Case("mlp_3x256", MLP(hidden=(256, 256, 256), out_features=2), 4, n(2048), 64),
        Case("dense_1024", EggrollDense(1024), 1024, n(512), 8),
        Case("dense_4096", EggrollDense(4096), 4096, n(128), 2, openes=False),
    ]


def _scan_total(step: Callable, xs: jax.Array) -> jax.Array:
    def body(total, x):
        return total + jnp.sum(step(x)), None

    return jax.lax.scan(body, jnp.zeros((), jnp.float32), xs)[0]


def _time_best(fns: dict[str, Callable], repeats: int) -> dict[str, float]:
    """Best-of-``repeats`` seconds per function, interleaved so load hits all alike."""
    for fn in fns.values():
        jax.block_until_ready(fn())
    best = {name: float("inf") for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            jax.block_until_ready(fn())
            best[name] = min(best[name], time.perf_counter() - start)
    return best


def run_case(case: Case, rank: int = 1, sigma: float = 0.05, repeats: int = 5) -> dict:
    key_params, key_es, key_x = jax.random.split(jax.random.key(0), 3)
    params = case.model.init(key_params, jnp.ones((case.in_features,)))
    xs = jax.random.normal(key_x, (case.steps, case.population_size, case.in_features))
    apply = case.model.apply

    @jax.jit
    def inference(params, xs):
        return _scan_total(lambda x: apply(params, x), xs)

    def es_runner(strategy):
        state = strategy.init(key_es, params)

        @jax.jit
        def generation(state, xs):
            population = strategy.ask(state)
            return _scan_total(lambda x: strategy.population_apply(population, apply, x), xs)

        return lambda: generation(state, xs)

    fns = {
        "inference": lambda: inference(params, xs),
        "eggroll": es_runner(Eggroll(case.population_size, sigma, rank=rank)),
    }
    if case.openes:
        fns["openes"] = es_runner(OpenES(case.population_size, sigma))
    seconds = _time_best(fns, repeats)
    member_steps = case.population_size * case.steps
    result = {
        "case": case.name,
        "population_size": case.population_size,
        "steps": case.steps,
        "rank": rank,
        "seconds": seconds,
        "member_steps_per_s": {k: member_steps / v for k, v in seconds.items()},
        "eggroll_vs_inference": seconds["inference"] / seconds["eggroll"],
        "eggroll_vs_openes": (seconds["openes"] / seconds["eggroll"]) if case.openes else None,
    }
    return result


def run(
    cases: Optional[list[Case]] = None, rank: int = 1, repeats: int = 5, log=print
) -> dict:
    report = {
        "device": str(jax.devices()[0].device_kind),
        "backend": jax.default_backend(),
        "jax": jax.__version__,
        "machine": platform.machine(),
        "cases": [],
    }
    for case in cases or default_cases():
        result = run_case(case, rank=rank, repeats=repeats)
        report["cases"].append(result)
        openes = result["eggroll_vs_openes"]
        log(
            f"{case.name:>12}  N={case.population_size:<5} T={case.steps:<3} "
            f"eggroll/inference={result['eggroll_vs_inference']:.3f}  "
            + (f"eggroll/openes={openes:.1f}x" if openes is not None else "openes: skipped")
        )
    return report


def main(argv=None) -> None:
    import argparse

    parser = argparse.ArgumentParser(prog="eggroll-rl bench", description=__doc__)
    parser.add_argument("--rank", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--scale", type=float, default=1.0, help="multiply population sizes")
    parser.add_argument("--case", action="append", help="only these cases (repeatable)")
    parser.add_argument("--json", action="store_true", help="print one JSON object at the end")
    args = parser.parse_args(argv)
    cases = [c for c in default_cases(args.scale) if not args.case or c.name in args.case]
    report = run(cases, rank=args.rank, repeats=args.repeats, log=(lambda *_: None) if args.json else print)
    if args.json:
        print(json.dumps(report))
