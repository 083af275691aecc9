"""PPO, the gradient-based baseline: one compiled program per chunk of updates, PureJaxRL style.

The comparison with ES is only fair if PPO is as fast and as well tuned as the usual JAX
implementations, on the same env interface and the same policy network class. Everything that
changes is threaded through ``PPOState``; ``make_ppo(task, config)`` returns pure functions the
train loop compiles: ``init(key)``, ``train_chunk(state, n)`` (``n`` updates in a ``lax.scan``),
``evaluate(state, key, episodes)``.

Truncated episodes are bootstrapped with the value of their final observation (taken from the
task's ``info["final_obs"]``); terminated ones are not.

A user's own actor-critic (``PPO(task, config, model=module)``, or ``agents.train("ppo", env,
network=module)``) is trained as written: its logits or Gaussian mean, its own value head, and
its log-std or distribution when it returns one; see ``PPO``.
"""

from __future__ import annotations

import dataclasses
import warnings
from typing import Any, NamedTuple, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from flax import struct

from eggroll_rl import distributed
from eggroll_rl.agents import config_checks as checks
from eggroll_rl.agents import distributions
from eggroll_rl.envs import actions, obs_norm
from eggroll_rl.envs.rollout import StepCount, evaluate
from eggroll_rl.envs.task import Task
from eggroll_rl.networks import MLP, Policy
from eggroll_rl.user_network import UserNetwork


@dataclasses.dataclass(frozen=True)
class PPOConfig:
    """PPO hyperparameters. The defaults (PureJaxRL's CartPole settings, plus reward
    normalisation and no entropy bonus) solve gymnax CartPole-v1 and Pendulum-v1; Brax tasks
    want many more envs (see their presets)."""

    total_steps: int = 500_000
    """Env-step budget per seed (also the learning-rate annealing horizon)."""
    num_envs: int = 4
    """Environments stepped in parallel. On D devices the trainer rounds it up to a multiple of
    D (with a warning when that changes it; ``PPO.config`` holds the value used), so the
    defaults build on any device count; the minibatch size ``num_envs * num_steps /
    num_minibatches`` must then split over the D devices too (it does for the defaults on 1, 2,
    4 and 8 devices)."""
    num_steps: int = 128
    """Steps per environment per update (rollout length)."""
    update_epochs: int = 4
    """Passes over each rollout batch per update."""
    num_minibatches: int = 4
    """Minibatches per epoch; must divide num_envs * num_steps."""
    lr: float = 2.5e-4
    """Adam learning rate."""
    anneal_lr: bool = True
    """Decay the learning rate linearly to 0 over total_steps."""
    gamma: float = 0.99
    """Discount factor."""
    gae_lambda: float = 0.95
    """GAE lambda."""
    clip_eps: float = 0.2
    """PPO clipping range of the probability ratio."""
    ent_coef: float = 0.0
    """Entropy bonus coefficient."""
    vf_coef: float = 0.5
    """Value loss coefficient."""
    max_grad_norm: float = 0.5
    """Global gradient-norm clipping."""
    normalize_obs: bool = True
    """Normalize observations with running statistics."""
    normalize_reward: bool = True
    """Scale rewards by the running std of the discounted return."""
    hidden: tuple[int, ...] = (64, 64)
    """Hidden layer widths of the actor and of the critic."""
    layer_norm: bool = False
    """LayerNorm after each hidden layer."""
    devices: int = 0
    """Devices to split the environments over, data-parallel (0: all devices of all processes)."""
    deterministic_eval: bool = False
    """Evaluate the actor's mode (argmax / Gaussian mean) instead of sampling from the policy it
    trains. Off by default, as PureJaxRL and CleanRL report PPO: on sparse discrete tasks the
    mode of a still-stochastic policy can score far below the policy itself (e.g. never reach
    a goal it reaches by sampling)."""

    def validate(self) -> None:
        checks.count("ppo", "devices", self.devices, minimum=0)
        positive = ("total_steps", "num_envs", "num_steps", "update_epochs", "num_minibatches")
        for name in positive:
            checks.count("ppo", name, getattr(self, name))
        for name in ("lr", "clip_eps", "max_grad_norm"):
            checks.real("ppo", name, getattr(self, name), above=0)
        for name in ("gamma", "gae_lambda"):
            checks.real("ppo", name, getattr(self, name), at_least=0, at_most=1)
        for name in ("ent_coef", "vf_coef"):
            checks.real("ppo", name, getattr(self, name), at_least=0)
        checks.hidden("ppo", self.hidden)
        # The annealed learning rate goes linearly from lr to 0 over total_steps and stays at 0
        # after (optax.linear_schedule clips): finite and >= 0 over any horizon once lr is.
        if (self.num_envs * self.num_steps) % self.num_minibatches:
            raise ValueError(
                f"ppo: num_envs * num_steps = {self.num_envs * self.num_steps} must be divisible "
                f"by num_minibatches = {self.num_minibatches}."
            )

    @property
    def steps_per_update(self) -> int:
        return self.num_envs * self.num_steps

    @property
    def num_updates(self) -> int:
        return max(1, self.total_steps // self.steps_per_update)


class ActorCritic(nn.Module):
    """The ES policy network as actor, and a critic MLP of the same shape."""

    action_size: int
    continuous: bool
    hidden: tuple[int, ...]
    layer_norm: bool

    def setup(self):
        self.actor = Policy(self.action_size, self.continuous, self.hidden, self.layer_norm)
        self.critic = MLP(self.hidden, 1, self.layer_norm)

    def __call__(self, obs):
        head, log_std = self.actor(obs)
        return head, log_std, self.critic(obs)[..., 0]


@struct.dataclass
class PPOState:
    params: Any
    opt_state: Any
    env_state: Any
    obs: jax.Array
    obs_stats: Any
    return_stats: Any
    discounted_return: jax.Array
    episode_return: jax.Array  # undiscounted return so far of each env's running episode
    last_return: jax.Array  # return of each env's latest finished episode (NaN before one)
    key: jax.Array
    update: jax.Array  # int32, updates done
    env_steps: StepCount  # env steps consumed so far, exact past 2^31 (np.asarray: int64)


class Transition(NamedTuple):
    obs: jax.Array
    raw_action: jax.Array
    log_prob: jax.Array
    value: jax.Array
    reward: jax.Array
    terminated: jax.Array
    truncated: jax.Array
    final_value: jax.Array
    episode_return: jax.Array
    episode_done: jax.Array


class _Pi(NamedTuple):
    """The policy at a batch of observations: ``(head, log_std)``, or a distribution."""

    head: Any = None
    log_std: Any = None
    dist: Any = None


_CRITIC_CONVENTIONS = ("head_value", "head_log_std_value", "distribution")


@dataclasses.dataclass(frozen=True, eq=False)
class PPO:
    """Pure functions of one PPO configuration on one task (hashable by identity for jit).

    ``mesh`` (default: ``make_population_mesh(config.devices)``) makes it data-parallel: the
    environment axis of rollouts and minibatches is split over the devices, params stay
    replicated and XLA all-reduces the gradients, so results match a one-device run.

    ``model`` (default None: ``ActorCritic`` from ``config.hidden``/``config.layer_norm``) is
    the user's own actor-critic, a ``flax.linen.Module`` or ``flax.nnx.Module`` applied to
    observations ``(batch, *obs_shape)``, that returns ``(logits, value)`` / ``(mean, value)``,
    ``(mean, log_std, value)``, or ``(distribution, value)`` (``outputs``, default "auto",
    says which; ``envs.actions.POLICY_OUTPUTS``). Its value (``(batch,)`` or ``(batch, 1)``)
    is the critic PPO trains; a distribution's ``sample``/``log_prob``/``entropy`` are used as
    they are; with continuous actions and no log-std output, PPO learns a state-independent
    log-std vector of its own (``params["log_std"]``, starting at 0) beside the module's
    parameters (``params["model"]``). Only parameters train: a module with other state
    (linen collections, NNX batch statistics or RNG state) is refused, as is one with no value
    output, with a ``ValueError`` at construction (traced, nothing compiled). An NNX module's
    own parameters are every seed's starting point.
    """

    task: Task
    config: PPOConfig
    eval_episodes: int = 10
    mesh: Optional[jax.sharding.Mesh] = None
    model: Any = None
    outputs: str = "auto"

    name = "ppo"

    def __post_init__(self):
        self.config.validate()
        if self.model is not None:
            if not isinstance(self.model, UserNetwork):
                object.__setattr__(self, "model", UserNetwork(self.model, self.outputs))
            object.__setattr__(self, "_convention", self._critic_convention())
        if self.mesh is None:
            object.__setattr__(self, "mesh", distributed.make_population_mesh(self.config.devices))
        c = self.config
        num_envs = distributed.round_up(c.num_envs, self.mesh)
        if num_envs != c.num_envs:
            warnings.warn(
                f"ppo: num_envs={c.num_envs} does not split over {self.mesh.size} devices; "
                f"running {num_envs} environments instead (the next multiple of {self.mesh.size}).",
                stacklevel=2,
            )
            c = dataclasses.replace(c, num_envs=num_envs)
            c.validate()
            object.__setattr__(self, "config", c)
        distributed.check_divisible(
            c.steps_per_update // c.num_minibatches, self.mesh,
            "ppo: minibatch size num_envs * num_steps / num_minibatches",
        )

    @property
    def network(self) -> Any:
        """The module trained: ``ActorCritic`` from the config, or the user's ``model``."""
        if self.model is not None:
            return self.model.module
        return ActorCritic(
            self.task.action_size, not self.task.discrete, tuple(self.config.hidden),
            self.config.layer_norm,
        )

    def _critic_convention(self) -> str:
        """What the user's model returns (one of ``_CRITIC_CONVENTIONS``), from its output's
        types and shapes at a batch of ``num_envs`` observations (traced, not run).

        Raises:
            ValueError: the model has no value output, or state other than parameters.
        """
        model, c = self.model, self.config
        obs_shape = tuple(self.task.observation_space.shape)
        if model.framework == "linen":  # refuses collections other than params
            model.trainable(jax.eval_shape(lambda key: model.init(key, obs_shape),
                                           jax.random.key(0)))
        else:
            model.trainable(model.module)

        def apply(obs):  # initialised inside the trace: only shapes are computed
            return model.apply_fn(model.init(jax.random.key(0), obs_shape), obs)

        obs = jax.ShapeDtypeStruct((c.num_envs,) + obs_shape, jnp.float32)
        convention = actions.resolve_batch_outputs(
            model.outputs, self.task.action_space, apply, obs
        )
        out = jax.eval_shape(apply, obs)
        if convention not in _CRITIC_CONVENTIONS or (
            convention == "distribution" and not isinstance(out, (tuple, list))
        ):
            raise ValueError(
                f"ppo needs a critic: {model.name} returns no value ({convention}); return "
                "(logits, value), (mean, value), (mean, log_std, value) or (distribution, value)."
            )
        return convention

    @property
    def _own_log_std(self) -> bool:
        """PPO learns the log-std: continuous actions and a user model with no log-std output."""
        return (
            self.model is not None and not self.task.discrete
            and self._convention == "head_value"
        )

    def _init_params(self, key: jax.Array, obs: jax.Array) -> Any:
        """Initial params from a batch of observations ``(num_envs, *obs_shape)``."""
        if self.model is None:
            return self.network.init(key, obs[0])
        model = self.model
        params = {"model": model.trainable(model.init(key, obs.shape[1:]))}
        if self._own_log_std:
            params["log_std"] = jnp.zeros((self.task.action_size,), jnp.float32)
        return params

    def _forward(self, params, obs: jax.Array) -> tuple[_Pi, jax.Array]:
        """``(policy, value)`` at observations ``(batch, *obs_shape)``: value float ``(batch,)``."""
        if self.model is None:
            head, log_std, value = self.network.apply(params, obs)
            return _Pi(head, log_std), value
        model = self.model
        out = model.apply_fn(model.with_trainable(params["model"]), obs)
        value = actions.value_of(out, self._convention)
        value = jnp.reshape(value, obs.shape[:1])  # (batch,) or (batch, 1)
        if self._convention == "distribution":
            return _Pi(dist=actions.distribution_of(out)), value
        head, log_std = actions.split_outputs(out, self._convention)
        if self._own_log_std:
            log_std = params["log_std"]
        return _Pi(head, log_std), value

    def _apply_with_own_log_std(self, params, obs: jax.Array):
        """``(mean, log_std, value)`` of a user model that returns ``(mean, value)``, with
        ``params = (module variables, PPO's own log-std)``: the model's outputs for sampling."""
        variables, log_std = params
        head, value = self.model.apply_fn(variables, obs)
        return head, log_std, value

    def _sample(self, pi: _Pi, key: jax.Array, num: int):
        """``(raw, action)`` for ``num`` observations, as ``distributions.sample`` gives."""
        space = self.task.action_space
        if pi.dist is not None:
            raw = pi.dist.sample(seed=key)
            return raw, actions.env_action(space, raw, (num,))
        log_std, keys = pi.log_std, jax.random.split(key, num)
        if log_std is not None and jnp.ndim(log_std) == jnp.ndim(pi.head):  # one per row
            return jax.vmap(lambda h, s, k: distributions.sample(space, h, s, k))(
                pi.head, log_std, keys
            )
        return jax.vmap(lambda h, k: distributions.sample(space, h, log_std, k))(pi.head, keys)

    def _log_prob(self, pi: _Pi, raw: jax.Array) -> jax.Array:
        if pi.dist is not None:
            return _per_row(pi.dist.log_prob(raw), raw.shape[0])
        return distributions.log_prob(self.task.action_space, pi.head, pi.log_std, raw)

    def _entropy(self, pi: _Pi, num: int) -> jax.Array:
        if pi.dist is not None:
            return _per_row(pi.dist.entropy(), num)
        return distributions.entropy(self.task.action_space, pi.head, pi.log_std)

    @property
    def optimizer(self) -> optax.GradientTransformation:
        c = self.config
        batches_per_update = c.update_epochs * c.num_minibatches
        lr = (
            optax.linear_schedule(c.lr, 0.0, c.num_updates * batches_per_update)
            if c.anneal_lr
            else c.lr
        )
        return optax.chain(optax.clip_by_global_norm(c.max_grad_norm), optax.adam(lr, eps=1e-5))

    def init(self, key: jax.Array) -> PPOState:
        c = self.config
        key, key_net, key_env = jax.random.split(key, 3)
        obs, env_state = jax.vmap(self.task.reset)(jax.random.split(key_env, c.num_envs))
        obs, env_state = distributed.shard_rows((obs, env_state), self.mesh)
        params = distributed.replicate(self._init_params(key_net, obs), self.mesh)
        # The per-env trackers are split over devices like the envs, as update returns them, so
        # the state that goes into a compiled chunk has the same shardings at every call.
        discounted, episode_return, last_return = distributed.shard_rows(
            (jnp.zeros(c.num_envs), jnp.zeros(c.num_envs), jnp.full(c.num_envs, jnp.nan)),
            self.mesh,
        )
        return PPOState(
            params=params,
            opt_state=self.optimizer.init(params),
            env_state=env_state,
            obs=obs,
            obs_stats=obs_norm.init(obs.shape[1:]),
            return_stats=obs_norm.init(()),
            discounted_return=discounted,
            episode_return=episode_return,
            last_return=last_return,
            key=key,
            update=jnp.zeros((), jnp.int32),
            env_steps=StepCount.zero(),
        )

    def _normalize(self, stats, obs):
        return obs_norm.normalize(stats, obs) if self.config.normalize_obs else obs

    def _collect(self, state: PPOState):
        c, task = self.config, self.task

        def step(carry, _):
            env_state, obs, key, discounted, episode_return, last_return = carry
            env_state, obs = distributed.shard_rows((env_state, obs), self.mesh)
            key, key_act, key_step = jax.random.split(key, 3)
            norm_obs = self._normalize(state.obs_stats, obs)
            pi, value = self._forward(state.params, norm_obs)
            raw, action = self._sample(pi, key_act, c.num_envs)
            logp = self._log_prob(pi, raw)
            next_obs, env_state, reward, terminated, truncated, info = jax.vmap(task.step)(
                jax.random.split(key_step, c.num_envs), env_state, action
            )
            done = jnp.logical_or(terminated, truncated)
            _, final_value = self._forward(
                state.params, self._normalize(state.obs_stats, info["final_obs"])
            )
            episode_return = episode_return + reward
            discounted = discounted * c.gamma + reward
            transition = Transition(
                obs, raw, logp, value, reward, terminated, truncated, final_value,
                episode_return, done,
            )
            last_return = jnp.where(done, episode_return, last_return)
            episode_return = jnp.where(done, 0.0, episode_return)
            carry = (
                env_state, next_obs, key, jnp.where(done, 0.0, discounted), episode_return,
                last_return,
            )
            return carry, (transition, discounted)

        carry = (
            state.env_state, state.obs, state.key, state.discounted_return, state.episode_return,
            state.last_return,
        )
        carry, (transitions, discounted) = jax.lax.scan(step, carry, None, c.num_steps)
        return carry, transitions, discounted

    def _advantages(self, transitions: Transition, last_value: jax.Array, reward: jax.Array):
        c = self.config
        # The value after step t: V(obs_{t+1}) within an episode, V(final obs) on truncation,
        # 0 on termination.
        next_values = jnp.concatenate([transitions.value[1:], last_value[None]], axis=0)
        boundary = jnp.logical_or(transitions.terminated, transitions.truncated)
        bootstrap = jnp.where(transitions.truncated, transitions.final_value, next_values)
        bootstrap = jnp.where(transitions.terminated, 0.0, bootstrap)
        deltas = reward + c.gamma * bootstrap - transitions.value

        def backward(gae, inputs):
            delta, cut = inputs
            gae = delta + c.gamma * c.gae_lambda * jnp.where(cut, 0.0, gae)
            return gae, gae

        _, advantages = jax.lax.scan(
            backward, jnp.zeros_like(last_value), (deltas, boundary), reverse=True
        )
        return advantages, advantages + transitions.value

    def _loss(self, params, obs_stats, batch):
        c = self.config
        transitions, advantages, targets = batch
        pi, value = self._forward(params, self._normalize(obs_stats, transitions.obs))
        logp = self._log_prob(pi, transitions.raw_action)
        ratio = jnp.exp(logp - transitions.log_prob)
        advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-8)
        policy_loss = -jnp.mean(
            jnp.minimum(
                ratio * advantages,
                jnp.clip(ratio, 1 - c.clip_eps, 1 + c.clip_eps) * advantages,
            )
        )
        clipped_value = transitions.value + jnp.clip(
            value - transitions.value, -c.clip_eps, c.clip_eps
        )
        value_loss = 0.5 * jnp.mean(
            jnp.maximum((value - targets) ** 2, (clipped_value - targets) ** 2)
        )
        entropy = jnp.mean(self._entropy(pi, transitions.obs.shape[0]))
        total = policy_loss + c.vf_coef * value_loss - c.ent_coef * entropy
        return total, {"policy_loss": policy_loss, "value_loss": value_loss, "entropy": entropy}

    def update(self, state: PPOState, _=None):
        """One PPO update: collect ``num_steps`` x ``num_envs`` steps, then minibatch epochs.

        Returns ``(state, metrics)``: ``env_steps`` (the new ``StepCount``), ``episodes`` int32,
        float32 scalars ``train_return``, ``policy_loss``, ``value_loss``, ``entropy``, and int32
        counts ``nonfinite_rewards`` (steps), ``nonfinite_obs`` (observations) and
        ``nonfinite_loss`` (minibatches) of NaN/inf values.
        """
        (env_state, obs, key, discounted, episode_return, last_return), transitions, returns_seen = (
            self._collect(state)
        )
        collected = state.replace(
            env_state=env_state, obs=obs, key=key, discounted_return=discounted,
            episode_return=episode_return, last_return=last_return,
        )
        return self.learn(collected, transitions, returns_seen)

    def learn(self, state: PPOState, transitions: Transition, returns_seen: jax.Array):
        """The learning half of ``update``, on a collected rollout (by ``_collect``, or on the
        host for Gymnasium envs): advantages, minibatch epochs, statistics.

        Args:
            state: the state after collecting: ``obs``, ``key``, ``env_state`` and the episode
                trackers of the rollout's end; ``params`` and statistics from before it.
            transitions: ``Transition`` fields shaped ``(num_steps, num_envs, ...)``.
            returns_seen: ``(num_steps, num_envs)`` discounted returns so far at each step,
                before any reset (what reward normalisation tracks).

        Returns:
            ``(state, metrics)`` as ``update``.
        """
        c = self.config
        env_state, obs, key = state.env_state, state.obs, state.key
        discounted, episode_return, last_return = (
            state.discounted_return, state.episode_return, state.last_return
        )
        transitions = distributed.shard_rows(transitions, self.mesh, axis=1)  # (steps, envs)
        _, last_value = self._forward(state.params, self._normalize(state.obs_stats, obs))
        return_stats = state.return_stats
        reward = transitions.reward
        if c.normalize_reward:
            return_stats = obs_norm.update(return_stats, returns_seen.reshape(-1))
            reward = reward / jnp.sqrt(return_stats.var + 1e-8)
        advantages, targets = self._advantages(transitions, last_value, reward)

        batch_size = c.steps_per_update
        flat = jax.tree_util.tree_map(
            lambda x: x.reshape((batch_size,) + x.shape[2:]), (transitions, advantages, targets)
        )
        grad_fn = jax.grad(self._loss, has_aux=True)

        def epoch(carry, key):
            params, opt_state = carry
            order = jax.random.permutation(key, batch_size)
            minibatches = jax.tree_util.tree_map(
                lambda x: x[order].reshape((c.num_minibatches, -1) + x.shape[1:]), flat
            )
            minibatches = distributed.shard_rows(minibatches, self.mesh, axis=1)

            def minibatch(carry, batch):
                params, opt_state = carry
                grads, aux = grad_fn(params, state.obs_stats, batch)
                updates, opt_state = self.optimizer.update(grads, opt_state, params)
                return (optax.apply_updates(params, updates), opt_state), aux

            return jax.lax.scan(minibatch, (params, opt_state), minibatches)

        key, key_epochs = jax.random.split(key)
        (params, opt_state), losses = jax.lax.scan(
            epoch, (state.params, state.opt_state), jax.random.split(key_epochs, c.update_epochs)
        )
        obs_stats = state.obs_stats
        if c.normalize_obs:
            obs_stats = obs_norm.update(obs_stats, transitions.obs.reshape((batch_size,) + obs.shape[1:]))
        finished = transitions.episode_done
        env_steps = state.env_steps.add(batch_size)
        feature_axes = tuple(range(2, transitions.obs.ndim))
        metrics = {
            "env_steps": env_steps,
            "episodes": finished.sum(),
            # Mean over envs of their latest finished episode's return (0 until one finishes).
            "train_return": jnp.nan_to_num(jnp.nanmean(last_return)),
            **jax.tree_util.tree_map(jnp.mean, losses),
            # Health counts: the train loop sums them per chunk and stops on non-finite params.
            "nonfinite_rewards": jnp.sum(~jnp.isfinite(transitions.reward), dtype=jnp.int32),
            "nonfinite_obs": jnp.sum(
                ~jnp.all(jnp.isfinite(transitions.obs), axis=feature_axes), dtype=jnp.int32
            ),
            "nonfinite_loss": jnp.sum(
                ~jnp.isfinite(losses["policy_loss"] + losses["value_loss"]), dtype=jnp.int32
            ),
        }
        new_state = PPOState(
            params=params,
            opt_state=opt_state,
            env_state=env_state,
            obs=obs,
            obs_stats=obs_stats,
            return_stats=return_stats,
            discounted_return=discounted,
            episode_return=episode_return,
            last_return=last_return,
            key=key,
            update=state.update + 1,
            env_steps=env_steps,
        )
        return new_state, metrics

    def train_chunk(self, state: PPOState, num_updates: int):
        return jax.lax.scan(self.update, state, None, num_updates)

    def policy(self, state: PPOState):
        """What is deployed: the actor's params and the observation statistics. With a user
        ``model``: the whole module's state as a pure dict (``UserNetwork.state_dict``; PPO's
        own log-std, if any, is not part of it)."""
        if self.model is not None:
            variables = self.model.with_trainable(state.params["model"])
            return {"params": self.model.state_dict(variables), "obs_stats": state.obs_stats}
        return {"params": {"params": state.params["params"]["actor"]}, "obs_stats": state.obs_stats}

    @property
    def actor(self) -> Any:
        """The deployed module: ``networks.Policy`` from the config, or the user's ``model``."""
        if self.model is not None:
            return self.model.module
        c = self.config
        return Policy(self.task.action_size, not self.task.discrete, tuple(c.hidden), c.layer_norm)

    def evaluate(self, state: PPOState, key: jax.Array) -> jax.Array:
        """Mean return of the actor on ``eval_episodes`` fresh episodes: actions sampled from the
        policy (with the learned log-std where continuous), or its mode with
        ``config.deterministic_eval``."""
        deterministic = self.config.deterministic_eval
        obs_stats = state.obs_stats if self.config.normalize_obs else None
        if self.model is not None:
            apply_fn, outputs = self.model.apply_fn, self._convention
            params = self.model.with_trainable(state.params["model"])
            if self._own_log_std and not deterministic:  # sampling needs PPO's own log-std
                apply_fn, outputs = self._apply_with_own_log_std, "head_log_std_value"
                params = (params, state.params["log_std"])
            return evaluate(
                self.task, apply_fn, params, key, self.eval_episodes,
                deterministic=deterministic, obs_stats=obs_stats, outputs=outputs,
            ).mean_return
        deployed = self.policy(state)
        return evaluate(
            self.task,
            self.actor.apply,
            deployed["params"],
            key,
            self.eval_episodes,
            deterministic=deterministic,
            obs_stats=obs_stats,
        ).mean_return


def _per_row(values: jax.Array, num: int) -> jax.Array:
    """A distribution's log-probabilities or entropies ``(num, ...)`` summed to ``(num,)``
    (e.g. an elementwise ``Normal``'s per action dimension)."""
    values = jnp.reshape(values, (num, -1))
    return jnp.sum(values, axis=-1)
