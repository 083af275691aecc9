"""End to end: ``eggroll-rl train --algo eggroll --int8`` solves gymnax CartPole-v1, and the
exported int8 policy runs in plain NumPy with exactly the JAX policy's actions.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from eggroll_rl import int8_numpy
from eggroll_rl.cli import train as train_cli
from eggroll_rl.agents.int8_es import Int8ESConfig, Int8ESTrainer
from eggroll_rl.agents.loop import run
from eggroll_rl.envs import obs_norm


def test_int8_cli_solves_cartpole_and_exports(tmp_path):
    out = tmp_path / "run"
    trainer, loop, run_dir, resume, record, _ = train_cli.build([
        "--algo", "eggroll", "--int8", "--env", "gymnax/CartPole-v1", "--total-steps", "1200000",
        "--iterations-per-chunk", "10", "--out", str(out), "--no-progress",
    ])
    assert isinstance(trainer, Int8ESTrainer) and record["int8"] and not resume
    result = run(trainer, loop, run_dir, config_record=record)
    final = result.final()[0]
    assert final >= 475, f"int8 EGGROLL reached only {final} on CartPole-v1"

    path = train_cli.export(trainer, result.state, run_dir, record)
    assert path == out / "policy_int8.npz"
    policy = int8_numpy.load(path)
    state = jax.tree_util.tree_map(lambda x: x[0], result.state)
    assert all(np.asarray(w).dtype == np.int8 for w in state.params)
    for w, saved in zip(state.params, policy.kernels):
        np.testing.assert_array_equal(np.asarray(w), saved)
    obs = np.random.default_rng(0).normal(size=(256, 4)).astype(np.float32) * [1, 1, 0.1, 1]
    obs = obs.astype(np.float32)
    head, _ = trainer.network.apply(
        state.params, obs_norm.normalize(state.obs_stats, jnp.asarray(obs))
    )
    np.testing.assert_array_equal(int8_numpy.act(policy, obs), np.argmax(np.asarray(head), -1))


def test_int8_flag_is_eggroll_only_and_config_validates():
    with pytest.raises(SystemExit):
        train_cli.build(["--algo", "ppo", "--int8", "--env", "gymnax/CartPole-v1"])
    with pytest.raises(ValueError, match="population_size"):
        Int8ESConfig(population_size=7).validate()
    with pytest.raises(ValueError, match="alpha"):
        Int8ESConfig(alpha=0.001, alpha_min=0.01).validate()
