"""The README's example is run as written, so the first thing users copy cannot rot."""

import pathlib
import re

import jax.numpy as jnp

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def test_readme_starts_with_the_two_commands():
    blocks = re.findall(r"```bash\n(.*?)```", README.read_text(), re.S)
    assert blocks[0].strip() == "pip install -e . && eggroll-rl train --algo eggroll --env gymnax/CartPole-v1"
    assert blocks[1].strip() == 'pip install -e ".[dev]" && pytest'


def test_readme_python_example_trains_toward_its_target():
    code = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)[0]
    namespace: dict = {}
    exec(compile(code, str(README), "exec"), namespace)
    start_error = float(jnp.sum((namespace["model"].apply(namespace["params"], jnp.ones(4)) - namespace["target"]) ** 2))
    final_error = float(jnp.sum((namespace["final"] - namespace["target"]) ** 2))
    assert final_error < 0.05 * start_error
