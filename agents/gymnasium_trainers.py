"""EGGROLL, OpenES and PPO on any Gymnasium env (``gymnasium/<Id>``), stepped on the host.

MuJoCo, Box2D and users' own envs step in Python, so they cannot run inside a compiled rollout.
These trainers keep everything else of the JAX path: the same strategies, ``ESTrainer.tell``
and ``PPO.learn`` (jitted), the same networks, observation statistics, state pytrees and
metrics, so the train loop (``agents.loop``, through its ``host_side`` hook) logs, checkpoints,
resumes and exports them as it does JAX trainers. Only the env steps differ: the population's
episodes run over the sub-envs of one ``gymnasium.make_vec`` vector env with ONE jitted
population-batched policy call per env step (``envs.gymnasium_target.host_rollout``); PPO
collects its rollout the same way, one jitted act call per step, then learns in one jitted call.

Every random choice comes from the JAX keys in the state (env reset seeds included), and the
envs restart from a seeded reset at each generation (ES) or every few time limits' worth of
updates (PPO, whose state keeps the learner as it was at that reset, to replay from), so a
checkpoint determines everything: a run resumed after SIGKILL ends bit-identical to an
uninterrupted one, whatever the loop's chunking.
"""

from __future__ import annotations

import dataclasses
import functools
import weakref
from typing import Any, Literal, Optional

import gymnasium
import jax
import jax.numpy as jnp
import numpy as np
from flax import struct
from gymnasium.vector import AutoresetMode

from eggroll_rl.agents import distributions
from eggroll_rl.agents.es import ESConfig, ESTrainer
from eggroll_rl.agents.ppo import PPO, PPOConfig, PPOState, Transition
from eggroll_rl.envs import gymnasium_target, obs_norm
from eggroll_rl.envs.gymnasium_target import GymnasiumTask
from eggroll_rl.envs.rollout import StepCount

VECTORIZATION_MODES = ("sync", "async", "vector_entry_point")
SEGMENT_EPISODES = 4
"""PPO's envs restart every this many time limits' worth of steps (see ``HostPPO``)."""
_MAX_SEED = 2**31 - 1


@dataclasses.dataclass(frozen=True)
class GymnasiumESConfig(ESConfig):
    """``ESConfig`` for a ``gymnasium/<Id>`` env, plus how its sub-envs are vectorised."""

    vectorization_mode: Literal["sync", "async", "vector_entry_point"] = "sync"
    """How gymnasium.make_vec steps the population's population_size x episodes_per_member sub-envs: "sync" (one process), "async" (one worker process per sub-env: for few, slow envs) or "vector_entry_point" (the env's own vectorised version, e.g. CartPole's)."""

    def validate(self) -> None:
        super().validate()
        if self.vectorization_mode not in VECTORIZATION_MODES:
            raise ValueError(
                f"es: vectorization_mode must be one of {VECTORIZATION_MODES}, got "
                f"{self.vectorization_mode!r}."
            )


@dataclasses.dataclass(frozen=True)
class GymnasiumPPOConfig(PPOConfig):
    """``PPOConfig`` for a ``gymnasium/<Id>`` env, plus how its sub-envs are vectorised."""

    vectorization_mode: Literal["sync", "async"] = "sync"
    """How gymnasium.make_vec steps the num_envs sub-envs: "sync" (one process) or "async" (one worker process per sub-env: for slow envs)."""

    def validate(self) -> None:
        super().validate()
        if self.vectorization_mode not in ("sync", "async"):
            raise ValueError(
                f"ppo: vectorization_mode must be 'sync' or 'async' (PPO needs same-step "
                f"autoreset), got {self.vectorization_mode!r}."
            )


CONFIGS: dict[str, type] = {
    "eggroll": GymnasiumESConfig, "openes": GymnasiumESConfig, "ppo": GymnasiumPPOConfig,
}


def preset_env(env_id: str) -> str:
    """The env whose bundled preset a ``gymnasium/<Id>`` run starts from: ``gymnax/<Id>``
    (e.g. ``gymnasium/CartPole-v1`` -> ``gymnax/CartPole-v1``); ids without one, and users'
    ``<module>:<Id>`` envs, get the config class's defaults."""
    name = env_id[len(gymnasium_target.PREFIX) :]
    return env_id if ":" in name else "gymnax/" + name


def reward_threshold(env_id: str) -> Optional[float]:
    """The env spec's ``reward_threshold`` (Gymnasium's "solved" return), or None."""
    name = gymnasium_target.gymnasium_name(env_id)
    threshold = gymnasium.spec(name.rpartition(":")[2]).reward_threshold
    return None if threshold is None else float(threshold)


def make_trainer(task: GymnasiumTask, config: Any):
    """``HostES`` for an ES config, ``HostPPO`` for a PPO config.

    Runs of one process on the same env with the same config (e.g. a run and its resume)
    share one trainer, so its jitted programs and vector envs are built once; a trainer holds
    no run's state (PPO's checks which state its envs stand at), so sequential runs may share
    it, but not runs in concurrent threads.
    """
    return _trainer(task.env_id, config)


@functools.lru_cache(maxsize=4)
def _trainer(env_id: str, config: Any):
    task = gymnasium_target.target_task(env_id)
    if isinstance(config, ESConfig):
        return HostES(task, config)
    return HostPPO(task, config)


# The host loops' small array operations, jitted: run eagerly, each op on each leaf shape
# would compile a program of its own on first use.
@functools.partial(jax.jit, static_argnums=1)
def _draw_seeds(keys: jax.Array, size: int) -> jax.Array:
    return jax.vmap(lambda key: jax.random.randint(key, (), 0, _MAX_SEED - size))(keys)


def _seeds(keys: jax.Array, size: int) -> np.ndarray:
    """One env reset seed per key, leaving room for ``size`` consecutive sub-env seeds."""
    return np.asarray(_draw_seeds(keys, size))


@functools.partial(jax.jit, static_argnums=1)
def _restart_seed(key: jax.Array, size: int) -> jax.Array:
    return jax.random.randint(jax.random.fold_in(key, 1), (), 0, _MAX_SEED - size)


@jax.jit
def _unstack_jit(state: Any, index: jax.Array) -> Any:
    return jax.tree_util.tree_map(lambda x: x[index], state)


def _unstack(state: Any, index: int) -> Any:
    """Seed ``index``'s state out of the stacked one."""
    return _unstack_jit(state, np.int32(index))


@jax.jit
def _stack(states: list) -> Any:
    """The seeds' states stacked on a new axis 0."""
    return jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *states)


def _key_bytes(key: jax.Array) -> bytes:
    return np.asarray(jax.random.key_data(key)).tobytes()


def _zeros(metrics: dict) -> dict:
    """Metrics of an iteration that did not run: zeros, minus ``env_steps`` (the state's)."""
    return {
        name: np.zeros_like(np.asarray(value))
        for name, value in metrics.items() if name != "env_steps"
    }


def _last_metrics(per_seed: list, zeros: dict) -> dict:
    """Each seed's last metrics stacked ``(seeds,)``; ``zeros`` for a seed that ran nothing."""
    return {
        name: np.stack([np.asarray((m if m is not None else zeros)[name]) for m in per_seed])
        for name in zeros
    }


def _below(state: Any, total_steps: Optional[int]) -> bool:
    return total_steps is None or int(np.asarray(state.env_steps)) < total_steps


class _VectorEnvs:
    """The trainer's Gymnasium vector envs, built on first use and closed with the trainer."""

    def __init__(self, owner, env_id: str, mode: str):
        self._env_id, self._mode, self._built = env_id, mode, {}
        weakref.finalize(owner, _VectorEnvs._close_all, self._built)

    def get(self, num_envs: int, mode: Optional[str] = None, owner: int = 0, **kwargs):
        """The vector env of ``num_envs`` sub-envs in ``mode`` (default: the config's) with
        ``vector_kwargs``; ``owner`` tells apart envs that must not be shared."""
        mode = self._mode if mode is None else mode
        key = (num_envs, mode, owner, tuple(sorted(kwargs.items())))
        if key not in self._built:
            if mode == "vector_entry_point":
                self._built[key] = gymnasium.make_vec(
                    gymnasium_target.gymnasium_name(self._env_id), num_envs=num_envs,
                    vectorization_mode=mode,
                )
            else:
                vector_kwargs = dict(kwargs)
                self._built[key] = gymnasium_target.make_vector_env(
                    self._env_id, num_envs, mode,
                    **({"vector_kwargs": vector_kwargs} if vector_kwargs else {}),
                )
        return self._built[key]

    @staticmethod
    def _close_all(built: dict) -> None:
        for env in built.values():
            env.close()
        built.clear()


class HostES:
    """EGGROLL or OpenES on a ``gymnasium/<Id>`` env, for the train loop's ``host_side`` hook.

    A generation is ``ask`` (jitted), ``host_rollout`` over ``population_size *
    episodes_per_member`` sub-envs reset with a seed drawn from the state's key (member ``i``'s
    episode ``j`` in sub-env ``i*k + j``), then ``ESTrainer.tell`` (jitted). The state is an
    ``ESState`` per seed, stacked on axis 0; seeds take turns on the same vector env.
    """

    host_side = True

    def __init__(self, task: GymnasiumTask, config: GymnasiumESConfig):
        if task.max_episode_steps is None:
            raise ValueError(
                f"{task.env_id} has no time limit, and ES plays every member's episode to its "
                "end: register the env with max_episode_steps=... (or wrap it in TimeLimit)."
            )
        if config.vectorization_mode == "vector_entry_point" and not task.vector_entry_point:
            raise ValueError(
                f"{task.env_id} has no vector_entry_point: use --vectorization-mode sync or async."
            )
        self.task, self.config = task, config
        self.es = ESTrainer(task, config)  # validates; network, init, tell and policy are its
        self.strategy = self.es.strategy  # one object: the jitted population actor is cached
        self.network = self.es.network
        self._apply = self.network.apply
        self._init = jax.jit(jax.vmap(self.es.init))
        self._ask = jax.jit(self._ask_one)
        self._tell = jax.jit(self.es.tell)
        self._mean = jax.jit(self.strategy.mean_params)
        self._envs = _VectorEnvs(self, task.env_id, config.vectorization_mode)

    @property
    def name(self) -> str:
        return self.config.algo

    @property
    def slots(self) -> int:
        return self.config.population_size * self.config.episodes_per_member

    def _ask_one(self, state):
        key, key_rollout = jax.random.split(state.key)
        population = self.strategy.ask(state.evo)
        seed = jax.random.randint(key_rollout, (), 0, _MAX_SEED - self.slots)
        return key, population, seed

    def init(self, keys: jax.Array):
        """``ESState`` per seed, stacked: ``keys`` ``(seeds,)`` -> leaves ``(seeds, ...)``.

        Also compiles every jitted piece (one env step of a generation and of an eval, results
        dropped), so compile time is counted as such and not in the first generation."""
        state = self._init(keys)
        c, one = self.config, _unstack(state, 0)
        key, population, seed = self._ask(one)
        stats = one.obs_stats if c.normalize_obs else None
        result = gymnasium_target.host_rollout(
            self._envs.get(self.slots), self.strategy, population, self._apply, int(seed),
            episodes_per_member=c.episodes_per_member, deterministic=c.deterministic_policy,
            obs_stats=stats, max_steps=1,
        )
        self._nothing = _zeros(jax.block_until_ready(self._tell(one, key, population, result))[1])
        _stack([one] * len(keys))
        _seeds(keys, c.eval_episodes)
        gymnasium_target.host_evaluate(
            self._envs.get(c.eval_episodes, "sync"), self._apply, self._mean(one.evo), 0,
            c.eval_episodes, deterministic=c.deterministic_policy, obs_stats=stats, max_steps=1,
        )
        return state

    def generation(self, state):
        """One seed's generation on the host; returns ``(state, metrics)`` as
        ``ESTrainer.generation`` (metrics without ``env_steps``)."""
        c = self.config
        key, population, seed = self._ask(state)
        result = gymnasium_target.host_rollout(
            self._envs.get(self.slots), self.strategy, population, self._apply, int(seed),
            episodes_per_member=c.episodes_per_member, deterministic=c.deterministic_policy,
            obs_stats=state.obs_stats if c.normalize_obs else None,
        )
        state, metrics = self._tell(state, key, population, result)
        metrics.pop("env_steps")
        return state, metrics

    def train_chunk(self, state, iterations: int, total_steps: Optional[int]):
        """Up to ``iterations`` generations per seed, each only while that seed's env steps
        are under ``total_steps``; returns ``(state, last metrics (seeds,), runs (seeds,))``."""
        states, last, ran = [], [], []
        for index in range(np.shape(np.asarray(state.env_steps))[0]):
            one, metrics, count = _unstack(state, index), None, 0
            while count < iterations and _below(one, total_steps):
                one, metrics = self.generation(one)
                count += 1
            states.append(one)
            last.append(metrics)
            ran.append(count)
        return _stack(states), _last_metrics(last, self._nothing), np.asarray(ran, np.int32)

    def evaluate(self, state, keys: jax.Array) -> np.ndarray:
        """Mean return of each seed's mean policy on ``eval_episodes`` fresh episodes."""
        c = self.config
        env = self._envs.get(c.eval_episodes, "sync")
        seeds = _seeds(keys, c.eval_episodes)
        returns = []
        for index, seed in enumerate(seeds):
            one = _unstack(state, index)
            returns.append(gymnasium_target.host_evaluate(
                env, self._apply, self._mean(one.evo), int(seed), c.eval_episodes,
                deterministic=c.deterministic_policy,
                obs_stats=one.obs_stats if c.normalize_obs else None,
            ).mean_return)
        return np.asarray(returns, np.float32)

    def policy(self, state) -> dict:
        """One seed's deployable policy: mean params and observation statistics."""
        return self.es.policy(state)


@struct.dataclass
class HostPPOState:
    """A host PPO seed's state: the learner now, and as it was at its segment's start.

    The envs are reset (seeded from ``segment.key``) every ``segment_updates`` updates; a
    process that did not step them up to ``learner`` (a resumed run) rebuilds them by
    replaying the updates from ``segment``, which are deterministic, so it continues exactly
    as an uninterrupted run would.
    """

    learner: PPOState
    segment: PPOState

    @property
    def env_steps(self) -> StepCount:
        return self.learner.env_steps


class HostPPO:
    """PPO on a ``gymnasium/<Id>`` env, for the train loop's ``host_side`` hook.

    ``num_envs`` sub-envs per seed with same-step autoreset (as our JAX tasks). Each of the
    ``num_steps`` steps of an update is one jitted call (normalise, actor-critic, sample) and
    one vector-env step; the update itself is ``PPO.learn``, jitted. Every ``segment_updates``
    updates the envs restart from a reset seeded by the state's key (running episodes are cut
    there and bootstrapped, as at a time limit), which is what makes a checkpoint complete:
    see ``HostPPOState``. The state is a ``HostPPOState`` per seed, stacked on axis 0 (the
    ``PPOState.env_state`` is a placeholder: the envs live in the vector envs).
    """

    host_side = True
    name = "ppo"

    def __init__(self, task: GymnasiumTask, config: GymnasiumPPOConfig):
        self.task = task
        self.ppo = PPO(task, config)  # validates; network, optimizer and learn are its
        self.config = self.ppo.config
        self.eval_episodes = self.ppo.eval_episodes
        self.network = self.ppo.network
        self._actor_apply = self.ppo.actor.apply
        self._init = jax.jit(jax.vmap(self._init_one))
        self._act = jax.jit(self._act_one)
        self._value = jax.jit(self._value_one)
        self._learn = jax.jit(self.ppo.learn)
        self._envs = _VectorEnvs(self, task.env_id, self.config.vectorization_mode)
        self._live: dict[int, tuple] = {}  # seed index -> (update, key) its envs stand at
        limit = task.max_episode_steps or 1000
        self.segment_updates = max(1, -(-SEGMENT_EPISODES * limit // self.config.num_steps))
        """Updates between env resets: about ``SEGMENT_EPISODES`` time limits per env."""

    def _init_one(self, key: jax.Array) -> PPOState:
        c, shape = self.config, self.task.observation_space.shape
        key, key_net, _ = jax.random.split(key, 3)  # as PPO.init; the envs reset per chunk
        obs = jnp.zeros((c.num_envs,) + shape, jnp.float32)
        params = self.network.init(key_net, obs[0])
        return PPOState(
            params=params,
            opt_state=self.ppo.optimizer.init(params),
            env_state=jnp.zeros((), jnp.int32),
            obs=obs,
            obs_stats=obs_norm.init(shape),
            return_stats=obs_norm.init(()),
            discounted_return=jnp.zeros(c.num_envs, jnp.float32),
            episode_return=jnp.zeros(c.num_envs, jnp.float32),
            last_return=jnp.full(c.num_envs, jnp.nan, jnp.float32),
            key=key,
            update=jnp.zeros((), jnp.int32),
            env_steps=StepCount.zero(),
        )

    def _act_one(self, params, obs_stats, obs, key):
        """``(key, raw action, env action, log-prob, value)`` for ``obs`` ``(num_envs, ...)``."""
        space = self.task.action_space
        key, key_act = jax.random.split(key)
        head, log_std, value = self.network.apply(params, self.ppo._normalize(obs_stats, obs))
        raw, action = jax.vmap(lambda h, k: distributions.sample(space, h, log_std, k))(
            head, jax.random.split(key_act, obs.shape[0])
        )
        return key, raw, action, distributions.log_prob(space, head, log_std, raw), value

    def _value_one(self, params, obs_stats, obs):
        return self.network.apply(params, self.ppo._normalize(obs_stats, obs))[2]

    def init(self, keys: jax.Array) -> HostPPOState:
        """``HostPPOState`` per seed, stacked: ``keys`` ``(seeds,)`` -> leaves ``(seeds, ...)``."""
        learner = self._init(keys)
        self._compile(_unstack(learner, 0))
        state = HostPPOState(learner=learner, segment=learner)
        _stack([_unstack(state, 0)] * len(keys))
        _key_bytes(_unstack(state, 0).learner.key)
        _restart_seed(_unstack(learner, 0).key, self.config.num_envs)
        _seeds(keys, self.eval_episodes)
        return state

    def _compile(self, state: PPOState) -> None:
        """Run every jitted piece once on stand-in inputs of the real shapes and dtypes (results
        dropped), so compile time is counted as such and not in the first update."""
        c = self.config
        key, raw, _, _, _ = self._act(state.params, state.obs_stats, state.obs, state.key)
        self._value(state.params, state.obs_stats, state.obs)
        steps = (c.num_steps, c.num_envs)
        floats, flags = jnp.zeros(steps, jnp.float32), jnp.zeros(steps, bool)
        transitions = Transition(
            obs=jnp.zeros(steps + state.obs.shape[1:], jnp.float32),
            raw_action=jnp.zeros(steps + raw.shape[1:], raw.dtype), log_prob=floats,
            value=floats, reward=floats, terminated=flags, truncated=flags, final_value=floats,
            episode_return=floats, episode_done=flags,
        )
        self._nothing = _zeros(jax.block_until_ready(self._learn(state, transitions, floats))[1])
        gymnasium_target.host_evaluate(
            self._envs.get(self.eval_episodes, "sync"), self._actor_apply,
            self.ppo.policy(state)["params"], 0, self.eval_episodes, deterministic=True,
            obs_stats=state.obs_stats if c.normalize_obs else None, max_steps=1,
        )

    def _env(self, index: int):
        """Seed ``index``'s vector env (each seed's envs carry over between chunks)."""
        return self._envs.get(
            self.config.num_envs, autoreset_mode=AutoresetMode.SAME_STEP, owner=index
        )

    def update(self, state: PPOState, env):
        """One update of one seed: ``num_steps`` vector-env steps, then ``PPO.learn``."""
        c = self.config
        action_dtype = self.task.env_action_space.dtype
        obs, key = np.asarray(state.obs), state.key
        discounted = np.asarray(state.discounted_return, np.float32)
        episode_return = np.asarray(state.episode_return, np.float32)
        last_return = np.asarray(state.last_return, np.float32)
        steps, seen = [], []
        for _ in range(c.num_steps):
            key, *outputs = self._act(state.params, state.obs_stats, jnp.asarray(obs), key)
            raw, action, log_prob, value = (np.asarray(x) for x in outputs)
            next_obs, reward, terminated, truncated, info = env.step(
                action.astype(action_dtype)
            )
            reward = np.asarray(reward, np.float32)
            done = np.logical_or(terminated, truncated)
            next_obs = np.asarray(next_obs, np.float32)
            final_value = np.zeros(c.num_envs, np.float32)
            if truncated.any():  # bootstrap from the finished episodes' last observations
                final_obs = next_obs.copy()
                for index in np.flatnonzero(info["_final_obs"]):
                    final_obs[index] = info["final_obs"][index]
                final_value = np.asarray(
                    self._value(state.params, state.obs_stats, jnp.asarray(final_obs))
                )
            episode_return = episode_return + reward
            discounted = discounted * np.float32(c.gamma) + reward
            steps.append(Transition(
                obs, raw, log_prob, value, reward, np.asarray(terminated), np.asarray(truncated),
                final_value, episode_return, done,
            ))
            seen.append(discounted)
            last_return = np.where(done, episode_return, last_return)
            episode_return = np.where(done, np.float32(0), episode_return)
            discounted = np.where(done, np.float32(0), discounted)
            obs = next_obs
        transitions = jax.tree_util.tree_map(lambda *xs: jnp.asarray(np.stack(xs)), *steps)
        collected = state.replace(
            obs=jnp.asarray(obs), key=key, discounted_return=jnp.asarray(discounted),
            episode_return=jnp.asarray(episode_return), last_return=jnp.asarray(last_return),
        )
        state, metrics = self._learn(collected, transitions, jnp.asarray(np.stack(seen)))
        metrics.pop("env_steps")
        return state, metrics

    def _restart(self, state: PPOState, env) -> PPOState:
        """The envs from a reset seeded by ``state.key``; running episodes start over."""
        seed = int(_restart_seed(state.key, self.config.num_envs))
        obs, _ = env.reset(seed=seed)
        zeros = jnp.zeros(self.config.num_envs, jnp.float32)
        obs = jnp.asarray(np.asarray(obs, np.float32))
        return state.replace(obs=obs, discounted_return=zeros, episode_return=zeros)

    def _step(self, state: HostPPOState, env):
        """One update, after restarting the envs if a segment starts here."""
        learner, segment = state.learner, state.segment
        if int(learner.update) % self.segment_updates == 0:
            learner = segment = self._restart(learner, env)
        learner, metrics = self.update(learner, env)
        return HostPPOState(learner=learner, segment=segment), metrics

    def _catch_up(self, state: HostPPOState, index: int, env) -> None:
        """Bring seed ``index``'s envs to ``state`` if they are not there (a resumed run):
        replay the segment's updates, checking that they arrive at ``state`` exactly."""
        mark = (int(state.learner.update), _key_bytes(state.learner.key))
        if self._live.get(index) == mark or mark[0] % self.segment_updates == 0:
            return
        replay = HostPPOState(learner=state.segment, segment=state.segment)
        while int(replay.learner.update) < mark[0]:
            replay, _ = self._step(replay, env)
        if _key_bytes(replay.learner.key) != mark[1]:
            raise RuntimeError(
                f"{self.task.env_id}: replaying the segment from its checkpointed start did not "
                "arrive at the checkpointed state; the env is not deterministic given its reset "
                "seed, so this run cannot resume exactly (start it afresh)."
            )

    def train_chunk(self, state: HostPPOState, iterations: int, total_steps: Optional[int]):
        """Up to ``iterations`` updates per seed, each only while that seed's env steps are
        under ``total_steps``; returns ``(state, last metrics (seeds,), runs (seeds,))``."""
        states, last, ran = [], [], []
        for index in range(np.shape(np.asarray(state.env_steps))[0]):
            one, metrics, count = _unstack(state, index), None, 0
            env = self._env(index)
            if _below(one, total_steps):
                self._catch_up(one, index, env)
            while count < iterations and _below(one, total_steps):
                one, metrics = self._step(one, env)
                count += 1
            self._live[index] = (int(one.learner.update), _key_bytes(one.learner.key))
            states.append(one)
            last.append(metrics)
            ran.append(count)
        return _stack(states), _last_metrics(last, self._nothing), np.asarray(ran, np.int32)

    def evaluate(self, state: HostPPOState, keys: jax.Array) -> np.ndarray:
        """Mean return of each seed's actor mode on ``eval_episodes`` fresh episodes."""
        env = self._envs.get(self.eval_episodes, "sync")
        returns = []
        for index, seed in enumerate(_seeds(keys, self.eval_episodes)):
            one = _unstack(state, index).learner
            returns.append(gymnasium_target.host_evaluate(
                env, self._actor_apply, self.ppo.policy(one)["params"], int(seed),
                self.eval_episodes, deterministic=True,
                obs_stats=one.obs_stats if self.config.normalize_obs else None,
            ).mean_return)
        return np.asarray(returns, np.float32)

    def policy(self, state: HostPPOState) -> dict:
        """One seed's deployable policy: the actor's params and the observation statistics."""
        return self.ppo.policy(state.learner)
