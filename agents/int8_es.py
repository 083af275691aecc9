"""The integer EGGROLL trainer: an int8 policy evolved with +-1 steps, deployable as is.

One generation: draw the int8 noise -> run every member's episodes (``run_episodes`` with the
integer population forward as the policy) -> pair fitness signs -> the integer update ->
pooled observation statistics, as in ``agents.es``. There is no optimiser state: the state is
the int8 kernels, the obs statistics, a key, the generation and the env-step count. The mean
policy it evaluates is exactly the int8 network ``save_int8`` exports. Like the float trainer it
splits the population over a device mesh (``config.devices``) and keeps the state replicated.
"""

from __future__ import annotations

import dataclasses
import functools
import pathlib
from typing import Any, Literal, Optional

import jax
import jax.numpy as jnp
from flax import struct

from eggroll_rl import distributed
from eggroll_rl.agents import config_checks as checks
from eggroll_rl import int8 as int8_lib
from eggroll_rl.envs import obs_norm
from eggroll_rl.envs.rollout import StepCount, check_steps_per_generation, evaluate, run_episodes
from eggroll_rl.envs.task import Task
from eggroll_rl.int8 import Int8MLP
from eggroll_rl.int8_strategy import Int8Eggroll


@dataclasses.dataclass(frozen=True)
class Int8ESConfig:
    """Integer EGGROLL hyperparameters (int8 weights and activations); the defaults solve
    gymnax CartPole-v1."""

    algo: Literal["eggroll"] = "eggroll"
    """Always "eggroll" (integer EGGROLL)."""
    total_steps: int = 1_000_000
    """Env-step budget per seed."""
    population_size: int = 64
    """Members per generation; even (antithetic pairs)."""
    rank: int = 1
    """Rank of each int8 perturbation."""
    noise_shift: int = 6
    """Sigma = 2^(8 - noise_shift) int8 weight units, in [0, 16]."""
    alpha: float = 0.1
    """Fraction of each kernel that moves per generation, in (0, 1]."""
    alpha_decay: float = 0.995
    """Alpha multiplied by this every generation, in (0, 1]."""
    alpha_min: float = 0.01
    """Lower bound of the decayed alpha."""
    episodes_per_member: int = 1
    """Episodes each member plays per generation."""
    normalize_obs: bool = True
    """Normalize observations with running statistics."""
    hidden: tuple[int, ...] = (64, 64)
    """Hidden layer widths of the int8 MLP."""
    input_bits: int = 5
    """Fractional bits of the quantised observations."""
    weight_init: int = 16
    """Scale of the initial int8 weights."""
    eval_episodes: int = 10
    """Episodes of the mean policy per eval."""
    devices: int = 0
    """Devices to split the population over (0: all devices of all processes)."""

    def validate(self) -> None:
        if self.algo != "eggroll":
            raise ValueError(f"int8 training is EGGROLL only, got algo={self.algo!r}.")
        checks.count("int8", "population_size", self.population_size, minimum=1)
        if self.population_size < 2 or self.population_size % 2:
            raise ValueError(
                f"int8: population_size={self.population_size} must be even and >= 2 (antithetic pairs)."
            )
        for name in ("rank", "episodes_per_member", "eval_episodes", "total_steps"):
            checks.count("int8", name, getattr(self, name))
        if not self.hidden:
            raise ValueError(f"int8: hidden must be positive widths, got {self.hidden}.")
        checks.hidden("int8", self.hidden)
        checks.count("int8", "noise_shift", self.noise_shift, minimum=0)
        if not 0 <= self.noise_shift <= 16:
            raise ValueError(f"int8: noise_shift must be in [0, 16], got {self.noise_shift}.")
        checks.count("int8", "input_bits", self.input_bits, minimum=0)
        if self.input_bits > 7:
            raise ValueError(f"int8: input_bits must be in [0, 7], got {self.input_bits}.")
        checks.count("int8", "weight_init", self.weight_init)
        if self.weight_init > 64:
            raise ValueError(f"int8: weight_init must be in [1, 64], got {self.weight_init}.")
        for name in ("alpha", "alpha_decay", "alpha_min"):
            checks.real("int8", name, getattr(self, name), above=0, at_most=1)
        if not 0 < self.alpha_min <= self.alpha <= 1:
            raise ValueError(
                f"int8: need 0 < alpha_min <= alpha <= 1, got alpha={self.alpha}, "
                f"alpha_min={self.alpha_min}."
            )
        if not 0 < self.alpha_decay <= 1:
            raise ValueError(f"int8: alpha_decay must be in (0, 1], got {self.alpha_decay}.")
        if self.devices < 0:
            raise ValueError(f"int8: devices must be >= 0 (0: all), got {self.devices}.")


@struct.dataclass
class Int8ESState:
    """What changes between generations (one seed; the train loop stacks seeds on axis 0)."""

    params: Any  # tuple of int8 kernels, (fan_in + 1, fan_out) each
    obs_stats: Any  # obs_norm.RunningStats pooled over every live observation so far
    key: jax.Array  # typed PRNG key
    generation: jax.Array  # int32 scalar
    env_steps: StepCount  # env steps consumed so far, exact past 2^31 (np.asarray: int64)


@dataclasses.dataclass(frozen=True, eq=False)
class Int8ESTrainer:
    """Pure functions of one int8 configuration on one task (hashable by identity for jit).

    ``mesh`` (default: ``make_population_mesh(config.devices)``) splits the population over
    devices; the state stays replicated, so results match a one-device run.
    """

    task: Task
    config: Int8ESConfig
    mesh: Optional[jax.sharding.Mesh] = None
    integer_dots = True  # int8 matmuls: the train loop keeps YNNPACK's int8 dots (xla_options)

    def __post_init__(self):
        self.config.validate()
        if self.mesh is None:
            object.__setattr__(self, "mesh", distributed.make_population_mesh(self.config.devices))
        distributed.check_divisible(
            self.config.population_size, self.mesh, "int8: population_size", group=2
        )
        check_steps_per_generation(
            self.config.population_size * self.config.episodes_per_member,
            self.task.max_episode_steps, "int8",
        )
        if len(self.task.observation_space.shape) != 1:
            raise ValueError(
                f"{self.task.env_id}: the int8 policy is an MLP over flat observations, got "
                f"observation shape {self.task.observation_space.shape}."
            )

    @property
    def name(self) -> str:
        return "eggroll-int8"

    @functools.cached_property
    def network(self) -> Int8MLP:
        return _network(self.task, self.config)

    @functools.cached_property
    def strategy(self) -> Int8Eggroll:
        return _strategy(self.task, self.config, self.mesh)

    def init(self, key: jax.Array) -> Int8ESState:
        key, key_net = jax.random.split(key)
        obs_shape = self.task.observation_space.shape
        state = Int8ESState(
            params=self.network.init(key_net),
            obs_stats=obs_norm.init(obs_shape),
            key=key,
            generation=jnp.zeros((), jnp.int32),
            env_steps=StepCount.zero(),
        )
        return distributed.replicate(state, self.mesh)

    def generation(self, state: Int8ESState, _=None):
        """One generation; returns ``(state, metrics)`` with float32 scalar metrics (and the
        ``StepCount`` ``env_steps``); a generation with non-finite fitness leaves the params
        unchanged (``skipped`` 1, ``nonfinite_fitness`` counts its members)."""
        c, strategy, model = self.config, self.strategy, self.network
        key, key_noise, key_rollout = jax.random.split(state.key, 3)
        noise = strategy.draw(key_noise, state.generation)

        def policy(obs):
            head = strategy.population_forward(state.params, noise, model.quantize(obs))
            return model.dequantize(head), None

        episodes = run_episodes(
            self.task,
            policy,
            key_rollout,
            (c.population_size, c.episodes_per_member),
            deterministic=True,
            obs_stats=state.obs_stats if c.normalize_obs else None,
        )
        returns = episodes.returns.mean(axis=1)
        finite = jnp.all(jnp.isfinite(returns))
        params, metrics = strategy.update(
            state.params, noise, jnp.where(finite, returns, 0.0), state.generation
        )
        # Non-finite fitness would compare as garbage: such a generation leaves params as they are.
        params = jax.tree_util.tree_map(lambda new, old: jnp.where(finite, new, old), params, state.params)
        env_steps = state.env_steps.add(episodes.lengths.sum(dtype=jnp.uint32))
        new_state = Int8ESState(
            params=params,
            obs_stats=episodes.obs_stats if c.normalize_obs else state.obs_stats,
            key=key,
            generation=state.generation + 1,
            env_steps=env_steps,
        )
        return new_state, {
            "env_steps": env_steps,
            "fitness_mean": jnp.mean(returns),
            "fitness_max": jnp.max(returns),
            "skipped": jnp.logical_not(finite).astype(jnp.float32),
            "nonfinite_fitness": jnp.sum(~jnp.isfinite(returns), dtype=jnp.int32),
            **metrics,
        }

    def train_chunk(self, state: Int8ESState, num_iterations: int):
        return jax.lax.scan(self.generation, state, None, num_iterations)

    def evaluate(self, state: Int8ESState, key: jax.Array) -> jax.Array:
        """Mean return of the int8 mean policy on fresh episodes (deterministic)."""
        c = self.config
        return evaluate(
            self.task,
            self.network.apply,
            state.params,
            key,
            c.eval_episodes,
            deterministic=True,
            obs_stats=state.obs_stats if c.normalize_obs else None,
        ).mean_return

    def policy(self, state: Int8ESState) -> dict:
        return {"params": state.params, "obs_stats": state.obs_stats}

    def save(self, state: Int8ESState, run_dir: pathlib.Path) -> pathlib.Path:
        """Write one seed's int8 policy to ``run_dir/policy_int8.npz`` (see ``int8_numpy``)."""
        stats = state.obs_stats if self.config.normalize_obs else None
        path = pathlib.Path(run_dir)
        path.mkdir(parents=True, exist_ok=True)
        return pathlib.Path(
            int8_lib.save(path / "policy_int8.npz", self.network, state.params, stats,
                          self.task.env_id)
        )


def _network(task: Task, config: Int8ESConfig) -> Int8MLP:
    # A continuous mean uses the activations' fixed point (2^-input_bits per unit, about +-4
    # at the int8 rails; the env clips to its bounds): mapping +-127 onto the bounds instead
    # leaves the small initial outputs far too weak for tasks like Pendulum.
    return Int8MLP(
        obs_size=int(task.observation_space.shape[0]),
        action_size=task.action_size,
        hidden=tuple(config.hidden),
        continuous=not task.discrete,
        input_bits=config.input_bits,
        weight_init=config.weight_init,
    )


def _strategy(task: Task, config: Int8ESConfig, mesh=None) -> Int8Eggroll:
    return Int8Eggroll(
        _network(task, config),
        config.population_size,
        rank=config.rank,
        noise_shift=config.noise_shift,
        alpha=config.alpha,
        alpha_decay=config.alpha_decay,
        alpha_min=config.alpha_min,
        mesh=mesh,
    )
