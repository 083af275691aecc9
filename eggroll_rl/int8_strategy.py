"""Integer EGGROLL: int8 low-rank noise, sign fitness and a +-1 update with no optimiser state.

The integer counterpart of ``strategies.Eggroll`` for ``Int8MLP`` parameters. Every generation
each antithetic pair ``p`` gets, per layer, two int8 factors ``A (r, out)`` and ``B (r, in)`` of
``round(16 * N(0, 1))`` (clipped to [-127, 127]) from ``fold_in(fold_in(key, generation), p)``;
members ``2p`` and ``2p + 1`` add ``+(x B^T) A`` and ``-(x B^T) A`` at ``noise_shift`` extra
fractional bits, so in weight units sigma is ``256 / 2^noise_shift`` (a power of two). A pair's
fitness is the sign of its return difference (+1, 0, -1). The update accumulates
``Z = sum_p f_p B_p^T A_p`` in int32 and moves a weight by ``sign(Z)`` (one int8 step) where
``|Z|`` reaches the layer's threshold: the ``ceil(alpha * size)``-th largest ``|Z|`` (and at
least 1), so about a fraction ``alpha`` of each kernel moves. ``alpha`` decays geometrically
to a floor. Weights stay in [-127, 127].

With a ``mesh`` the population is split over devices like ``strategies.Eggroll``'s: each device
draws and holds its own pairs' factors and runs their members' forwards; ``update`` gathers the
N returns and all pairs' factors (int8, ``N/2 x r x (in + out)`` per layer) and every device
computes the identical integer update, which is exact, so results match one device bit for bit
whenever the rollouts' returns do.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from typing import Optional

import jax
import jax.numpy as jnp

from eggroll_rl import distributed
from eggroll_rl import noise as noise_lib
from eggroll_rl.int8 import INT8_MAX, NOISE_SCALE, Int8MLP, Int8Noise, Int8Params


@dataclasses.dataclass(frozen=True, eq=False)
class Int8Eggroll:
    """Integer EGGROLL for one ``Int8MLP`` (hashable by identity, a static ``jit`` argument).

    Arguments:
      model: the int8 network whose kernels are evolved.
      population_size: members per generation, even (antithetic pairs).
      rank: rank of every layer's noise.
      noise_shift: fractional bits of the perturbation; sigma = 2^(8 - noise_shift) weight units.
      alpha, alpha_decay, alpha_min: fraction of each kernel that moves at generation g is
        ``max(alpha * alpha_decay^g, alpha_min)``.
      mesh: a ``jax.sharding.Mesh`` to split the population axis over (None or one device: no
        sharding); ``population_size`` must be a multiple of twice its size (whole pairs).
    """

    model: Int8MLP
    population_size: int
    rank: int = 1
    noise_shift: int = 6
    alpha: float = 0.1
    alpha_decay: float = 0.995
    alpha_min: float = 0.01
    mesh: Optional[jax.sharding.Mesh] = None

    def __post_init__(self):
        if self.population_size < 2 or self.population_size % 2:
            raise ValueError(
                f"population_size={self.population_size} must be even and >= 2: members 2p and "
                "2p+1 are an antithetic pair."
            )
        distributed.check_divisible(self.population_size, self.mesh, "population_size", group=2)
        smallest = min(min(shape) for shape in self.model.kernel_shapes)
        if not 1 <= self.rank <= smallest:
            raise ValueError(f"rank must be in [1, {smallest}] for this model, got {self.rank}.")
        if not 0 <= self.noise_shift <= 16:
            raise ValueError(f"noise_shift must be in [0, 16], got {self.noise_shift}.")
        worst = max(
            fan_in * INT8_MAX**2 * (2**self.noise_shift + self.rank * INT8_MAX)
            for fan_in, _ in self.model.kernel_shapes
        )
        if worst >= 2**31:
            warnings.warn(
                f"with these widths, rank={self.rank} and noise_shift={self.noise_shift} an int32 "
                "accumulator can wrap around when inputs, weights and noise all sit at +-127 "
                "together (rare in practice); a smaller rank or noise_shift removes the risk.",
                stacklevel=2,
            )
        if not 0 < self.alpha_min <= self.alpha <= 1 or not 0 < self.alpha_decay <= 1:
            raise ValueError(
                "need 0 < alpha_min <= alpha <= 1 and 0 < alpha_decay <= 1, got "
                f"alpha={self.alpha}, alpha_decay={self.alpha_decay}, alpha_min={self.alpha_min}."
            )

    @property
    def num_pairs(self) -> int:
        return self.population_size // 2

    def alpha_at(self, generation: jax.Array) -> jax.Array:
        """float32 scalar: the fraction of each kernel that moves at ``generation``."""
        decayed = self.alpha * jnp.power(jnp.float32(self.alpha_decay), generation)
        return jnp.maximum(decayed, self.alpha_min)

    def draw(self, key: jax.Array, generation: jax.Array) -> tuple[Int8Noise, ...]:
        """Every pair's int8 factors per layer: ``a (pairs, r, out)``, ``b (pairs, r, in + 1)``.

        A pure function of ``(key, generation)``; with a mesh the pairs axis is sharded.
        """
        shapes = self.model.kernel_shapes
        total = sum(self.rank * (fan_in + fan_out) for fan_in, fan_out in shapes)
        generation_key = jax.random.fold_in(key, generation)

        def one(pair):
            normal = noise_lib.standard_normal(jax.random.fold_in(generation_key, pair), total)
            return jnp.clip(jnp.round(normal * NOISE_SCALE), -INT8_MAX, INT8_MAX).astype(jnp.int8)

        flat = jax.vmap(one)(jnp.arange(self.num_pairs))
        noise, offset = [], 0
        for fan_in, fan_out in shapes:
            size = self.rank * (fan_in + fan_out)
            both = flat[:, offset : offset + size].reshape(-1, self.rank, fan_in + fan_out)
            offset += size
            noise.append(Int8Noise(a=both[..., fan_in:], b=both[..., :fan_in]))
        return distributed.shard_rows(tuple(noise), self.mesh)

    def member_signs(self) -> jax.Array:
        """int32 ``(population,)``: +1 for members 2p, -1 for members 2p + 1."""
        return jnp.tile(jnp.asarray([1, -1], jnp.int32), self.num_pairs)

    def population_forward(
        self, params: Int8Params, noise: tuple[Int8Noise, ...], x: jax.Array
    ) -> jax.Array:
        """Every member's int32 head: ``x (population, ..., obs_size)`` int8, one row per member.

        Returns int32 ``(population, ..., action_size)``. Kernels stay shared; each member adds
        its rank-r term from its pair's factors. With a mesh, ``x`` and the output are sharded
        along the population axis.
        """
        x = distributed.shard_rows(x, self.mesh)
        per_member = jax.tree_util.tree_map(lambda v: jnp.repeat(v, 2, axis=0), noise)
        per_member = distributed.shard_rows(per_member, self.mesh)

        def member(member_noise, sign, xi):
            return self.model.forward(params, xi, member_noise, sign, self.noise_shift)

        out = jax.vmap(member)(per_member, self.member_signs(), x)
        return distributed.shard_rows(out, self.mesh)

    def pair_fitness(self, returns: jax.Array) -> jax.Array:
        """``sign(R_2p - R_2p+1)`` per pair, int32 in {-1, 0, 1}."""
        returns = returns.reshape(self.num_pairs, 2)
        return jnp.sign(returns[:, 0] - returns[:, 1]).astype(jnp.int32)

    def update(
        self,
        params: Int8Params,
        noise: tuple[Int8Noise, ...],
        returns: jax.Array,
        generation: jax.Array,
    ) -> tuple[Int8Params, dict]:
        """One integer step from every member's return; returns ``(params, metrics)``.

        ``returns`` float ``(population,)``. The new params are int8 like ``params``; metrics
        are float32 scalars ``alpha``, ``moved_fraction`` and ``pairs_tied``. With a mesh, the
        returns and factors are gathered first, so every device holds the same new params.
        """
        returns = distributed.replicate(returns, self.mesh)  # the only gathers: N floats ...
        noise = distributed.replicate(noise, self.mesh)  # ... and the pairs' int8 factors
        fitness = self.pair_fitness(returns)
        alpha = self.alpha_at(generation)
        new, moved = [], []
        for w, n in zip(params, noise):
            z = accumulate(fitness, n)
            step = sign_step(z, alpha)
            new.append(apply_step(w, step))
            moved.append(jnp.sum(step != 0))
        total = sum(math.prod(w.shape) for w in params)
        metrics = {
            "alpha": alpha,
            "moved_fraction": sum(moved) / total,
            "pairs_tied": jnp.mean(fitness == 0),
        }
        return tuple(new), metrics


def accumulate(fitness: jax.Array, noise: Int8Noise) -> jax.Array:
    """``Z = sum_p f_p B_p^T A_p`` in int32, ``(in, out)``, without any per-pair matrix."""
    scaled_b = noise.b.astype(jnp.int32) * fitness[:, None, None]
    fan_in, fan_out = noise.b.shape[-1], noise.a.shape[-1]
    return jax.lax.dot_general(
        scaled_b.reshape(-1, fan_in),
        noise.a.astype(jnp.int32).reshape(-1, fan_out),
        (((0,), (0,)), ((), ())),
        preferred_element_type=jnp.int32,
    )


def sign_step(z: jax.Array, alpha: jax.Array) -> jax.Array:
    """``sign(Z)`` where ``|Z|`` reaches the ``ceil(alpha * size)``-th largest ``|Z|`` (>= 1), else 0."""
    magnitude = jnp.abs(z).reshape(-1)
    count = jnp.clip(jnp.ceil(alpha * magnitude.size).astype(jnp.int32), 1, magnitude.size)
    threshold = jnp.maximum(jnp.sort(magnitude)[magnitude.size - count], 1)
    return jnp.where(jnp.abs(z) >= threshold, jnp.sign(z), 0).astype(jnp.int32)


def apply_step(w: jax.Array, step: jax.Array) -> jax.Array:
    """``clip(w + step, -127, 127)`` as int8."""
    return jnp.clip(w.astype(jnp.int32) + step, -INT8_MAX, INT8_MAX).astype(jnp.int8)
