"""eggroll-rl bench: side-by-side ratios, and the timing helpers they rest on."""

import json
import os
import pathlib

import numpy as np
import pytest

from eggroll_rl.bench import suite as bench, timing as bench_timing
from eggroll_rl.networks import MLP


@pytest.fixture(scope="module")
def tiny_report():
    """One tiny case of every kind, in both compile modes (one run: compiles dominate)."""
    from eggroll_rl.bench.training import TrainingCase

    cases = [
        bench.Case("tiny", MLP(hidden=(8, 8), out_features=2), 4, 16, 2, episode_steps=10),
        bench.RolloutCase("tiny_rollout", "gymnax/CartPole-v1", (8,), 4, 3),
        bench.Int8Case("tiny_int8", (8,), 4, 2, 4, 2),
        TrainingCase("tiny_training", "gymnax/CartPole-v1", (8,), 8, 5),
    ]
    return bench.run(cases, repeats=1, log=lambda *_: None)


def test_bench_reports_side_by_side_ratios_for_tiny_cases(tiny_report):
    report = tiny_report
    json.dumps(report)  # the --json output must serialise
    # ratios depend on the host, so the report names it
    assert report["cpu"]["logical_cores"] == os.cpu_count()
    if pathlib.Path("/proc/cpuinfo").exists():
        assert report["cpu"]["model_name"] and report["cpu"]["caches"]
    mlp = report["cases"][0]
    for sfx in ("", "_with_options"):
        for name in ("inference", "eggroll", "openes"):
            assert mlp[f"step_s{sfx}"][name] > 0
        step_s, generation_s = mlp[f"step_s{sfx}"], mlp[f"generation_s{sfx}"]
        assert mlp[f"eggroll_vs_inference{sfx}"] == pytest.approx(
            step_s["inference"] / step_s["eggroll"]
        )
        layouts = mlp[f"inference_layouts_step_s{sfx}"]
        assert step_s["inference"] == layouts[mlp[f"ceiling_variant{sfx}"]]
        assert mlp[f"eggroll_vs_inference_paired{sfx}"]["rounds"] == 1
        expected = generation_s["openes"] / generation_s["eggroll"]
        assert mlp[f"eggroll_vs_openes{sfx}"] == pytest.approx(expected)
        assert generation_s["eggroll"] == pytest.approx(
            mlp[f"ask_s{sfx}"]["eggroll"] + 10 * step_s["eggroll"]
        )


def test_bench_every_case_reports_the_plain_jit_and_the_with_options_figure(tiny_report):
    report = tiny_report
    assert report["backend"] == "cpu" and report["modes"] == ["default", "with_options"]
    assert report["figures"]["default"].startswith("jax.jit")
    assert "compiler_options" in report["figures"]["with_options"]
    ratios = {
        "tiny": ("eggroll_vs_inference",),
        "tiny_rollout": ("rollout_eggroll_vs_inference",),
        "tiny_int8": ("int8_eggroll_vs_int8_inference", "int8_vs_float32"),
        "tiny_training": ("training_eggroll_vs_inference",),
    }
    for result in report["cases"]:
        assert result["status"] == "ok", result
        for ratio in ratios[result["case"]]:
            for sfx in ("", "_with_options"):
                assert result[ratio + sfx] > 0
                assert result[f"{ratio}_paired{sfx}"]["median"] > 0
                assert result[f"ceiling_variant{sfx}"]  # every ratio names its ceiling
    rows = {(row["case"], row["ratio"]) for row in report["headline"]}
    assert {(case, ratio) for case, names in ratios.items() for ratio in names} <= rows
    for row in report["headline"]:
        if "openes" not in row["ratio"]:  # OpenES is timed best-of only
            assert row["paired_median"] is not None
            assert row["paired_median_with_options"] is not None
    for key in ("rollout_eggroll_vs_inference", "training_eggroll_vs_inference_paired"):
        assert report[key] > 0 and report[key + "_with_options"] > 0
    assert "paired" in bench.format_table(report["headline"])


def test_bench_training_case_times_whole_generations_side_by_side(tiny_report):
    result = tiny_report["cases"][-1]
    seconds = result["seconds"]
    assert result["ceiling_variant"] in ("inference_batched", "inference_vmapped")
    assert seconds["inference_rollout"] == seconds[result["ceiling_variant"]]
    assert tiny_report["training_eggroll_vs_inference"] == pytest.approx(
        seconds["inference_rollout"] / seconds["eggroll_generation"]
    )
    assert result["env_steps_per_s"]["eggroll_generation"] == pytest.approx(
        8 * 5 / seconds["eggroll_generation"]
    )
    paired = result["training_eggroll_vs_inference_paired"]  # one round: the same calls
    assert paired["rounds"] == 1
    assert paired["median"] == pytest.approx(tiny_report["training_eggroll_vs_inference"])
    assert tiny_report["training_eggroll_vs_inference_paired"] == paired["median"]
    with_options = result["seconds_with_options"]
    assert result["training_eggroll_vs_inference_with_options"] == pytest.approx(
        with_options["inference_rollout"] / with_options["eggroll_generation"]
    )
    try:
        import evosax  # noqa: F401
    except ImportError:
        assert result["openes_vs_evosax"] is None
    else:
        assert result["openes_vs_evosax"] == pytest.approx(
            seconds["evosax_openes_generation"] / seconds["openes_generation"]
        )


def test_default_suite_cases_are_the_documented_ones():
    from eggroll_rl.bench.training import TrainingCase

    cases = {case.name: case for case in bench.default_cases()}
    for name, size in (("mlp_3x256_n1024", 1024), ("mlp_3x256_n4096", 4096)):
        assert cases[name].population_size == size and cases[name].steps == 40
        assert cases[name].in_features == 4 and tuple(cases[name].model.hidden) == (256,) * 3
    assert cases["dense_1024"].population_size == 512 and cases["dense_1024"].in_features == 1024
    assert isinstance(cases["flax_dense_3x256_n1024"].model, bench.PlainDenseMLP)
    sizes = {c.population_size for c in cases.values() if isinstance(c, bench.RolloutCase)}
    assert sizes == {512, 2048}
    assert isinstance(cases["training_cartpole_3x256"], TrainingCase)
    assert all(c.population_size >= 2 for c in bench.default_cases(0.0001))


def test_a_case_that_fails_is_recorded_not_dropped():
    class Broken(MLP):
        def __call__(self, x):
            raise RuntimeError("RESOURCE_EXHAUSTED: Out of memory while trying to allocate")

    cases = [bench.Case("broken", Broken(hidden=(4,)), 4, 4, 1)]
    report = bench.run(cases, repeats=1, log=lambda *_: None)
    (result,) = report["cases"]
    assert result["status"] == "out_of_memory" and "RESOURCE_EXHAUSTED" in result["error"]
    assert report["headline"] == [{"case": "broken", "status": "out_of_memory"}]
    assert bench.failure("x", ValueError("bad shape"))["status"] == "failed"


def test_openes_memory_check_names_what_it_would_need(monkeypatch):
    params = {"w": np.zeros((1024, 1024), np.float32)}  # 4 MiB per member
    assert bench.openes_memory_check(16, params) is None
    monkeypatch.setattr(bench, "memory_limit_bytes", lambda: 2**30)
    reason = bench.openes_memory_check(256, params)  # 1 GiB of members, limit half of 1 GiB
    assert reason.startswith("skipped: would need 1.0 GiB")
    monkeypatch.setattr(bench, "memory_limit_bytes", lambda: None)
    assert "threshold" in bench.openes_memory_check(2048, params)  # 8 GiB, over 4 GiB


def test_gpu_suite_runs_tiny_on_the_cpu(tmp_path, capsys):
    """``--suite gpu --tiny`` end to end, the JSON written where asked: the cases of its own
    (agreement, the dense grid). The rollout and training cases run ``run_rollout_case`` and
    ``run_training_case``, covered by ``tiny_report``; Brax's Ant compile alone outlasts this
    file's time on a 2-core CPU. The time guard test covers skipping."""
    out = tmp_path / "bench_gpu.json"
    bench.main([
        "--suite", "gpu", "--tiny", "--repeats", "1", "--json", "--out", str(out),
        "--case", "agreement", "--case", "dense", "--case", "no_such_case",
    ])
    report = json.loads(out.read_text())
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == report
    assert report["suite"] == "gpu" and report["modes"] == ["default"]
    assert report["devices"] and report["device"] and report["backend"] == "cpu"
    assert "jax_default_matmul_precision" in report["tf32"] and not report["tf32"]["tf32_may_apply"]
    assert report["time_guard"]["spent_s"] < 8 * 60
    agreement = report["agreement"]
    assert agreement["passed"] and agreement["forward_max_abs_diff"] <= agreement["forward_tolerance"]
    names = [case["case"] for case in report["cases"]]
    assert names[0] == "agreement" and all(n.startswith("dense_") for n in names[1:])
    assert report["unknown_cases"] == ["no_such_case"]
    dense = [case for case in report["cases"] if case["case"].startswith("dense_")]
    assert len(dense) == 2
    for case in report["cases"][1:]:
        assert case["status"] == "ok", case
        ratio = "eggroll_vs_inference"
        assert case[ratio] > 0 and case[f"{ratio}_paired"]["median"] > 0
        assert case["ceiling_variant"]
        assert case[ratio + "_with_options"] is None  # the gpu suite: plain jax.jit only
    for case in dense:
        assert case["matmul_tflop_per_s"]["eggroll"] > 0 and case["eggroll_vs_openes_step"] > 0


def test_gpu_suite_time_guard_skips_what_would_not_fit(monkeypatch):
    from eggroll_rl.bench import gpu

    now = [0.0]

    def planned(name, kind, seconds):
        def run():
            now[0] += seconds
            return {"case": name, "status": "ok"}
        return gpu.Planned(name, kind, run)

    monkeypatch.setattr(gpu, "plan", lambda *a, **k: [
        planned("agreement", "agreement", 10),
        planned("dense_a", "dense", 50),
        planned("dense_b", "dense", 50),  # estimated 50 s (the longest dense yet): 40 s left
        planned("training_x", "training", 1),  # estimated 120 s
    ])
    report = gpu.run(max_minutes=100 / 60, log=lambda *_: None, clock=lambda: now[0])
    status = {case["case"]: case["status"] for case in report["cases"]}
    assert status == {
        "agreement": "ok", "dense_a": "ok", "dense_b": "skipped", "training_x": "skipped"
    }
    skipped = report["cases"][2]
    assert skipped["reason"].startswith("time guard: estimated 50 s, 40 s left")
    assert report["time_guard"]["spent_s"] == 60


def test_bench_training_strategies_are_built_as_the_trainer_builds_them():
    """The training ratio times the generation that training runs, not a costlier variant."""
    from eggroll_rl import envs
    from eggroll_rl.agents.es import ESConfig, ESTrainer
    from eggroll_rl.bench.training import TRAINER_STRATEGY_OPTIONS

    for algo in ("eggroll", "openes"):
        strategy = ESTrainer(envs.make("gymnax/CartPole-v1"), ESConfig(algo=algo)).strategy
        for name, value in TRAINER_STRATEGY_OPTIONS.items():
            assert str(getattr(strategy, name)) == str(value), (algo, name)


def test_time_best_keeps_timing_until_min_seconds_have_passed():
    import time

    calls = []

    def nap():
        calls.append(time.perf_counter())
        time.sleep(0.01)
        return 0

    best = bench_timing.time_best({"nap": nap}, repeats=1, min_seconds=0.1)
    assert 0.01 <= best["nap"] < 0.1
    assert calls[-1] - calls[1] >= 0.1 - 0.02  # calls[0] is the warm-up; rounds went on
    calls.clear()
    bench_timing.time_best({"nap": nap}, repeats=2)  # no min_seconds: one warm-up call, two rounds
    assert len(calls) == 3


def test_paired_ratio_compares_calls_of_the_same_round():
    """One quiet moment that only the ceiling caught moves the best-of ratio, not the median of
    per-round ratios."""
    rounds = {
        "batched": np.array([1.0, 1.2, 0.5, 1.0, 1.0]),
        "eggroll": np.array([1.25, 1.25, 1.25, 2.0, 1.0]),
    }
    paired = bench_timing.paired_ratio(rounds, "batched", "eggroll")
    per_round = [0.8, 0.96, 0.4, 0.5, 1.0]
    assert paired["median"] == pytest.approx(np.median(per_round))
    assert paired["quartiles"] == pytest.approx(np.percentile(per_round, [25, 75]))
    assert paired["rounds"] == 5
    best_of = rounds["batched"].min() / rounds["eggroll"].min()
    assert best_of == pytest.approx(0.5)


def test_the_ceiling_is_the_variant_faster_over_all_rounds_not_the_luckier_call():
    """Two layouts of the ceiling: the one with the lower median is chosen, once. A per-round
    minimum over both would give the ceiling two draws of the host's noise to the subject's one:
    here it would put the paired ratio at 0.9 instead of the faster layout's 0.95."""
    rounds = {
        "batched": np.array([1.0, 0.9, 1.1, 1.0, 0.8]),  # median 1.0, one lucky call
        "vmapped": np.array([0.9, 1.1, 0.9, 0.95, 1.1]),  # median 0.95
        "eggroll": np.array([1.0, 1.0, 1.0, 1.0, 1.0]),
    }
    assert bench_timing.faster_variant(rounds, ("batched", "vmapped")) == "vmapped"
    assert bench_timing.faster_variant(rounds, ("vmapped", "batched")) == "vmapped"
    paired = bench_timing.paired_ratio(rounds, "vmapped", "eggroll")
    assert paired["median"] == pytest.approx(0.95)
    per_round_min = np.min([rounds["batched"], rounds["vmapped"]], axis=0) / rounds["eggroll"]
    assert np.median(per_round_min) == pytest.approx(0.9)  # the biased estimate, lower


def test_gpu_suite_plan_covers_the_documented_grid():
    from eggroll_rl.bench import gpu

    names = [item.name for item in gpu.plan(1.0)]
    dense = [n for n in names if n.startswith("dense_")]
    assert len(dense) == 16 and "dense_w8192_n65536" in dense and "dense_w256_n1024" in dense
    assert names[0] == "agreement"
    assert "rollout_cartpole_3x256_n65536" in names
    assert {"training_cartpole_3x256_n16384", "training_ant_3x256_n4096"} <= set(names)
    for width, n in ((256, 1024), (8192, 65536)):  # one call does ~TARGET_FLOP, inputs bounded
        steps = gpu.dense_steps(width, n)
        assert 1 <= steps <= gpu.MAX_STEPS and steps * n * width * 4 <= gpu.MAX_INPUT_BYTES
