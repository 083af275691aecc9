"""Env names read from a suite package's source, so that listing ids imports no suite.

Importing gymnax is slow (its Pong env pulls in matplotlib, seaborn and scipy), and so is
importing Brax; ``import eggroll_rl.envs`` registers every id with Gymnasium, so it would pay
both on every start. The names are literals in each package's registration module;
they are read from there with ``ast`` (no code runs), and the caller falls back to importing
the package whenever the literal is not where it was (another version).
"""

from __future__ import annotations

import ast
import importlib.util
import pathlib
from typing import Optional


def literal_names(package: str, module_path: str, variable: str) -> Optional[list[str]]:
    """The strings of ``variable = [...]`` (or the keys of ``= {...}``) in ``package/module_path``.

    None if the package is not installed or the file has no such literal of strings.
    """
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = pathlib.Path(next(iter(spec.submodule_search_locations))) / module_path
    try:
        tree = ast.parse(path.read_text())
    except (OSError, SyntaxError, ValueError):
        return None
    for node in tree.body:
        target = node.target if isinstance(node, ast.AnnAssign) else None
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            target = node.targets[0]
        if not (isinstance(target, ast.Name) and target.id == variable) or node.value is None:
            continue
        value = node.value
        items = value.keys if isinstance(value, ast.Dict) else getattr(value, "elts", None)
        if items is None or not isinstance(value, (ast.Dict, ast.List, ast.Tuple)):
            return None
        names = [item.value for item in items if isinstance(item, ast.Constant)]
        if len(names) != len(items) or not all(isinstance(name, str) for name in names):
            return None
        return names
    return None
