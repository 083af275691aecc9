"""Presets, compare, plot: the experiments pipeline end to end on a tiny budget.

One tiny comparison (CartPole, 8-unit network, 2 seeds, a few thousand steps) is shared by the
module; it is run in two parts to check that finished (env, algo) pairs are kept and skipped.
A third run of its first part is killed after a checkpoint and rerun, to check that the pair
resumes from the checkpoint and ends where the uninterrupted one did. Progress lines, the ETA
arithmetic and the output folder's lock are checked without training.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import pathlib
import shutil
import tomllib

import pytest

from eggroll_rl.agents import run_folder
from eggroll_rl.agents.es import ESConfig
from eggroll_rl.agents.ppo import PPOConfig
from eggroll_rl.envs import suites
from eggroll_rl.experiments import compare, plot, preset_files, results

ENV = "gymnax/CartPole-v1"
TINY = compare.parse_set(
    ["hidden=[8]", "population_size=8", "eval_episodes=2", "ppo.num_envs=4", "ppo.num_steps=16"]
)


# ---- presets ---------------------------------------------------------------------------


def test_every_paper_env_has_a_preset():
    # Other envs may have one too (gymnax/Acrobot-v1), so that their defaults learn.
    assert set(compare.PAPER_ENVS) <= set(preset_files.names())


@pytest.mark.parametrize("name", compare.PAPER_CPU_ENVS)
def test_paper_cpu_envs_have_a_cpu_budget_a_search_and_the_papers_network(name):
    preset = preset_files.load(name)
    assert preset.cpu_steps and preset.tune_steps and preset.tune_trials and preset.tune_population
    for algo in ("eggroll", "openes", "ppo"):
        config = preset.config(algo, preset.cpu_steps)
        assert tuple(config.hidden) == (256, 256, 256) and config.layer_norm


def test_estimate_adds_each_pairs_steps_at_its_measured_speed():
    plan = compare.Plan(env_ids=("gymnax/CartPole-v1", "gymnax/Pendulum-v1"), algos=("eggroll", "ppo"),
                        seeds=(0, 1), total_steps=36_000)
    sizing = {"pairs": {"gymnax/CartPole-v1 eggroll": {"steps_per_s": 20.0, "compile_s": 0.0},
                        "gymnax/CartPole-v1 ppo": {"steps_per_s": 10.0, "compile_s": 3600.0}}}
    text = compare.estimate(plan, sizing, gpu_speedup=4)
    # 36,000 steps x 2 seeds / 20 per s = 1 h; / 10 per s = 2 h, + 1 h compile.
    assert "| gymnax/CartPole-v1 | 36,000 | 1.00 | 3.00 | 4.00 | 1.000 |" in text
    assert "| gymnax/Pendulum-v1 | 36,000 | not measured | not measured | 0.00 | 0.000 |" in text
    assert "Total: 4.0 CPU hours; 1.00 GPU hours (assumed). 2 (env, algo) pairs not measured" in text


@pytest.mark.parametrize("name", preset_files.names())
def test_every_preset_loads_and_builds_valid_configs(name):
    preset = preset_files.load(name)
    assert preset.env == name and preset.note
    assert set(preset.algos) == {"eggroll", "openes", "ppo"}
    for algo in preset.algos:
        config = preset.config(algo)
        assert isinstance(config, PPOConfig if algo == "ppo" else ESConfig)
        assert config.total_steps == preset.total_steps  # one budget for every algorithm
        if algo != "ppo":
            assert config.algo == algo
    suite = name.split("/", 1)[0]
    expected_extra = suites.OPTIONAL_EXTRAS[suite][0] if suite in suites.OPTIONAL_EXTRAS else None
    assert preset.extra == expected_extra
    # PPO: defaults, plus exactly the fields the preset file sets
    ppo_fields = {**preset.algos["ppo"], "total_steps": preset.total_steps}
    assert preset.config("ppo") == PPOConfig(**ppo_fields)


def test_agents_presets_is_a_view_of_the_files():
    from eggroll_rl.agents.presets import preset

    for algo in ("eggroll", "openes"):
        table = tomllib.loads((preset_files.PRESET_DIR / f"{ENV}.toml").read_text())[algo]
        assert preset(ENV, algo) == {"total_steps": 300_000, **table}
    assert preset("custom/none", "eggroll") == {}


def _write(tmp_path, text):
    path = tmp_path / "bad.toml"
    path.write_text('env = "gymnax/CartPole-v1"\ntotal_steps = 1000\nnote = "test"\n' + text)
    return path


@pytest.mark.parametrize(
    "text, expected",
    [
        ("[eggroll]\npopsize = 8\n", r"bad.toml: \[eggroll\] popsize is not a field of ESConfig"),
        ("colour = 1\n", r"bad.toml: unknown field 'colour'"),
        ('[eggroll]\nlr = "fast"\n', r"\[eggroll\] lr = 'fast' has type str, expected float"),
        ("[ppo]\nnum_envs = true\n", r"\[ppo\] num_envs = True has type bool, expected int"),
        ("[eggroll]\nhidden = 64\n", r"\[eggroll\] hidden = 64 has type int, expected an array of int"),
        ("[eggroll]\nhidden = [64, 0.5]\n", r"hidden\[1\] = 0.5 has type float, expected int"),
        ('[eggroll]\nlayer_norm = "yes"\n', r"layer_norm = 'yes' has type str, expected a bool"),
        ("[openes]\ntotal_steps = 5\n", r"\[openes\] total_steps belongs at the top level"),
        ("[eggroll]\npopulation_size = 7\n", r"bad.toml: \[eggroll\]: es: population_size=7 must be even"),
    ],
)
def test_bad_presets_name_the_file_field_and_expected_type(tmp_path, text, expected):
    with pytest.raises(preset_files.PresetError, match=expected):
        preset_files.load(_write(tmp_path, text))


def test_missing_fields_and_unknown_names_are_reported(tmp_path):
    path = tmp_path / "short.toml"
    path.write_text('env = "gymnax/CartPole-v1"\n')
    with pytest.raises(preset_files.PresetError, match="missing required field.*total_steps"):
        preset_files.load(path)
    with pytest.raises(preset_files.PresetError, match="Closest: gymnax/CartPole-v1"):
        preset_files.load("gymnax/CartPole-v2")


def test_train_preset_flag_loads_a_preset_and_flags_still_override(tmp_path):
    from eggroll_rl.cli.train import build

    path = _write(tmp_path, "[eggroll]\npopulation_size = 16\n[ppo]\nnum_envs = 8\n")
    trainer, loop, *_ = build(["--preset", str(path), "--lr", "0.2"])
    assert trainer.config.algo == "eggroll" and trainer.config.population_size == 16
    assert trainer.config.lr == 0.2 and loop.total_steps == 1000
    trainer, *_ = build(["--preset", ENV, "--algo", "ppo"])
    assert trainer.config == PPOConfig(total_steps=300_000, hidden=(256, 256, 256), layer_norm=True)
    with pytest.raises(ValueError, match="bad.toml: unknown field 'oops'"):
        build(["--preset", str(_write(tmp_path, "oops = 1\n"))])


def test_set_overrides_are_typed_and_routed_per_algo():
    assert TINY["*"] == {"hidden": (8,), "population_size": 8, "eval_episodes": 2}
    assert TINY["ppo"] == {"num_envs": 4, "num_steps": 16}
    with pytest.raises(ValueError, match="expected float"):
        compare.parse_set(["lr=fast"])
    with pytest.raises(ValueError, match="'nope' is not a config field"):
        compare.parse_set(["nope=1"])


# ---- compare and plot ------------------------------------------------------------------


@pytest.fixture(scope="module")
def comparison(tmp_path_factory):
    out = tmp_path_factory.mktemp("compare")
    plan = compare.Plan(
        env_ids=(ENV,), algos=("eggroll",), seeds=(0, 1), out=out, total_steps=3000,
        overrides=TINY, evals=4, progress=False, command="test",
    )
    first = compare.run_plan(plan, log=lambda _: None)
    assert not (out / run_folder.LOCK_FILE).exists()  # released once the plan is done
    first_rows = results.read(out / "results.csv")
    messages = []
    meta = compare.run_plan(dataclasses.replace(plan, algos=compare.ALGOS), log=messages.append)
    return out, plan, first, first_rows, meta, messages


def test_compare_writes_results_curves_summary_and_meta(comparison):
    out, plan, _, _, meta, _ = comparison
    with (out / "results.csv").open() as handle:
        reader = csv.DictReader(handle)
        assert tuple(reader.fieldnames) == results.COLUMNS
        rows = list(reader)
    assert {row["algo"] for row in rows} == set(compare.ALGOS)
    for algo in compare.ALGOS:
        algo_rows = [r for r in rows if r["algo"] == algo]
        assert {r["seed"] for r in algo_rows} == {"0", "1"}
        assert max(int(r["env_steps"]) for r in algo_rows) >= 3000  # the budget is spent
    png = (out / "curves.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 10_000
    summary = (out / "summary.md").read_text()
    for algo in compare.ALGOS:
        assert f"| {algo} |" in summary
    assert "random policy return" in summary and "threshold 475" in summary
    saved = json.loads((out / "meta.json").read_text())
    assert saved == json.loads(json.dumps(meta, default=str))
    for key in ("command", "date", "cores", "jax", "backend"):
        assert saved[key]
    info = saved["envs"][ENV]
    assert set(info["algos"]) == set(compare.ALGOS) and info["seeds"] == [0, 1]
    assert info["algos"]["ppo"]["config"]["num_envs"] == 4
    assert (out / "runs" / ENV / "ppo" / "metrics.csv").exists()
    # CartPole's preset sets neither loop switch; each pair records both
    for algo in compare.ALGOS:
        assert not info["algos"][algo]["seeds_in_sequence"]
        assert not info["algos"][algo]["xla_cpu_options"]


def test_loop_switches_come_from_the_preset_unless_given(tmp_path):
    bundled = preset_files.for_env(ENV).path.read_text()
    custom = tmp_path / "custom.toml"
    custom.write_text("seeds_in_sequence = true\nxla_cpu_options = true\n" + bundled)
    switched, plain = preset_files.load(custom), preset_files.for_env(ENV)
    for field in ("seeds_in_sequence", "xla_cpu_options"):
        assert compare._from_preset(None, switched, field)
        assert not compare._from_preset(False, switched, field)
        assert not compare._from_preset(None, plain, field)
        assert compare._from_preset(True, None, field) and not compare._from_preset(None, None, field)
    custom.write_text("xla_cpu_options = 1\n" + bundled)
    with pytest.raises(preset_files.PresetError, match="xla_cpu_options"):
        preset_files.load(custom)


def test_finished_pairs_are_kept_and_skipped(comparison):
    out, _, first, first_rows, _, messages = comparison
    assert {r["algo"] for r in first_rows} == {"eggroll"}
    assert any("skip gymnax/CartPole-v1 eggroll" in m for m in messages)
    kept = [r for r in results.read(out / "results.csv") if r["algo"] == "eggroll"]
    assert kept == first_rows  # not rerun
    assert first["envs"][ENV]["algos"]["eggroll"]["finished"]


def test_rerun_with_other_seeds_refuses_to_mix_results(comparison):
    out, plan, *_ = comparison
    with pytest.raises(ValueError, match="pick another --out"):
        compare.run_plan(dataclasses.replace(plan, seeds=(0, 1, 2)), log=lambda _: None)


def test_progress_lines_count_the_plan(comparison):
    *_, messages = comparison
    done = [m for m in messages if ": done | plan: " in m]
    # eggroll was finished by the first part: the rerun counts it, and its rate, from meta.json
    assert done[0].startswith(f"{ENV} openes: done | plan: 2/3 pairs, 12k/18k env steps (67%)")
    assert done[0].endswith("; ETA after a first measure of ppo")
    assert done[1] == f"{ENV} ppo: done | plan: 3/3 pairs, 18k/18k env steps (100%)"


def test_unavailable_env_is_skipped_with_a_note(comparison, tmp_path, monkeypatch):
    monkeypatch.setitem(suites.OPTIONAL_EXTRAS, "fakesuite", ("fakesuite", "no_such_package_f"))
    plan = dataclasses.replace(comparison[1], env_ids=("fakesuite/Thing-v0",), out=tmp_path)
    messages = []
    meta = compare.run_plan(plan, log=messages.append)
    assert 'pip install -e ".[fakesuite]"' in meta["envs"]["fakesuite/Thing-v0"]["skipped"]
    assert "Skipped: " in (tmp_path / "summary.md").read_text()
    assert messages == [f"skip fakesuite/Thing-v0: {meta['envs']['fakesuite/Thing-v0']['skipped']}"]


class Killed(Exception):
    """Stands for a kill of the compare process in the middle of a pair."""


def test_a_killed_pair_resumes_from_its_checkpoint_for_every_seed(comparison, tmp_path):
    _, plan, _, first_rows, _, _ = comparison
    plan = dataclasses.replace(plan, out=tmp_path, checkpoint_every=1, status_seconds=0)
    run_dir = tmp_path / "runs" / ENV / "eggroll"
    lines = []

    def killed_at_the_third_chunk_end(message):
        lines.append(message)
        if sum(" env steps | plan: " in line for line in lines) == 3:  # checkpointed just before
            raise Killed

    with pytest.raises(Killed):
        compare.run_plan(plan, log=killed_at_the_third_chunk_end)
    assert lines[0] == f"{ENV} eggroll: 3,000 env steps x 2 seeds"
    assert not (tmp_path / run_folder.LOCK_FILE).exists()
    assert not results.read(tmp_path / "results.csv")  # the pair is not finished
    saved = run_folder.checkpoint_steps(run_dir)
    assert saved and saved[-1] == 3  # one generation per chunk here

    messages = []
    compare.run_plan(plan, log=messages.append)
    assert messages[0] == f"{ENV} eggroll: 3,000 env steps x 2 seeds (resuming from the checkpoint at iteration 3)"
    # both seeds resumed together, from iteration 3 on, and ended where the straight run did
    finished = json.loads((tmp_path / "meta.json").read_text())["envs"][ENV]["algos"]
    assert set(finished) == {"eggroll"}
    strip = lambda rows: [{k: v for k, v in row.items() if k != "wall_s"} for row in rows]
    assert strip(results.read(tmp_path / "results.csv")) == strip(first_rows)


def test_a_second_compare_on_the_same_out_fails_at_once_in_one_line(tmp_path, monkeypatch):
    def no_training(*args, **kwargs):
        raise AssertionError("the second compare got past the lock")

    monkeypatch.setattr(compare, "_run_env", no_training)
    out = tmp_path / "out"
    with run_folder.RunLock(out):  # the first compare, still running
        with pytest.raises(SystemExit) as stop:
            compare.main(["--env", ENV, "--out", str(out), "--total-steps", "100", "--no-progress"])
    message = str(stop.value)
    assert message.startswith(f"eggroll-rl compare: {out} is in use by process ")
    assert "pick another --out" in message and "\n" not in message
    assert sorted(path.name for path in out.iterdir()) == []  # nothing written, lock released


# ---- progress and ETA, without training --------------------------------------------------


def test_eta_runs_each_algorithms_remaining_steps_at_its_own_rate():
    seconds, unknown = compare.eta({"eggroll": 1000, "openes": 300, "ppo": 50},
                                   {"eggroll": 100.0, "openes": 10.0})
    assert seconds == 40.0 and unknown == ["ppo"]
    assert compare.eta({"eggroll": 0}, {}) == (0.0, [])
    assert [compare.duration(s) for s in (42, 95, 7384)] == ["42s", "1m35s", "2h03m"]
    assert [compare.human(n) for n in (0, 500, 1000, 12_345, 2_500_000)] == ["0", "500", "1k", "12.3k", "2.5M"]


def test_status_lines_measure_each_algorithm_and_estimate_the_rest():
    now, lines = [0.0], []
    planned = {("a/Env", "eggroll"): 1000, ("a/Env", "openes"): 1000,
               ("b/Env", "eggroll"): 2000, ("b/Env", "openes"): 2000}
    status = compare.Status(planned, lines.append, every=60, clock=lambda: now[0])
    status.start(("a/Env", "eggroll"))
    now[0] = 5.0
    status.chunk(("a/Env", "eggroll"), 500)  # 100 steps/s so far, compile included
    assert lines[-1] == (
        "a/Env eggroll: 500/1k env steps | plan: 0/4 pairs, 500/6k env steps (8%); ETA 25s + the "
        "openes pairs (no rate yet) at eggroll 100, openes ? env steps/s, assuming the remaining "
        "pairs run at these measured rates"
    )
    now[0] = 6.0
    status.chunk(("a/Env", "eggroll"), 600)
    assert len(lines) == 1  # at most one chunk line a minute
    now[0] = 10.0
    status.finish(("a/Env", "eggroll"))
    status.start(("a/Env", "openes"))
    now[0] = 110.0
    status.finish(("a/Env", "openes"))  # 10 steps/s: OpenES is much slower per step
    assert lines[-1] == (
        "a/Env openes: done | plan: 2/4 pairs, 2k/6k env steps (33%); ETA 3m40s at eggroll 100, "
        "openes 10 env steps/s, assuming the remaining pairs run at these measured rates"
    )
    status.drop_env("b/Env")  # unavailable here
    assert status.line() == "plan: 2/2 pairs, 2k/2k env steps (100%)"


def test_status_of_a_rerun_counts_finished_pairs_and_their_rates():
    plan = compare.Plan(env_ids=("a/Env",), algos=("eggroll", "openes"), seeds=(0, 1),
                        total_steps=1000)
    meta = {"envs": {"a/Env": {"algos": {"eggroll": {
        "total_steps": 1000, "seeds": [0, 1], "wall_s": 15.0, "compile_s": 5.0}}}}}
    status = compare.Status.of_plan(plan, meta, lambda _: None)
    assert status.rates() == {"eggroll": 100.0}
    assert status.line() == "plan: 1/2 pairs, 2k/4k env steps (50%); ETA after a first measure of openes"
    status.start(("a/Env", "openes"), resumed=True)  # measured from its first chunk end on
    status.chunk(("a/Env", "openes"), 1000)
    assert status.rates() == {"eggroll": 100.0}


def test_plot_redraws_one_folder_and_overlays_several(comparison, tmp_path, capsys):
    out = comparison[0]
    (out / "curves.png").unlink()
    plot.main([str(out)])
    assert (out / "curves.png").stat().st_size > 10_000
    other = tmp_path / "other"
    shutil.copytree(out, other, ignore=shutil.ignore_patterns("runs"))
    overlay = tmp_path / "overlay.png"
    plot.main([str(out), str(other), "--out", str(overlay)])
    assert overlay.read_bytes().startswith(b"\x89PNG")
    with pytest.raises(SystemExit):
        plot.main([str(tmp_path / "empty")])


def test_summary_normalises_by_ppo_only_when_ppo_beats_random():
    from eggroll_rl.experiments import report

    assert report.normalised(60.0, (110.0, 1.0), 10.0) == "0.50"
    assert report.normalised(-150.0, (-200.0, 5.0), -1200.0) == "1.05"
    assert "PPO near random" in report.normalised(50.0, (12.0, 3.0), 10.0)
    assert report.normalised(50.0, None, 10.0) == "no PPO run"


# ---- the README's results section ------------------------------------------------------


def _rows(env, algo, finals, steps=1000, wall=2.0):
    return [
        {"env": env, "algo": algo, "seed": seed, "iteration": it, "env_steps": steps * it,
         "wall_s": wall * it, "eval_return": value if it == 2 else 0.0}
        for seed, value in enumerate(finals) for it in (1, 2)
    ]


def test_verdict_counts_two_standard_errors_of_the_difference():
    from eggroll_rl.experiments import report

    assert report.verdict([10.0, 10.2, 9.8], [10.1, 9.9, 10.0]) == "competitive"
    assert report.verdict([20.0, 20.2, 19.8], [10.1, 9.9, 10.0]) == "better"
    assert report.verdict([0.0, 0.2, -0.2], [10.1, 9.9, 10.0]) == "worse"
    # a large gap inside wide error bars is not called a win
    assert report.verdict([0.0, 40.0], [10.0, 10.0]) == "competitive"


def test_overview_and_readme_block_count_list_and_link(tmp_path):
    from eggroll_rl.experiments import report

    rows = (
        _rows("a/Env", "eggroll", [20.0, 20.2, 19.8], wall=1.0)
        + _rows("a/Env", "openes", [10.1, 9.9, 10.0], wall=4.0)
        + _rows("a/Env", "ppo", [30.0, 30.0, 30.0])
        + _rows("b/Env", "eggroll", [1.0, 1.0]) + _rows("b/Env", "openes", [1.0, 1.1])
    )
    meta = {"command": "cmd", "cores": 2, "jax": "x", "date": "2026-01-01T00:00",
            "envs": {"a/Env": {"total_steps": 2000, "random_return": 0.0},
                     "b/Env": {"total_steps": 2000}, "c/Env": {"skipped": "pip install c"}}}
    view = report.overview(rows, meta)
    a_line = next(line for line in view.table if line.startswith("| a/Env"))
    meta["envs"]["a/Env"]["algos"] = {"eggroll": {"seeds_in_sequence": True, "xla_cpu_options": True},
                                      "ppo": {"xla_cpu_options": True}}
    section = report.env_section("a/Env", {}, meta["envs"]["a/Env"])
    assert "Seeds in sequence: eggroll. Compiled with XLA:CPU options: eggroll, ppo." in section
    assert "| 20 ± 0.12 | 10 ± 0.058 | 30 ± 0 | better | 0.67 |" in a_line
    assert "3,000 / 750 / 1,500" in a_line  # steps/s: all seeds' steps at the last eval / wall s
    assert view.verdicts == {"a/Env": "better", "b/Env": "competitive"}
    assert view.pending == {"b/Env": ["ppo"]} and view.speedups == [4.0, 1.0]
    # the per-env table lives in summary.md; the README block has the counts and the lists
    assert a_line in report.summary(rows, meta).splitlines()
    block = report.readme_block(rows, meta, "res")
    assert "| a/Env" not in block and "[`summary.md`](res/summary.md)" in block
    assert "| here (2 envs) | 1 | 1 | 0 |" in block and "| the paper (16 envs) | 7 | 7 | 2 |" in block
    assert "Better here: a/Env. Competitive here: b/Env." in block and "Worse here" not in block
    assert "1x to 4x" in block and "![learning curves](res/curves.png)" in block
    assert "Still to run: b/Env (ppo)." in block
    assert "Skipped: c/Env (pip install c)." in block
    # b/Env has no random baseline; with one above every return, no algorithm learned there.
    meta["envs"]["b/Env"]["random_return"] = 1.05
    block = report.readme_block(rows, meta, "res")
    assert "No algorithm clearly beat the random policy" in block and "5% above it) on b/Env." in block
    # the block's length does not grow with the number of envs
    many = rows + [r | {"env": f"z{i}/Env"} for i in range(20) for r in _rows("", "eggroll", [1.0])]
    meta["envs"].update({f"z{i}/Env": {"total_steps": 2000} for i in range(20)})
    assert len(report.readme_block(many, meta, "res").splitlines()) == len(block.splitlines())
    rows_worse = _rows("a/Env", "eggroll", [1.0, 1.1]) + _rows("a/Env", "openes", [5.0, 5.1])
    assert "Worse here: a/Env." in report.readme_block(rows_worse, meta, "res")
    readme = tmp_path / "README.md"
    readme.write_text("head\n<!-- results:x:start -->\nold\n<!-- results:x:end -->\ntail\n")
    text = report.replace_marked(readme.read_text(), "results:x", block)
    assert text.startswith("head\n<!-- results:x:start -->\n`cmd`") and text.endswith("<!-- results:x:end -->\ntail\n")
    with pytest.raises(ValueError, match="expected one"):
        report.replace_marked("no markers", "results:x", block)


def test_beats_random_needs_two_standard_errors_and_five_percent():
    from eggroll_rl.experiments import report

    assert report.beats_random([30.0, 31.0, 29.0], 18.9)
    assert not report.beats_random([19.0, 19.1, 18.95], 18.9)  # within 5%
    assert not report.beats_random([40.0, 0.0, 20.0], 18.9)  # within two standard errors
    assert not report.beats_random([30.0, 31.0], None)
    assert report.beats_random([-150.0, -140.0], -1285.0)  # negative returns


def test_readme_results_section_is_generated_from_the_committed_files():
    from eggroll_rl.experiments import report

    root = pathlib.Path(__file__).resolve().parents[1]
    folder = root / "experiments" / "results" / "paper-cpu"
    rows = results.read(folder / "results.csv")
    meta = json.loads((folder / "meta.json").read_text())
    block = report.readme_block(rows, meta, "experiments/results/paper-cpu")
    readme = (root / "README.md").read_text()
    fix = "run `eggroll-rl report experiments/results/paper-cpu --readme README.md`"
    assert report.replace_marked(readme, "results:paper-cpu", block) == readme, (
        f"README's paper-cpu section differs from the committed results: {fix}"
    )
    assert (folder / "summary.md").read_text() == report.summary(rows, meta), (
        f"summary.md differs from the committed results: {fix}"
    )
