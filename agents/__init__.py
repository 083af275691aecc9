"""Trainers (``eggroll_rl.agents``) that join strategies and environments: EGGROLL, OpenES, PPO.

The high-level entry point is ``train`` (what ``eggroll-rl train`` runs)::

    from eggroll_rl.agents import train, load

    run = train("eggroll", "gymnax/CartPole-v1", stop_at=475)  # a TrainingRun
    run.act(observation)             # deterministic action(s) of seed 0's mean policy
    run.save("policy")               # and load("policy").act(observation) later

Below it: the config dataclasses (``ESConfig``, ``PPOConfig``, ``Int8ESConfig``), the shared
train loop (``LoopConfig``, ``run``, ``TrainResult``) and the trainers (``ESTrainer``, ``PPO``,
``Int8ESTrainer``). Names are imported on first use, so importing this package stays cheap.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

_EXPORTS = {
    "train": "api",
    "resume": "api",
    "load": "api",
    "TrainingRun": "api",
    "LoadedPolicy": "api",
    "default_config": "api",
    "ESConfig": "es",
    "ESTrainer": "es",
    "PPOConfig": "ppo",
    "PPO": "ppo",
    "Int8ESConfig": "int8_es",
    "Int8ESTrainer": "int8_es",
    "LoopConfig": "loop",
    "TrainResult": "loop",
    "run": "loop",
}
__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:
    from eggroll_rl.agents.api import (
        LoadedPolicy, TrainingRun, default_config, load, resume, train,
    )
    from eggroll_rl.agents.es import ESConfig, ESTrainer
    from eggroll_rl.agents.int8_es import Int8ESConfig, Int8ESTrainer
    from eggroll_rl.agents.loop import LoopConfig, TrainResult, run
    from eggroll_rl.agents.ppo import PPO, PPOConfig


def __getattr__(name: str):
    if name in _EXPORTS:
        module = importlib.import_module(f"{__name__}.{_EXPORTS[name]}")
        return getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
