"""The Python training API (``eggroll_rl.agents.train``): the README example, validation before
compiling, the policy it returns, and agreement with the run folder the CLI also writes."""

import csv
import json
import pathlib
import runpy

import numpy as np
import pytest

from eggroll_rl.agents import ESConfig, TrainingRun, load, loop as loop_module, train

SNIPPET = pathlib.Path(__file__).parents[1] / "docs" / "snippets" / "train_api.py"
TINY = {"population_size": 8, "hidden": (8,), "eval_episodes": 2}


@pytest.fixture
def no_training(monkeypatch):
    """Fail the test if anything reaches the compile-and-train stage."""

    def refuse(*args, **kwargs):
        raise AssertionError("validation should have stopped this before training")

    monkeypatch.setattr(loop_module, "run", refuse)


def test_readme_snippet_solves_cartpole_and_acts(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    names = runpy.run_path(str(SNIPPET), run_name="__main__")
    run = names["run"]
    assert isinstance(run, TrainingRun)
    assert run.final()[0] >= 475, [row["eval_return"] for row in run.rows]
    assert run.stopped == "stop_at"
    assert (tmp_path / "cartpole-policy" / "policy.json").is_file()


@pytest.mark.parametrize(
    "algo, env, kwargs, message",
    [
        ("dqn", "gymnax/CartPole-v1", {}, "unknown algo 'dqn': choose one of eggroll, openes, ppo"),
        ("eggroll", "gymnax/CartPol-v1", {}, "Closest known ids: gymnax/CartPole-v1"),
        ("eggroll", "gymnax/CartPole-v1", {"config": {"pop_size": 8}},
         "'pop_size' was renamed 'population_size'"),
        ("eggroll", "gymnax/CartPole-v1", {"config": {"population_size": 7}}, "must be even"),
        ("ppo", "gymnax/CartPole-v1", {"config": ESConfig()}, "must be a PPOConfig"),
        ("openes", "gymnax/CartPole-v1", {"config": ESConfig()},
         "config.algo is 'eggroll' but algo is 'openes'"),
        ("eggroll", "gymnax/CartPole-v1", {"total_steps": 0}, "total_steps must be >= 1"),
        ("eggroll", "gymnax/CartPole-v1", {"time_budget": -1.0}, "time_budget must be > 0"),
        ("eggroll", "gymnax/CartPole-v1", {"network": "big"}, "network must be hidden widths"),
        ("ppo", "gymnax/CartPole-v1", {"int8": True}, "int8 trains integer EGGROLL"),
    ],
)
def test_bad_choices_raise_one_clear_value_error_before_compiling(no_training, algo, env, kwargs,
                                                                  message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        train(algo, env, progress=False, **kwargs)


def test_defaults_come_from_the_preset_and_overrides_apply(no_training):
    from eggroll_rl.agents import api
    from eggroll_rl.experiments import preset_files

    preset = preset_files.for_env("gymnax/CartPole-v1")
    planned = api.plan("eggroll", "gymnax/CartPole-v1", config={"lr": 0.2}, network=(16,))
    want = preset.config("eggroll", lr=0.2, hidden=(16,))
    assert planned.trainer.config == want
    assert planned.loop.total_steps == preset.total_steps
    config, source = api.default_config("eggroll", "gymnax/MountainCar-v0")
    assert (config, source) == (ESConfig(), "ESConfig defaults")


def test_seeds_in_sequence_comes_from_the_preset_unless_given(no_training, tmp_path):
    from eggroll_rl.agents import api
    from eggroll_rl.experiments import preset_files

    bundled = preset_files.for_env("gymnax/CartPole-v1").path.read_text()
    assert "seeds_in_sequence" not in bundled
    custom = tmp_path / "cartpole.toml"
    custom.write_text("seeds_in_sequence = true\n" + bundled)
    env = "gymnax/CartPole-v1"
    assert not api.plan("eggroll", env, seeds=(0, 1)).loop.seeds_in_sequence
    planned = api.plan("eggroll", env, seeds=(0, 1), preset=custom)
    assert planned.loop.seeds_in_sequence and planned.record["loop"]["seeds_in_sequence"]
    assert not api.plan("eggroll", env, seeds=(0, 1), preset=custom,
                        seeds_in_sequence=False).loop.seeds_in_sequence
    assert api.plan("ppo", env, seeds=(0, 1), seeds_in_sequence=True).loop.seeds_in_sequence


def test_run_matches_its_folder_and_the_saved_policy_acts_identically(tmp_path):
    out = tmp_path / "run"
    run = train("eggroll", "gymnax/CartPole-v1", seeds=(0, 1), total_steps=3_000, config=TINY,
                out=out, progress=False, iterations_per_chunk=2)
    assert run.seeds == (0, 1) and len(run.policies) == 2 and run.run_dir == out
    assert run.compile_s > 0 and run.wall_s > 0

    with (out / "metrics.csv").open() as handle:
        from_csv = list(csv.DictReader(handle))
    assert len(from_csv) == len(run.rows) > 0
    for row, written in zip(run.rows, from_csv):
        assert set(written) == set(row)
        for key, value in row.items():
            assert float(written[key]) == pytest.approx(float(value), rel=1e-12), key
    assert json.loads((out / "config.json").read_text())["config"]["population_size"] == 8

    obs = np.random.default_rng(0).normal(size=(64, 4)).astype(np.float32)
    actions = run.act(obs)
    assert actions.shape == (64,) and set(np.unique(actions)) <= {0, 1}
    assert run.act(obs[3]) == actions[3]  # one observation or a batch alike
    saved = run.save(tmp_path / "policy", seed_index=1)
    np.testing.assert_array_equal(load(saved).act(obs), run.act(obs, seed_index=1))
    # the run folder's export is seed 0's policy, the same one run.act uses
    np.testing.assert_array_equal(load(run.export_path).act(obs), actions)
