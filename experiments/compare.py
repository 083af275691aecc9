"""``eggroll-rl compare``: every algorithm, every seed, one env-step budget, one results folder.

A claim such as "EGGROLL matches OpenES and is faster per step" needs the algorithms run the
same way: same env, same budget, same seeds (vmapped in one program per algorithm), the same
evaluation of the mean policy. Each (env, algo) pair appends its rows to ``results.csv`` and
updates ``meta.json``, ``summary.md`` and ``curves.png`` as soon as it finishes, so a crash
loses only the pair that was running (whose ``runs/`` folder keeps checkpoints it resumes
from), and a rerun skips the finished pairs. Configs come from the env's preset
(``eggroll_rl.experiments.preset_files``); ``--set`` changes a field for a quick test.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import pathlib
import platform
import shlex
import subprocess
import sys
import tomllib
from typing import Callable, Optional, Sequence

from eggroll_rl.experiments import preset_files, results

ALGOS = ("eggroll", "openes", "ppo")
PAPER_ENVS = (
    "gymnax/CartPole-v1",
    "gymnax/Pendulum-v1",
    "brax/ant",
    "brax/humanoid",
    "brax/inverted_double_pendulum",
    "craftax/Craftax-Classic-Symbolic-AutoReset-v1",
    "craftax/Craftax-Symbolic-AutoReset-v1",
    "jumanji/Game2048-v1",
    "jumanji/Knapsack-v1",
    "jumanji/Snake-v1",
    "kinetix/l/hard_pinball",
    "kinetix/m/h17_thrustcontrol_left",
    "kinetix/s/h1_thrust_over_ball",
    "navix/DoorKey-8x8",
    "navix/Dynamic-Obstacles-6x6-Random",
    "navix/FourRooms",
)
# The part of the paper's set that a 2-core CPU runs in well under an hour, at each preset's
# `cpu_steps` budget: the cheapest env of each suite that installs here.
PAPER_CPU_ENVS = (
    "gymnax/CartPole-v1",
    "gymnax/Pendulum-v1",
    "brax/inverted_double_pendulum",
    "navix/DoorKey-8x8",
    "jumanji/Knapsack-v1",
)
SUITES = {"paper": PAPER_ENVS, "paper-cpu": PAPER_CPU_ENVS}


@dataclasses.dataclass(frozen=True)
class Plan:
    """What to run: envs x algos x seeds at one budget per env, written to ``out``."""

    env_ids: tuple[str, ...]
    algos: tuple[str, ...] = ALGOS
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    out: pathlib.Path = pathlib.Path("comparison")
    total_steps: Optional[int] = None  # None: the preset's budget (cpu_steps if cpu_budget)
    cpu_budget: bool = False
    overrides: dict = dataclasses.field(default_factory=dict)  # algo -> {field: value}
    evals: int = 20  # eval points aimed for per run
    iterations_per_chunk: Optional[int] = None
    progress: bool = True
    command: str = ""


def run_plan(plan: Plan, log: Callable[[str], None] = print) -> dict:
    """Run every unfinished (env, algo) pair of ``plan``; returns the final meta.json dict."""
    out = pathlib.Path(plan.out)
    out.mkdir(parents=True, exist_ok=True)
    meta = _read_meta(out)
    meta.update(_machine())
    meta["command"] = plan.command or meta.get("command", "")
    meta.setdefault("history", []).append({"command": meta["command"], "date": meta["date"]})
    meta.setdefault("envs", {})
    for env_id in plan.env_ids:
        _run_env(plan, env_id, meta, log)
    _write_outputs(out, meta)
    return meta


def _run_env(plan: Plan, env_id: str, meta: dict, log) -> None:
    from eggroll_rl import envs

    out = pathlib.Path(plan.out)
    info = meta["envs"].setdefault(env_id, {"algos": {}})
    preset = preset_files.for_env(env_id)
    try:
        task = envs.make(env_id)
    except (ValueError, ImportError) as error:
        info["skipped"] = str(error)
        log(f"skip {env_id}: {error}")
        _write_outputs(out, meta)
        return
    info.pop("skipped", None)
    budget = plan.total_steps
    if budget is None and preset is not None:
        budget = (plan.cpu_budget and preset.cpu_steps) or preset.total_steps
    if budget is None:
        raise ValueError(f"{env_id} has no preset: pass --total-steps for its budget.")
    info.update(
        total_steps=budget,
        seeds=list(plan.seeds),
        threshold=None if preset is None else preset.threshold,
        preset=None if preset is None else preset.name,
    )
    for algo in plan.algos:
        done = info["algos"].get(algo)
        if done is not None:
            if done["total_steps"] != budget or done["seeds"] != list(plan.seeds):
                raise ValueError(
                    f"{out} already holds {env_id} {algo} with budget {done['total_steps']:,} and "
                    f"seeds {done['seeds']}, not {budget:,} and {list(plan.seeds)}: pick another "
                    "--out, or delete that folder to start over."
                )
            log(f"skip {env_id} {algo}: already in {out / 'results.csv'}")
            continue
        if "random_return" not in info:
            import jax

            from eggroll_rl.experiments.baselines import random_return

            info["random_return"] = random_return(task, jax.random.key(0))
        info["algos"][algo] = _run_pair(plan, task, env_id, algo, budget, preset, log)
        meta["envs"][env_id] = info
        _write_outputs(out, meta)


def _config(algo: str, preset, budget: int, overrides: dict):
    fields = {**overrides.get("*", {}), **overrides.get(algo, {})}
    if "*" in overrides:  # fields set for every algo apply where the config has them
        known = {f.name for f in dataclasses.fields(preset_files.ALGOS[algo])}
        fields = {k: v for k, v in fields.items() if k in known or k in overrides.get(algo, {})}
    if preset is not None:
        return preset.config(algo, budget, **fields)
    cls = preset_files.ALGOS[algo]
    extra = {"algo": algo} if cls is preset_files.ESConfig else {}
    return preset_files._build(cls, {**extra, **fields, "total_steps": budget}, f"[{algo}]")


def _chunk(plan: Plan, config, task) -> int:
    """Iterations per compiled chunk so that a run has about ``plan.evals`` eval points."""
    if plan.iterations_per_chunk:
        return plan.iterations_per_chunk
    if isinstance(config, preset_files.PPOConfig):
        iterations = config.num_updates
    else:  # an upper bound on steps per generation, so a lower bound on generations
        per_gen = config.population_size * config.episodes_per_member * task.max_episode_steps
        iterations = config.total_steps // per_gen
    return max(1, iterations // plan.evals)


def _run_pair(plan: Plan, task, env_id: str, algo: str, budget: int, preset, log) -> dict:
    from eggroll_rl.agents.es import ESConfig, ESTrainer
    from eggroll_rl.agents.checkpoints import has_checkpoint
    from eggroll_rl.agents.loop import LoopConfig, run
    from eggroll_rl.agents.ppo import PPO

    config = _config(algo, preset, budget, plan.overrides)
    trainer = ESTrainer(task, config) if isinstance(config, ESConfig) else PPO(task, config)
    loop = LoopConfig(
        total_steps=budget,
        iterations_per_chunk=_chunk(plan, config, task),
        checkpoint_every=10,
        seeds=tuple(plan.seeds),
        progress=plan.progress,
    )
    run_dir = pathlib.Path(plan.out) / "runs" / env_id / algo
    resume = has_checkpoint(run_dir)  # a pair killed before its first checkpoint starts again
    record = {"algo": algo, "env": env_id, "seeds": list(plan.seeds),
              "config": dataclasses.asdict(config),
              "loop": {"iterations_per_chunk": loop.iterations_per_chunk,
                       "checkpoint_every": loop.checkpoint_every}}
    log(f"{env_id} {algo}: {budget:,} env steps x {len(plan.seeds)} seeds"
        + (" (resuming)" if resume else ""))
    result = run(trainer, loop, run_dir, resume=resume, config_record=record)
    results.replace_pair(pathlib.Path(plan.out) / "results.csv", env_id, algo, result.rows)
    return {
        "total_steps": budget,
        "seeds": list(plan.seeds),
        "config": record["config"],
        "iterations_per_chunk": loop.iterations_per_chunk,
        "compile_s": round(result.compile_s, 2),
        "wall_s": round(result.wall_s, 2),
        "finished": _now(),
    }


def _write_outputs(out: pathlib.Path, meta: dict) -> None:
    from eggroll_rl.experiments import plot, report

    tmp = out / "meta.json.tmp"
    tmp.write_text(json.dumps(meta, indent=2, default=str) + "\n")
    tmp.replace(out / "meta.json")
    rows = results.read(out / "results.csv")
    (out / "summary.md").write_text(report.summary(rows, meta))
    if rows:
        plot.draw([("", rows)], out / "curves.png")


def _read_meta(out: pathlib.Path) -> dict:
    path = out / "meta.json"
    return json.loads(path.read_text()) if path.exists() else {}


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def _machine() -> dict:
    import importlib.metadata

    import jax

    try:
        version = importlib.metadata.version("eggroll-rl")
    except importlib.metadata.PackageNotFoundError:
        version = None

    cpu = platform.processor()
    try:
        for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
            cwd=pathlib.Path(__file__).parent,
        ).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        commit = None
    return {
        "date": _now(),
        "cores": os.cpu_count(),
        "cpu": cpu,
        "python": platform.python_version(),
        "jax": jax.__version__,
        "backend": jax.default_backend(),
        "devices": [str(d) for d in jax.devices()],
        "eggroll_rl": version,
        "git_commit": commit,
    }


def parse_set(items: Sequence[str]) -> dict:
    """``["lr=0.01", "ppo.num_envs=8", "hidden=[16]"]`` -> ``{algo or "*": {field: value}}``.

    Values are TOML (``true``, ``0.01``, ``[16, 16]``, ``"sgd"``); types are checked against
    the configs.
    """
    overrides: dict = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep:
            raise ValueError(f"--set {item!r}: expected FIELD=VALUE or ALGO.FIELD=VALUE.")
        algo, _, field = key.rpartition(".")
        algo = algo or "*"
        if algo != "*" and algo not in ALGOS:
            raise ValueError(f"--set {item!r}: unknown algo {algo!r}; one of {ALGOS}.")
        try:
            value = tomllib.loads(f"v = {raw}")["v"]
        except tomllib.TOMLDecodeError:
            value = raw  # a bare word: a string
        targets = ALGOS if algo == "*" else (algo,)
        usable = [a for a in targets if field in {f.name for f in dataclasses.fields(preset_files.ALGOS[a])}]
        if not usable:
            raise ValueError(f"--set {item!r}: {field!r} is not a config field of {', '.join(targets)}.")
        checked = preset_files.check_table("--set", usable[0], {field: value})
        overrides.setdefault(algo, {}).update(checked)
    return overrides


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="eggroll-rl compare", description=__doc__.split("\n\n")[0].split(": ", 1)[1]
    )
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--env", action="append", help="env id (repeat for several)")
    where.add_argument("--suite", choices=sorted(SUITES), help="a set of envs (paper-cpu runs "
                       "each preset's cpu_steps budget): " + "; ".join(
        f"{name}: {', '.join(ids)}" for name, ids in SUITES.items()))
    parser.add_argument("--algos", default=",".join(ALGOS), help="comma-separated (default: all)")
    parser.add_argument("--seeds", type=int, default=5, help="seeds 0..N-1, vmapped (default 5)")
    parser.add_argument("--total-steps", type=int, help="env steps per seed (default: the preset's)")
    parser.add_argument("--out", type=pathlib.Path, required=True, help="results folder")
    parser.add_argument("--set", action="append", default=[], metavar="[ALGO.]FIELD=VALUE",
                        help="override a config field, e.g. --set hidden=[64,64] --set ppo.num_envs=32")
    parser.add_argument("--evals", type=int, default=20, help="eval points aimed for per run")
    parser.add_argument("--iterations-per-chunk", type=int, help="fixed iterations between evals")
    parser.add_argument("--no-progress", action="store_true")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> None:
    """Command-line entry point (``argv`` defaults to ``sys.argv[1:]``)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = _parser()
    args = parser.parse_args(argv)
    algos = tuple(a.strip() for a in args.algos.split(",") if a.strip())
    unknown = [a for a in algos if a not in ALGOS]
    if unknown or not algos:
        parser.error(f"--algos: unknown {unknown}; choose from {','.join(ALGOS)}.")
    if args.seeds < 1 or (args.total_steps is not None and args.total_steps < 1):
        parser.error("--seeds and --total-steps must be >= 1.")
    try:
        plan = Plan(
            env_ids=tuple(args.env) if args.env else SUITES[args.suite],
            algos=algos,
            seeds=tuple(range(args.seeds)),
            out=args.out,
            total_steps=args.total_steps,
            cpu_budget=args.suite == "paper-cpu",
            overrides=parse_set(args.set),
            evals=args.evals,
            iterations_per_chunk=args.iterations_per_chunk,
            progress=not args.no_progress,
            command=shlex.join(["eggroll-rl", "compare", *argv]),
        )
        run_plan(plan)
    except ValueError as error:
        raise SystemExit(f"eggroll-rl compare: {error}") from None
    print(f"done: {args.out / 'summary.md'}, {args.out / 'curves.png'}, {args.out / 'results.csv'}")


if __name__ == "__main__":
    main()
