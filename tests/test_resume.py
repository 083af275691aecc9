"""A run killed with SIGKILL mid-training and resumed ends bit-identical to an uninterrupted one."""

import os
import signal
import subprocess
import sys
import time

ARGS = [
    "--algo", "eggroll", "--env", "gymnax/CartPole-v1", "--total-steps", "4000",
    "--population-size", "16", "--hidden", "8", "8", "--iterations-per-chunk", "1",
    "--checkpoint-every", "1", "--no-progress",
]


def _env(cache):
    # The three runs compile the same programs: JAX's persistent cache compiles them once.
    return dict(
        os.environ,
        JAX_COMPILATION_CACHE_DIR=str(cache),
        JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
        JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0",
    )


def _train(cache, *extra, wait=True):
    command = [sys.executable, "-m", "eggroll_rl.cli", "train", *ARGS, *extra]
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=_env(cache)
    )
    if wait:
        out, _ = process.communicate(timeout=240)
        assert process.returncode == 0, out
    return process


def _checkpoints(run_dir):
    folder = run_dir / "checkpoints"
    return sorted(int(p.name) for p in folder.iterdir() if p.name.isdigit()) if folder.exists() else []


def test_sigkill_then_resume_is_bit_identical(tmp_path):
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    cache = tmp_path / "jax-cache"
    _train(cache, "--out", str(straight))

    process = _train(cache, "--out", str(killed), wait=False)
    deadline = time.time() + 240
    while len(_checkpoints(killed)) < 2 and process.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert process.poll() is None, "the run finished before it could be killed: raise --total-steps"
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert 2 <= max(_checkpoints(killed)) < max(_checkpoints(straight))

    resumed = subprocess.run(
        [sys.executable, "-m", "eggroll_rl.cli", "train", "--resume", str(killed), "--no-progress"],
        capture_output=True, text=True, timeout=240, env=_env(cache),
    )
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert (killed / "policy" / "params.msgpack").read_bytes() == (
        straight / "policy" / "params.msgpack"
    ).read_bytes()
    rows = lambda d: (d / "metrics.jsonl").read_text().splitlines()
    strip = lambda line: {k: v for k, v in __import__("json").loads(line).items() if k != "wall_s"}
    assert [strip(r) for r in rows(killed)] == [strip(r) for r in rows(straight)]

    # the export is what the Gymnasium playback helper loads and plays
    from eggroll_rl.envs.playback import load_policy, play

    assert load_policy(straight / "policy").env_id == "gymnax/CartPole-v1"
    returns = play(straight / "policy", "CartPole-v1", episodes=2, seed=0, max_steps=50)
    assert len(returns) == 2 and all(1 <= r <= 50 for r in returns)

