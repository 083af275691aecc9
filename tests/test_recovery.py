"""Faults during training end loudly and lose nothing: corrupt checkpoints, torn logs, NaN envs,
Ctrl-C/SIGTERM and a full disk each give a clear message, a non-zero exit where the run cannot
go on, and a run folder that resumes to exactly what an uninterrupted run produces."""

import errno
import json
import os
import signal
import subprocess
import sys
import time
from typing import NamedTuple

import gymnasium
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from eggroll_rl import envs
from eggroll_rl.agents import run_log
from eggroll_rl.agents.checkpoints import Checkpointer, has_checkpoint
from eggroll_rl.agents.faults import RunWriteError
from eggroll_rl.cli import train as train_cli
from eggroll_rl.envs import obs_norm
from eggroll_rl.envs.task import Task

from cli_runs import cached_env, checkpoint_steps, train_process

TINY = ["--population-size", "8", "--hidden", "8", "--eval-episodes", "2", "--no-progress"]
CARTPOLE = ["--algo", "eggroll", "--env", "gymnax/CartPole-v1", "--total-steps", "10000",
            "--iterations-per-chunk", "2", "--checkpoint-every", "2", *TINY]


def _faulty_task(env_id, nan_reward_from, nan_obs_from, horizon=8):
    """Two-dimensional observations, two actions, reward 1 per step; from step
    ``nan_reward_from`` on the reward is NaN, from ``nan_obs_from`` on the observation is."""

    def reset(key):
        return jnp.zeros(2, jnp.float32), jnp.zeros((), jnp.int32)

    def step(key, t, action):
        t = t + 1
        obs = jnp.full(2, 0.1, jnp.float32) * t + action
        obs = jnp.where(t >= nan_obs_from, jnp.nan, obs)
        reward = jnp.where(t >= nan_reward_from, jnp.nan, 1.0).astype(jnp.float32)
        truncated = t >= horizon
        next_obs = jnp.where(truncated, jnp.zeros(2, jnp.float32), obs)
        return (next_obs, jnp.where(truncated, 0, t), reward, jnp.bool_(False), truncated,
                {"final_obs": obs})

    space = gymnasium.spaces.Box(-np.inf, np.inf, (2,), np.float32)
    return Task(env_id, reset, step, space, gymnasium.spaces.Discrete(2), horizon)


@pytest.fixture(scope="module")
def faulty_envs():
    envs.register("test/NaNReward", lambda: _faulty_task("test/NaNReward", 3, 2), overwrite=True)
    return "test/NaNReward"


def _flip_bytes(step_dir):
    """Flip bytes in the middle of the checkpoint's largest data file."""
    files = [p for p in step_dir.rglob("*") if p.is_file() and "metadata" not in p.name.lower()]
    target = max(files, key=lambda p: p.stat().st_size)
    data = bytearray(target.read_bytes())
    for i in range(len(data) // 2, min(len(data), len(data) // 2 + 8)):
        data[i] ^= 0xFF
    target.write_bytes(bytes(data))


def _rows(run_dir):
    strip = lambda row: {k: v for k, v in row.items() if k != "wall_s"}
    return [strip(json.loads(line)) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def _cli(cache, *argv, wait=True):
    """``eggroll-rl train ARGV`` in a new process (exit code not checked)."""
    return train_process(argv, cached_env(cache), wait=wait, check=False)


def _signal_after_two_checkpoints(runs):
    """Send each ``(run_dir, process, signum)`` its signal once it has two checkpoints."""
    waiting, deadline = list(runs), time.time() + 240
    while waiting and time.time() < deadline:
        for run in list(waiting):
            run_dir, process, signum = run
            if len(checkpoint_steps(run_dir)) >= 2 or process.poll() is not None:
                assert process.poll() is None, "the run ended before the signal: raise --total-steps"
                process.send_signal(signum)
                waiting.remove(run)
        time.sleep(0.01)
    for _, process, _ in runs:
        process.out, process.err = process.communicate(timeout=120)


def test_a_signal_saves_everything_and_a_corrupt_checkpoint_and_torn_log_still_resume_exactly(
    tmp_path,
):
    """Ctrl-C (SIGINT) and SIGTERM on the real CLI: exit 130/143 at the chunk's end with the
    checkpoint, metrics, curve and policy written. Then the newest checkpoint gets flipped bytes
    and metrics.jsonl a torn last line: --resume warns about both, falls back one checkpoint
    and ends bit-identical to a run never interrupted."""
    cache = tmp_path / "jax-cache"
    straight, interrupted, terminated = (tmp_path / name for name in ("straight", "int", "term"))
    reference = _cli(cache, *CARTPOLE, "--out", str(straight))
    assert reference.returncode == 0, reference.err
    runs = [(run_dir, _cli(cache, *CARTPOLE, "--out", str(run_dir), wait=False), signum)
            for run_dir, signum in ((interrupted, signal.SIGINT), (terminated, signal.SIGTERM))]
    _signal_after_two_checkpoints(runs)
    for run_dir, process, signum in runs:
        name = signal.Signals(signum).name
        assert process.returncode == 128 + signum, process.err
        assert "Traceback" not in process.err and f"{name}: stopping at the end" in process.err
        assert f"stopped by {name}; saved to {run_dir}" in process.out
        for file in ("curve.png", "metrics.jsonl", "policy/params.msgpack"):
            assert (run_dir / file).exists(), file
        steps = checkpoint_steps(run_dir)
        assert _rows(run_dir)[-1]["iteration"] <= steps[-1] < checkpoint_steps(straight)[-1]

    steps = checkpoint_steps(interrupted)
    _flip_bytes(interrupted / "checkpoints" / str(steps[-1]))
    with (interrupted / "metrics.jsonl").open("a") as handle:
        handle.write('{"iteration": 99, "se')  # a crash in the middle of a write
    resumed = _cli(cache, "--resume", str(interrupted), "--no-progress")
    assert resumed.returncode == 0, resumed.err
    assert f"checkpoint {steps[-1]} in" in resumed.err and "falling back" in resumed.err
    assert "incomplete" in resumed.err and "dropped" in resumed.err
    assert "done: eval return" in resumed.out
    assert (interrupted / "policy" / "params.msgpack").read_bytes() == (
        straight / "policy" / "params.msgpack"
    ).read_bytes()
    assert _rows(interrupted) == _rows(straight)


def test_signal_handlers_are_restored_after_a_run():
    from eggroll_rl.agents.loop import _Interrupts

    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    wakeup_fd = signal.set_wakeup_fd(-1)
    signal.set_wakeup_fd(wakeup_fd)
    with _Interrupts(None) as interrupts:
        os.kill(os.getpid(), signal.SIGTERM)
        deadline = time.time() + 10
        while interrupts.received is None and time.time() < deadline:
            time.sleep(0.01)
    assert interrupts.received == signal.SIGTERM
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == before
    assert signal.set_wakeup_fd(wakeup_fd) == wakeup_fd  # the previous wakeup fd is back


def test_a_second_signal_exits_at_once_even_inside_native_code():
    script = (
        "import os, signal, time\n"
        "from eggroll_rl.agents.loop import _Interrupts\n"
        "with _Interrupts(None) as interrupts:\n"
        "    os.kill(os.getpid(), signal.SIGINT)\n"
        "    while interrupts.received is None: time.sleep(0.01)\n"
        "    os.kill(os.getpid(), signal.SIGINT)\n"
        "    time.sleep(60)\n"
    )
    start = time.time()
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 130 and time.time() - start < 30, done.stderr
    assert "second SIGINT: exiting at once" in done.stderr


def test_es_on_an_env_with_nan_rewards_warns_and_stops_with_the_cause(tmp_path, faulty_envs):
    out = tmp_path / "run"
    argv = ["--algo", "eggroll", "--env", faulty_envs, "--total-steps", "2000",
            "--iterations-per-chunk", "5", *TINY, "--out", str(out)]
    with pytest.warns(RuntimeWarning, match="skipped their update: non-finite fitness"):
        with pytest.raises(SystemExit) as exit_:
            train_cli.main(argv)
    message = str(exit_.value.code)
    assert "\n" not in message and "10 of the last 10 generations" in message, message
    assert "nonfinite_fitness" in message and "NaN/inf rewards" in message
    assert not (out / "policy").exists()  # nothing exported over a run that did not train
    rows = _rows(out)
    assert rows[-1]["skipped"] == 5 and rows[-1]["nonfinite_fitness"] == 40
    # The state the skips left alone is checkpointed; its obs statistics never saw a NaN.
    import orbax.checkpoint as ocp

    step = checkpoint_steps(out)[-1]
    saved = ocp.StandardCheckpointer().restore(out / "checkpoints" / str(step) / "default")
    stats = saved["obs_stats"]
    assert np.all(np.isfinite(stats["mean"])) and np.all(np.isfinite(stats["var"]))
    assert float(np.asarray(stats["count"]).reshape(-1)[0]) > 0


def test_ppo_on_an_env_with_nan_rewards_stops_without_exporting_a_nan_policy(tmp_path, faulty_envs):
    out = tmp_path / "run"
    argv = ["--algo", "ppo", "--env", faulty_envs, "--total-steps", "2000", "--num-envs", "4",
            "--num-steps", "8", "--hidden", "8", "--iterations-per-chunk", "2", "--no-progress",
            "--out", str(out)]
    with pytest.raises(SystemExit) as exit_:
        train_cli.main(argv)
    message = str(exit_.value.code)
    assert "parameters became non-finite" in message and "nonfinite_rewards" in message, message
    assert "checkpoint 0" in message
    assert not (out / "policy").exists()
    assert checkpoint_steps(out) == [0]  # the last finite state, before the first update


def test_nonfinite_observations_are_left_out_of_the_statistics():
    batch = np.array([[1.0, 2.0], [np.nan, 5.0], [3.0, np.inf], [5.0, 4.0]], np.float32)
    stats = obs_norm.update(obs_norm.init((2,)), batch)
    clean = obs_norm.update(obs_norm.init((2,)), batch[[0, 3]])
    for got, want in zip(jax.tree_util.tree_leaves(stats), jax.tree_util.tree_leaves(clean)):
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
    assert float(stats.count) == 2


def _state(offset):
    return {"w": jnp.arange(6.0).reshape(2, 3) + offset, "key": jax.random.key(offset)}


def test_a_checkpoint_whose_data_orbax_reads_but_is_wrong_fails_its_checksum(tmp_path):
    saver = Checkpointer(tmp_path)
    saver.save(1, _state(0))
    saver.save(2, _state(1))
    # Replace checkpoint 2's data behind the checksum's back: orbax reads it without complaint.
    (tmp_path / "checkpoints" / "2.sha256").rename(tmp_path / "kept.sha256")
    saver.save(2, _state(7))
    (tmp_path / "kept.sha256").rename(tmp_path / "checkpoints" / "2.sha256")
    saver.close()
    assert has_checkpoint(tmp_path) and not has_checkpoint(tmp_path / "elsewhere")
    with pytest.warns(UserWarning, match="checkpoint 2 .* does not match its checksum"):
        step, restored = Checkpointer(tmp_path).restore_latest(_state(5))
    assert step == 1
    np.testing.assert_array_equal(np.asarray(restored["w"]), np.asarray(_state(0)["w"]))


def test_disk_full_is_one_line_naming_the_path_and_keeps_the_last_checkpoint(tmp_path, monkeypatch):
    saver = Checkpointer(tmp_path)
    saver.save(1, _state(0))

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(tmp_path / "checkpoints"))

    monkeypatch.setattr(type(saver._manager), "save", full)
    with pytest.raises(RunWriteError) as error:
        saver.save(2, _state(1))
    message = str(error.value)
    assert "\n" not in message and str(tmp_path / "checkpoints") in message
    assert "No space left on device" in message and "checkpoint 1 is intact" in message
    monkeypatch.undo()
    saver.close()
    step, restored = Checkpointer(tmp_path).restore_latest(_state(5))
    assert step == 1

    log = run_log.RunLog(tmp_path, tensorboard=False)
    monkeypatch.setattr(run_log, "_append_lines", full)
    with pytest.raises(RunWriteError, match="could not write .*metrics.jsonl: No space left"):
        log.append([{"iteration": 1, "seed": 0, "eval_return": 1.0}])


class _SlowState(NamedTuple):
    env_steps: np.ndarray  # (seeds,) int64
    w: np.ndarray  # (seeds, 2)


class _SlowHostTrainer:
    """A host-side trainer whose every iteration takes ``seconds`` and 10 env steps."""

    name, host_side = "slow", True

    def __init__(self, seconds):
        self.seconds, self.pieces = seconds, []

    def init(self, keys):
        return _SlowState(np.zeros(len(keys), np.int64), np.zeros((len(keys), 2), np.float32))

    def train_chunk(self, state, iterations, total_steps):
        self.pieces.append(iterations)
        ran = np.zeros(len(state.env_steps), np.int32)
        for _ in range(iterations):
            going = state.env_steps < total_steps
            if not going.any():
                break
            time.sleep(self.seconds)
            state = _SlowState(state.env_steps + 10 * going, state.w + going[:, None])
            ran += going
        return state, {"loss": state.w[:, 0].copy()}, ran

    def evaluate(self, state, keys):
        return state.w[:, 0].copy()

    def policy(self, state):
        return {"params": state.w}


def test_slow_iterations_run_in_short_pieces_and_checkpoint_by_time(tmp_path, monkeypatch):
    """A chunk of 8 iterations of 0.1 s runs in pieces of about chunk_seconds (the first
    iteration timed alone), checkpoints come by time inside chunks, and rows still fall at
    every 8th iteration."""
    from eggroll_rl.agents import loop as loop_module

    saved = []
    save = Checkpointer.save
    monkeypatch.setattr(Checkpointer, "save", lambda self, step, state: (saved.append(step), save(self, step, state)))
    monkeypatch.setattr(run_log.RunLog, "plot", lambda self, *args, **kwargs: None)  # tested elsewhere
    config = loop_module.LoopConfig(
        total_steps=200, iterations_per_chunk=8, checkpoint_every=100, chunk_seconds=0.25,
        checkpoint_seconds=0.3, progress=False,
    )
    trainer = _SlowHostTrainer(0.1)
    result = loop_module.run(trainer, config, tmp_path / "run")
    assert [row["iteration"] for row in result.rows] == [8, 16, 20]
    assert trainer.pieces[0] == 1 and max(trainer.pieces) <= 3, trainer.pieces
    assert sum(trainer.pieces) >= 20 and len(saved) >= 3 and saved[-1] == 20, saved
    assert any(step % 8 for step in saved[:-1]), saved  # some by time, inside a chunk
