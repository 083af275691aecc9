"""eggroll_rl: low-rank evolution strategies (EGGROLL) for reinforcement learning in JAX."""

from eggroll_rl.fitness_shaping import (
    centered_rank,
    compose,
    grouped_zscore,
    identity,
    zscore,
)
from eggroll_rl.layer import EggrollDense
from eggroll_rl.noise import FullNoise, LowRankNoise
from eggroll_rl.strategies import Eggroll, EvoState, OpenES, Population

__all__ = [
    "Eggroll",
    "EggrollDense",
    "EvoState",
    "FullNoise",
    "LowRankNoise",
    "OpenES",
    "Population",
    "centered_rank",
    "compose",
    "grouped_zscore",
    "identity",
    "zscore",
]
