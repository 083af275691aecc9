"""Train EGGROLL, OpenES or PPO on an env; the run folder gets config.json, metrics.csv,
curve.png, checkpoints and the exported policy.

--algo and --env pick the trainer and the task. Every field of that algorithm's config is a flag
too (--population-size 512, --lr 0.01, --hidden 64 64), with the env's bundled preset as
defaults: see eggroll-rl train --algo ALGO --env ENV --help. Everything is validated before
anything compiles. --resume RUN_DIR continues a run from its newest good checkpoint with the
config saved in that run.
"""

# This command is a thin layer over eggroll_rl.agents.api: parse, call the API, print the
# report lines. The Python API (``eggroll_rl.agents.train``) does everything else.

from __future__ import annotations

import argparse
import pathlib
import sys

from eggroll_rl.agents import api
from eggroll_rl.agents.api import export  # noqa: F401  (re-exported: tests and scripts use it)
from eggroll_rl.agents.es import ESConfig
from eggroll_rl.agents.int8_es import Int8ESConfig
from eggroll_rl.agents.loop import run  # noqa: F401  (a seam: tests stub it to forbid training)

CONFIGS = api.CONFIGS
PROG = "eggroll-rl train"
# Flags of earlier versions -> the flag that replaced them.
RENAMED_FLAGS = {
    "--pop-size": "--population-size",
    "--n-parallel-evaluations": "--episodes-per-member",
    "--rank-transform": "--fitness-shaping centered_rank",
    "--no-rank-transform": "--fitness-shaping zscore",
}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Config fields of the chosen algorithm: eggroll-rl train --algo ALGO --env ENV --help",
        add_help=False,
    )
    parser.add_argument("--algo", choices=sorted(CONFIGS), help="the algorithm to train")
    parser.add_argument("--env", help="env id, e.g. gymnax/CartPole-v1 (eggroll-rl envs lists them)")
    parser.add_argument(
        "--preset",
        help="a preset by env id or .toml path (eggroll_rl/experiments/task-presets): its env, "
        "budget and config as defaults; --algo defaults to eggroll",
    )
    parser.add_argument(
        "--seed", type=int, action="append",
        help="a seed; repeat for several seeds, trained side by side in one program (default 0)",
    )
    parser.add_argument(
        "--total-steps", type=int,
        help="env-step budget per seed (default: the preset's); the run stops at most one "
        "generation/update past it",
    )
    parser.add_argument(
        "--time-budget", type=float, metavar="SECONDS",
        help="wall-clock training time, compile excluded: stop at the first chunk end past it "
        "(an alternative to --total-steps; with both, whichever comes first)",
    )
    parser.add_argument("--out", type=pathlib.Path, help="run folder (default runs/ALGO-ENV-TIME)")
    parser.add_argument(
        "--resume", type=pathlib.Path, metavar="RUN_DIR",
        help="continue the run in this folder from its newest checkpoint, with its saved config",
    )
    parser.add_argument(
        "--iterations-per-chunk", type=int, default=None,
        help="generations (ES) or updates (PPO) between evals, logs and progress updates "
        "(default: 5 for ES, 2 with --stop-at, 10 for PPO and --int8)",
    )
    parser.add_argument("--checkpoint-every", type=int, default=5, help="chunks between checkpoints")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument(
        "--stop-at", type=float, metavar="RETURN",
        help="stop early once every seed's eval return is >= RETURN (e.g. 475 on CartPole)",
    )
    parser.add_argument(
        "--int8", action="store_true",
        help="eggroll only: int8 policy, integer EGGROLL; exports RUN_DIR/policy_int8.npz",
    )
    parser.add_argument(
        "--xla-cpu-options", action="store_true",
        help="compile with XLA:CPU options that speed up float rollouts on CPU "
        "(see docs/performance.md)",
    )
    parser.add_argument("-h", "--help", action="store_true", help="show this help and exit")
    return parser


def renamed_flag_error(argv: list[str]):
    """The one-line error for a flag that was renamed, or None."""
    for arg in argv:
        flag = arg.split("=", 1)[0].replace("_", "-")
        if flag in RENAMED_FLAGS:
            return f"{PROG}: {flag} was renamed {RENAMED_FLAGS[flag]}"
    return None


def build(argv: list[str]) -> api.Plan:
    """Parse and validate everything; returns ``(trainer, loop, run_dir, resume, record)``.

    Nothing compiles here: a bad flag or value raises ``ValueError`` (or exits via argparse).
    """
    parser = _parser()
    args, rest = parser.parse_known_args(argv)
    progress = not args.no_progress
    if args.resume is not None:
        if rest:
            parser.error(f"--resume continues with the saved config; drop {' '.join(rest)}")
        return api.plan_resume(args.resume, progress=progress)
    if args.help and not args.algo and not args.preset:
        parser.print_help()
        raise SystemExit(0)
    if args.preset:
        from eggroll_rl.experiments.preset_files import load

        chosen = load(args.preset)  # a PresetError (ValueError) names the file and field
        args.env, args.algo = args.env or chosen.env, args.algo or "eggroll"
    if args.help and args.algo and not args.env:
        args.env = "ENV"  # help without an env: the config class's own defaults
    if not args.algo or not args.env:
        parser.error("--algo and --env are required (or --resume RUN_DIR)")
    if args.int8 and args.algo != "eggroll":
        parser.error(f"--int8 trains integer EGGROLL: use it with --algo eggroll, not {args.algo}")
    default, source = api.default_config(args.algo, args.env, preset=args.preset, int8=args.int8)
    if args.total_steps is not None:
        default = type(default)(**{**_fields(default), "total_steps": args.total_steps})
    if args.help:
        parser.print_help()
        print()
        rest = rest + ["--help"]
    config = _parse_config(type(default), default, rest, args.algo, args.env, source)
    out = args.out if args.out is not None else api.default_run_dir(args.algo, args.env)
    return api.plan(
        args.algo, args.env, seeds=tuple(args.seed or [0]), config=config,
        total_steps=args.total_steps, time_budget=args.time_budget, out=out,
        progress=progress, stop_at=args.stop_at, xla_cpu_options=args.xla_cpu_options,
        preset=args.preset, int8=args.int8, iterations_per_chunk=args.iterations_per_chunk,
        checkpoint_every=args.checkpoint_every,
    )


def _fields(config) -> dict:
    import dataclasses

    return {field.name: getattr(config, field.name) for field in dataclasses.fields(config)}


def _parse_config(cls, default, rest, algo, env, source):
    """The config from the remaining flags, tyro over ``cls`` with ``default`` as defaults."""
    import tyro

    kind = {ESConfig: "ES", Int8ESConfig: "integer EGGROLL"}.get(cls, "PPO")
    description = (
        f"{kind} hyperparameters for {algo} on {env} (defaults: {source}). The env-step budget "
        "is --total-steps."
    )
    return tyro.cli(cls, args=rest, default=default, prog=f"{PROG} --algo {algo} --env {env}",
                    description=description)


def main(argv=None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    renamed = renamed_flag_error(argv)
    if renamed is not None:
        print(renamed, file=sys.stderr)
        raise SystemExit(2)
    from eggroll_rl import distributed

    # Multi-host: JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID on every host.
    distributed.initialize()
    try:
        planned = build(argv)
    except ValueError as error:
        raise SystemExit(f"{PROG}: {error}") from None
    record = planned.record
    print(f"training {record['algo']} on {record['env']} -> {planned.run_dir}", flush=True)
    result = api.execute(planned)
    import jax

    if jax.process_index() != 0:
        return  # multi-host: process 0 exports the policy and reports
    for line in report_lines(result, planned.loop.seeds, record.get("threshold"),
                             result.export_path):
        print(line)


def report_lines(result, seeds, threshold, export_path) -> list[str]:
    """The run's last lines. Env steps are per seed; with several seeds, the most any seed
    spent (seeds end episodes at different times), in both lines alike."""
    final = result.final()
    lines = [
        f"done: eval return {sum(final) / len(final):.1f} (seeds {list(seeds)}), "
        f"{max(result.final('env_steps')):,} env steps, {result.wall_s:.1f} s training "
        f"+ {result.compile_s:.1f} s compile; policy -> {export_path}"
    ]
    if threshold is not None:
        reached = result.first_reaching(threshold)
        lines.append(
            f"eval return >= {threshold:g} on every seed: "
            + ("not reached" if reached is None else
               f"at {reached['env_steps']:,} env steps, {reached['wall_s']:.1f} s training "
               f"+ {result.compile_s:.1f} s compile")
        )
    return lines
