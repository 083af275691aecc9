"""EGGROLL and OpenES: ask/tell evolution strategies over any Flax parameter pytree.

Both share one implementation and differ only in the noise a matrix gets: EGGROLL draws two
rank-r factors per member (memory ``O(N r (m+n))``, forward cost close to plain batched
inference), OpenES a full Gaussian matrix (memory ``O(N m n)``, each member needs its own
weights). The update ``g = (1/N) sum_i s_i f_i E_i`` is computed from compact noise and handed
to any optax optimiser as a gradient, negated because optax minimises while we maximise
returns. State and population are pytrees: they pass through ``jit``, ``scan`` and checkpoints.
"""

from __future__ import annotations

import functools
import warnings
from typing import Any, Callable, Optional, Union

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct

from eggroll_rl import distributed
from eggroll_rl import fitness_shaping as shaping_lib
from eggroll_rl import evolvable, layer, noise as noise_lib

Schedule = Union[float, Callable[[jax.Array], jax.Array]]


@struct.dataclass
class EvoState:
    """Everything that changes between generations."""

    mean: Any
    opt_state: Any
    key: jax.Array
    generation: jax.Array


@struct.dataclass
class Population:
    """One generation's members in compact form: the mean, the noise and the signs.

    ``noise`` has the structure of the params with each leaf replaced by its
    ``LowRankNoise``/``FullNoise``, one row per draw: member ``i`` uses draw
    ``i // len(signs)``, so with antithetic sampling members ``2k`` and ``2k+1`` share draw
    ``k`` with signs ``+1`` and ``-1`` (half the rows of one per member). OpenES also carries
    ``members``: every member's perturbed params, built once per generation so that a rollout
    does not rebuild them at every step; its noise is then left out and regenerated from the
    key when needed.
    """

    mean: Any
    noise: Any
    members: Any
    sigma: jax.Array
    key: jax.Array
    generation: jax.Array


# Largest population (per device) whose per-member noise is rebuilt inside each step (``keep_in_loop``);
# larger ones get it materialised once (``materialise_once``). The crossover is where
# ``eggroll-rl bench`` under a plain jax.jit shows rebuilding stop paying for the paper's 3 x 256
# policy (figures in docs/performance.md).
TIE_TO_STEP_MAX_MEMBERS = 2048


def keep_in_loop(noise: Any, xs: Any) -> tuple[Any, Any]:
    """Tie the noise to this step's inputs, so that XLA keeps its use inside a rollout loop.

    Otherwise XLA hoists each member's perturbed vectors (bias, LayerNorm) out of the loop and
    materialises them: N x width floats per leaf, re-read at every step. Kept in the loop, they
    are rebuilt inside the fusions that use them, from half as many per-draw rows. Applied to
    noise already widened to float32, whose conversion XLA still hoists (it precedes the tie).
    Used for populations up to ``TIE_TO_STEP_MAX_MEMBERS``.
    """
    return jax.lax.optimization_barrier((noise, xs))


def materialise_once(per_member: Any) -> Any:
    """Make the per-member noise rows (one row per member, float32) an array of their own.

    Above ``TIE_TO_STEP_MAX_MEMBERS`` members, rebuilding the rows inside every fusion that
    reads them costs more than reading them: the barrier stops XLA from fusing the antithetic
    repeat into each consumer, so the rows are built once (before a rollout loop, which they do
    not depend on) and each step reads them like any other operand.
    """
    return jax.lax.optimization_barrier(per_member)


class _EvolutionStrategy:
    """Shared machinery; subclasses say which leaves get low-rank noise.

    Arguments (EGGROLL and OpenES alike):
      population_size: members per generation (even with antithetic sampling).
      sigma: noise scale, a float or a schedule ``generation -> sigma`` (e.g. an optax schedule).
      optimizer: any optax transformation; the ES estimate is its (negated) gradient.
        Default ``optax.sgd(0.1)``.
      fitness_shaping: "centered_rank", "zscore", "identity" or a callable ``f -> weights``.
      antithetic: members 2k and 2k+1 share a draw with signs +1 and -1.
      noise_reuse: generations that share one draw (1 = fresh noise every generation).
      nonfinite_fitness: "raise" (default) or "skip" (leave params unchanged that generation)
        when a generation's fitness holds NaN/inf, or its sigma (from a schedule) is not
        finite and > 0.
      noise_dtype: the dtype the population's noise is held in (default int8): a quarter of
        float32's memory for the population, its checkpoints and transfers. int8 holds each
        draw in steps of 1/16 (``noise.hold``), as the paper's integer training holds its
        noise; bfloat16 rounds it to 8 significant bits; float32 keeps it as drawn. The draws
        are rounded once, in ``ask``; ``population_apply`` widens them to float32 (outside the
        per-member computation, so that a rollout loop converts them once, not at every step)
        and the forward pass and ``tell`` use the same rounded values, in float32 or wider, so
        the update is exact for the perturbations evaluated.
      cap_rank: give a matrix with a side smaller than ``rank`` (e.g. a 2-action head at rank
        4) rank ``min(rank, m, n)`` (default: ``E = A B^T`` cannot have a higher rank anyway);
        False raises instead. ``ranks(params)`` says what each matrix gets.
      mesh: a ``jax.sharding.Mesh`` (e.g. ``distributed.make_population_mesh()``) to split the
        population axis over, every mesh axis together; None or one device: no sharding.
        The number of draws (``population_size``, halved if antithetic) must be a multiple of
        the mesh size (checked here), so that each device holds whole pairs. The population's
        noise and members and ``population_apply``'s inputs and outputs are sharded; ``tell``
        gathers the fitness and every device regenerates all noise from the key and computes
        the identical, replicated update.
    """

    _materialise_members = False

    def __init__(
        self,
        population_size: int,
        sigma: Schedule,
        *,
        rank: Optional[int] = None,
        optimizer: Optional[optax.GradientTransformation] = None,
        fitness_shaping: Union[str, shaping_lib.FitnessShaping] = "centered_rank",
        antithetic: bool = True,
        noise_reuse: int = 1,
        nonfinite_fitness: str = "raise",
        cap_rank: bool = True,
        mesh: Optional[jax.sharding.Mesh] = None,
        noise_dtype: Any = jnp.int8,
    ):
        if not isinstance(population_size, (int, np.integer)) or population_size < 1:
            raise ValueError(f"population_size must be a positive int, got {population_size!r}.")
        if antithetic and population_size % 2:
            raise ValueError(
                f"population_size={population_size} is odd, but antithetic sampling pairs members "
                "(2k, 2k+1): use an even population_size or antithetic=False."
            )
        if not callable(sigma) and not (np.isfinite(float(sigma)) and float(sigma) > 0):
            raise ValueError(f"sigma must be finite and > 0 (or a schedule), got {sigma!r}.")
        if population_size == 1 and fitness_shaping in ("centered_rank", "zscore", "grouped_zscore"):
            raise ValueError(
                f"population_size=1 with fitness_shaping={fitness_shaping!r}: a lone member's "
                "shaped fitness is always the same, so the mean would never move; use at least "
                "2 members (antithetic pairs) or fitness_shaping='identity'."
            )
        if rank is not None and (not isinstance(rank, (int, np.integer)) or rank < 1):
            raise ValueError(f"rank must be an int >= 1, got {rank!r}.")
        if not isinstance(noise_reuse, (int, np.integer)) or noise_reuse < 1:
            raise ValueError(
                f"noise_reuse={noise_reuse!r}: it is the number of generations that share one "
                "noise draw, so it must be an int >= 1 (1 = fresh noise every generation)."
            )
        if nonfinite_fitness not in ("raise", "skip"):
            raise ValueError(
                f"nonfinite_fitness must be 'raise' or 'skip', got {nonfinite_fitness!r}."
            )
        noise_dtype = noise_lib.check_noise_dtype(noise_dtype)
        distributed.check_divisible(
            int(population_size), mesh, "population_size", group=2 if antithetic else 1
        )
        self.mesh = mesh
        self.noise_dtype = jnp.dtype(noise_dtype)
        self.cap_rank = cap_rank
        self.population_size = int(population_size)
        self.sigma = sigma
        self.rank = rank
        self.optimizer = optimizer if optimizer is not None else optax.sgd(0.1)
        self.fitness_shaping = shaping_lib.resolve(fitness_shaping)
        self.antithetic = antithetic
        self.noise_reuse = int(noise_reuse)
        self.nonfinite_fitness = nonfinite_fitness
        self.num_draws = self.population_size // 2 if antithetic else self.population_size
        self.signs = np.array([1.0, -1.0] if antithetic else [1.0], np.float32)

    # ---- helpers -------------------------------------------------------------------------
    def _leaf_rank(self, leaf: jax.Array) -> Optional[int]:
        """Rank of the leaf's low-rank noise, or None for full Gaussian noise.

        Matrices get low-rank noise, and so do 4-D leaves: a 2-D convolution's kernel
        ``(kh, kw, c_in, c_out)`` is the matrix ``(kh * kw * c_in, c_out)`` (``_matrix_shape``).
        """
        if self.rank is None or jnp.ndim(leaf) not in (2, 4):
            return None
        return min(self.rank, *_matrix_shape(leaf)) if self.cap_rank else self.rank

    def _sigma_at(self, generation: jax.Array) -> jax.Array:
        if callable(self.sigma):
            return jnp.asarray(self.sigma(generation), jnp.float32)
        return jnp.asarray(self.sigma, jnp.float32)

    def _draw_noise(self, key: jax.Array, generation: jax.Array, mean: Any, draws: jax.Array):
        leaves, treedef = jax.tree_util.tree_flatten(evolvable.evolved(mean))
        specs = [
            noise_lib.LeafSpec(
                _matrix_shape(leaf) if rank is not None else tuple(leaf.shape),
                self.noise_dtype,
                rank,
            )
            for leaf, rank in zip(leaves, map(self._leaf_rank, leaves))
        ]
        drawn = noise_lib.draw_noise(key, generation // self.noise_reuse, draws, specs)
        return jax.tree_util.tree_unflatten(treedef, drawn)

    def _draws_of(self, population: Population) -> list:
        """Per-draw noise leaves (one row per draw, not per member), regenerated if not held."""
        treedef = jax.tree_util.tree_structure(evolvable.evolved(population.mean))
        if population.noise is None or distributed.mesh_size(self.mesh) > 1:
            # Sharded populations hold a slice of the noise per device: regenerate all of it.
            noise = self._draw_noise(
                population.key, population.generation, population.mean,
                jnp.arange(self.num_draws),
            )
            noise = distributed.replicate(noise, self.mesh)
        else:
            noise = population.noise
        return treedef.flatten_up_to(noise)

    def _check_population_axis(self, xs: Any, what: str) -> None:
        for leaf in jax.tree_util.tree_leaves(xs):
            if jnp.ndim(leaf) == 0 or jnp.shape(leaf)[0] != self.population_size:
                raise ValueError(
                    f"{what} must have a leading axis of size population_size="
                    f"{self.population_size}, got an array of shape {jnp.shape(leaf)}."
                )

    def _check_noise_rows(self, population: Population) -> None:
        for leaf in jax.tree_util.tree_leaves(population.noise):
            if jnp.shape(leaf)[0] != self.num_draws:
                raise ValueError(
                    f"population.noise has arrays with {jnp.shape(leaf)[0]} rows; this strategy "
                    f"holds one row per draw ({self.num_draws} for population_size="
                    f"{self.population_size}{', antithetic' if self.antithetic else ''}). Pass "
                    "the population that this strategy's ask returned."
                )

    # ---- public API ----------------------------------------------------------------------
    def init(self, key: jax.Array, params: Any) -> EvoState:
        """Start from ``params``: what the model is applied with, in the form users hold it.

        Any pytree of float arrays evolves whole. A linen variables dict from ``model.init``
        evolves its ``params`` collection only: the others (``batch_stats``, ...) are handed to
        ``apply_fn`` unchanged by every member. An ``nnx.Module`` evolves its ``nnx.Param``
        state only (``nnx.split``); RNG counters, batch statistics and caches pass through,
        and ``apply_fn`` receives the member's module (e.g. ``lambda model, x: model(x)``).
        """
        mean = evolvable.split(params)
        paths = evolvable.leaf_paths(mean)
        leaves = jax.tree_util.tree_leaves(evolvable.evolved(mean))
        if not leaves:
            raise ValueError("params has no array leaves to optimise.")
        for name, leaf in zip(paths, leaves):
            if not jnp.issubdtype(jnp.result_type(leaf), jnp.floating):
                raise ValueError(
                    f"{name} has dtype {jnp.result_type(leaf)}: evolution strategies here "
                    "perturb floating-point leaves only (linen: put other state in a collection "
                    "other than 'params'; NNX: hold it in an nnx.Variable that is not nnx.Param)."
                )
            rank = self._leaf_rank(leaf)
            if rank is not None and rank > min(_matrix_shape(leaf)):
                raise ValueError(
                    f"rank={rank} is larger than the smaller side of {name} "
                    f"(shape {jnp.shape(leaf)}): use rank <= {min(_matrix_shape(leaf))}, or "
                    "cap_rank=True (the default) to give each matrix min(rank, its smaller side)."
                )
        if callable(self.sigma):
            with jax.ensure_compile_time_eval():  # init may run inside a jit (vmapped seeds)
                sigma_0 = float(self.sigma(0))
            if not sigma_0 > 0:
                raise ValueError(f"the sigma schedule must start > 0, got sigma(0)={sigma_0}.")
        mean = jax.tree_util.tree_map(jnp.asarray, mean)
        return EvoState(
            mean=mean,
            opt_state=self.optimizer.init(evolvable.evolved(mean)),
            key=key,
            generation=jnp.zeros((), jnp.int32),
        )

    def ranks(self, params: Any) -> dict[str, int]:
        """The rank each matrix's noise gets, by parameter path (e.g. ``params/Dense_0/kernel``).

        ``params`` in any form ``init`` takes (shapes suffice: ``jax.eval_shape`` output works).
        Matrices only; every other leaf gets full Gaussian noise.
        """
        mean = evolvable.split(params)
        leaves = jax.tree_util.tree_leaves(evolvable.evolved(mean))
        return {
            name: int(rank)
            for name, leaf in zip(evolvable.leaf_paths(mean), leaves)
            if (rank := self._leaf_rank(leaf)) is not None
        }

    @functools.partial(jax.jit, static_argnums=0)
    def ask(self, state: EvoState) -> Population:
        """This generation's population; a pure function of ``state``."""
        sigma = self._sigma_at(state.generation)
        draws = self._draw_noise(state.key, state.generation, state.mean, jnp.arange(self.num_draws))
        population = Population(
            mean=state.mean,
            noise=distributed.shard_rows(draws, self.mesh),
            members=None,
            sigma=sigma,
            key=state.key,
            generation=state.generation,
        )
        if not self._materialise_members:
            return population
        members = distributed.shard_rows(self._materialised_members(population), self.mesh)
        return population.replace(noise=None, members=members)

    def _rows_per_member(self, per_draw: jax.Array) -> jax.Array:
        # One row per member (antithetic partners hold the same draw): the forward pass then
        # runs on a flat member axis, which XLA fuses far better than a (pairs, 2) layout.
        return jnp.repeat(per_draw, len(self.signs), axis=0)

    def _member_signs(self) -> jax.Array:
        return jnp.asarray(np.tile(self.signs, self.num_draws))

    def _materialised_members(self, population: Population) -> Any:
        signs = self._member_signs()
        leaves, treedef = jax.tree_util.tree_flatten(evolvable.evolved(population.mean))
        built = []
        for mean, noise in zip(leaves, treedef.flatten_up_to(population.noise)):
            per_member = self._rows_per_member(noise_lib.materialise(noise))
            per_member = per_member.reshape(per_member.shape[:1] + mean.shape)
            signed = signs.reshape((-1,) + (1,) * mean.ndim) * per_member
            built.append(mean + (population.sigma * signed).astype(mean.dtype))
        return jax.tree_util.tree_unflatten(treedef, built)

    def population_apply(self, population: Population, apply_fn: Callable, xs: Any, *args, **kwargs):
        """``apply_fn(params_i, xs[i], *args, **kwargs)`` for every member i, in one batched call.

        ``params_i`` has the form ``init`` was given: the pytree, the linen variables dict (its
        other collections unchanged), or the member's NNX module (so ``apply_fn`` may be
        ``lambda model, x: model(x)``). ``xs`` (an array or pytree) has a leading axis of size
        ``population_size``. Meant to be called inside ``jit``/``lax.scan``, once per
        environment step: it generates no noise. With a mesh, ``xs`` and the outputs are
        sharded over it along the population axis.

        Kernels of plain linen ``nn.Dense``/``nn.Conv`` and NNX ``nnx.Linear``/``nnx.Conv``
        (and ``nnx.LinearGeneral``/``nnx.Einsum`` with a 2-D kernel) stay shared and get each
        member's low-rank term. Any other matrix, and a kernel that the model also reads
        directly (weight tying), is materialised per member (exact, memory ``N x m x n``) with
        a warning naming it by path (``params/Dense_0/kernel``, ``linear1/kernel``).
        """
        self._check_population_axis(xs, "xs")
        self._check_noise_rows(population)
        xs = distributed.shard_rows(xs, self.mesh)
        mean = population.mean
        leaves, treedef = jax.tree_util.tree_flatten(evolvable.evolved(mean))

        def rebuild(member_leaves):  # what apply_fn takes: pytree, linen variables or module
            return evolvable.user_view(mean, jax.tree_util.tree_unflatten(treedef, member_leaves))

        if population.members is not None:
            members = treedef.flatten_up_to(evolvable.evolved(population.members))
            out = jax.vmap(lambda p, x: apply_fn(rebuild(p), x, *args, **kwargs))(members, xs)
            return distributed.shard_rows(out, self.mesh)

        noise = treedef.flatten_up_to(population.noise)
        one_x = jax.tree_util.tree_map(lambda x: x[0], xs)
        found = layer.discover(apply_fn, rebuild, leaves, one_x, args, kwargs)
        shared = {i for i in found.fast if isinstance(noise[i], noise_lib.LowRankNoise)}
        self._warn_materialised(mean, leaves, noise, shared, found.tied)
        # Widened before the per-member computation: the population is loop-invariant, so in a
        # rollout loop XLA hoists the conversion instead of widening int8 rows at every step.
        noise = [jax.tree_util.tree_map(noise_lib.widen, leaf_noise) for leaf_noise in noise]
        tie = self.population_size // distributed.mesh_size(self.mesh) <= TIE_TO_STEP_MAX_MEMBERS
        if tie:
            noise, xs = keep_in_loop(noise, xs)

        def member(member_noise, sign, x):
            scale = sign * population.sigma
            params = [
                mean if i in shared
                else mean + (scale * _perturbation_of(leaf_noise, mean)).astype(mean.dtype)
                for i, (mean, leaf_noise) in enumerate(zip(leaves, member_noise))
            ]
            low_rank = [n if i in shared else None for i, n in enumerate(member_noise)]
            return layer.apply_member(apply_fn, rebuild, params, x, low_rank, scale, args, kwargs)

        per_member = distributed.shard_rows(
            jax.tree_util.tree_map(self._rows_per_member, noise), self.mesh
        )
        if not tie:
            per_member = materialise_once(per_member)
        out = jax.vmap(member)(per_member, self._member_signs(), xs)
        return distributed.shard_rows(out, self.mesh)

    def _warn_materialised(self, mean, leaves, noise, shared, tied) -> None:
        """Say, naming the parameter by its path, which matrices leave the fast path and why."""
        paths = evolvable.leaf_paths(mean)
        fix = _FAST_PATH_FIX[evolvable.framework(mean)]
        for i, leaf_noise in enumerate(noise):
            if not isinstance(leaf_noise, noise_lib.LowRankNoise) or i in shared:
                continue
            if i in tied:
                why = (
                    f"{paths[i]} (shape {leaves[i].shape}) is a layer's kernel that the model also "
                    "reads directly (weight tying, e.g. Embed.attend or params['kernel'] in "
                    "another op), so that every use sees the member's perturbation its low-rank "
                    "noise is materialised for every member (exact, but memory N x m x n). "
                    "Give the second use its own parameter to keep the fast path."
                )
            else:
                why = (
                    f"{paths[i]} (shape {leaves[i].shape}) is a matrix that the model does not "
                    "use as a plain Dense kernel, so its low-rank noise is materialised for every "
                    f"member (correct, but memory N x m x n). {fix}"
                )
            warnings.warn(why, stacklevel=3)

    def tell(self, state: EvoState, population: Population, fitness: jax.Array):
        """Move the mean toward the better members; ``fitness[i]`` is member i's return.

        Returns ``(state, metrics)``. Non-finite fitness, or a population whose sigma is not
        finite and > 0, raises (``nonfinite_fitness="raise"``,
        a ``ValueError`` when fitness is concrete, a runtime error under ``jit``) or leaves the
        params and optimiser state unchanged (``"skip"``).
        """
        fitness = jnp.asarray(fitness)
        if fitness.shape != (self.population_size,):
            raise ValueError(
                f"fitness must have shape ({self.population_size},) (one value per member), "
                f"got {fitness.shape}."
            )
        traced = isinstance(fitness, jax.core.Tracer)
        if not traced and self.nonfinite_fitness == "raise":
            _raise_if_nonfinite(np.asarray(fitness))
        if not isinstance(population.sigma, jax.core.Tracer) and self.nonfinite_fitness == "raise":
            _raise_if_bad_sigma(np.asarray(population.sigma), np.asarray(population.generation))
        if not isinstance(state.generation, jax.core.Tracer) and not isinstance(
            population.generation, jax.core.Tracer
        ):
            if int(state.generation) != int(population.generation):
                raise ValueError(
                    f"population was asked at generation {int(population.generation)} but the "
                    f"state is at generation {int(state.generation)}: tell the population that "
                    "ask returned for this state."
                )
        traced = traced or isinstance(population.sigma, jax.core.Tracer)
        return self._tell(state, population, fitness, traced and self.nonfinite_fitness == "raise")

    @functools.partial(jax.jit, static_argnums=(0, 4))
    def _tell(self, state: EvoState, population: Population, fitness, check_in_graph: bool):
        self._check_noise_rows(population)
        fitness = distributed.replicate(fitness, self.mesh)  # the only gather: N floats
        # A sigma schedule that reaches zero, a negative value or NaN would turn the update
        # around or blank it silently: such a generation is handled like non-finite fitness.
        sigma_ok = jnp.isfinite(population.sigma) & (population.sigma > 0)
        finite = jnp.all(jnp.isfinite(fitness)) & sigma_ok
        if check_in_graph:
            # The host callback sits in a branch taken only when something is wrong: an
            # unconditional callback would synchronise with the host at every call. Its mere
            # presence still constrains XLA's scheduling of a jitted generation, which is why
            # training uses "skip".
            def complain(args):
                f, sigma, generation = args
                jax.debug.callback(_raise_if_nonfinite, f)
                jax.debug.callback(_raise_if_bad_sigma, sigma, generation)

            jax.lax.cond(
                finite, lambda args: None, complain,
                (fitness, population.sigma, population.generation),
            )
        weights = self.fitness_shaping(jnp.where(finite, fitness, 0.0))
        draw_weights = weights.reshape(self.num_draws, len(self.signs)) @ jnp.asarray(self.signs)

        current = evolvable.evolved(state.mean)
        leaves, treedef = jax.tree_util.tree_flatten(current)
        estimate = [
            noise_lib.weighted_sum(leaf_noise, draw_weights).reshape(mean.shape).astype(mean.dtype)
            / self.population_size
            for mean, leaf_noise in zip(leaves, self._draws_of(population))
        ]
        ascent = jax.tree_util.tree_unflatten(treedef, estimate)
        descent = jax.tree_util.tree_map(jnp.negative, ascent)
        updates, opt_state = self.optimizer.update(descent, state.opt_state, current)
        mean = optax.apply_updates(current, updates)
        if self.nonfinite_fitness == "skip":
            keep = lambda new, old: jnp.where(finite, new, old)
            mean = jax.tree_util.tree_map(keep, mean, current)
            opt_state = jax.tree_util.tree_map(keep, opt_state, state.opt_state)
        metrics = {
            "fitness_mean": jnp.mean(fitness),
            "fitness_std": jnp.std(fitness),
            "fitness_max": jnp.max(fitness),
            "fitness_min": jnp.min(fitness),
            "estimate_norm": optax.tree.norm(ascent),
            "sigma": population.sigma,
            "skipped": jnp.logical_not(finite),
        }
        mean = evolvable.with_evolved(state.mean, mean)
        new_state = state.replace(mean=mean, opt_state=opt_state, generation=state.generation + 1)
        return new_state, metrics

    def mean_params(self, state: EvoState) -> Any:
        """The unperturbed parameters: what is evaluated and deployed.

        In the form ``init`` was given: the pytree, the linen variables dict (with the
        untouched collections), or the NNX module (``nnx.merge``, a new instance).
        """
        return evolvable.user_view(state.mean)

    def member_params(self, population: Population, index: Union[int, jax.Array]) -> Any:
        """Member ``index``'s perturbed params, materialised (slow: tests and debugging only).

        Built from the noise directly, never from ``population.members``, so it checks the
        fast paths rather than repeating them.
        """
        sign = self._member_signs()[index]
        leaves, treedef = jax.tree_util.tree_flatten(evolvable.evolved(population.mean))
        if population.noise is None:
            draw = jnp.asarray(index // len(self.signs))[None]
            one = self._draw_noise(population.key, population.generation, population.mean, draw)
            noise, row = treedef.flatten_up_to(one), 0
        else:
            noise, row = treedef.flatten_up_to(population.noise), index // len(self.signs)
        built = [
            mean
            + (sign * population.sigma * noise_lib.perturbation(n, row).reshape(mean.shape)).astype(
                mean.dtype
            )
            for mean, n in zip(leaves, noise)
        ]
        return evolvable.user_view(population.mean, jax.tree_util.tree_unflatten(treedef, built))


_FAST_PATH_FIX = {
    "linen": "Use nn.Dense, nn.Conv or eggroll_rl.EggrollDense for it to stay on the fast path.",
    "nnx": (
        "Use nnx.Linear, nnx.Conv, or nnx.LinearGeneral/nnx.Einsum with a 2-D kernel (not a "
        "subclass with its own __call__) for it to stay on the fast path."
    ),
}


def _matrix_shape(leaf: Any) -> tuple[int, int]:
    """A matrix leaf as the ``(in, out)`` matrix its noise is drawn for: a convolution kernel
    ``(kh, kw, c_in, c_out)`` is ``(kh * kw * c_in, c_out)``."""
    shape = tuple(jnp.shape(leaf))
    return (int(np.prod(shape[:-1])), shape[-1])


def _perturbation_of(noise: Any, mean: jax.Array) -> jax.Array:
    """One member's materialised ``E`` in the shape of its leaf (reference and fallback path)."""
    return noise_lib.materialise(noise).reshape(mean.shape)


def _raise_if_bad_sigma(sigma: np.ndarray, generation: np.ndarray) -> None:
    if not (np.isfinite(sigma) and sigma > 0):
        raise ValueError(
            f"sigma is {float(sigma)} at generation {int(generation)}: the sigma schedule must "
            "stay finite and > 0 (e.g. clip it, optax.schedules with a positive end value), or "
            "construct the strategy with nonfinite_fitness='skip' to leave the params unchanged "
            "for such generations."
        )


def _raise_if_nonfinite(fitness: np.ndarray) -> None:
    bad = np.flatnonzero(~np.isfinite(np.asarray(fitness)))
    if bad.size:
        raise ValueError(
            f"fitness has {bad.size} non-finite value(s) (NaN or inf), first at member(s) "
            f"{bad[:8].tolist()}: fix the evaluation, or construct the strategy with "
            "nonfinite_fitness='skip' to leave the params unchanged for such generations."
        )


class Eggroll(_EvolutionStrategy):
    """EGGROLL: every matrix gets rank-``rank`` noise ``A B^T / sqrt(rank)``, others full noise."""

    def __init__(self, population_size: int, sigma: Schedule, rank: int = 1, **kwargs):
        super().__init__(population_size, sigma, rank=rank, **kwargs)


class OpenES(_EvolutionStrategy):
    """OpenAI-ES: full Gaussian noise on every leaf; member weights built once per generation."""

    _materialise_members = True

    def __init__(self, population_size: int, sigma: Schedule, **kwargs):
        if "rank" in kwargs:
            raise ValueError("OpenES uses full-rank noise and takes no rank argument.")
        super().__init__(population_size, sigma, rank=None, **kwargs)
