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


def test_version_is_the_installed_distributions(capsys):
    from importlib.metadata import version

    cli.main(["--version"])
    assert capsys.readouterr().out.strip() == f"eggroll-rl {version('eggroll-rl')}"


def test_envs_lists_only_usable_ids(capsys):
    from eggroll_rl.envs import registry

    registry.main([])
    listed = capsys.readouterr().out.split()
    assert "gymnax/CartPole-v1" in listed and "brax/ant" in listed
    assert not set(registry.UNLISTED) & set(listed)


def test_third_party_noise_is_silenced_by_the_command_only():
    """``import brax.envs`` prints two lines about NVIDIA Warp; the command's entry point drops
    exactly those, and importing the library alone leaves warnings and output untouched."""
    code = (
        "import warnings, eggroll_rl, eggroll_rl.agents, eggroll_rl.cli; {}; import brax.envs; "
        "print('brax filter:', any(f[1] is not None and 'Brax System' in f[1].pattern "
        "for f in warnings.filters))"
    )
    plain = subprocess.run([sys.executable, "-c", code.format("pass")], capture_output=True,
                           text=True, check=True)
    assert "brax filter: False" in plain.stdout
    quiet = subprocess.run(
        [sys.executable, "-c", code.format("eggroll_rl.cli.quiet_third_party_noise()")],
        capture_output=True, text=True, check=True,
    )
    assert quiet.stdout.strip() == "brax filter: True"
    assert "Brax System" not in quiet.stderr
