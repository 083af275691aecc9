"""eggroll_rl: low-rank evolution strategies (EGGROLL) for reinforcement learning in JAX."""

from eggroll_rl.fitness_shaping import (
    centered_rank,
    compose,
    grouped_zscore,
    identity,
    zscore,
)
from eggroll_rl.int8 import Int8MLP, Int8Noise
from eggroll_rl.int8_strategy import Int8Eggroll
from eggroll_rl.layer import EggrollDense
from eggroll_rl.noise import FullNoise, LowRankNoise
from eggroll_rl.strategies import Eggroll, EvoState, OpenES, Population

__all__ = [
    "Eggroll",
    "EggrollDense",
    "EvoState",
    "FullNoise",
    "Int8Eggroll",
    "Int8MLP",
    "Int8Noise",
    "LowRankNoise",
    "OpenES",
    "Population",
    "centered_rank",
    "compose",
    "grouped_zscore",
    "identity",
    "zscore",
]
