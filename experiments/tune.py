"""Random search over the paper's ES search space, the way the presets' ES values were chosen.

The paper tuned each (algorithm, env) with 20 random-search trials. Our CPU budgets are far
smaller than its GPU ones, so ``--choose`` narrows or replaces a field's choices (for example
smaller populations, so that a short budget still holds enough generations); the trials table
records every trial's config and result, so a preset's values can be traced to the run that
picked them.

    python experiments/tune.py --env gymnax/Pendulum-v1 --algo eggroll --trials 12 \
        --total-steps 1500000 --seeds 0 --choose population_size=64,128,256 \
        --out experiments/results/tuning/Pendulum-v1-eggroll.csv
"""

from __future__ import annotations

import argparse
import csv
import json
import pathlib
import random
import sys
import time
import tomllib
from typing import Optional, Sequence

# The paper's ES search space (../shared/PAPER_NOTES.md), EGGROLL and OpenES alike.
SPACE: dict[str, list] = {
    "population_size": [512, 1024, 2048, 4096],
    "rank": [1, 2, 4],
    "optimizer": ["sgd", "adam", "adamw"],
    "lr": [1e-3, 1e-2, 1e-1],
    "lr_decay": [0.995, 0.999, 0.9995, 1.0],
    "sigma": [0.05, 0.2, 0.5],
    "sigma_decay": [0.995, 0.999, 0.9995, 1.0],
    "fitness_shaping": ["centered_rank", "zscore"],
    "deterministic_policy": [True, False],
    "episodes_per_member": [1, 4, 8],
}


def parse_choices(items: Sequence[str]) -> dict[str, list]:
    """``["population_size=64,128", "optimizer=adam"]`` -> ``{"population_size": [64, 128], ...}`` (TOML values)."""
    out = {}
    for item in items:
        name, sep, values = item.partition("=")
        if not sep or name not in SPACE:
            raise SystemExit(f"--choose {item!r}: expected FIELD=V1,V2 with FIELD in {sorted(SPACE)}.")
        out[name] = [tomllib.loads(f"v = {v.strip()}")["v"] for v in values.split(",")]
    return out


def sample(space: dict[str, list], rng: random.Random, algo: str) -> dict:
    """One trial: a value drawn uniformly from each list of ``space`` (OpenES drops ``rank``)."""
    trial = {name: rng.choice(values) for name, values in space.items()}
    if algo == "openes":
        trial.pop("rank")
    return trial


def main(argv: Optional[Sequence[str]] = None) -> None:
    """Command-line entry point (``argv`` defaults to ``sys.argv[1:]``)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--env", required=True)
    parser.add_argument("--algo", choices=("eggroll", "openes"), required=True)
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--total-steps", type=int, required=True)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--choose", nargs="*", default=[], help="FIELD=V1,V2 replaces a field's choices")
    parser.add_argument("--search-seed", type=int, default=0)
    parser.add_argument("--out", type=pathlib.Path, required=True, help="trials table (CSV)")
    args = parser.parse_args(argv)

    from eggroll_rl import envs
    from eggroll_rl.agents.es import ESConfig, ESTrainer
    from eggroll_rl.agents.loop import LoopConfig, run

    space = {**SPACE, **parse_choices(args.choose)}
    rng = random.Random(args.search_seed)
    task = envs.make(args.env)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    done = []
    if args.out.exists():  # resume: keep finished trials, continue the same random sequence
        with args.out.open() as handle:
            done = list(csv.DictReader(handle))
    fields = ["trial", "config", "final_mean", "finals", "best_eval", "wall_s", "compile_s"]
    with args.out.open("a", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        if not done:
            writer.writeheader()
        for trial in range(args.trials):
            config = sample(space, rng, args.algo)
            if trial < len(done):
                continue
            es = ESConfig(algo=args.algo, total_steps=args.total_steps, **config)
            es.validate()
            start = time.perf_counter()
            result = run(
                ESTrainer(task, es),
                LoopConfig(total_steps=args.total_steps, iterations_per_chunk=5,
                           seeds=tuple(args.seeds), progress=False),
            )
            finals = result.final()
            row = {
                "trial": trial,
                "config": json.dumps(config),
                "final_mean": sum(finals) / len(finals),
                "finals": json.dumps([round(f, 2) for f in finals]),
                "best_eval": max(r["eval_return"] for r in result.rows),
                "wall_s": round(time.perf_counter() - start, 1),
                "compile_s": round(result.compile_s, 1),
            }
            writer.writerow(row)
            handle.flush()
            print(f"trial {trial}: final {row['final_mean']:.1f} {config}", file=sys.stderr)
    with args.out.open() as handle:
        rows = list(csv.DictReader(handle))
    best = max(rows, key=lambda r: float(r["final_mean"]))
    print(f"best: trial {best['trial']} final {float(best['final_mean']):.1f} {best['config']}")


if __name__ == "__main__":
    main()
