"""Sharding over devices and processes (``eggroll_rl.distributed``): the same results as one device.

The multi-device checks need a device count fixed at JAX start, so they run in subprocesses
(``tests/sharding_checks.py``) with simulated CPU devices: 4 devices in one process, and 2
processes of 2 devices joined by ``jax.distributed``. One fixture starts them all at once so
they share the wall time, and they compile at XLA backend optimisation level 0 (the same flags
on both sides of every comparison; compiles several times faster). Everything else runs here,
on this process's single device.
"""

from __future__ import annotations

import json
import os
import pathlib
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest

from eggroll_rl import Eggroll, distributed
from eggroll_rl.agents.es import ESConfig

CHECKS = pathlib.Path(__file__).with_name("sharding_checks.py")
FLOAT32_TOL = 1e-5  # params are O(0.1-1); partitioned sums differ from one device by ~1e-7
DEVICES = 4


def _env(devices: int) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_")}
    env["JAX_PLATFORMS"] = "cpu"
    env["XLA_FLAGS"] = (
        f"--xla_force_host_platform_device_count={devices} --xla_backend_optimization_level=0"
    )
    return env


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def checks():
    """Start every subprocess check at once; ``checks(name)`` waits for one and parses it."""
    port = str(_free_port())
    commands = {
        "es": (["es"], DEVICES),
        "ppo": (["ppo"], DEVICES),
        "int8": (["int8"], DEVICES),
        "ppo_defaults": (["ppo-defaults"], 8),
        "rollout_hlo": (["rollout-hlo"], DEVICES),
        "process0": (["process", "0", port], 2),
        "process1": (["process", "1", port], 2),
    }
    running = {
        name: subprocess.Popen(
            [sys.executable, str(CHECKS), *args], env=_env(devices), text=True,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )
        for name, (args, devices) in commands.items()
    }
    results = {}

    def get(name):
        if name not in results:
            process = running[name]
            try:
                stdout, stderr = process.communicate(timeout=600)
            except subprocess.TimeoutExpired:
                process.kill()
                stdout, stderr = process.communicate()
            lines = [line for line in stdout.splitlines() if line.startswith("RESULT ")]
            if process.returncode or not lines:
                pytest.fail(f"check {name} failed (exit {process.returncode}):\n{stderr[-3000:]}")
            results[name] = json.loads(lines[-1][len("RESULT "):])
        return results[name]

    yield get
    for process in running.values():
        if process.poll() is None:
            process.kill()
            process.communicate()


# ---- multi-device: subprocesses -----------------------------------------------------------


@pytest.mark.parametrize("algo", ["eggroll", "openes"])
def test_es_on_four_devices_matches_one_device(checks, algo):
    report = checks("es")[algo]
    assert report["moved"] > 1e-3  # training changed the params, so equality means something
    assert report["max_diff"] < FLOAT32_TOL
    assert report["params_replicated"]


@pytest.mark.parametrize("algo", ["eggroll", "openes"])
def test_population_axis_is_sharded_over_the_devices(checks, algo):
    report = checks("es")[algo]
    rows = 16 // DEVICES
    # EGGROLL's noise (one row per antithetic pair) / OpenES's members, and the rollout's
    # fitness: a quarter per device.
    assert report["population_devices"] == [DEVICES]
    assert report["population_rows_per_device"] == [rows // 2 if algo == "eggroll" else rows]
    assert report["fitness_devices"] == [DEVICES]
    assert report["fitness_rows_per_device"] == [rows]


def test_population_not_divisible_by_devices_is_a_clear_error(checks):
    errors = checks("es")["errors"]
    for name in ("strategy", "es_trainer"):
        assert "18 cannot be split evenly over 4 devices in groups of 2" in errors[name]
        assert "multiple of 8 (e.g. 16 or 24)" in errors[name]
    assert "minibatch size num_envs * num_steps / num_minibatches=6 cannot be split evenly " \
        "over 4 devices" in errors["ppo_minibatch"]


def test_ppo_defaults_build_and_train_on_one_to_eight_devices(checks):
    report = checks("ppo_defaults")
    assert report["devices"] == 8
    # num_envs=4 is rounded up to the device count where it does not divide, with a warning.
    assert report["num_envs"] == {"1": 4, "2": 4, "4": 4, "8": 8}
    assert [bool(report["warned"][d]) for d in ("1", "2", "4", "8")] == [False, False, False, True]
    assert "running 8 environments instead" in report["warned"]["8"][0]
    assert report["env_steps"] == [8 * 128] * 2  # one update of 8 envs x 128 steps, per seed
    assert report["obs_devices"] == [8] and report["finite"]


def test_int8_on_four_devices_matches_one_device(checks):
    report = checks("int8")
    assert report["moved"] > 0  # training changed the int8 kernels, so equality means something
    assert report["params_equal"]  # integer updates from the same returns: bit for bit
    assert report["obs_stats_max_diff"] < 1e-4  # pooled float sums, partitioned differently
    assert report["env_steps"][0] == report["env_steps"][1]
    assert report["params_replicated"]
    assert report["noise_devices"] == [DEVICES]
    assert report["noise_rows_per_device"] == [16 // 2 // DEVICES]  # each device: its own pairs
    assert "18 cannot be split evenly over 4 devices in groups of 2" in report["errors"]["population"]


def test_sharded_rollout_reduces_across_devices_once_per_chunk_not_per_step(checks):
    report = checks("rollout_hlo")
    for variant in ("obs_stats", "no_obs_stats"):
        outer, inner = report[variant]
        # The outer loop's condition is the one cross-device reduction for stopping: any(alive).
        assert outer["depth"] == 0 and outer["trip_count"] is None
        assert outer["condition_collectives"] == ["all-reduce"]
        assert outer["body_collectives"] == []
        # Its body is the K-step loop, which needs no device-to-host or cross-device stop check.
        assert inner["depth"] == 1 and inner["trip_count"] == report["chunk"]
        assert inner["condition_collectives"] == []
    # Without observation statistics an env step needs nothing from other devices.
    assert report["no_obs_stats"][1]["body_collectives"] == []


def test_ppo_on_four_devices_matches_one_device(checks):
    report = checks("ppo")
    assert report["moved"] > 1e-4
    assert report["max_diff"] < FLOAT32_TOL
    assert report["params_replicated"]
    assert report["obs_devices"] == [DEVICES]
    assert report["obs_rows_per_device"] == [8 // DEVICES]  # the env axis is split


def test_two_processes_match_one_process_on_one_device(checks):
    first, second = checks("process0"), checks("process1")
    for report in (first, second):
        assert (report["devices"], report["local_devices"]) == (4, 2)
        assert report["params_replicated"]
    assert first["params"] == second["params"]  # every process holds the identical update
    one_device = np.asarray(checks("es")["eggroll"]["one_device_params"])
    np.testing.assert_allclose(first["params"], one_device, rtol=0, atol=FLOAT32_TOL)


def test_two_processes_share_a_run_folder_without_writing_a_row_twice(checks):
    # One chunk of 2 seeds: process 0 alone logs its 2 rows; both took part in the checkpoint.
    for report in (checks("process0"), checks("process1")):
        assert report["metric_rows"] == 2
        # one checkpoint (step 1, written once by orbax for both processes) and its checksum
        assert [name for name in report["checkpoints"] if name.isdigit()] == ["1"]
        assert "1.sha256" in report["checkpoints"]


# ---- one device: in this process ----------------------------------------------------------


def test_one_device_adds_no_sharding_at_all():
    mesh = distributed.make_population_mesh()
    assert mesh.size == jax.device_count() == 1
    strategy = Eggroll(16, 0.1, mesh=mesh)
    state = strategy.init(jax.random.key(0), {"w": jax.numpy.ones((3, 2))})
    program = str(jax.make_jaxpr(lambda s: strategy.tell(s, strategy.ask(s), jax.numpy.arange(16.0)))(state))
    assert "sharding_constraint" not in program


def test_more_devices_than_exist_is_a_clear_error():
    with pytest.raises(ValueError, match=r"devices=2, but this run has 1 device.*xla_force_host"):
        distributed.make_population_mesh(2)
    with pytest.raises(ValueError, match="devices must be >= 0"):
        ESConfig(devices=-1).validate()


def test_initialize_does_nothing_without_a_cluster_and_rejects_half_a_cluster(monkeypatch):
    for name in ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID"):
        monkeypatch.delenv(name, raising=False)
    assert distributed.initialize() is False
    monkeypatch.setenv("JAX_COORDINATOR_ADDRESS", "127.0.0.1:1234")
    with pytest.raises(ValueError, match="JAX_NUM_PROCESSES and JAX_PROCESS_ID"):
        distributed.initialize()


def test_train_cli_has_a_devices_flag_checked_before_compiling():
    from eggroll_rl.cli.train import build

    argv = ["--algo", "eggroll", "--env", "gymnax/CartPole-v1", "--population-size", "16", "--no-progress"]
    trainer, *_ = build(argv + ["--devices", "1"])
    assert trainer.config.devices == 1 and trainer.mesh.size == 1
    with pytest.raises(ValueError, match="devices=2, but this run has 1 device"):
        build(argv + ["--devices", "2"])


def test_bench_device_counts_double_up_to_the_maximum():
    from eggroll_rl.bench.devices import device_counts

    assert device_counts(1) == [1]
    assert device_counts(4) == [1, 2, 4]
    assert device_counts(6) == [1, 2, 4, 6]
    with pytest.raises(ValueError, match="--devices must be >= 1"):
        device_counts(0)
