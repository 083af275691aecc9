"""Which suites exist, how their ids are registered, and which extra a missing one needs."""

from __future__ import annotations

import functools
from typing import Callable, Optional

from eggroll_rl.envs import brax_tasks, gymnax_tasks

# Optional suites of the paper: id prefix -> (pip extra, importable package).
OPTIONAL_EXTRAS: dict[str, tuple[str, str]] = {
    "craftax": ("craftax", "craftax"),
    "jumanji": ("jumanji", "jumanji"),
    "kinetix": ("kinetix", "kinetix"),
    "navix": ("navix", "navix"),
}


def register_all(register: Callable) -> None:
    for suite in (gymnax_tasks, brax_tasks):
        for name in suite.names():
            register(f"{suite.SUITE}/{name}", functools.partial(suite.make, name))


def missing_extra(env_id: str) -> Optional[str]:
    """An error message naming the extra to install, if ``env_id`` belongs to a missing suite."""
    suite = env_id.split("/", 1)[0]
    if suite not in OPTIONAL_EXTRAS:
        return None
    extra, package = OPTIONAL_EXTRAS[suite]
    import importlib.util

    if importlib.util.find_spec(package) is not None:
        return None
    return (
        f"{env_id} needs the optional package {package!r}: install it with "
        f"pip install -e \".[{extra}]\" (or \".[suites]\" for every suite of the paper)."
    )
