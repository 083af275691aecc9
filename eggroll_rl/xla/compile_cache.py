"""JAX's persistent compilation cache, on by default for the ``eggroll-rl`` commands.

On a CPU, compiling a generation (rollout loop, noise, update) takes longer than training
CartPole does; the second run of the same command should not pay it again. This only points
JAX's own cache at a folder: ``JAX_COMPILATION_CACHE_DIR`` (JAX's variable) picks another
folder, and ``EGGROLL_RL_NO_COMPILE_CACHE=1`` turns it off.
"""

from __future__ import annotations

import os
import pathlib

DEFAULT_DIR = pathlib.Path(os.environ.get("XDG_CACHE_HOME", pathlib.Path.home() / ".cache")) / (
    "eggroll-rl"
) / "jax"


def enable() -> pathlib.Path | None:
    """Turn the cache on (unless disabled) and return its folder."""
    if os.environ.get("EGGROLL_RL_NO_COMPILE_CACHE", "") not in ("", "0"):
        return None
    import jax

    folder = pathlib.Path(os.environ.get("JAX_COMPILATION_CACHE_DIR") or DEFAULT_DIR)
    folder.mkdir(parents=True, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", str(folder))
    # Programs that compile in well under a second are cheaper to rebuild than to read back.
    if "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS" not in os.environ:
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
    return folder
