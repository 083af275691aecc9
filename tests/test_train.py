"""The main job end to end: ``eggroll-rl train`` solves CartPole with EGGROLL out of the box,
OpenES improves, and bad configurations stop with a clear message before anything compiles."""

import json

import numpy as np
import pytest

from eggroll_rl import envs
from eggroll_rl.agents import loop as loop_module
from eggroll_rl.cli import train as train_cli
from eggroll_rl.agents.es import ESConfig, ESTrainer
from eggroll_rl.agents.loop import LoopConfig, run


def test_readme_main_command_solves_cartpole_with_eggroll(tmp_path, capsys):
    """Exactly the README's first command (plus an output folder and no progress bar)."""
    out = tmp_path / "run"
    train_cli.main(["--algo", "eggroll", "--env", "gymnax/CartPole-v1", "--out", str(out), "--no-progress"])
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["eval_return"] >= 475, [row["eval_return"] for row in rows]
    assert rows[-1]["env_steps"] >= 300_000  # the preset's budget was spent, not skipped
    for name in ("config.json", "metrics.csv", "curve.png", "policy"):
        assert (out / name).exists(), name
    printed = capsys.readouterr().out
    assert "done: eval return" in printed
    assert "eval return >= 475 on every seed: at " in printed  # the preset's threshold


def test_report_counts_env_steps_alike_in_both_lines_with_several_seeds():
    """Seeds spend different env steps (episodes end at different times): both lines give the
    most any seed spent, so the threshold is never reached after the run's last count."""
    from eggroll_rl.agents.loop import TrainResult

    rows = [
        dict(iteration=i, seed=s, env_steps=steps, wall_s=float(i), eval_return=ret)
        for i, s, steps, ret in [
            (1, 0, 100, 480.0), (1, 1, 90, 300.0), (2, 0, 240, 500.0), (2, 1, 230, 490.0),
        ]
    ]
    result = TrainResult(rows=rows, state=None, compile_s=1.0, wall_s=2.0, run_dir=None)
    done, reached = train_cli.report_lines(result, (0, 1), 475.0, "policy")
    assert "done: eval return 495.0 (seeds [0, 1]), 240 env steps" in done
    assert reached.startswith("eval return >= 475 on every seed: at 240 env steps, 2.0 s")


def test_one_seed_runs_without_vmap_match_the_same_seed_in_a_vmapped_run():
    """One seed is traced without ``vmap`` (faster compile); it must train exactly the same.
    Several seeds train side by side in one program, each its own run."""
    config = ESConfig(total_steps=4_000, population_size=8, hidden=(8,), eval_episodes=2)
    trainer = ESTrainer(envs.make("gymnax/CartPole-v1"), config)
    common = dict(total_steps=4_000, iterations_per_chunk=2, progress=False)
    alone = run(trainer, LoopConfig(seeds=(1,), **common))
    # the vmapped run goes on until its slower seed has spent the budget: compare seed 1 up to
    # the chunk where the run of seed 1 alone stopped
    chunks = len(alone.rows)
    states = {}
    both = run(
        trainer, LoopConfig(seeds=(0, 1), **common),
        on_chunk=lambda done, state: states.setdefault(done, state),
    )
    seed_1 = [r for r in both.rows if r["seed"] == 1]
    assert len(seed_1) >= chunks > 1
    for key in ("eval_return", "env_steps"):
        assert [r[key] for r in alone.rows] == [r[key] for r in seed_1[:chunks]]
    for got, want in zip(_leaves(alone.state.evo.mean), _leaves(states[chunks].evo.mean)):
        np.testing.assert_allclose(got[0], want[1], rtol=1e-5, atol=1e-6)
    # the two seeds of the vmapped run are different runs: each row and param has its seed
    leaves = _leaves(both.state.evo.mean["params"])
    assert all(leaf.shape[0] == 2 for leaf in leaves)
    assert not np.allclose(leaves[0][0], leaves[0][1])
    assert sorted({row["seed"] for row in both.rows}) == [0, 1]


def test_seeds_in_sequence_train_exactly_as_vmapped_seeds():
    """``seeds_in_sequence`` runs each chunk's seeds one after the other (``lax.map``): the same
    runs as side by side, rows and params alike (up to float rounding, which this discrete
    task does not amplify), only cheaper where seeds' generations differ."""
    config = ESConfig(total_steps=3_000, population_size=8, hidden=(8,), eval_episodes=2)
    trainer = ESTrainer(envs.make("gymnax/CartPole-v1"), config)
    common = dict(total_steps=3_000, iterations_per_chunk=2, progress=False, seeds=(0, 1, 2))
    side = run(trainer, LoopConfig(**common))
    seq = run(trainer, LoopConfig(seeds_in_sequence=True, **common))
    # the seeds' episodes differ, so they spend the budget in different numbers of generations:
    # some seed's steps stop growing chunks before the run ends
    first_done = {}
    for r in side.rows:
        if r["env_steps"] >= 3_000:
            first_done.setdefault(r["seed"], r["iteration"])
    assert len(set(first_done.values())) > 1, first_done
    for key in ("seed", "iteration", "env_steps", "eval_return"):
        assert [r[key] for r in seq.rows] == [r[key] for r in side.rows], key
    for got, want in zip(_leaves(seq.state.evo.mean), _leaves(side.state.evo.mean)):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def _leaves(tree):
    import jax

    return [np.asarray(leaf) for leaf in jax.tree_util.tree_leaves(tree)]


def test_stop_at_ends_the_run_at_the_first_chunk_that_reaches_it(tmp_path):
    config = ESConfig(total_steps=200_000, population_size=8, hidden=(8,), eval_episodes=2)
    trainer = ESTrainer(envs.make("gymnax/CartPole-v1"), config)
    loop = LoopConfig(total_steps=200_000, iterations_per_chunk=2, seeds=(0, 1), progress=False,
                      stop_at=5.0)  # every CartPole episode lasts >= 8 steps: reached at once
    result = run(trainer, loop, tmp_path / "run")
    assert {row["iteration"] for row in result.rows} == {2}
    assert max(row["env_steps"] for row in result.rows) < 200_000
    assert result.first_reaching(5.0) == {
        "iteration": 2, "env_steps": max(r["env_steps"] for r in result.rows),
        "wall_s": result.rows[0]["wall_s"],
    }
    assert result.first_reaching(1e9) is None
    assert (tmp_path / "run" / "checkpoints").is_dir()  # the early stop is checkpointed


def test_openes_improves_on_cartpole():
    config = ESConfig(
        algo="openes", total_steps=60_000, population_size=64, hidden=(16, 16), lr=0.05, sigma=0.1
    )
    result = run(
        ESTrainer(envs.make("gymnax/CartPole-v1"), config),
        LoopConfig(total_steps=config.total_steps, iterations_per_chunk=2, progress=False),
    )
    returns = [row["eval_return"] for row in result.rows]
    assert max(returns[1:]) >= returns[0] + 80, returns  # random play scores ~20-40


@pytest.fixture
def no_training(monkeypatch):
    """Fail the test if anything reaches the compile-and-train stage."""

    def refuse(*args, **kwargs):
        raise AssertionError("validation should have stopped this before training")

    monkeypatch.setattr(train_cli, "run", refuse)
    monkeypatch.setattr(loop_module, "run", refuse)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--algo", "eggroll", "--env", "gymnax/CartPole-v1", "--lr", "-0.1"], "lr must be > 0"),
        (["--algo", "eggroll", "--env", "gymnax/CartPole-v1", "--population-size", "7"], "must be even"),
        (["--algo", "openes", "--env", "gymnax/CartPole-v1", "--sigma", "0"], "sigma must be > 0"),
        (["--algo", "ppo", "--env", "gymnax/CartPole-v1", "--num-envs", "3", "--num-steps", "5"],
         "divisible by num_minibatches"),
        (["--algo", "eggroll", "--env", "gymnax/CartPol-v1"], "CartPole-v1"),
        (["--algo", "eggroll", "--env", "gymnax/CartPole-v1", "--total-steps", "0"], "total_steps"),
    ],
)
def test_bad_config_fails_with_a_clear_message_before_compiling(no_training, argv, message):
    with pytest.raises(SystemExit) as error:
        train_cli.main(argv + ["--no-progress"])
    assert message in str(error.value)


def test_a_choice_outside_a_fields_choices_is_a_parser_error(no_training, capsys):
    argv = ["--algo", "eggroll", "--env", "gymnax/CartPole-v1", "--noise-dtype", "float16"]
    with pytest.raises(SystemExit) as error:
        train_cli.main(argv + ["--no-progress"])
    assert error.value.code == 2
    err = capsys.readouterr().err
    assert "float16" in err and "bfloat16" in err and "--noise-dtype" in err


def test_unknown_algo_is_rejected_by_the_parser(no_training, capsys):
    with pytest.raises(SystemExit):
        train_cli.main(["--algo", "dqn", "--env", "gymnax/CartPole-v1"])
    assert "invalid choice: 'dqn'" in capsys.readouterr().err


def test_a_run_stops_at_most_one_update_past_the_budget_whatever_the_chunk_length():
    """PPO spends a fixed number of env steps per update, so the end point is exact: the first
    update that reaches the budget, although a chunk holds many more updates."""
    from eggroll_rl.agents.ppo import PPO, PPOConfig

    config = PPOConfig(total_steps=1_000, num_envs=4, num_steps=16, hidden=(8,))
    loop = LoopConfig(total_steps=config.total_steps, iterations_per_chunk=50, progress=False)
    result = run(PPO(envs.make("gymnax/CartPole-v1"), config, eval_episodes=2), loop)
    per_update = config.steps_per_update
    (steps,) = result.final("env_steps")
    assert steps - per_update < config.total_steps <= steps
    assert result.rows[-1]["iteration"] == steps // per_update  # updates that ran, not 50
    assert result.stopped == "total_steps"


def test_time_budget_flag_stops_the_run_on_time_and_is_recorded(tmp_path):
    out = tmp_path / "run"
    trainer, loop, run_dir, resume, record, _ = train_cli.build([
        "--algo", "ppo", "--env", "gymnax/CartPole-v1", "--time-budget", "0.01", "--num-envs",
        "4", "--num-steps", "16", "--hidden", "8", "--out", str(out), "--no-progress",
    ])
    assert loop.total_steps is None and loop.time_budget == 0.01
    result = run(trainer, loop, run_dir, config_record=record)
    assert result.stopped == "time_budget" and len({r["iteration"] for r in result.rows}) == 1
    assert json.loads((out / "config.json").read_text())["loop"]["time_budget"] == 0.01


def test_old_flag_names_are_rejected_with_the_new_name(no_training, capsys):
    for old, new in [("--pop-size", "--population-size"),
                     ("--n-parallel-evaluations", "--episodes-per-member"),
                     ("--rank-transform", "--fitness-shaping centered_rank"),
                     ("--no-rank-transform", "--fitness-shaping zscore")]:
        with pytest.raises(SystemExit) as error:
            train_cli.main(["--algo", "eggroll", "--env", "gymnax/CartPole-v1", old, "8"])
        assert error.value.code == 2
        assert capsys.readouterr().err.strip() == f"eggroll-rl train: {old} was renamed {new}"


def test_help_names_where_the_defaults_came_from_and_describes_every_run_flag(capsys):
    with pytest.raises(SystemExit):
        train_cli.main(["--algo", "eggroll", "--env", "gymnax/Pendulum-v1", "--help"])
    text = capsys.readouterr().out
    assert "defaults: preset gymnax/Pendulum-v1" in text
    assert "defaults solve gymnax CartPole-v1" not in text
    run_flags = text.split("Config fields of the chosen algorithm")[0]
    assert "``" not in run_flags
    for action in train_cli._parser()._actions:
        assert action.help, f"{action.option_strings} has no help"
    with pytest.raises(SystemExit):
        train_cli.main(["--algo", "ppo", "--env", "gymnax/MountainCar-v0", "--help"])
    assert "defaults: PPOConfig defaults" in capsys.readouterr().out
