"""Run ``eggroll-rl train`` in a subprocess, for the tests that kill, signal or resume a run.

The runs of one test compile the same programs, so they share JAX's persistent compilation
cache (``cache``): only the first one compiles.
"""

from __future__ import annotations

import os
import pathlib
import signal
import subprocess
import sys
import time


def cached_env(cache: pathlib.Path, **extra: str) -> dict:
    """This process's environment, with JAX's persistent compilation cache at ``cache`` and
    every program cached, plus ``extra`` variables."""
    return dict(
        os.environ,
        JAX_COMPILATION_CACHE_DIR=str(cache),
        JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
        JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0",
        **extra,
    )


def train_process(
    argv, env: dict, *, wait: bool = True, check: bool = True, timeout: float = 300,
) -> subprocess.Popen:
    """``eggroll-rl train ARGV`` in a new process.

    With ``wait``, the process has finished on return, with its output in ``.out`` and
    ``.err``; ``check`` then asserts exit code 0 (the output is the message). Without ``wait``
    it is still running (for a test to kill or signal it).
    """
    process = subprocess.Popen(
        [sys.executable, "-m", "eggroll_rl.cli", "train", *argv],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )
    if wait:
        process.out, process.err = process.communicate(timeout=timeout)
        if check:
            assert process.returncode == 0, process.out + process.err
    return process


def checkpoint_steps(run_dir: pathlib.Path) -> list[int]:
    """The steps of the checkpoints in ``run_dir/checkpoints`` (none yet: ``[]``)."""
    folder = run_dir / "checkpoints"
    return sorted(int(p.name) for p in folder.iterdir() if p.name.isdigit()) if folder.exists() else []


def kill_after_checkpoints(process: subprocess.Popen, run_dir: pathlib.Path, count: int = 2) -> None:
    """SIGKILL ``process`` as soon as ``run_dir`` holds ``count`` checkpoints; fails the test if
    the run ends first (its budget is too small to be cut) or nothing comes within 240 s."""
    deadline = time.time() + 240
    while len(checkpoint_steps(run_dir)) < count and process.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    assert process.poll() is None, "the run finished before it could be killed: raise its budget"
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
