"""eggroll-rl bench: side-by-side ratios, and the timing helpers they rest on."""

import json
import os
import pathlib

import numpy as np
import pytest

from eggroll_rl.bench import suite as bench, timing as bench_timing
from eggroll_rl.networks import MLP


def test_bench_reports_side_by_side_ratios_for_tiny_cases():
    cases = [bench.Case("tiny", MLP(hidden=(8, 8), out_features=2), 4, 16, 2, episode_steps=10)]
    report = bench.run(cases, repeats=1, log=lambda *_: None)
    json.dumps(report)  # the --json output must serialise
    # ratios depend on the host, so the report names it
    assert report["cpu"]["logical_cores"] == os.cpu_count()
    if pathlib.Path("/proc/cpuinfo").exists():
        assert report["cpu"]["model_name"] and report["cpu"]["caches"]
    (mlp,) = report["cases"]
    for name in ("inference", "eggroll", "openes"):
        assert mlp["step_s"][name] > 0
    assert mlp["eggroll_vs_inference"] == pytest.approx(
        mlp["step_s"]["inference"] / mlp["step_s"]["eggroll"]
    )
    expected = mlp["generation_s"]["openes"] / mlp["generation_s"]["eggroll"]
    assert mlp["eggroll_vs_openes"] == pytest.approx(expected)
    assert mlp["generation_s"]["eggroll"] == pytest.approx(
        mlp["ask_s"]["eggroll"] + 10 * mlp["step_s"]["eggroll"]
    )


def test_bench_training_case_times_whole_generations_side_by_side():
    from eggroll_rl.bench.training import TrainingCase

    case = TrainingCase("tiny_training", "gymnax/CartPole-v1", (8,), 8, 5)
    report = bench.run([case], repeats=1, log=lambda *_: None)
    json.dumps(report)
    (result,) = report["cases"]
    seconds = result["seconds"]
    assert result["ceiling_variant"] in ("inference_batched", "inference_vmapped")
    assert seconds["inference_rollout"] == seconds[result["ceiling_variant"]]
    assert report["training_eggroll_vs_inference"] == pytest.approx(
        seconds["inference_rollout"] / seconds["eggroll_generation"]
    )
    assert result["env_steps_per_s"]["eggroll_generation"] == pytest.approx(
        8 * 5 / seconds["eggroll_generation"]
    )
    paired = result["training_eggroll_vs_inference_paired"]  # one round: the same calls
    assert paired["rounds"] == 1
    assert paired["median"] == pytest.approx(report["training_eggroll_vs_inference"])
    assert report["training_eggroll_vs_inference_paired"] == paired["median"]
    try:
        import evosax  # noqa: F401
    except ImportError:
        assert result["openes_vs_evosax"] is None
    else:
        assert result["openes_vs_evosax"] == pytest.approx(
            seconds["evosax_openes_generation"] / seconds["openes_generation"]
        )


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
