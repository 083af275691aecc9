"""Train EGGROLL, OpenES or PPO on an env; the run folder gets config.json, metrics.csv,
curve.png, checkpoints and the exported policy.

--algo and --env pick the trainer and the task. Every field of that algorithm's config is a flag
too (--population-size 512, --lr 0.01, --hidden 64 64), with the env's bundled preset as
defaults: see eggroll-rl train --algo ALGO --env ENV --help. Everything is validated before
anything compiles, the run folder included: a fresh run refuses a folder that holds another run
(--overwrite replaces it), and a folder another process trains in (its run.lock).

--resume RUN_DIR continues a run from its newest good checkpoint with the config saved in that
run. Flags that contradict that config are refused; --total-steps (or --time-budget) extends
the run's budget and is recorded in its config.json. A run with no checkpoint left is refused
unless --restart.

Expected failures (bad values or folders, unsupported envs, corrupt files, a diverged run)
print one line, "eggroll-rl train: ...", and exit with status 1 (2 for unknown flags); --debug
shows the traceback instead.
"""

# This command is a thin layer over eggroll_rl.agents.api: parse, call the API, print the
# report lines. The Python API (``eggroll_rl.agents.train``) does everything else.

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import errno
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
        "generation/update past it. With --resume: a new, larger budget that extends the run "
        "(recorded in its config.json; PPO's learning-rate annealing follows it)",
    )
    parser.add_argument(
        "--time-budget", type=float, metavar="SECONDS",
        help="wall-clock training time, compile excluded: stop at the first chunk end past it "
        "(an alternative to --total-steps; with both, whichever comes first)",
    )
    parser.add_argument(
        "--out", type=pathlib.Path,
        help="run folder (default runs/ALGO-ENV-TIME); it must not hold another run",
    )
    parser.add_argument(
        "--overwrite", action="store_true",
        help="let a fresh run replace the run in --out (its config, metrics, checkpoints and "
        "policy are deleted first)",
    )
    parser.add_argument(
        "--resume", type=pathlib.Path, metavar="RUN_DIR",
        help="continue the run in this folder from its newest checkpoint, with its saved config "
        "(other flags must agree with it, except --total-steps/--time-budget, which extend it)",
    )
    parser.add_argument(
        "--restart", action="store_true",
        help="with --resume: if the run has no checkpoint left, train it again from the start "
        "with its saved config (its metrics and policy are replaced)",
    )
    parser.add_argument(
        "--iterations-per-chunk", type=int, default=None,
        help="generations (ES) or updates (PPO) between evals, logs and progress updates "
        "(default: 5 for ES, 2 with --stop-at, 10 for PPO and --int8)",
    )
    parser.add_argument(
        "--checkpoint-every", type=int, default=None, help="chunks between checkpoints (default 5)"
    )
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
        "--seeds-in-sequence", action=argparse.BooleanOptionalAction, default=None,
        help="with several --seed: run them one after the other instead of vmapped side by side "
        "(the same runs up to float rounding; cheaper where seeds' episode lengths drift apart; "
        "default: the preset's)",
    )
    parser.add_argument(
        "--xla-cpu-options", action="store_true",
        help="compile with XLA:CPU options that speed up float rollouts on CPU "
        "(see docs/performance.md)",
    )
    parser.add_argument(
        "--debug", action="store_true",
        help="show the full traceback of an error instead of its one-line message",
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
    """Parse and validate everything; returns the ``api.Plan`` (``(trainer, loop, run_dir,
    resume, record, overwrite)``) that ``api.execute`` runs.

    Nothing compiles here: a bad flag or value raises ``ValueError`` (or exits via argparse).
    """
    parser = _parser()
    args, rest = parser.parse_known_args(argv)
    progress = not args.no_progress
    if args.help and (args.resume is not None or (not args.algo and not args.preset)):
        parser.print_help()
        raise SystemExit(0)
    if args.resume is not None:
        _check_resume_flags(args, rest)
        return api.plan_resume(
            args.resume, progress=progress, total_steps=args.total_steps,
            time_budget=args.time_budget, restart=args.restart,
        )
    if args.restart:
        parser.error("--restart goes with --resume RUN_DIR (a fresh run starts from scratch)")
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
        checkpoint_every=5 if args.checkpoint_every is None else args.checkpoint_every,
        overwrite=args.overwrite, seeds_in_sequence=args.seeds_in_sequence,
    )


def _check_resume_flags(args: argparse.Namespace, rest: list[str]) -> None:
    """Raise ``ValueError`` (one line naming the flag and the saved value) for any flag given
    with --resume that contradicts the run's saved config.

    Flags that repeat the saved value are accepted; --total-steps and --time-budget are not
    checked here (they extend the budget: ``api.plan_resume``), nor are --no-progress,
    --restart and --debug.
    """
    run_dir = args.resume
    saved, config = api.saved_run(run_dir)  # a missing or non-run folder: one line
    where = run_dir / "config.json"

    def refuse(flag: str, given: str, recorded: str):
        raise ValueError(
            f"{flag}{' ' + given if given else ''} contradicts the run being resumed ({where} has "
            f"{recorded}): drop "
            f"{flag} to resume it as saved, or start a new run with another --out."
        )

    if args.overwrite:
        raise ValueError(
            "--overwrite starts a new run over an old one; it does not go with --resume."
        )
    if args.preset:
        raise ValueError(
            "--preset picks a new run's defaults; --resume continues with the saved config: "
            "drop --preset."
        )
    if args.out is not None and args.out.resolve() != run_dir.resolve():
        refuse("--out", str(args.out), f"the run itself in {run_dir}; --resume writes there")
    if args.algo is not None and args.algo != saved["algo"]:
        refuse("--algo", args.algo, f"algo {saved['algo']}")
    if args.env is not None and args.env != saved["env"]:
        refuse("--env", args.env, f"env {saved['env']}")
    if args.seed and list(args.seed) != list(saved["seeds"]):
        refuse("--seed", " --seed ".join(map(str, args.seed)), f"seeds {saved['seeds']}")
    if args.int8 and not saved.get("int8", False):
        refuse("--int8", "", "a float run, not int8")
    loop = saved["loop"]
    for flag, given, key in (
        ("--iterations-per-chunk", args.iterations_per_chunk, "iterations_per_chunk"),
        ("--checkpoint-every", args.checkpoint_every, "checkpoint_every"),
        ("--stop-at", args.stop_at, "stop_at"),
    ):
        if given is not None and given != loop.get(key):
            refuse(flag, f"{given:g}", f"{key}={loop.get(key)}")
    if args.xla_cpu_options and not loop.get("xla_cpu_options", False):
        refuse("--xla-cpu-options", "", "xla_cpu_options=false")
    saved_order = loop.get("seeds_in_sequence", False)
    if args.seeds_in_sequence is not None and args.seeds_in_sequence != saved_order:
        flag = "--seeds-in-sequence" if args.seeds_in_sequence else "--no-seeds-in-sequence"
        refuse(flag, "", f"seeds_in_sequence={str(saved_order).lower()}")
    if not rest:
        return
    parsed = _parse_config(type(config), config, rest, saved["algo"], saved["env"],
                           f"the run in {run_dir}")
    for field in dataclasses.fields(config):
        given, recorded = getattr(parsed, field.name), getattr(config, field.name)
        if given != recorded:
            flag = "--" + field.name.replace("_", "-")
            shown = " ".join(map(str, given)) if isinstance(given, tuple) else str(given)
            refuse(flag, shown, f"{field.name}={recorded}")


def _fields(config) -> dict:
    return {field.name: getattr(config, field.name) for field in dataclasses.fields(config)}


def _parse_config(cls, default, rest, algo, env, source):
    """The config from the remaining flags, tyro over ``cls`` with ``default`` as defaults."""
    import tyro

    kind = "integer EGGROLL" if cls is Int8ESConfig else "ES" if issubclass(cls, ESConfig) else "PPO"
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

    debug = "--debug" in argv
    # Multi-host: JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID on every host.
    distributed.initialize()
    with one_line_errors(debug, training=False):
        planned = build(argv)
    record = planned.record
    print(f"training {record['algo']} on {record['env']} -> {planned.run_dir}", flush=True)
    with one_line_errors(debug, training=True):  # diverged, nothing to resume, disk full, ...
        result = api.execute(planned)
    import jax

    if jax.process_index() != 0:
        return  # multi-host: process 0 exports the policy and reports
    lines = report_lines(result, planned.loop.seeds, record.get("threshold"), result.export_path)
    signum = result.result.signal
    if signum is not None:  # SIGINT/SIGTERM: saved at the chunk's end, then exit 128 + signal
        import signal

        name = signal.Signals(signum).name
        lines[0] = lines[0].replace("done:", f"stopped by {name}:", 1)
        lines.append(f"stopped by {name}; saved to {planned.run_dir} (continue with: "
                     f"eggroll-rl train --resume {planned.run_dir})")
    for line in lines:
        print(line)
    if signum is not None:
        sys.stdout.flush()
        raise SystemExit(128 + signum)


@contextlib.contextmanager
def one_line_errors(debug: bool, training: bool):
    """Turn an expected failure into ``SystemExit("eggroll-rl train: <one line>")`` (status 1);
    anything else, and everything with ``debug``, propagates with its traceback.

    Expected before training (``training=False``): any ``ValueError`` (every validation error
    is one) and ``OSError`` with an errno (a path that cannot be read or written). While
    training: the loop's ``TrainingError``s, run folder errors and ``OSError``s with an errno;
    a ``ValueError`` from inside training is a bug and keeps its traceback.
    """
    from eggroll_rl.agents.faults import TrainingError
    from eggroll_rl.agents.run_folder import RunFolderError

    try:
        yield
    except Exception as error:
        expected = (
            isinstance(error, (TrainingError, RunFolderError))
            or (isinstance(error, OSError) and error.errno is not None)
            or (not training and isinstance(error, ValueError))
        )
        if debug or not expected:
            raise
        raise SystemExit(f"{PROG}: {one_line(error)}") from None


def one_line(error: BaseException) -> str:
    """``error``'s message on one line; an ``OSError`` as "reason: path"."""
    if isinstance(error, OSError) and error.errno is not None and error.strerror:
        text = error.strerror if error.filename is None else f"{error.strerror}: {error.filename}"
        if error.errno == errno.ENOSPC:
            text += " (free some space, then continue with --resume)"
    else:
        text = str(error) or type(error).__name__
    return " ".join(line.strip() for line in text.splitlines() if line.strip())


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
