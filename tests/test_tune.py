"""The per-task random search (experiments/tune.py): one protocol for EGGROLL and OpenES.

The trials' training is replaced by a stand-in that records what it was asked to run, so these
tests check the protocol (same draws and budget for both algorithms, interleaving, resuming,
tuning seeds, writing the best trial into a preset) without compiling. One test trains a real
trial of each algorithm on CartPole at a tiny budget, to check that a trial runs end to end.
"""

from __future__ import annotations

import json
import shutil
import tomllib

import pytest

from eggroll_rl.experiments import preset_files, tune

ENV = "gymnax/CartPole-v1"


@pytest.fixture
def fake_trials(monkeypatch):
    """Trials that return ``lr * 1000`` as their final return, and the calls made."""
    calls = []

    def fake(task, preset, algo, config, total_steps, seeds):
        calls.append((algo, dict(config), total_steps, list(seeds)))
        return {"config": json.dumps(config), "total_steps": total_steps,
                "seeds": json.dumps(list(seeds)), "final_mean": config["lr"] * 1000,
                "finals": "[]", "best_eval": 0.0, "wall_s": 0.0, "compile_s": 0.0}

    monkeypatch.setattr(tune, "run_trial", fake)
    return calls


def test_both_algorithms_get_the_same_draws_budget_and_seeds_interleaved(tmp_path, fake_trials):
    tune.main(["--env", ENV, "--trials", "4", "--total-steps", "1000", "--out-dir", str(tmp_path)])
    assert [call[0] for call in fake_trials] == ["eggroll", "openes"] * 4
    for egg, oes in zip(fake_trials[::2], fake_trials[1::2]):
        rank = egg[1].pop("rank")
        assert rank in tune.SPACE["rank"] and "rank" not in oes[1]
        assert egg[1:] == oes[1:]  # same draw (but rank), budget and seeds
        assert egg[3] == [1000]  # tuning seeds default away from the comparison's 0, 1, ...
    draws = [json.dumps(call[1], sort_keys=True) for call in fake_trials[::2]]
    assert len(set(draws)) > 1
    # Trial 0 is the preset's own values, the incumbent.
    preset = preset_files.load(ENV).config("eggroll")
    assert fake_trials[0][1] == {name: getattr(preset, name) for name in tune.SPACE if name != "rank"}


def test_a_rerun_continues_the_same_sequence_and_refuses_another_budget(tmp_path, fake_trials):
    tune.main(["--env", ENV, "--trials", "2", "--total-steps", "1000", "--out-dir", str(tmp_path)])
    tune.main(["--env", ENV, "--trials", "3", "--total-steps", "1000", "--out-dir", str(tmp_path)])
    fresh = tmp_path / "fresh"
    tune.main(["--env", ENV, "--trials", "3", "--total-steps", "1000", "--out-dir", str(fresh)])
    assert fake_trials[4:6] == fake_trials[-2:]  # trial 2 resumed = trial 2 of a fresh search
    rows = tune.read_trials(tune.trials_path(tmp_path, ENV, "openes"))
    assert [row["trial"] for row in rows] == ["0", "1", "2"]
    with pytest.raises(SystemExit, match="1,000 steps"):
        tune.main(["--env", ENV, "--trials", "3", "--total-steps", "2000", "--out-dir", str(tmp_path)])


def test_apply_writes_each_best_trial_into_the_preset_and_keeps_the_rest(tmp_path, fake_trials, monkeypatch):
    presets = tmp_path / "task-presets"
    shutil.copytree(preset_files.PRESET_DIR, presets)
    monkeypatch.setattr(preset_files, "PRESET_DIR", presets)
    before = tomllib.loads((presets / f"{ENV}.toml").read_text())
    search = ["--env", ENV, "--trials", "5", "--total-steps", "1000", "--out-dir", str(tmp_path)]
    tune.main(search)
    ran = len(fake_trials)
    tune.main(search + ["--apply"])  # the search is done: runs nothing, writes the best
    assert len(fake_trials) == ran
    text = (presets / f"{ENV}.toml").read_text()
    after = tomllib.loads(text)
    for algo in ("eggroll", "openes"):
        rows = tune.read_trials(tune.trials_path(tmp_path, ENV, algo))
        best = max(rows, key=lambda row: float(row["final_mean"]))
        for field, value in json.loads(best["config"]).items():
            assert after[algo][field] == value
        assert f"(trial {best['trial']}," in text
    assert after["ppo"] == before["ppo"] and after["threshold"] == before["threshold"]
    # Applying again replaces its comment line rather than stacking another.
    tune.main(search + ["--apply"])
    assert (presets / f"{ENV}.toml").read_text() == text
    preset_files.load(presets / f"{ENV}.toml")


def test_presets_set_the_search_budget_and_populations(tmp_path, fake_trials, monkeypatch):
    presets = tmp_path / "task-presets"
    shutil.copytree(preset_files.PRESET_DIR, presets)
    monkeypatch.setattr(preset_files, "PRESET_DIR", presets)
    path = presets / f"{ENV}.toml"
    lines = [line for line in path.read_text().split("\n") if not line.startswith("tune_")]
    path.write_text("tune_steps = 777\ntune_trials = 3\ntune_population = [6, 10]\n" + "\n".join(lines))
    tune.main(["--env", ENV, "--out-dir", str(tmp_path)])
    assert len(fake_trials) == 6 and {call[2] for call in fake_trials} == {777}
    assert {call[1]["population_size"] for call in fake_trials[2:]} <= {6, 10}  # after the incumbent
    path.write_text(path.read_text().replace("[6, 10]", "[6, 9]"))
    with pytest.raises(preset_files.PresetError, match="even"):
        preset_files.load(path)


def test_toml_values_round_trip():
    for value in (True, False, 3, 0.0005, "centered_rank", 'a "quoted" \\ path', [256, 256], 1e-3):
        assert tomllib.loads(f"v = {preset_files.toml_value(value)}")["v"] == value


def test_a_real_trial_of_each_algorithm_trains_and_is_recorded(tmp_path, monkeypatch):
    presets = tmp_path / "task-presets"
    shutil.copytree(preset_files.PRESET_DIR, presets)
    monkeypatch.setattr(preset_files, "PRESET_DIR", presets)
    path = presets / f"{ENV}.toml"  # a tiny network: the trial's fields beyond the space
    path.write_text(path.read_text().replace("[eggroll]\n", "[eggroll]\nhidden = [8]\n")
                    .replace("[openes]\n", "[openes]\nhidden = [8]\n"))
    tune.main(["--env", ENV, "--trials", "1", "--total-steps", "3000", "--out-dir", str(tmp_path),
               "--choose", "population_size=8", "episodes_per_member=1"])
    for algo in ("eggroll", "openes"):
        (row,) = tune.read_trials(tune.trials_path(tmp_path, ENV, algo))
        assert int(row["total_steps"]) == 3000 and json.loads(row["seeds"]) == [1000]
        assert 8 <= float(row["final_mean"]) <= 500  # a CartPole return
