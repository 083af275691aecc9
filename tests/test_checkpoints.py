"""Checkpoints restore exactly, typed keys included, and a corrupt newest one falls back."""


import jax
import jax.numpy as jnp
import numpy as np
import pytest

from eggroll_rl.agents.checkpoints import Checkpointer
from eggroll_rl.agents.run_log import RunLog


def _state(offset):
    return {
        "params": {"w": jnp.arange(6.0).reshape(2, 3) + offset},
        "key": jax.random.key(3 + offset),
        "count": jnp.int32(offset),
        "nothing": None,
    }


def _same(a, b):
    unwrap = lambda x: jax.random.key_data(x) if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key) else x
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
        np.testing.assert_array_equal(np.asarray(unwrap(x)), np.asarray(unwrap(y)))


def test_latest_checkpoint_round_trips_exactly(tmp_path):
    saver = Checkpointer(tmp_path)
    saver.save(1, _state(0))
    saver.save(2, _state(1))
    step, restored = Checkpointer(tmp_path).restore_latest(_state(5))
    assert step == 2
    _same(restored, _state(1))
    assert jax.dtypes.issubdtype(restored["key"].dtype, jax.dtypes.prng_key)


def test_corrupt_latest_checkpoint_falls_back_to_previous_with_warning(tmp_path):
    saver = Checkpointer(tmp_path)
    saver.save(1, _state(0))
    saver.save(2, _state(1))
    for path in (tmp_path / "checkpoints" / "2").rglob("*"):
        if path.is_file():
            path.write_bytes(b"\x00garbage")
    with pytest.warns(UserWarning, match="checkpoint 2 .* could not be restored"):
        step, restored = Checkpointer(tmp_path).restore_latest(_state(5))
    assert step == 1
    _same(restored, _state(0))


def test_no_checkpoint_returns_the_template(tmp_path):
    step, restored = Checkpointer(tmp_path).restore_latest(_state(2))
    assert step is None
    _same(restored, _state(2))


def test_run_log_writes_csv_jsonl_and_truncates_on_resume(tmp_path):
    log = RunLog(tmp_path, tensorboard=False)
    log.append([{"iteration": i, "seed": 0, "env_steps": 10 * i, "eval_return": float(i)} for i in (1, 2, 3)])
    log.append([{"iteration": 4, "seed": 0, "env_steps": 40, "eval_return": 4.0, "new": 1.0}])
    lines = (tmp_path / "metrics.csv").read_text().splitlines()
    assert lines[0].split(",") == ["iteration", "seed", "env_steps", "eval_return", "new"]
    assert len(lines) == 5
    log.truncate_after(2)
    assert [row["iteration"] for row in log.rows()] == [1, 2]
    assert len((tmp_path / "metrics.csv").read_text().splitlines()) == 3
    assert log.plot("test").read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
