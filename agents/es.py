"""The EGGROLL and OpenES trainers: generations of population rollouts, shaping and ``tell``.

One generation: ``ask`` -> ``rollout`` of every member on ``episodes_per_member`` episodes ->
fitness shaping and ``tell`` (the optimiser step) -> pooled observation statistics. The
hyperparameters cover the paper's whole ES search space, and the same trainer runs either
strategy, so EGGROLL and OpenES differ only in their noise.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal, Optional

import jax
import jax.numpy as jnp
import optax
from flax import struct

from eggroll_rl import distributed
from eggroll_rl.agents import config_checks as checks
from eggroll_rl.envs import obs_norm
from eggroll_rl.envs.rollout import StepCount, check_steps_per_generation, evaluate, rollout
from eggroll_rl.envs.task import Task
from eggroll_rl.networks import Policy
from eggroll_rl.strategies import Eggroll, EvoState, OpenES
from eggroll_rl.user_network import UserNetwork

OPTIMIZERS = ("sgd", "adam", "adamw")
NOISE_DTYPES = ("int8", "bfloat16", "float32")
FITNESS_SHAPINGS = ("centered_rank", "zscore")


@dataclasses.dataclass(frozen=True)
class ESConfig:
    """ES hyperparameters (the paper's search space) for EGGROLL and OpenES."""

    algo: Literal["eggroll", "openes"] = "eggroll"
    """Which ES: "eggroll" (low-rank noise) or "openes" (full-rank Gaussian noise)."""
    total_steps: int = 5_000_000
    """Env-step budget per seed."""
    population_size: int = 256
    """Members per generation; even (antithetic pairs)."""
    rank: int = 1
    """Rank of each EGGROLL perturbation (OpenES ignores it)."""
    optimizer: Literal["sgd", "adam", "adamw"] = "adam"
    """Optimizer of the mean."""
    lr: float = 0.03
    """Learning rate of the optimizer."""
    lr_decay: float = 1.0
    """Learning rate multiplied by this every generation, in (0, 1] (1: constant)."""
    weight_decay: float = 0.0
    """Weight decay of "adamw" (ignored by the other optimizers)."""
    sigma: float = 0.05
    """Noise scale of the perturbations."""
    sigma_decay: float = 1.0
    """Sigma multiplied by this every generation, in (0, 1] (1: constant)."""
    fitness_shaping: Literal["centered_rank", "zscore"] = "centered_rank"
    """How returns become update weights: "centered_rank" (the paper's rank transform) or "zscore"."""
    episodes_per_member: int = 1
    """Episodes each member plays per generation; its fitness is their mean return."""
    deterministic_policy: bool = True
    """Act with the argmax / Gaussian mean instead of sampling, in training and evals."""
    noise_reuse: int = 1
    """Generations that share one noise draw (1: fresh noise every generation)."""
    noise_dtype: Literal["int8", "bfloat16", "float32"] = "int8"
    """The dtype the population's noise is held in: "int8" (steps of 1/16, a quarter of float32's memory traffic per env step), "bfloat16" or "float32" (the draws unrounded)."""
    normalize_obs: bool = True
    """Normalize observations with running statistics pooled over the population."""
    hidden: tuple[int, ...] = (256, 256, 256)
    """Hidden layer widths of the policy MLP, e.g. --hidden 64 64."""
    layer_norm: bool = True
    """LayerNorm after each hidden layer."""
    eval_episodes: int = 10
    """Episodes of the mean policy per eval (between chunks)."""
    devices: int = 0
    """Devices to split the population over (0: all devices of all processes)."""

    def validate(self) -> None:
        if self.algo not in ("eggroll", "openes"):
            raise ValueError(f"es: algo must be 'eggroll' or 'openes', got {self.algo!r}.")
        if self.noise_dtype not in NOISE_DTYPES:
            raise ValueError(
                f"es: noise_dtype must be one of {NOISE_DTYPES}, got {self.noise_dtype!r}."
            )
        if self.fitness_shaping not in FITNESS_SHAPINGS:
            raise ValueError(
                f"es: fitness_shaping must be one of {FITNESS_SHAPINGS}, got {self.fitness_shaping!r}."
            )
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"es: optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}.")
        checks.count("es", "population_size", self.population_size, minimum=1)
        if self.population_size < 2 or self.population_size % 2:
            raise ValueError(
                f"es: population_size={self.population_size} must be even and >= 2 (antithetic "
                "pairs): a lone member gives rank or z-score shaping nothing to compare, so the "
                "mean would never move."
            )
        for name in ("lr", "sigma"):
            checks.real("es", name, getattr(self, name), above=0)
        for name in ("lr_decay", "sigma_decay"):
            checks.real("es", name, getattr(self, name), above=0, at_most=1)
        for name in ("rank", "episodes_per_member", "noise_reuse", "eval_episodes", "total_steps"):
            checks.count("es", name, getattr(self, name))
        checks.real("es", "weight_decay", self.weight_decay, at_least=0)
        checks.count("es", "devices", self.devices, minimum=0)
        checks.hidden("es", self.hidden)
        # Every generation takes at least one env step per member and episode.
        horizon = -(-self.total_steps // (self.population_size * self.episodes_per_member))
        checks.decaying_schedule("es", "lr", self.lr, self.lr_decay, horizon)
        checks.decaying_schedule("es", "sigma", self.sigma, self.sigma_decay, horizon)


@struct.dataclass
class ESState:
    """What changes between generations (one seed; the train loop stacks seeds on axis 0)."""

    evo: EvoState  # the strategy's mean params, optimiser state and generation
    obs_stats: Any  # obs_norm.RunningStats pooled over every live observation so far
    key: jax.Array  # typed PRNG key
    env_steps: StepCount  # env steps consumed so far, exact past 2^31 (np.asarray: int64)


def _optimizer(config: ESConfig) -> optax.GradientTransformation:
    lr = optax.exponential_decay(config.lr, 1, config.lr_decay) if config.lr_decay < 1 else config.lr
    if config.optimizer == "sgd":
        return optax.sgd(lr)
    if config.optimizer == "adam":
        return optax.adam(lr)
    return optax.adamw(lr, weight_decay=config.weight_decay)


@dataclasses.dataclass(frozen=True, eq=False)
class ESTrainer:
    """Pure functions of one ES configuration on one task (hashable by identity for jit).

    ``mesh`` (default: ``make_population_mesh(config.devices)``) splits the population over
    devices; the state stays replicated, so results match a one-device run.

    ``model`` (default None: ``networks.Policy`` built from ``config.hidden`` and
    ``config.layer_norm``) is the user's own ``flax.linen.Module`` or ``flax.nnx.Module``,
    applied to observations ``(batch, *obs_shape)``; ``outputs`` says what it returns
    (``envs.actions.POLICY_OUTPUTS``; a value output is ignored). A linen module is
    initialised per seed with a batched dummy observation ``(1, *obs_shape)``; an NNX module's
    own state is every seed's starting point. Only parameters evolve (``eggroll_rl.evolvable``).
    """

    task: Task
    config: ESConfig
    mesh: Optional[jax.sharding.Mesh] = None
    model: Any = None
    outputs: str = "auto"

    def __post_init__(self):
        self.config.validate()
        if self.model is not None and not isinstance(self.model, UserNetwork):
            object.__setattr__(self, "model", UserNetwork(self.model, self.outputs))
        if self.mesh is None:
            object.__setattr__(self, "mesh", distributed.make_population_mesh(self.config.devices))
        distributed.check_divisible(self.config.population_size, self.mesh, "es: population_size", group=2)
        check_steps_per_generation(
            self.config.population_size * self.config.episodes_per_member,
            self.task.max_episode_steps, "es",
        )

    @property
    def name(self) -> str:
        return self.config.algo

    @property
    def network(self) -> Any:
        """The module trained: ``model``'s, or ``networks.Policy`` from the config."""
        if self.model is not None:
            return self.model.module
        return Policy(
            self.task.action_size, not self.task.discrete, tuple(self.config.hidden),
            self.config.layer_norm,
        )

    @property
    def apply_fn(self):
        """``apply_fn(params, obs)`` for the strategy's member and mean params."""
        return self.network.apply if self.model is None else self.model.apply_fn

    def _initial_params(self, key: jax.Array) -> Any:
        obs_shape = self.task.observation_space.shape
        if self.model is not None:
            return self.model.init(key, obs_shape)
        return self.network.init(key, jnp.zeros(obs_shape, jnp.float32))

    @property
    def strategy(self):
        c = self.config
        sigma = (
            optax.exponential_decay(c.sigma, 1, c.sigma_decay) if c.sigma_decay < 1 else c.sigma
        )
        common = dict(
            optimizer=_optimizer(c),
            fitness_shaping=c.fitness_shaping,
            noise_reuse=c.noise_reuse,
            noise_dtype=c.noise_dtype,
            nonfinite_fitness="skip",
            mesh=self.mesh,
        )
        if c.algo == "openes":
            return OpenES(c.population_size, sigma, **common)
        return Eggroll(c.population_size, sigma, rank=c.rank, cap_rank=True, **common)

    def ranks(self) -> dict[str, int]:
        """The rank each matrix's noise gets, by parameter path: ``rank`` capped at the
        matrix's smaller side (a 2-action head at rank 4 gets 2); empty for OpenES."""
        if self.model is not None and self.model.framework == "nnx":
            return self.strategy.ranks(self.model.module)  # its own state, nothing to trace
        return self.strategy.ranks(jax.eval_shape(self._initial_params, jax.random.key(0)))

    def init(self, key: jax.Array) -> ESState:
        key, key_net, key_es = jax.random.split(key, 3)
        obs_shape = self.task.observation_space.shape
        params = self._initial_params(key_net)
        state = ESState(
            evo=self.strategy.init(key_es, params),
            obs_stats=obs_norm.init(obs_shape),
            key=key,
            env_steps=StepCount.zero(),
        )
        return distributed.replicate(state, self.mesh)

    def generation(self, state: ESState, _=None):
        """One generation (ask, rollout, tell); returns ``(state, metrics)``.

        Metrics: ``env_steps`` (the new ``StepCount``), float32 scalars ``fitness_mean``,
        ``fitness_max``, ``sigma`` and ``skipped`` (1 when non-finite fitness skipped the update),
        and int32 ``nonfinite_fitness`` (members whose fitness was NaN/inf).
        """
        c, strategy = self.config, self.strategy
        key, key_rollout = jax.random.split(state.key)
        population = strategy.ask(state.evo)
        result = rollout(
            self.task,
            strategy,
            population,
            self.apply_fn,
            key_rollout,
            episodes_per_member=c.episodes_per_member,
            deterministic=c.deterministic_policy,
            obs_stats=state.obs_stats if c.normalize_obs else None,
            outputs=self._outputs,
        )
        return self.tell(state, key, population, result)

    def tell(self, state: ESState, key: jax.Array, population: Any, result: Any):
        """The end of a generation, given its rollout: ``tell``, step count, pooled statistics.

        Args:
            state: the state the generation started from.
            key: the state's next key (the first half of ``split(state.key)``).
            population: ``strategy.ask(state.evo)``.
            result: a ``RolloutResult`` of that population (``rollout`` or, for Gymnasium
                envs, ``gymnasium_target.host_rollout``): ``fitness`` ``(population,)``,
                ``env_steps`` and ``obs_stats``.

        Returns:
            ``(state, metrics)`` as ``generation``.
        """
        c = self.config
        evo, metrics = self.strategy.tell(state.evo, population, result.fitness)
        env_steps = state.env_steps.add(result.env_steps)
        new_state = ESState(
            evo=evo,
            obs_stats=result.obs_stats if c.normalize_obs else state.obs_stats,
            key=key,
            env_steps=env_steps,
        )
        return new_state, {
            "env_steps": env_steps,
            "fitness_mean": metrics["fitness_mean"],
            "fitness_max": metrics["fitness_max"],
            "sigma": metrics["sigma"],
            "skipped": metrics["skipped"].astype(jnp.float32),
            "nonfinite_fitness": jnp.sum(~jnp.isfinite(result.fitness), dtype=jnp.int32),
        }

    def train_chunk(self, state: ESState, num_iterations: int):
        """``num_iterations`` generations in one ``lax.scan``; metrics stacked on axis 0."""
        return jax.lax.scan(self.generation, state, None, num_iterations)

    def evaluate(self, state: ESState, key: jax.Array) -> jax.Array:
        """Mean return of the mean policy on fresh episodes."""
        c = self.config
        return evaluate(
            self.task,
            self.apply_fn,
            self.strategy.mean_params(state.evo),
            key,
            c.eval_episodes,
            deterministic=c.deterministic_policy,
            obs_stats=state.obs_stats if c.normalize_obs else None,
            outputs=self._outputs,
        ).mean_return

    @property
    def _outputs(self) -> str:
        return "auto" if self.model is None else self.model.outputs

    def policy(self, state: ESState) -> dict:
        """What is deployed: the mean params (with a user ``model``: its state as a pure dict,
        ``UserNetwork.state_dict``) and the observation statistics."""
        params = self.strategy.mean_params(state.evo)
        if self.model is not None:
            params = self.model.state_dict(params)
        return {"params": params, "obs_stats": state.obs_stats}
