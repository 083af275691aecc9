"""The eggroll-rl entry point: its commands, the installed executable, the demo."""

import pathlib
import subprocess
import sys

import pytest

from eggroll_rl import cli
from eggroll_rl.cli import demo


def test_demo_reduces_the_loss_substantially():
    history = demo.run(generations=60, population_size=64, log_every=30, log=lambda *_: None)
    assert history[-1] < 0.2 * history[0]


def test_cli_lists_commands_and_rejects_unknown_ones(capsys):
    cli.main([])
    assert "bench" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="unknown command 'nope'"):
        cli.main(["nope"])


def test_console_script_is_installed():
    # The entry point pip wrote next to this interpreter, not ``python -m``: a broken
    # ``[project.scripts]`` line fails here.
    exe = pathlib.Path(sys.executable).parent / "eggroll-rl"
    assert exe.exists(), f"no eggroll-rl executable beside {sys.executable}: is the package installed?"
    out = subprocess.run([str(exe), "--help"], capture_output=True, text=True, check=True)
    for command in ("train", "bench", "envs", "compare"):
        assert command in out.stdout
