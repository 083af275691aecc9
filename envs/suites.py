"""Which suites exist, how their ids are registered, and which extra a missing one needs.

Optional suites register only when their package is importable; their adapters list their
names without importing the package, so ``list_envs`` costs no suite import.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
from typing import Callable, Optional

from eggroll_rl.envs import brax_tasks, gymnax_tasks

# Optional suites of the paper: id prefix -> (pip extra, importable package).
OPTIONAL_EXTRAS: dict[str, tuple[str, str]] = {
    "craftax": ("craftax", "craftax"),
    "jumanji": ("jumanji", "jumanji"),
    "kinetix": ("kinetix", "kinetix"),
    "navix": ("navix", "navix"),
}


# Optional suites with an adapter: id prefix -> adapter module.
OPTIONAL_ADAPTERS: dict[str, str] = {
    "craftax": "eggroll_rl.envs.craftax_tasks",
    "jumanji": "eggroll_rl.envs.jumanji_tasks",
    "kinetix": "eggroll_rl.envs.kinetix_tasks",
    "navix": "eggroll_rl.envs.navix_tasks",
}

# Suites whose package cannot be installed beside this project's jax: prefix -> why.
UNINSTALLABLE: dict[str, str] = {}

# Suites that install in more than one command: prefix -> the commands, in order. kinetix-env
# 3.0.2 declares jax<=0.9.0 and jax2d==1.0.1 but runs on our jax with jax2d 1.0.2 (which the
# extra installs), so it goes in without its declared dependencies.
INSTALL_COMMANDS: dict[str, tuple[str, ...]] = {
    "kinetix": ('pip install -e ".[kinetix]"', "pip install --no-deps kinetix-env==3.0.2"),
}
# Why a suite's plain `pip install` must be avoided: prefix -> warning.
INSTALL_WARNINGS: dict[str, str] = {
    "kinetix": (
        "a plain `pip install kinetix-env` would downgrade jax to 0.9 (kinetix-env declares "
        "jax<=0.9.0): always add --no-deps"
    ),
}


def _installed(package: str) -> bool:
    return importlib.util.find_spec(package) is not None


def register_all(register: Callable) -> None:
    """Call ``register(env_id, factory)`` for every env of gymnax, Brax and each installed
    optional suite; ``factory(**kwargs)`` builds the Task (nothing is built here)."""
    suites = [gymnax_tasks, brax_tasks]
    for prefix, module in OPTIONAL_ADAPTERS.items():
        if _installed(OPTIONAL_EXTRAS[prefix][1]):
            suites.append(importlib.import_module(module))
    for suite in suites:
        for name in suite.names():
            register(f"{suite.SUITE}/{name}", functools.partial(suite.make, name))


def missing_extra(env_id: str) -> Optional[str]:
    """An error message naming the extra to install, if ``env_id`` belongs to a missing suite."""
    suite = env_id.split("/", 1)[0]
    if suite not in OPTIONAL_EXTRAS:
        return None
    extra, package = OPTIONAL_EXTRAS[suite]
    if suite in UNINSTALLABLE:
        return (
            f"{env_id} needs the optional package {package!r} (extra \"{extra}\"), but "
            f"{UNINSTALLABLE[suite]}. The paper's other optional suites install with "
            "pip install -e \".[suites]\"."
        )
    if _installed(package):
        return None
    if suite in INSTALL_COMMANDS:
        commands = INSTALL_COMMANDS[suite]
        warning = f"; {INSTALL_WARNINGS[suite]}" if suite in INSTALL_WARNINGS else ""
        return (
            f"{env_id} needs the optional package {package!r}: install it with "
            f"{len(commands)} commands, {' then '.join(commands)}{warning}."
        )
    return (
        f"{env_id} needs the optional package {package!r}: install it with "
        f"pip install -e \".[{extra}]\" (or \".[suites]\" for every suite of the paper)."
    )
