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
                # Two-pass variance, mean((x - mean)^2): besides being the more accurate form,
                # it keeps XLA:CPU's default (YNNPACK) fusion on its fast path in rollouts that
                # act by argmax, where the one-pass mean(x^2) - mean^2 form ran its x * x
                # reduction several times slower (docs/performance.md).
                x = nn.LayerNorm(use_fast_variance=False)(x)
            x = nn.relu(x)
        return EggrollDense(self.out_features)(x)


class Policy(nn.Module):
    """The paper's RL policy: the MLP trunk and head, plus a learned log-std if continuous.

    Returns ``(head, log_std)``: logits for discrete actions (``log_std`` is None), or the
    Gaussian mean for continuous ones with ``log_std`` a parameter initialised to 0 (so ES
    perturbs it like any other leaf).
    """

    action_size: int
    continuous: bool = False
    hidden: Sequence[int] = (256, 256, 256)
    layer_norm: bool = True

    @nn.compact
    def __call__(self, obs: jax.Array):
        head = MLP(self.hidden, self.action_size, self.layer_norm)(obs)
        if not self.continuous:
            return head, None
        log_std = self.param("log_std", nn.initializers.zeros, (self.action_size,))
        return head, log_std
