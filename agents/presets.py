"""Tuned starting points per (env, algorithm): plain data that ``eggroll-rl train`` uses as the
default config when one exists; any flag still overrides a preset value.

Each entry records its env-step budget. Values are from runs on the 2-core CPU described in
the README; the paper's full tuning protocol (20 random-search trials, 10 seeds) is the job of
``experiments/``.
"""

from __future__ import annotations

PRESETS: dict[str, dict[str, dict]] = {
    "gymnax/CartPole-v1": {
        "eggroll": {"total_steps": 300_000, "pop_size": 128, "lr": 0.05, "sigma": 0.05},
        "openes": {"total_steps": 300_000, "pop_size": 128, "lr": 0.05, "sigma": 0.05},
    },
}


def preset(env_id: str, algo: str) -> dict:
    """The overrides for ``env_id`` and ``algo`` (empty when there is no preset)."""
    return dict(PRESETS.get(env_id, {}).get(algo, {}))
