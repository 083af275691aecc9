"""How the benchmarks time things on a shared machine: interleaved rounds, and two summaries.

The best-of time per variant estimates its speed on a quiet machine; the paired ratio (ratios
within each round) estimates how two variants compare under whatever load the host has.
"""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Optional

import jax
import numpy as np


def warm_up(fns: dict[str, Callable], parallel: Optional[bool] = None) -> None:
    """Call every function once (compile and first run), untimed.

    ``parallel`` (default: on the CPU backend) makes the calls from a pool of threads, one per
    core: XLA compiles without holding the GIL, so the programs of a case compile side by
    side. Off the CPU the calls are sequential, so that no two large programs hold device
    memory at once.
    """
    if parallel is None:
        parallel = jax.default_backend() == "cpu"
    workers = min(len(fns), os.cpu_count() or 1)
    if not parallel or workers < 2:
        for fn in fns.values():
            jax.block_until_ready(fn())
        return
    with ThreadPoolExecutor(workers) as pool:
        for done in [pool.submit(lambda fn=fn: jax.block_until_ready(fn())) for fn in fns.values()]:
            done.result()


def time_rounds(
    fns: dict[str, Callable], repeats: int, min_seconds: float = 0.0, warm: bool = True
) -> dict[str, np.ndarray]:
    """Seconds of every call, per function, over interleaved rounds (one call of each per
    round), so that load hits all alike.

    Every function is called once first (``warm_up``, not timed; ``warm=False`` when the
    caller has done it). Then at least
    ``repeats`` rounds, and more until ``min_seconds`` have passed: on a shared machine single
    calls vary, and more rounds narrow the paired ratio's quartiles.

    Returns:
      ``{name: seconds}``, one array per function with one entry per round.
    """
    if warm:
        warm_up(fns)
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
    once, on all of its calls, and then timed like the subject: one call per round. Taking the
    faster of the two calls in each round instead would give the ceiling two draws of the
    host's noise against the subject's one, and so bias the ratio down.
    """
    return min(names, key=lambda name: float(np.median(rounds[name])))


def paired_ratio(rounds: dict[str, np.ndarray], ceiling: str, subject: str) -> dict:
    """Time ratio ceiling/subject within each round, summarised by its median and quartiles.

    The best-of ratio compares two minima that may come from different moments; when the host
    is quiet for a call or two, whichever variant ran then gets the better best. Ratios of
    calls made within one round share the load of their moment, and their median ignores the
    rounds where only one call was disturbed.

    Returns:
      ``{"median", "quartiles": [q25, q75], "rounds"}`` of the per-round ratios; above 1 means
      the subject was faster than the ceiling.
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
