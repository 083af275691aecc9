"""How the benchmarks time things on a shared machine: interleaved rounds, and two summaries.

The best-of time per variant estimates its speed on a quiet machine; the paired ratio (ratios
within each round) estimates how two variants compare under whatever load the host has.
"""

from __future__ import annotations

import time
from typing import Callable

import jax
import numpy as np


def time_rounds(
    fns: dict[str, Callable], repeats: int, min_seconds: float = 0.0
) -> dict[str, np.ndarray]:
    """Seconds of every call, per function, over interleaved rounds (one call of each per
    round), so that load hits all alike.

    At least ``repeats`` rounds, and more until ``min_seconds`` have passed. Single runs on a
    shared 2-core machine vary by +-15%: the ratio of two rollouts timed best-of-5 ranged
    0.80-0.92 between identical processes, best-of-40 0.87-0.90 (README, Benchmarks).
    """
    for fn in fns.values():
        jax.block_until_ready(fn())
    seconds = {name: [] for name in fns}
    rounds, began = 0, time.perf_counter()
    while rounds < repeats or time.perf_counter() - began < min_seconds:
        for name, fn in fns.items():
            start = time.perf_counter()
            jax.block_until_ready(fn())
            seconds[name].append(time.perf_counter() - start)
        rounds += 1
    return {name: np.asarray(values) for name, values in seconds.items()}


def time_best(fns: dict[str, Callable], repeats: int, min_seconds: float = 0.0) -> dict[str, float]:
    """Best seconds per function over interleaved rounds (see ``time_rounds``)."""
    return {name: float(v.min()) for name, v in time_rounds(fns, repeats, min_seconds).items()}


def faster_variant(rounds: dict[str, np.ndarray], names: tuple[str, ...]) -> str:
    """The variant among ``names`` with the lowest median time over the rounds.

    A ceiling with two layouts (batched or vmapped) is the faster *program*, so it is chosen
    once, on all of its calls, and then timed like the subject: one call per round. Taking
    the faster of the two calls in each round (as the bench did before 2026-12-01 11:00) gave
    the ceiling two draws of the host's noise against the subject's one. With two identical
    copies of one program as the "two layouts", that alone lowered a paired training ratio
    from 0.891 and 0.882 (each copy alone) to 0.872 (README, Benchmarks).
    """
    return min(names, key=lambda name: float(np.median(rounds[name])))


def paired_ratio(rounds: dict[str, np.ndarray], ceiling: str, subject: str) -> dict:
    """Time ratio ceiling/subject within each round, summarised by its median and quartiles.

    The best-of ratio compares two minima that may come from different moments; when the host
    is quiet for a call or two, whichever variant ran then gets the better best, and single
    runs of the ratio moved by +-0.06. Ratios of calls made seconds apart share the load of
    their moment, and their median ignores the rounds where only one call was disturbed.
    """
    per_round = rounds[ceiling] / rounds[subject]
    q25, median, q75 = np.percentile(per_round, [25, 50, 75])
    return {
        "median": float(median), "quartiles": [float(q25), float(q75)], "rounds": len(per_round)
    }


def describe_paired(paired: dict) -> str:
    low, high = paired["quartiles"]
    return (
        f"paired median {paired['median']:.3f} (quartiles {low:.3f}-{high:.3f}, "
        f"{paired['rounds']} rounds)"
    )
