"""The README's contract with a first-time reader: it is short, it starts with the two commands
that install-and-train and install-and-test, and its Python example runs as written and trains
toward its target (so the first thing users copy cannot rot)."""

import pathlib
import re

import jax.numpy as jnp
import pytest

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"
MAX_LINES = 250
FIRST_COMMANDS = [
    "pip install -e . && eggroll-rl train --algo eggroll --env gymnax/CartPole-v1",
    'pip install -e ".[dev]" && pytest',
]
# Any fenced block: ```lang ... ``` (the language tag may be empty).
FENCE = re.compile(r"^```[ \t]*([\w+-]*)[ \t]*\n(.*?)^```", re.S | re.M)
SHELL = {"bash", "sh", "shell", "console", "zsh", ""}


def _blocks():
    return [(lang.lower(), body) for lang, body in FENCE.findall(README.read_text())]


def _commands(body):
    """The command lines of a shell block: no blanks or comments, a leading ``$ `` dropped."""
    lines = (line.strip() for line in body.splitlines())
    return [re.sub(r"^\$\s+", "", line) for line in lines if line and not line.startswith("#")]


def test_readme_is_at_most_250_lines():
    lines = README.read_text().splitlines()
    assert len(lines) <= MAX_LINES, f"README.md has {len(lines)} lines, more than {MAX_LINES}"


def test_readme_starts_with_the_two_commands():
    """The first code in the README is these two commands, in this order (one block each or
    both in one block), before any Python."""
    commands = []
    for lang, body in _blocks():
        if len(commands) >= len(FIRST_COMMANDS):
            break
        assert lang in SHELL, f"a ```{lang} block comes before the two first commands"
        commands += _commands(body)
    assert commands[: len(FIRST_COMMANDS)] == FIRST_COMMANDS


@pytest.mark.slow
def test_readme_train_api_example_is_the_tested_snippet():
    """The README's training-API example is docs/snippets/train_api.py (which tests/test_api.py
    runs to a solved CartPole), not a copy that could drift from it."""
    snippet = (README.parent / "docs" / "snippets" / "train_api.py").read_text()
    body = snippet.split('"""', 2)[2].strip()
    code = [body_ for lang, body_ in _blocks() if lang == "python"]
    assert any(block.strip() == body for block in code), "README's train example != the snippet"


@pytest.mark.slow
def test_readme_python_example_trains_toward_its_target():
    """The ask/tell ```python block (the one calling ``population_apply``) defines ``model``,
    ``params``, ``target`` and ``final`` (the trained model's output); its error to ``target``
    falls below 5% of the untrained one's."""
    code = [body for lang, body in _blocks() if lang == "python" and "population_apply" in body]
    assert code, "README.md has no ```python ask/tell example"
    namespace: dict = {}
    exec(compile(code[0], str(README), "exec"), namespace)
    for name in ("model", "params", "target", "final"):
        assert name in namespace, f"the README's Python example no longer defines {name!r}"
    untrained = namespace["model"].apply(namespace["params"], jnp.ones(4))
    start_error = float(jnp.sum((untrained - namespace["target"]) ** 2))
    final_error = float(jnp.sum((namespace["final"] - namespace["target"]) ** 2))
    assert final_error < 0.05 * start_error
