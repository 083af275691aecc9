"""The paper's RL policy network, built from EggrollDense so it is on the fast path by design.

"pqn" MLP: each hidden layer is Dense -> LayerNorm -> ReLU (3 x 256 in the paper), then a Dense
head. Any other Flax model works with the strategies too; this one is what the benchmarks and
presets use so that results compare with the paper's.
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax

from eggroll_rl.layer import EggrollDense


class MLP(nn.Module):
    """Hidden layers of ``hidden`` units with LayerNorm+ReLU, then ``out_features`` outputs."""

    hidden: Sequence[int] = (256, 256, 256)
    out_features: int = 1
    layer_norm: bool = True

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        for width in self.hidden:
            x = EggrollDense(width)(x)
            if self.layer_norm:
                x = nn.LayerNorm()(x)
            x = nn.relu(x)
        return EggrollDense(self.out_features)(x)
