"""Tuned starting points per (env, algorithm) for ``eggroll-rl train``: a view of the preset
files, which are the one source of truth.

The presets are plain TOML data under ``eggroll_rl/experiments/task-presets/`` (one file per env, one
table per algorithm, the env-step budget shared); ``eggroll_rl.experiments.preset_files`` reads
and validates them. ``eggroll-rl train`` uses an env's preset as the default config when one
exists; any flag still overrides a preset value.
"""

from __future__ import annotations


def preset(env_id: str, algo: str) -> dict:
    """The config overrides (budget included) for ``env_id`` and ``algo``; empty if none."""
    from eggroll_rl.experiments import preset_files

    found = preset_files.for_env(env_id)
    if found is None or algo not in found.algos:
        return {}
    overrides = found.overrides(algo)
    overrides.pop("algo", None)
    return overrides
