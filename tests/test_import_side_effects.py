"""Importing the library changes nothing global; compiler options are per program and opt-in."""

import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np

from eggroll_rl.xla import cpu_options


def test_importing_every_package_leaves_environment_and_jax_config_alone():
    script = (
        # gymnasium sets PYGAME_HIDE_SUPPORT_PROMPT when it is imported: that is its own doing,
        # so it is imported before the snapshot; what is compared is what our modules add.
        "import os, jax, gymnasium\n"
        "before = (dict(os.environ), dict(jax.config.values))\n"
        "import eggroll_rl, eggroll_rl.envs, eggroll_rl.agents, eggroll_rl.experiments\n"
        "import eggroll_rl.bench.suite, eggroll_rl.cli.train, eggroll_rl.xla.cpu_options\n"
        "after = (dict(os.environ), dict(jax.config.values))\n"
        "changed = {k for k in set(before[0]) | set(after[0]) if before[0].get(k) != after[0].get(k)}\n"
        "changed |= {k for k in before[1] if before[1][k] != after[1][k]}\n"
        "print(sorted(changed))\n"
    )
    env = {**os.environ, "XLA_FLAGS": "--xla_dump_to=/nonexistent-on-purpose"}
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_cpu_options_are_per_program_and_leave_results_unchanged():
    options = cpu_options.compiler_options()
    assert set(options) <= set(cpu_options.OPTIONS)
    assert all(o not in cpu_options.compiler_options(integer_dots=True) for o in cpu_options.FLOAT_ONLY)
    x = jnp.asarray(np.random.default_rng(0).normal(size=(64, 300)), jnp.float32)
    norm = lambda x: ((x - x.mean(-1, keepdims=True)) ** 2).mean(-1)
    np.testing.assert_allclose(cpu_options.jit(norm)(x), jax.jit(norm)(x), rtol=1e-5)
    assert "XLA_FLAGS" not in os.environ or "ynn" not in os.environ["XLA_FLAGS"]


def test_an_option_set_in_xla_flags_is_left_to_the_user(monkeypatch):
    monkeypatch.setenv("XLA_FLAGS", "--xla_disable_hlo_passes=foo")
    assert "xla_disable_hlo_passes" not in cpu_options.compiler_options()
