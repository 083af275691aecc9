"""The notebooks run top to bottom, headless, on a tiny budget (EGGROLL_NOTEBOOK_BUDGET)."""

from __future__ import annotations

import pathlib

import pytest

nbclient = pytest.importorskip("nbclient")
nbformat = pytest.importorskip("nbformat")
pytest.importorskip("ipykernel")

NOTEBOOKS = pathlib.Path(__file__).resolve().parent.parent / "notebooks"


def _execute(name: str, cwd: pathlib.Path, monkeypatch) -> nbformat.NotebookNode:
    monkeypatch.setenv("EGGROLL_NOTEBOOK_BUDGET", "3000")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
    client = nbclient.NotebookClient(
        notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(cwd)}}
    )
    client.execute()
    return notebook


def _text(notebook) -> str:
    return "\n".join(
        output.get("text", "") for cell in notebook.cells for output in cell.get("outputs", [])
    )


@pytest.mark.slow
def test_quickstart_trains_plots_and_plays(tmp_path, monkeypatch):
    notebook = _execute("quickstart.ipynb", tmp_path, monkeypatch)
    assert "final eval return per seed" in _text(notebook)
    assert "Gymnasium CartPole-v1 return" in _text(notebook)
    gif = tmp_path / "runs" / "quickstart" / "cartpole.gif"
    assert gif.read_bytes().startswith(b"GIF")
    assert (tmp_path / "runs" / "quickstart" / "policy" / "policy.json").exists()


@pytest.mark.slow
def test_drop_in_flax_trains_the_same_network_three_ways(tmp_path, monkeypatch):
    notebook = _execute("drop_in_flax.ipynb", tmp_path, monkeypatch)
    text = _text(notebook)
    for name in ("EGGROLL, plain nn.Dense", "EGGROLL, EggrollDense", "PPO, same network"):
        assert f"{name}: final eval return" in text
    assert "max |difference| of member outputs: 0.0" in text


@pytest.mark.slow
def test_drop_in_nnx_trains_a_flax_docs_nnx_model(tmp_path, monkeypatch):
    notebook = _execute("drop_in_nnx.ipynb", tmp_path, monkeypatch)
    text = _text(notebook)
    assert "final eval return" in text and "batch statistics unchanged: True" in text
