"""Training throughput of every paper task x algorithm on this machine, to size CPU budgets.

The comparison's budgets (``cpu_steps`` in each preset) and the GPU-time estimates of
``--suite paper`` are set from measured training speed, not guessed: this study trains each
(env, algorithm) with its preset config, the comparison's seeds vmapped together, for a fixed
number of training seconds after compiling, and records env steps per second (all seeds
together, the final eval included, as ``compare`` reports it) and the compile time.

    python -m eggroll_rl.experiments.studies.paper_cpu_sizing --seconds 15 \
        --out experiments/results/paper_cpu_sizing.json

The JSON is rewritten after each pair, and a rerun skips pairs already in it, so the study can
be stopped and resumed. ``--set algo.field=value`` changes a config field (as in ``compare``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import pathlib
import platform
import time
from typing import Optional, Sequence

from eggroll_rl.experiments import compare, preset_files


def measure(env_id: str, algo: str, seeds: int, seconds: float, overrides: dict) -> dict:
    """Train one pair for ``seconds`` of training time; its throughput and compile time."""
    import jax
    import numpy as np

    from eggroll_rl import envs
    from eggroll_rl.agents.es import ESConfig, ESTrainer
    from eggroll_rl.agents.loop import LoopConfig, run
    from eggroll_rl.agents.ppo import PPO

    preset = preset_files.for_env(env_id)
    config = compare._config(algo, preset, preset.total_steps, overrides)
    task = envs.make(env_id)
    trainer = ESTrainer(task, config) if isinstance(config, ESConfig) else PPO(task, config)
    loop = LoopConfig(total_steps=config.total_steps, time_budget=seconds,
                      iterations_per_chunk=1_000_000, seeds=tuple(range(seeds)), progress=False)
    result = run(trainer, loop)
    steps = int(np.asarray(jax.device_get(result.state.env_steps)).sum())
    return {
        "env_steps": steps,
        "wall_s": round(result.wall_s, 2),
        "compile_s": round(result.compile_s, 2),
        "steps_per_s": round(steps / result.wall_s, 1),
        "config": dataclasses.asdict(config),
    }


def main(argv: Optional[Sequence[str]] = None) -> None:
    """Command-line entry point (``argv`` defaults to ``sys.argv[1:]``)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--envs", nargs="*", default=list(compare.PAPER_ENVS))
    parser.add_argument("--algos", nargs="*", default=list(compare.ALGOS))
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--set", nargs="*", default=[], metavar="ALGO.FIELD=VALUE")
    parser.add_argument("--out", type=pathlib.Path, required=True)
    args = parser.parse_args(argv)
    overrides = compare.parse_set(args.set)
    data = json.loads(args.out.read_text()) if args.out.exists() else {}
    data.setdefault("machine", {"cpu_count": __import__("os").cpu_count(),
                                "processor": platform.processor() or platform.machine()})
    data.setdefault("seeds", args.seeds)
    data.setdefault("seconds", args.seconds)
    pairs = data.setdefault("pairs", {})
    for env_id in args.envs:
        for algo in args.algos:
            key = f"{env_id} {algo}"
            if key in pairs:
                continue
            start = time.perf_counter()
            try:
                pairs[key] = measure(env_id, algo, args.seeds, args.seconds, overrides)
            except ImportError as error:  # the env's suite is not installed
                pairs[key] = {"skipped": str(error)}
            print(f"{key}: {pairs[key].get('steps_per_s', pairs[key].get('skipped'))} "
                  f"({time.perf_counter() - start:.0f} s)", flush=True)
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(data, indent=1, default=str) + "\n")


if __name__ == "__main__":
    main()
