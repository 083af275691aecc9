"""Faults a user walks into end in one line and a non-zero exit, and leave valid files as they were.

Each probe goes through the real command (``eggroll_rl.cli.train.main`` in process; one probe
runs the installed ``eggroll-rl`` executable) or the API, on tiny configs. Every probe here must
stop before anything compiles: ``no_training`` replaces the train loop with a failure, so a
probe that reached training fails. The ownership and resume probes share one finished run
folder, written from a real plan with the files a finished run leaves (config.json, metrics,
checkpoint step folders, the exported policy), so that no test here compiles a training program.
"""

import errno
import hashlib
import json
import os
import pathlib
import shutil
import socket
import subprocess
import sys

import gymnasium
import jax.numpy as jnp
import numpy as np
import pytest
from flax import serialization

from eggroll_rl.agents import api, load, loop as loop_module, run_folder, train
from eggroll_rl.cli import train as train_cli
from eggroll_rl.envs import playback, registry
from eggroll_rl.envs.task import Task
from eggroll_rl.networks import Policy

PROG = "eggroll-rl train: "
CARTPOLE = ["--algo", "eggroll", "--env", "gymnax/CartPole-v1"]
TINY = CARTPOLE + ["--total-steps", "3000", "--population-size", "8", "--hidden", "4",
                   "--eval-episodes", "1", "--iterations-per-chunk", "2", "--no-progress"]


@pytest.fixture
def no_training(monkeypatch):
    """Fail the test if anything reaches the compile-and-train stage."""

    def refuse(*args, **kwargs):
        raise AssertionError("this should have stopped before training")

    monkeypatch.setattr(loop_module, "run", refuse)


def fails(argv, capsys=None):
    """Run the command; return its one-line error (asserting exit status 1 and one line)."""
    with pytest.raises(SystemExit) as error:
        train_cli.main(argv)
    message = error.value.code
    assert isinstance(message, str), f"exit status {message!r}, expected a message (status 1)"
    assert message.startswith(PROG) and "\n" not in message, message
    return message[len(PROG):]


def digest(folder: pathlib.Path) -> dict:
    """Every file under ``folder`` -> the hash of its bytes."""
    return {
        str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(folder.rglob("*")) if path.is_file()
    }


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, random_params):
    """A finished tiny eggroll/CartPole run folder (seed 0, population 8, hidden 4, 3000 steps)
    and the digest of its files."""
    run_dir = tmp_path_factory.mktemp("faults") / "run"
    planned = train_cli.build(TINY + ["--out", str(run_dir)])
    run_dir.mkdir()
    (run_dir / "config.json").write_text(json.dumps(planned.record, indent=2, default=str))
    rows = [{"iteration": i, "seed": 0, "env_steps": 700 * i, "wall_s": 0.1 * i,
             "eval_return": 20.0 + i} for i in (2, 4)]
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    (run_dir / "metrics.csv").write_text(
        ",".join(rows[0]) + "\n" + "".join(",".join(map(str, r.values())) + "\n" for r in rows)
    )
    for step in (1, 2):
        (run_dir / "checkpoints" / str(step) / "default").mkdir(parents=True)
        (run_dir / "checkpoints" / str(step) / "default" / "state").write_bytes(bytes([step]) * 64)
    network = {"action_size": 2, "continuous": False, "hidden": [4], "layer_norm": True}
    playback.save_policy(run_dir / "policy", random_params(Policy(2, hidden=(4,)), jnp.zeros(4)), network,
                         "gymnax/CartPole-v1")
    return run_dir, digest(run_dir)


@pytest.fixture
def run_copy(finished_run, tmp_path):
    """A copy of the finished run that a probe may change."""
    return pathlib.Path(shutil.copytree(finished_run[0], tmp_path / "run"))


# -- 1. validation: every value checked before anything runs ------------------------------------

@pytest.mark.parametrize("argv, message", [
    (CARTPOLE + ["--lr", "inf"], "es: lr must be finite, got inf."),
    (CARTPOLE + ["--sigma", "inf"], "es: sigma must be finite, got inf."),
    (["--algo", "openes", "--env", "gymnax/CartPole-v1", "--sigma", "nan"], "sigma must be finite"),
    (CARTPOLE + ["--sigma-decay", "0"], "es: sigma_decay must be in (0, 1], got 0.0."),
    (CARTPOLE + ["--lr-decay", "1.5"], "es: lr_decay must be in (0, 1], got 1.5."),
    (CARTPOLE + ["--hidden", "0"], "hidden layer widths must be integers >= 1, got (0,)"),
    (CARTPOLE + ["--population-size", "1"], "rank or z-score shaping nothing to compare"),
    (CARTPOLE + ["--weight-decay", "-inf"], "es: weight_decay must be finite"),
    (CARTPOLE + ["--int8", "--alpha", "inf"], "int8: alpha must be finite"),
    (CARTPOLE + ["--int8", "--hidden", "16", "0"], "int8: hidden layer widths must be integers"),
    (["--algo", "ppo", "--env", "gymnax/CartPole-v1", "--lr", "inf"], "ppo: lr must be finite"),
    (["--algo", "ppo", "--env", "gymnax/CartPole-v1", "--gamma", "nan"], "gamma must be finite"),
    (["--algo", "ppo", "--env", "gymnax/CartPole-v1", "--hidden", "64", "0"], "integers >= 1"),
    (["--algo", "ppo", "--env", "gymnax/CartPole-v1", "--ent-coef", "-1"], "ent_coef must be >= 0"),
    (CARTPOLE + ["--iterations-per-chunk", "0"], "iterations_per_chunk must be >= 1"),
])
def test_bad_values_fail_in_one_line_before_compiling(no_training, tmp_path, argv, message):
    out = tmp_path / "run"
    assert message in fails(argv + ["--out", str(out), "--no-progress"])
    assert not out.exists()


@pytest.mark.parametrize("config, message", [
    ({"lr": float("inf")}, "es: lr must be finite"),
    ({"sigma": float("nan")}, "es: sigma must be finite"),
    ({"population_size": 8.0}, "population_size must be an integer"),
    ({"hidden": (16, 0)}, "hidden layer widths must be integers >= 1"),
])
def test_the_api_refuses_the_same_values(no_training, config, message):
    with pytest.raises(ValueError, match=message):
        train("eggroll", "gymnax/CartPole-v1", config=config, progress=False)


def test_debug_shows_the_traceback_instead(no_training):
    with pytest.raises(ValueError, match="es: lr must be finite"):
        train_cli.main(CARTPOLE + ["--lr", "inf", "--debug", "--no-progress"])


def test_the_installed_command_prints_one_line_and_exits_1(tmp_path):
    out = tmp_path / "run"
    exe = pathlib.Path(sys.executable).parent / "eggroll-rl"
    done = subprocess.run([str(exe), "train", *CARTPOLE, "--lr", "inf", "--out", str(out)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [f"{PROG}es: lr must be finite, got inf."]
    assert not out.exists()


# -- run folders: writable, not another run's, one process at a time --------------------------

def test_an_out_that_is_a_file_fails_before_compiling(no_training, tmp_path):
    file = tmp_path / "notes.txt"
    file.write_text("keep me")
    assert "is a file" in fails(TINY + ["--out", str(file)])
    assert "cannot create the run folder" in fails(TINY + ["--out", str(file / "run")])
    assert file.read_text() == "keep me"


def test_an_out_that_cannot_be_written_fails_before_compiling(no_training, tmp_path):
    assert "cannot write the run folder /proc/eggroll-run" in fails(
        TINY + ["--out", "/proc/eggroll-run"]
    )
    if os.geteuid() != 0:  # root writes into read-only folders
        locked = tmp_path / "read-only"
        locked.mkdir(mode=0o555)
        assert "cannot write the run folder" in fails(TINY + ["--out", str(locked / "run")])


def test_a_fresh_run_refuses_a_folder_holding_a_run(no_training, finished_run):
    run_dir, files = finished_run
    message = fails(TINY + ["--out", str(run_dir)])
    assert message.startswith(f"{run_dir} already holds a run (config.json")
    assert f"--resume {run_dir}" in message and "--overwrite" in message
    with pytest.raises(ValueError, match="overwrite=True"):
        train("eggroll", "gymnax/CartPole-v1", out=run_dir, progress=False)
    assert digest(run_dir) == files


def test_overwrite_deletes_the_old_run_first_and_the_lock_is_released_on_errors(
    monkeypatch, run_copy
):
    (run_copy / "notes.txt").write_text("not the run's")
    seen = {}

    def training(trainer, loop, run_dir, **kwargs):
        seen["files"] = sorted(path.name for path in run_dir.iterdir())
        seen["lock"] = json.loads((run_dir / run_folder.LOCK_FILE).read_text())
        raise RuntimeError("a bug while training")

    monkeypatch.setattr(loop_module, "run", training)
    with pytest.raises(RuntimeError, match="a bug while training"):  # a bug keeps its traceback
        train_cli.main(TINY + ["--out", str(run_copy), "--overwrite"])
    assert seen["files"] == ["notes.txt", run_folder.LOCK_FILE]  # nothing of the old run left
    assert seen["lock"] == {"pid": os.getpid(), "host": socket.gethostname()}
    assert sorted(path.name for path in run_copy.iterdir()) == ["notes.txt"]  # lock released


def test_a_second_process_is_kept_out_with_one_line(no_training, tmp_path):
    run_dir = tmp_path / "run"
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import importlib.util, sys, time\n"
         f"spec = importlib.util.spec_from_file_location('rf', {str(run_folder.__file__)!r})\n"
         "rf = importlib.util.module_from_spec(spec); spec.loader.exec_module(rf)\n"
         f"rf.RunLock({str(run_dir)!r}).acquire(); print('locked', flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        message = fails(TINY + ["--out", str(run_dir)])
        assert message.startswith(f"{run_dir} is in use by process {holder.pid} on ")
        assert f"delete {run_dir / run_folder.LOCK_FILE}" in message
    finally:
        holder.kill()
        holder.wait()
    # its owner is gone now: the stale lock is taken over, with a warning
    with pytest.warns(UserWarning, match=f"taking over the lock of process {holder.pid}"):
        with run_folder.RunLock(run_dir) as lock:
            assert json.loads(lock.path.read_text())["pid"] == os.getpid()
    assert not (run_dir / run_folder.LOCK_FILE).exists()


def test_a_run_folder_locked_on_another_host_is_refused(no_training, run_copy):
    lock = run_copy / run_folder.LOCK_FILE
    lock.write_text(json.dumps({"pid": 1, "host": "elsewhere"}))
    assert "is in use by process 1 on elsewhere" in fails(["--resume", str(run_copy)])
    assert lock.exists()


def test_an_io_error_while_training_is_one_line(monkeypatch, tmp_path):
    def disk_full(*args, **kwargs):
        path = str(tmp_path / "run" / "metrics.csv")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path)

    monkeypatch.setattr(loop_module, "run", disk_full)
    message = fails(TINY + ["--out", str(tmp_path / "run")])
    assert message.startswith(f"No space left on device: {tmp_path / 'run' / 'metrics.csv'}")
    assert not (tmp_path / "run" / run_folder.LOCK_FILE).exists()


# -- resume: a real run, the saved config, explicit budgets ------------------------------------

def test_resume_of_a_missing_or_non_run_folder_is_one_line(no_training, tmp_path):
    assert "no such folder" in fails(["--resume", str(tmp_path / "nope")])
    assert "not a run folder: config.json missing" in fails(["--resume", str(tmp_path)])
    (tmp_path / "config.json").write_text('{"algo": "eggroll", "env": ')
    assert "is not a readable run record" in fails(["--resume", str(tmp_path)])


@pytest.mark.parametrize("flags, message", [
    (["--algo", "openes"], "--algo openes contradicts the run being resumed"),
    (["--env", "gymnax/Pendulum-v1"], "has env gymnax/CartPole-v1"),
    (["--seed", "1"], "--seed 1 contradicts the run being resumed"),
    (["--population-size", "16"], "has population_size=8)"),
    (["--hidden", "8"], "--hidden 8 contradicts"),
    (["--iterations-per-chunk", "3"], "has iterations_per_chunk=2)"),
    (["--int8"], "--int8 contradicts"),
    (["--seeds-in-sequence"], "has seeds_in_sequence=false)"),
    (["--overwrite"], "--overwrite starts a new run"),
    (["--total-steps", "1000"], "--total-steps 1000 is below the run's budget 3000"),
])
def test_resume_refuses_flags_that_contradict_the_saved_run(no_training, finished_run, flags,
                                                             message):
    run_dir, files = finished_run
    assert message in fails(["--resume", str(run_dir), *flags])
    assert digest(run_dir) == files


def test_resume_accepts_repeated_values_and_extends_the_budget(no_training, finished_run):
    run_dir, _ = finished_run
    same = train_cli.build(["--resume", str(run_dir), "--algo", "eggroll", "--population-size",
                            "8", "--seed", "0", "--no-seeds-in-sequence"])
    assert same.resume and not same.overwrite and same.loop.total_steps == 3000
    longer = train_cli.build(["--resume", str(run_dir), "--total-steps", "9000"])
    assert longer.resume and longer.loop.total_steps == 9000
    assert longer.trainer.config.total_steps == 9000
    # what the loop writes into config.json
    assert longer.record["loop"]["total_steps"] == longer.record["config"]["total_steps"] == 9000
    assert api.plan_resume(run_dir, total_steps=9000).record == longer.record


def test_resume_with_no_checkpoint_left_stops_unless_restart(no_training, run_copy):
    shutil.rmtree(run_copy / "checkpoints")
    files = digest(run_copy)
    message = fails(["--resume", str(run_copy)])
    assert message.startswith(f"{run_copy} has no checkpoint to resume from")
    assert "--restart" in message
    assert digest(run_copy) == files
    restart = train_cli.build(["--resume", str(run_copy), "--restart"])
    assert not restart.resume and restart.overwrite  # from the start, the old files deleted


def test_resume_when_no_checkpoint_restores_stops_unless_restart(monkeypatch, run_copy):
    from eggroll_rl.agents.faults import NoUsableCheckpoint

    calls = []

    def training(trainer, loop, run_dir, *, resume, **kwargs):
        calls.append((resume, sorted(path.name for path in run_dir.iterdir())))
        if resume:  # what the loop raises when every checkpoint fails to restore
            raise NoUsableCheckpoint(f"nothing to resume in {run_dir}.")
        raise RuntimeError("restarted")

    monkeypatch.setattr(loop_module, "run", training)
    assert fails(["--resume", str(run_copy)]) == f"nothing to resume in {run_copy}."
    assert (run_copy / "config.json").exists() and len(calls) == 1
    with pytest.warns(UserWarning, match="Restarting the run from the start"):
        with pytest.raises(RuntimeError, match="restarted"):
            train_cli.main(["--resume", str(run_copy), "--restart"])
    assert calls[-1] == (False, [run_folder.LOCK_FILE])  # the old run deleted, then trained anew


# -- envs our policies cannot act in, or that break their own contract ------------------------

def _task(env_id, obs_size=4, action_space=None, observation_space=None):
    def reset(key):
        return jnp.zeros(obs_size), jnp.zeros(())

    def step(key, state, action):
        return jnp.zeros(obs_size), state, jnp.zeros(()), jnp.array(False), jnp.array(False), {}

    return Task(
        env_id, reset, step,
        observation_space or gymnasium.spaces.Box(-1.0, 1.0, (4,), np.float32),
        action_space or gymnasium.spaces.Discrete(2), max_episode_steps=10,
    )


@pytest.mark.parametrize("kwargs, message", [
    ({"action_space": gymnasium.spaces.MultiDiscrete([2, 3])},
     "action space MultiDiscrete([2 3]) is not supported"),
    ({"observation_space": gymnasium.spaces.Tuple([gymnasium.spaces.Discrete(2)] * 2)},
     "observation space Tuple(Discrete(2), Discrete(2)) is not supported"),
    ({"obs_size": 3}, "reset returns observations of shape (3,), but its observation space is "
                      "Box of shape (4,)"),
])
def test_envs_that_break_the_contract_fail_in_one_line(no_training, monkeypatch, kwargs, message):
    registry.list_envs()  # the suites first, so the test id is removed with the monkeypatch
    monkeypatch.setitem(registry._FACTORIES, "faults/Broken-v0", lambda: _task("faults/Broken-v0",
                                                                               **kwargs))
    got = fails(["--algo", "eggroll", "--env", "faults/Broken-v0", "--population-size", "8"])
    assert got.startswith("env faults/Broken-v0: ") and message in got


# -- saved policies checked on load --------------------------------------------------------------

def _corrupt(policy: pathlib.Path, change):
    payload = serialization.msgpack_restore((policy / "params.msgpack").read_bytes())
    change(payload)
    (policy / "params.msgpack").write_bytes(serialization.msgpack_serialize(payload))


def _meta(policy: pathlib.Path, **network):
    meta = json.loads((policy / "policy.json").read_text())
    meta["network"].update(network)
    (policy / "policy.json").write_text(json.dumps(meta))


def _set_nan(payload):
    kernel = np.array(payload["params"]["params"]["MLP_0"]["EggrollDense_0"]["kernel"])
    kernel[1, 2] = np.nan
    payload["params"]["params"]["MLP_0"]["EggrollDense_0"]["kernel"] = kernel


@pytest.mark.parametrize("damage, message", [
    (lambda p: _corrupt(p, _set_nan),
     "params.msgpack: params/MLP_0/EggrollDense_0/kernel holds 1 non-finite value(s)"),
    (lambda p: _meta(p, layer_norm=False),
     "unused params/MLP_0/LayerNorm_0/bias, params/MLP_0/LayerNorm_0/scale"),
    (lambda p: _meta(p, hidden=[8]), "kernel has shape (4, 4), expected (4, 8)"),
    (lambda p: _corrupt(p, lambda d: d["params"]["params"]["MLP_0"].pop("EggrollDense_1")),
     "missing params/MLP_0/EggrollDense_1/bias, params/MLP_0/EggrollDense_1/kernel"),
    (lambda p: (p / "params.msgpack").write_bytes((p / "params.msgpack").read_bytes()[:100]),
     "params.msgpack does not decode"),
    (lambda p: (p / "policy.json").write_text("{"), "policy.json is not valid JSON"),
])
def test_a_damaged_policy_is_refused_naming_the_file(run_copy, damage, message):
    policy = run_copy / "policy"
    load(policy)  # intact, it loads
    damage(policy)
    for loader in (playback.load_policy, load):
        with pytest.raises(ValueError) as error:
            loader(policy)
        assert str(policy) in str(error.value) and message in str(error.value)
        assert "\n" not in str(error.value)


def test_a_damaged_int8_policy_is_refused_naming_the_file(tmp_path):
    path = tmp_path / "policy_int8.npz"
    path.write_bytes(b"PK\x03\x04 not a zip")
    with pytest.raises(ValueError, match=f"{path} is not a readable int8 policy"):
        load(path)


def test_the_strategy_api_refuses_a_lone_shaped_member_and_an_infinite_sigma():
    """The same probes through ``Eggroll``/``OpenES`` directly, for users' own loops."""
    from eggroll_rl import Eggroll, OpenES

    for shaping in ("centered_rank", "zscore"):
        with pytest.raises(ValueError, match="population_size=1 .*never move"):
            Eggroll(1, 0.1, antithetic=False, fitness_shaping=shaping)
    with pytest.raises(ValueError, match="sigma must be finite"):
        OpenES(4, float("inf"))
    with pytest.raises(ValueError, match="sigma must be finite"):
        Eggroll(4, float("nan"))
    Eggroll(1, 0.1, antithetic=False, fitness_shaping="identity")  # a raw fitness can move it
