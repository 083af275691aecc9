"""Where each member's perturbed vectors are built: inside the rollout loop or hoisted out of it.

Usage: python experiments/noise_layout_ab.py [--population N] [--repeats R] [--steps T]

``population_apply`` passes the noise through ``strategies.keep_in_loop`` (an optimisation
barrier tied to the step's inputs). Without it, XLA hoists every member's perturbed bias and
LayerNorm parameters out of the rollout's ``lax.scan`` and materialises them: N x width floats
per leaf, re-read at every step. This compiles the CartPole population rollout (EGGROLL, 3 x 256
policy) both ways, plus the same rollout with one shared policy, and times them in turn in one
process (``repeats`` rounds, best time kept), so all three share whatever load the machine has.
"""

from __future__ import annotations

import argparse
import re
import functools

import jax

from eggroll_rl import strategies, xla_options
from eggroll_rl.bench_timing import time_best
from eggroll_rl.experiments.xla_options_ab import programs


def hoisted_vectors(compiled, population_size: int, width: int = 256) -> int:
    """How many per-member (N, width) arrays (hidden-layer vectors) are computed before the loops.

    Counts the outputs of the fusions in the ENTRY computation, single or (with multi-output
    fusion) several in one tuple.
    """
    entry = re.search(r"\nENTRY .*?\n}\n", compiled.as_text(), re.S).group(0)
    outputs = re.findall(r"= (.*?) fusion\(", entry)
    return sum(shape.count(f"f32[{population_size},{width}]") for shape in outputs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--population", type=int, default=2048)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--steps", type=int, default=64)
    args = parser.parse_args()
    fns, call_args = programs(args.population, args.steps)
    options = xla_options.compiler_options()
    keep = strategies.keep_in_loop
    compiled = {}
    for name, barrier in (("in the loop", keep), ("hoisted", lambda noise, xs: (noise, xs))):
        strategies.keep_in_loop = barrier
        # a fresh function object per variant, so jit traces it again under this barrier
        fresh = lambda population, key: fns["eggroll"](population, key)  # noqa: E731
        compiled[name] = jax.jit(fresh, compiler_options=options).lower(*call_args).compile()
    strategies.keep_in_loop = keep
    compiled["shared policy"] = (
        jax.jit(fns["inference"], compiler_options=options).lower(*call_args).compile()
    )
    best = time_best({
        name: functools.partial(fn, *call_args) for name, fn in compiled.items()
    }, args.repeats)
    slots = args.population * args.steps
    print(
        f"CartPole rollout, N={args.population}, {args.steps} steps, env steps/s, "
        f"best of {args.repeats}:"
    )
    print("| EGGROLL vectors | env steps/s | / shared policy | per-member arrays hoisted |")
    print("| --- | --- | --- | --- |")
    for name, fn in compiled.items():
        hoisted = hoisted_vectors(fn, args.population) if name != "shared policy" else "-"
        ratio = best["shared policy"] / best[name]
        print(f"| {name} | {slots / best[name]:,.0f} | {ratio:.3f} | {hoisted} |")


if __name__ == "__main__":
    main()
