"""The ``eggroll-rl`` command: one entry point, one subcommand per job."""

from __future__ import annotations

import sys

COMMANDS = {
    "train": ("eggroll_rl.cli.train", "train EGGROLL, OpenES or PPO on an env"),
    "bench": ("eggroll_rl.bench.suite", "throughput of EGGROLL vs batched inference and OpenES"),
    "demo": ("eggroll_rl.cli.demo", "train a small regression MLP with EGGROLL (install check)"),
    "envs": ("eggroll_rl.envs.registry", "list every env id that can be made here"),
    "compare": ("eggroll_rl.experiments.compare", "run algorithms side by side: results, curves, summary"),
    "plot": ("eggroll_rl.experiments.plot", "redraw learning curves from compare result folders"),
    "report": ("eggroll_rl.experiments.report", "a compare folder's table + paper check, for the README"),
}
# Commands whose compiled programs are worth keeping between runs (bench measures cold compiles).
CACHED = ("train", "compare", "demo")


def main(argv=None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        lines = [f"  {name:<8} {help_}" for name, (_, help_) in COMMANDS.items()]
        print("usage: eggroll-rl COMMAND [options]\n\ncommands:\n" + "\n".join(lines))
        if argv and argv[0] not in ("-h", "--help"):
            sys.exit(f"eggroll-rl: unknown command {argv[0]!r}")
        return
    import importlib

    if argv[0] in CACHED:
        from eggroll_rl.xla import compile_cache

        compile_cache.enable()
    module = importlib.import_module(COMMANDS[argv[0]][0])
    module.main(argv[1:])


if __name__ == "__main__":
    main()
