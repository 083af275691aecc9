"""Random search over the paper's ES search space: EGGROLL and OpenES tuned alike, per task.

The paper tunes each (algorithm, env) with 20 random-search trials, then reruns the best
config on fresh seeds. ``python -m eggroll_rl.experiments.tune`` does the same at CPU scale:

    python -m eggroll_rl.experiments.tune --suite paper-cpu --apply \
        --out-dir experiments/results/tuning/paper-cpu

- **Same search for both.** Trial ``k`` of EGGROLL and of OpenES is the same config (OpenES
  ignores ``rank``), with the same env-step budget and seeds, and the trials run interleaved
  (EGGROLL k, OpenES k, EGGROLL k+1, ...), so a search stopped early has tuned both equally.
  Trial 0 is the preset's ``[eggroll]`` values as they were (the incumbent), the others random
  draws from the space.
- **Tuning seeds are not the comparison's seeds.** Trials train on ``--seeds`` (default 1000),
  the final runs of ``eggroll-rl compare`` on 0, 1, 2, ...
- **CPU budgets.** Each preset sets its search's trials, env steps per trial and population
  choices (``tune_trials``, ``tune_steps``, ``tune_population``): budgets here are far smaller
  than the paper's GPU ones, so the populations are smaller than its 512-4096, leaving a short
  budget enough generations. ``--trials``, ``--total-steps`` and ``--choose`` override them.
  Fields the space does not cover come from the env's preset (the network: the paper's 3 x 256
  with LayerNorm).
- **Every trial is kept.** One CSV per (env, algo) in ``--out-dir``, a row per trial with its
  config, budget, seeds and result, appended as each trial ends; a rerun continues the same
  random sequence after the trials already there. ``--apply`` then writes each algorithm's best
  trial (highest mean final return) into the env's preset, naming the trial in the table's
  comment, so a preset's values trace back to the run that picked them.
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
ES_ALGOS = ("eggroll", "openes")
FIELDS = ["trial", "config", "total_steps", "seeds", "final_mean", "finals", "best_eval",
          "wall_s", "compile_s"]


def parse_choices(items: Sequence[str]) -> dict[str, list]:
    """``["population_size=64,128", "optimizer=adam"]`` -> ``{"population_size": [64, 128], ...}`` (TOML values)."""
    out = {}
    for item in items:
        name, sep, values = item.partition("=")
        if not sep or name not in SPACE:
            raise SystemExit(f"--choose {item!r}: expected FIELD=V1,V2 with FIELD in {sorted(SPACE)}.")
        out[name] = [tomllib.loads(f"v = {v.strip()}")["v"] for v in values.split(",")]
    return out


def sample(space: dict[str, list], rng: random.Random) -> dict:
    """One trial: a value drawn uniformly from each list of ``space`` (both algorithms use the
    same draw; ``tune_env`` drops ``rank`` for OpenES)."""
    return {name: rng.choice(values) for name, values in space.items()}


def incumbent(preset, space: dict[str, list]) -> dict:
    """The values of the search's fields in the preset's ``[eggroll]`` table as it is (its
    config defaults where the table leaves a field out): trial 0, so that a search never ends
    below the values it started from on its own budget and seed."""
    config = preset.config("eggroll")
    return {name: getattr(config, name) for name in space}


def trials_path(out_dir: pathlib.Path, env_id: str, algo: str) -> pathlib.Path:
    """``<out_dir>/<suite>/<env name>-<algo>.csv``."""
    return out_dir / f"{env_id}-{algo}.csv"


def read_trials(path: pathlib.Path) -> list[dict]:
    """The trials recorded in ``path`` (none if it does not exist)."""
    if not path.exists():
        return []
    with path.open() as handle:
        return list(csv.DictReader(handle))


def best_trial(rows: list[dict]) -> Optional[dict]:
    """The trial with the highest mean final return (the first of equals), or None."""
    return max(rows, key=lambda row: float(row["final_mean"])) if rows else None


def run_trial(task, preset, algo: str, config: dict, total_steps: int, seeds: Sequence[int]) -> dict:
    """Train one trial; its CSV row (without the trial number)."""
    from eggroll_rl.agents.es import ESTrainer
    from eggroll_rl.agents.loop import LoopConfig, run

    es = preset.config(algo, total_steps, **config)
    start = time.perf_counter()
    result = run(
        ESTrainer(task, es),
        LoopConfig(total_steps=total_steps, iterations_per_chunk=5, seeds=tuple(seeds),
                   progress=False, xla_cpu_options=preset.xla_cpu_options),
    )
    finals = result.final()
    return {
        "config": json.dumps(config),
        "total_steps": total_steps,
        "seeds": json.dumps(list(seeds)),
        "final_mean": sum(finals) / len(finals),
        "finals": json.dumps([round(f, 4) for f in finals]),
        "best_eval": max(r["eval_return"] for r in result.rows),
        "wall_s": round(time.perf_counter() - start, 1),
        "compile_s": round(result.compile_s, 1),
    }


def apply_best(env_id: str, out_dir: pathlib.Path, algos: Sequence[str]) -> None:
    """Write each algorithm's best trial into the env's bundled preset (its table's fields from
    the search space are replaced; other fields, e.g. the network, stay)."""
    from eggroll_rl.experiments import preset_files

    path = preset_files.path_of(env_id)
    text = path.read_text()
    for algo in algos:
        path_csv = trials_path(out_dir, env_id, algo)
        rows = read_trials(path_csv)
        best = best_trial(rows)
        if best is None:
            raise SystemExit(f"--apply: no trials for {env_id} {algo} in {path_csv}.")
        comment = (f"Best of {len(rows)} trials of this task's search (trial {best['trial']}, mean final "
                   f"return {float(best['final_mean']):.4g} at {int(best['total_steps']):,} env steps, "
                   f"seeds {best['seeds']}): {path_csv.as_posix()}")
        text = preset_files.replace_fields(text, algo, json.loads(best["config"]), comment)
    path.write_text(text)
    preset_files.load(path)  # still a valid preset
    print(f"applied the best trials to {path}")


def tune_env(env_id: str, args) -> None:
    """Run (or finish) the search of one env and, with ``--apply``, write its best trials."""
    from eggroll_rl import envs
    from eggroll_rl.experiments import preset_files

    preset = preset_files.load(env_id)
    trials = args.trials or preset.tune_trials
    steps = args.total_steps or preset.tune_steps
    if not trials or not steps:
        raise SystemExit(f"{env_id}: no tune_trials/tune_steps in its preset; pass --trials and "
                         "--total-steps.")
    space = dict(SPACE)
    if preset.tune_population:
        space["population_size"] = list(preset.tune_population)
    space.update(parse_choices(args.choose))
    rng = random.Random(args.search_seed)
    done = {}
    for algo in args.algos:
        path = trials_path(args.out_dir, env_id, algo)
        done[algo] = read_trials(path)
        for row in done[algo]:
            if int(row["total_steps"]) != steps or json.loads(row["seeds"]) != args.seeds:
                raise SystemExit(
                    f"{path} holds trials at {int(row['total_steps']):,} steps and seeds "
                    f"{row['seeds']}, not {steps:,} and {args.seeds}: pick another --out-dir."
                )
    task = None
    for trial in range(trials):
        # Trial 0 is the preset's values before the search (the incumbent); the others are
        # random draws from the space.
        draw = incumbent(preset, space) if trial == 0 else sample(space, rng)
        for algo in args.algos:
            if trial < len(done[algo]):
                continue
            task = task or envs.make(env_id)
            config = dict(draw)
            if algo == "openes":
                config.pop("rank")
            row = {"trial": trial, **run_trial(task, preset, algo, config, steps, args.seeds)}
            path = trials_path(args.out_dir, env_id, algo)
            path.parent.mkdir(parents=True, exist_ok=True)
            new = not path.exists()
            with path.open("a", newline="") as handle:
                writer = csv.DictWriter(handle, fieldnames=FIELDS)
                if new:
                    writer.writeheader()
                writer.writerow(row)
            print(f"{env_id} {algo} trial {trial}: final {row['final_mean']:.4g} "
                  f"({row['wall_s']} s) {config}", file=sys.stderr, flush=True)
    for algo in args.algos:
        best = best_trial(read_trials(trials_path(args.out_dir, env_id, algo)))
        print(f"{env_id} {algo} best: trial {best['trial']} final "
              f"{float(best['final_mean']):.4g} {best['config']}", flush=True)
    if args.apply:
        apply_best(env_id, args.out_dir, args.algos)


def main(argv: Optional[Sequence[str]] = None) -> None:
    """Command-line entry point (``argv`` defaults to ``sys.argv[1:]``)."""
    from eggroll_rl.experiments import compare

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--env")
    which.add_argument("--suite", choices=sorted(compare.SUITES),
                       help="every env of the suite, in order (those not installed are skipped)")
    parser.add_argument("--algos", nargs="+", choices=ES_ALGOS, default=list(ES_ALGOS))
    parser.add_argument("--trials", type=int, help="trials per algorithm (default: the preset's tune_trials)")
    parser.add_argument("--total-steps", type=int,
                        help="env steps per trial and seed (default: the preset's tune_steps)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1000],
                        help="tuning seeds (default 1000: not among the comparison's 0, 1, ...)")
    parser.add_argument("--choose", nargs="*", default=[], help="FIELD=V1,V2 replaces a field's choices")
    parser.add_argument("--search-seed", type=int, default=0)
    parser.add_argument("--out-dir", type=pathlib.Path, required=True, help="trials tables (CSV)")
    parser.add_argument("--apply", action="store_true",
                        help="write each env's best trials into its preset once its search is done")
    args = parser.parse_args(argv)
    for name in ("trials", "total_steps"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1.")
    if args.env:
        tune_env(args.env, args)
        return
    for env_id in compare.SUITES[args.suite]:
        try:
            tune_env(env_id, args)
        except ImportError as error:  # the env's suite is not installed
            print(f"{env_id}: skipped ({error})", flush=True)


if __name__ == "__main__":
    main()
