"""Per-program XLA:CPU options: applied at top level, left off inside other jits, same results;
the one per-process option: set before JAX starts, or not at all."""

import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from eggroll_rl import xla_options
from eggroll_rl.networks import MLP
from eggroll_rl.strategies import Eggroll


def test_options_on_cpu_and_the_opt_out(monkeypatch):
    assert jax.default_backend() == "cpu"
    supported = {o: v for o, v in xla_options.OPTIONS.items() if xla_options._supported("cpu", o)}
    assert xla_options.compiler_options() == supported  # a jaxlib without an option: left out
    if not supported:
        pytest.skip(f"this jaxlib ({jax.__version__}) accepts none of {list(xla_options.OPTIONS)}")
    monkeypatch.setenv("EGGROLL_RL_DEFAULT_XLA", "1")
    assert xla_options.compiler_options() == {}
    monkeypatch.delenv("EGGROLL_RL_DEFAULT_XLA")
    integer = xla_options.compiler_options(integer_dots=True)
    assert integer == {o: v for o, v in supported.items() if o not in xla_options.FLOAT_ONLY}
    option = next(iter(supported))
    monkeypatch.setenv("XLA_FLAGS", f"--{option}=SOMETHING_ELSE")
    expected = {o: v for o, v in supported.items() if o != option}
    assert xla_options.compiler_options() == expected  # the user's own setting wins


def test_tuned_population_forward_matches_the_plain_compile_at_top_level_and_nested():
    model = MLP(hidden=(32, 32), out_features=3)
    params = model.init(jax.random.key(0), jnp.zeros((1, 5)))
    strategy = Eggroll(8, 0.1, rank=1)
    population = strategy.ask(strategy.init(jax.random.key(1), params))
    xs = jax.random.normal(jax.random.key(2), (8, 2, 5))

    def forward(population, xs):
        return strategy.population_apply(population, model.apply, xs)

    plain = jax.jit(forward)(population, xs)
    tuned = xla_options.jit(forward)
    np.testing.assert_allclose(tuned(population, xs), plain, rtol=1e-5, atol=1e-6)
    compiled = tuned.lower(population, xs).compile()  # .lower works as on a jax.jit
    np.testing.assert_allclose(compiled(population, xs), plain, rtol=1e-5, atol=1e-6)
    # inside another jit the options are left to the outer program (JAX refuses nested ones)
    nested = jax.jit(lambda p, x: tuned(p, x) * 2)(population, xs)
    np.testing.assert_allclose(nested, 2 * plain, rtol=1e-5, atol=1e-6)


_PROBE = """
import os, re, sys
import jax, jax.numpy as jnp
if sys.argv[1] == "jax-first":
    jnp.ones(2).block_until_ready()  # a backend starts before eggroll_rl is imported
import eggroll_rl
from eggroll_rl import xla_options
if sys.argv[1] == "ppo":
    from eggroll_rl.agents import train_cli
    train_cli.build(["--algo", "ppo", "--env", "gymnax/CartPole-v1", "--out", sys.argv[2]])
two_sums = xla_options.jit(lambda x: (lambda y: (y.sum(1), (y * y).sum(1)))(x * 3.0 + 1.0))
hlo = two_sums.lower(jnp.ones((64, 32))).compile().as_text()
print(xla_options.multi_output_fusion(), len(re.findall(r"= [(][^)]*[)] fusion[(]", hlo)),
      xla_options.PROCESS_FLAG in os.environ.get("XLA_FLAGS", ""))
"""


@pytest.mark.parametrize(
    "case, env, expected",
    [
        ("import-first", {}, "True 1 True"),  # the two sums share one pass over x
        ("import-first", {"EGGROLL_RL_DEFAULT_XLA": "1"}, "False 0 False"),
        ("jax-first", {}, "False 0 False"),  # too late: said so, flags left alone
        ("ppo", {}, "False 0 False"),  # train --algo ppo takes it back out: it slows PPO
    ],
)
def test_multi_output_fusion_is_set_for_the_process_before_jax_starts(case, env, expected, tmp_path):
    environ = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "EGGROLL_RL_DEFAULT_XLA")}
    done = subprocess.run(
        [sys.executable, "-c", _PROBE, case, str(tmp_path / "run")], env={**environ, **env},
        capture_output=True, text=True, check=True,
    )
    assert done.stdout.split("\n")[-2] == expected


def test_a_baseline_subprocess_gets_the_flags_without_ours():
    environ = {"XLA_FLAGS": f"--xla_dump_to=/tmp/x {xla_options.PROCESS_FLAG}", "HOME": "/h"}
    assert xla_options.without_process_flag(environ) == {"XLA_FLAGS": "--xla_dump_to=/tmp/x", "HOME": "/h"}
