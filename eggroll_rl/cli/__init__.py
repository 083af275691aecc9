"""The ``eggroll-rl`` command: one entry point, one subcommand per job."""

from __future__ import annotations

import sys

COMMANDS = {
    "train": ("eggroll_rl.cli.train", "train EGGROLL, OpenES or PPO on an env"),
    "bench": ("eggroll_rl.bench.suite", "throughput of EGGROLL vs batched inference and OpenES"),
    "demo": ("eggroll_rl.cli.demo", "install check: EGGROLL fits a small regression MLP"),
    "envs": ("eggroll_rl.envs.registry", "list every env id that can be made here"),
    "compare": ("eggroll_rl.experiments.compare", "run algorithms side by side: results, curves, summary"),
    "plot": ("eggroll_rl.experiments.plot", "redraw learning curves from compare result folders"),
    "report": ("eggroll_rl.experiments.report", "a compare folder's table + paper check, for the README"),
}
# Commands whose compiled programs are worth keeping between runs (bench measures cold compiles).
CACHED = ("train", "compare", "demo")
DISTRIBUTION = "eggroll-rl"

# Third-party import noise that tells a user of this command nothing. Silenced here, at the
# command's entry point only: importing the library never changes warnings or output.
# Brax's UserWarning when a Brax env is built (it points to MJX; the Brax envs work as is):
BRAX_NOTICE = r"Brax System, piplines and environments are not actively being maintained"
# mujoco.mjx.warp prints these when the optional NVIDIA Warp backend is absent (Brax imports it):
WARP_MODULE = "mujoco.mjx.warp"
WARP_LINES = ("Failed to import warp:", "Failed to import mujoco_warp:")


def version() -> str:
    """The installed package's version (``importlib.metadata``)."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as installed

    try:
        return installed(DISTRIBUTION)
    except PackageNotFoundError:
        return "unknown (not installed)"


def quiet_third_party_noise() -> None:
    """Drop Brax's maintenance warning and mujoco's missing-Warp prints, nothing else."""
    import warnings

    warnings.filterwarnings("ignore", message=BRAX_NOTICE, category=UserWarning)
    if WARP_MODULE not in sys.modules and not any(
        isinstance(finder, _QuietWarpImport) for finder in sys.meta_path
    ):
        sys.meta_path.insert(0, _QuietWarpImport())


class _QuietWarpImport:
    """A meta path finder that imports ``mujoco.mjx.warp`` with its two "Failed to import"
    lines dropped from stdout (any other output of that import is printed as usual)."""

    def find_spec(self, name, path=None, target=None):
        if name != WARP_MODULE:
            return None
        import importlib.util

        sys.meta_path.remove(self)  # once: find the real spec without this finder
        spec = importlib.util.find_spec(name)
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        loader, exec_module = spec.loader, spec.loader.exec_module

        def quiet_exec_module(module):
            import contextlib
            import io

            with contextlib.redirect_stdout(io.StringIO()) as captured:
                exec_module(module)
            kept = [line for line in captured.getvalue().splitlines(keepends=True)
                    if not line.startswith(WARP_LINES)]
            sys.stdout.write("".join(kept))

        loader.exec_module = quiet_exec_module
        return spec


def main(argv=None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in ("-V", "--version"):
        print(f"{DISTRIBUTION} {version()}")
        return
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        lines = [f"  {name:<8} {help_}" for name, (_, help_) in COMMANDS.items()]
        print(
            "usage: eggroll-rl COMMAND [options]   (eggroll-rl COMMAND --help for its options)\n\n"
            "commands:\n" + "\n".join(lines) + "\n\noptions:\n  -V, --version  print the version"
        )
        if argv and argv[0] not in ("-h", "--help"):
            sys.exit(f"eggroll-rl: unknown command {argv[0]!r}")
        return
    import importlib

    quiet_third_party_noise()
    if argv[0] in CACHED:
        from eggroll_rl.xla import compile_cache

        compile_cache.enable()
    try:
        module = importlib.import_module(COMMANDS[argv[0]][0])
        module.main(argv[1:])
    except KeyboardInterrupt:  # Ctrl-C outside a training loop (which saves, then exits itself)
        if "--debug" in argv:
            raise
        sys.stderr.write(f"\n{DISTRIBUTION} {argv[0]}: interrupted\n")
        raise SystemExit(130) from None


if __name__ == "__main__":
    main()
