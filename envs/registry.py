"""Env ids -> task factories: ``make``, ``register``, ``list_envs``.

Ids carry their suite (``gymnax/CartPole-v1``, ``brax/ant``) so that one namespace covers every
suite without collisions. Suites register lazily: a suite's package is imported only when one
of its envs is made, and a missing optional package produces an error naming the extra to
install rather than an ImportError from deep inside.
"""

from __future__ import annotations

import difflib
from typing import Callable

from eggroll_rl.envs.task import Task

_FACTORIES: dict[str, Callable[..., Task]] = {}
_SUITES_LOADED = False
# Ids a suite registers that are not for training: left out of ``list_envs`` (and so of
# ``eggroll-rl envs``); ``make`` still accepts them.
UNLISTED: dict[str, str] = {
    "brax/fast": "Brax's internal test env (not a task)",
    "brax/swimmer": "Brax's swimmer needs the 'spring' backend, which this adapter does not build",
}


def register(env_id: str, factory: Callable[..., Task], *, overwrite: bool = False) -> None:
    """Make ``factory(**kwargs) -> Task`` available as ``make(env_id, **kwargs)``."""
    if "/" not in env_id:
        raise ValueError(
            f"env id {env_id!r} needs a suite prefix, e.g. 'custom/{env_id}', so it cannot clash "
            "with the built-in suites."
        )
    if env_id in _FACTORIES and not overwrite:
        raise ValueError(f"env id {env_id!r} is already registered (pass overwrite=True).")
    _FACTORIES[env_id] = factory


def _load_suites() -> None:
    global _SUITES_LOADED
    if _SUITES_LOADED:
        return
    _SUITES_LOADED = True
    from eggroll_rl.envs import suites

    suites.register_all(register)


def list_envs() -> list[str]:
    """Every usable id that ``make`` accepts here (optional suites only if their package is
    installed; ``UNLISTED`` ids are left out)."""
    _load_suites()
    return sorted(env_id for env_id in _FACTORIES if env_id not in UNLISTED)


def make(env_id: str, **kwargs) -> Task:
    """The task for ``env_id``; keyword arguments go to the suite's adapter."""
    _load_suites()
    if env_id not in _FACTORIES:
        from eggroll_rl.envs import suites

        missing = suites.missing_extra(env_id)
        if missing:
            raise ValueError(missing)
        close = difflib.get_close_matches(env_id, _FACTORIES, n=5, cutoff=0.4)
        hint = f" Closest known ids: {', '.join(close)}." if close else ""
        raise ValueError(
            f"unknown env id {env_id!r}.{hint} `eggroll-rl envs` lists them all."
        )
    return _FACTORIES[env_id](**kwargs)


def main(argv=None) -> None:
    """eggroll-rl envs: print every usable env id, one per line (optional suites need their
    extra), then the Gymnasium envs installed here as gymnasium/<Id>."""
    import argparse

    from eggroll_rl.envs import suites

    parser = argparse.ArgumentParser(prog="eggroll-rl envs", description=main.__doc__)
    parser.parse_args(argv)
    for env_id in list_envs():
        print(env_id)
    for suite in suites.OPTIONAL_EXTRAS:
        if not any(env_id.startswith(suite + "/") for env_id in list_envs()):
            print(f"# {suite}/...: {suites.missing_extra(suite + '/') or 'not installed'}")
    from eggroll_rl.envs.gymnasium_target import list_gymnasium_ids

    print("# gymnasium/<Id>: Gymnasium envs stepped on the host (also gymnasium/<module>:<Id>)")
    for env_id in list_gymnasium_ids():
        print(env_id)
