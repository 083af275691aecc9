"""The console commands run end to end: the demo optimises, the bench reports its ratios."""

import json
import subprocess
import sys

import pytest

from eggroll_rl import bench, cli, demo
from eggroll_rl.networks import MLP


def test_demo_reduces_the_loss_substantially():
    history = demo.run(generations=60, population_size=64, log_every=30, log=lambda *_: None)
    assert history[-1] < 0.2 * history[0]


def test_bench_reports_side_by_side_ratios_for_tiny_cases():
    cases = [bench.Case("tiny", MLP(hidden=(8, 8), out_features=2), 4, 16, 2, episode_steps=10)]
    report = bench.run(cases, repeats=1, log=lambda *_: None)
    json.dumps(report)  # the --json output must serialise
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


def test_cli_lists_commands_and_rejects_unknown_ones(capsys):
    cli.main([])
    assert "bench" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="unknown command 'nope'"):
        cli.main(["nope"])


def test_console_script_is_installed():
    out = subprocess.run(
        [sys.executable, "-m", "eggroll_rl.cli", "--help"], capture_output=True, text=True, check=True
    )
    assert "demo" in out.stdout
