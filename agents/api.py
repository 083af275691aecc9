"""The Python training API: ``train`` (and ``resume``) return a ``TrainingRun`` you can act with.

This is what ``eggroll-rl train`` runs: the same presets as defaults, the same validation (every
error is a ``ValueError`` raised before anything compiles), the same run folder, the same
exported policy. A ``TrainingRun`` holds the metrics, timings, each seed's mean policy, and
``act``/``save``; ``load`` reads a saved policy back as a ``LoadedPolicy`` with the same ``act``.

Example::

    from eggroll_rl.agents import train

    run = train("eggroll", "gymnax/CartPole-v1", stop_at=475)
    action = run.act(observation)

``network=`` also takes the user's own ``flax.linen.Module`` or ``flax.nnx.Module`` instance
(e.g. a PureJaxRL ``ActorCritic``), trained as written: see ``train`` and
``eggroll_rl.user_network``.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import pathlib
import warnings
from typing import Any, Mapping, NamedTuple, Optional, Sequence, Union

import numpy as np

from eggroll_rl.agents import loop as loop_module
from eggroll_rl.agents import run_folder
from eggroll_rl.agents.faults import NoUsableCheckpoint
from eggroll_rl.agents.es import ESConfig, ESTrainer
from eggroll_rl.agents.int8_es import Int8ESConfig, Int8ESTrainer
from eggroll_rl.agents.loop import LoopConfig, TrainResult
from eggroll_rl.agents.ppo import PPO, PPOConfig
from eggroll_rl.envs.gymnasium_target import is_gymnasium_target, target_task
from eggroll_rl.user_network import UserNetwork, is_user_module

ALGOS = ("eggroll", "openes", "ppo")
CONFIGS: dict[str, type] = {"eggroll": ESConfig, "openes": ESConfig, "ppo": PPOConfig}
# Old config field names -> (the field now, how to say it on the command line).
RENAMED = {
    "pop_size": ("population_size", "--population-size"),
    "n_parallel_evaluations": ("episodes_per_member", "--episodes-per-member"),
    "rank_transform": ("fitness_shaping", "--fitness-shaping {centered_rank,zscore}"),
}
INT8_POLICY_FILE = "policy_int8.npz"

PathLike = Union[str, os.PathLike]
Config = Union[ESConfig, PPOConfig, Int8ESConfig]


class Plan(NamedTuple):
    """A validated run, nothing compiled yet: what ``execute`` needs."""

    trainer: Any  # ESTrainer, PPO or Int8ESTrainer
    loop: LoopConfig
    run_dir: Optional[pathlib.Path]
    resume: bool
    record: dict  # written to run_dir/config.json: algo, env, seeds, config, loop, threshold
    # (and, for the user's own module, its class name as "network" and its "outputs")
    # Fresh: delete the old run in run_dir first. Resume: if no checkpoint restores, start the
    # run over that way (--restart) instead of failing.
    overwrite: bool = False


def default_config(
    algo: str, env: str, *, preset: Optional[PathLike] = None, int8: bool = False
) -> tuple[Config, str]:
    """The config a run of ``algo`` on ``env`` starts from, and where it came from.

    Args:
        algo: "eggroll", "openes" or "ppo".
        env: an env id (only used to find its bundled preset).
        preset: a preset name (env id) or .toml path to use instead of ``env``'s own.
        int8: integer EGGROLL (``Int8ESConfig``, which presets do not cover).

    Returns:
        ``(config, source)``: source is e.g. "preset gymnax/CartPole-v1" or "ESConfig defaults".
    """
    _check_algo(algo, int8)
    if int8:
        return Int8ESConfig(), "Int8ESConfig defaults"
    cls = _config_class(algo, env, int8)
    from eggroll_rl.experiments import preset_files

    if preset is not None:  # asked for: a missing [algo] table is an error (PresetError)
        found = preset_files.load(str(preset))
        return cls(**found.overrides(algo)), f"preset {_preset_name(found)}"
    found = preset_files.for_env(_preset_env(env)) if "/" in env else None
    if found is not None and algo in found.algos:
        return cls(**found.overrides(algo)), f"preset {_preset_name(found)}"
    overrides = {"algo": algo} if issubclass(cls, ESConfig) else {}
    return cls(**overrides), f"{cls.__name__} defaults"


def _config_class(algo: str, env: str, int8: bool) -> type:
    """The config dataclass of ``algo`` on ``env``: Gymnasium envs' add ``vectorization_mode``."""
    if int8:
        return Int8ESConfig
    if is_gymnasium_target(env):
        from eggroll_rl.agents import gymnasium_trainers

        return gymnasium_trainers.CONFIGS[algo]
    return CONFIGS[algo]


def _preset_env(env: str) -> str:
    """Whose bundled preset ``env`` uses: its own, or for ``gymnasium/<Id>`` ``gymnax/<Id>``'s."""
    if is_gymnasium_target(env):
        from eggroll_rl.agents import gymnasium_trainers

        return gymnasium_trainers.preset_env(env)
    return env


def _preset_name(found) -> str:
    from eggroll_rl.experiments import preset_files

    try:
        return found.path.relative_to(preset_files.PRESET_DIR).with_suffix("").as_posix()
    except ValueError:
        return str(found.path)


def _check_algo(algo: str, int8: bool) -> None:
    if algo not in ALGOS:
        raise ValueError(f"unknown algo {algo!r}: choose one of {', '.join(ALGOS)}.")
    if int8 and algo != "eggroll":
        raise ValueError(f"int8 trains integer EGGROLL: use it with algo 'eggroll', not {algo!r}.")


def _resolve_config(algo, env, config, total_steps, network, preset, int8) -> Config:
    cls = _config_class(algo, env, int8)
    if not int8 and type(config) is CONFIGS.get(algo) and cls is not CONFIGS[algo]:  # e.g. an ESConfig for
        config = cls(**dataclasses.asdict(config))  # a Gymnasium env: its defaults for the rest
    if config is None or isinstance(config, Mapping):
        base, _ = default_config(algo, env, preset=preset, int8=int8)
        overrides = dict(config or {})
        for old, (new, _flag) in RENAMED.items():
            if old in overrides:
                raise ValueError(f"config field {old!r} was renamed {new!r}.")
        known = {field.name for field in dataclasses.fields(cls)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise ValueError(
                f"{', '.join(map(repr, unknown))} not a field of {cls.__name__}; known fields: "
                f"{', '.join(sorted(known))}."
            )
        if "hidden" in overrides:
            overrides["hidden"] = tuple(overrides["hidden"])
        config = dataclasses.replace(base, **overrides)
    elif not isinstance(config, cls):
        raise ValueError(
            f"config for algo {algo!r}{' (int8)' if int8 else ''} must be a {cls.__name__} or a "
            f"dict of overrides, got {type(config).__name__}."
        )
    if hasattr(config, "algo") and config.algo != algo:
        raise ValueError(f"config.algo is {config.algo!r} but algo is {algo!r}.")
    if total_steps is not None:
        config = dataclasses.replace(config, total_steps=int(total_steps))
    if network is not None:
        config = dataclasses.replace(config, **_network_fields(network, config))
    config.validate()
    return config


def _network_fields(network, config) -> dict:
    """``network=``: hidden widths, a dict of hidden/layer_norm, or a ``networks.Policy``."""
    from eggroll_rl.networks import Policy

    if isinstance(network, Policy):
        fields = {"hidden": tuple(network.hidden), "layer_norm": bool(network.layer_norm)}
    elif isinstance(network, Mapping):
        unknown = sorted(set(network) - {"hidden", "layer_norm"})
        if unknown:
            raise ValueError(f"network takes 'hidden' and 'layer_norm', got {unknown}.")
        fields = dict(network)
        if "hidden" in fields:
            fields["hidden"] = tuple(fields["hidden"])
    elif isinstance(network, Sequence) and not isinstance(network, str):
        fields = {"hidden": tuple(network)}
    else:
        raise ValueError(
            "network must be hidden widths (e.g. (64, 64)), a dict with 'hidden' and/or "
            "'layer_norm', an eggroll_rl.networks.Policy, or your own flax.linen.Module or "
            f"flax.nnx.Module instance; got {type(network).__name__}."
        )
    if any(not isinstance(width, (int, np.integer)) or width < 1 for width in fields.get("hidden", (1,))):
        raise ValueError(f"network hidden widths must be positive ints, got {fields['hidden']}.")
    if "layer_norm" in fields and not hasattr(config, "layer_norm"):
        raise ValueError(f"{type(config).__name__} has no layer_norm option.")
    return fields


def plan(
    algo: str,
    env: str,
    *,
    seeds: Sequence[int] = (0,),
    total_steps: Optional[int] = None,
    time_budget: Optional[float] = None,
    config: Union[None, Config, Mapping[str, Any]] = None,
    network: Any = None,
    out: Optional[PathLike] = None,
    progress: bool = True,
    stop_at: Optional[float] = None,
    xla_cpu_options: bool = False,
    preset: Optional[PathLike] = None,
    int8: bool = False,
    iterations_per_chunk: Optional[int] = None,
    checkpoint_every: int = 5,
    overwrite: bool = False,
    outputs: str = "auto",
    seeds_in_sequence: Optional[bool] = None,
) -> Plan:
    """Validate a run without compiling anything; ``train`` is ``execute(plan(...))``.

    Arguments as in ``train``. Raises ``ValueError`` for any bad choice (``RunFolderBusy``
    when another process holds ``out``); writes nothing. A user module is traced
    (``jax.eval_shape``) to check what it returns, never compiled.
    """
    _check_algo(algo, int8)
    from eggroll_rl import envs

    user = _user_network(network, outputs, algo, env, int8)
    if is_gymnasium_target(env):  # stepped on the host: agents/gymnasium_trainers.py
        from eggroll_rl.agents import gymnasium_trainers

        if int8:
            raise ValueError(f"int8 trains on JAX tasks only, not on the Gymnasium env {env}.")
        task = target_task(env)  # unknown ids and unsupported spaces fail here
    else:
        task = envs.make(env)  # unknown ids fail here, naming the closest ones
        check_task(task)  # unsupported spaces and broken reset/step contracts fail here
    config = _resolve_config(algo, env, config, total_steps, None if user else network, preset,
                             int8)
    if is_gymnasium_target(env):
        trainer = gymnasium_trainers.make_trainer(task, config)
    elif int8:
        trainer = Int8ESTrainer(task, config)
    elif isinstance(config, ESConfig):
        trainer = ESTrainer(task, config, model=user)
    else:
        trainer = PPO(task, config, model=user)
    # ES generations are long, so chunks are short; with stop_at, shorter still, so the run
    # stops soon after the threshold is reached.
    if iterations_per_chunk is None:
        es = isinstance(config, ESConfig)
        iterations_per_chunk = (2 if stop_at is not None else 5) if es else 10
    steps_budget = config.total_steps if total_steps is not None or time_budget is None else None
    found = _preset_of(env, preset)
    if seeds_in_sequence is None:
        seeds_in_sequence = found is not None and found.seeds_in_sequence
    loop = LoopConfig(
        total_steps=steps_budget,
        iterations_per_chunk=int(iterations_per_chunk),
        checkpoint_every=int(checkpoint_every),
        seeds=tuple(int(seed) for seed in seeds),
        seeds_in_sequence=bool(seeds_in_sequence),
        progress=bool(progress),
        stop_at=None if stop_at is None else float(stop_at),
        xla_cpu_options=bool(xla_cpu_options),
        time_budget=None if time_budget is None else float(time_budget),
    )
    loop.validate()
    record = {
        "algo": algo,
        "env": env,
        "seeds": list(loop.seeds),
        "config": dataclasses.asdict(config),
        "loop": {
            "total_steps": loop.total_steps,
            "time_budget": loop.time_budget,
            "iterations_per_chunk": loop.iterations_per_chunk,
            "checkpoint_every": loop.checkpoint_every,
            "stop_at": loop.stop_at,
            "xla_cpu_options": loop.xla_cpu_options,
            "seeds_in_sequence": loop.seeds_in_sequence,
        },
        "threshold": _threshold(env, found, loop.stop_at),
    }
    if isinstance(trainer, ESTrainer) and config.algo == "eggroll":
        record["ranks"] = trainer.ranks()  # per matrix, as used: rank capped at its smaller side
    if int8:
        record["int8"] = True
    if user is not None:  # the module itself is not JSON: its class, and how it was read
        record["network"] = user.name
        record["outputs"] = user.outputs
    run_dir = None if out is None else pathlib.Path(out)
    if run_dir is not None and _primary():
        run_folder.check_fresh(run_dir, overwrite=overwrite)
    return Plan(trainer, loop, run_dir, False, record, bool(overwrite))


def _user_network(network, outputs: str, algo: str, env: str, int8: bool):
    """``network`` as a ``UserNetwork`` when it is the user's own module (None otherwise),
    checked against what trains it; ``outputs`` only goes with such a module."""
    from eggroll_rl.envs.actions import POLICY_OUTPUTS

    if outputs not in POLICY_OUTPUTS:
        raise ValueError(f"outputs must be one of {POLICY_OUTPUTS}, got {outputs!r}.")
    if not is_user_module(network):
        if outputs != "auto":
            raise ValueError(
                "outputs= says what your own module returns: pass it with network=<your "
                "flax.linen.Module or flax.nnx.Module instance>."
            )
        return None
    name = type(network).__name__
    if int8:
        raise ValueError(
            f"int8 trains its own integer MLP and cannot take your module ({name}): drop "
            "int8=True to train it with float EGGROLL, or drop network= for int8."
        )
    if is_gymnasium_target(env):
        raise ValueError(
            f"your own module ({name}) trains on JAX tasks only, not on the Gymnasium env "
            f"{env}; use a JAX env id (eggroll_rl.envs.list_envs()) or drop network=."
        )
    return UserNetwork(network, outputs)


def _primary() -> bool:
    """Process 0 (or the only one): it owns the run folder (the lock, an overwrite)."""
    import jax

    return jax.process_index() == 0


def check_task(task) -> None:
    """Refuse a JAX task our policies cannot act in, or whose ``reset``/``step`` disagree with
    its declared spaces, before anything compiles (``jax.eval_shape``: traced, not run).

    Raises:
        ValueError: one line naming the env and what disagrees.
    """
    import gymnasium
    import jax

    from eggroll_rl.envs.task import Task

    if not isinstance(task, Task):
        return
    name = task.env_id
    if not isinstance(task.action_space, (gymnasium.spaces.Discrete, gymnasium.spaces.Box)):
        raise ValueError(
            f"env {name}: action space {task.action_space} is not supported: the policies act in "
            "Discrete and Box spaces; wrap the env to expose one of those."
        )
    if not isinstance(task.observation_space, gymnasium.spaces.Box):
        raise ValueError(
            f"env {name}: observation space {task.observation_space} is not supported: the "
            "policies read one Box of observations; wrap the env to flatten them into a Box."
        )
    expected = tuple(task.observation_space.shape)
    key = jax.random.key(0)
    obs, state = jax.eval_shape(task.reset, key)
    _check_obs(name, "reset", obs, expected)
    space = task.action_space
    if isinstance(space, gymnasium.spaces.Discrete):
        action = jax.ShapeDtypeStruct((), np.int32)
    else:
        action = jax.ShapeDtypeStruct(tuple(space.shape), space.dtype)
    out = jax.eval_shape(task.step, key, state, action)
    if not isinstance(out, tuple) or len(out) != 6:
        raise ValueError(
            f"env {name}: step must return (obs, state, reward, terminated, truncated, info), "
            f"got {type(out).__name__} of {len(out) if isinstance(out, tuple) else 1} items."
        )
    obs, _, reward, terminated, truncated, info = out
    _check_obs(name, "step", obs, expected)
    for what, value in (("reward", reward), ("terminated", terminated), ("truncated", truncated)):
        if getattr(value, "shape", None) != ():
            raise ValueError(
                f"env {name}: step returns a {what} of shape {getattr(value, 'shape', value)}, "
                "expected a scalar per env step."
            )


def _check_obs(name: str, where: str, obs, expected: tuple) -> None:
    shape = getattr(obs, "shape", None)
    if shape is None or tuple(shape) != expected:
        got = f"shape {tuple(shape)}" if shape is not None else f"a {type(obs).__name__}"
        raise ValueError(
            f"env {name}: {where} returns observations of {got}, but its observation space is "
            f"Box of shape {expected}; make the env's observations match its declared space."
        )


def default_run_dir(algo: str, env: str) -> pathlib.Path:
    """``runs/ALGO-ENV-TIME``, the CLI's default run folder."""
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    return pathlib.Path("runs") / f"{algo}-{env.replace('/', '_')}-{stamp}"


def _preset_of(env: str, preset: Optional[PathLike]):
    """``preset`` loaded, else ``env``'s bundled preset, else None."""
    from eggroll_rl.experiments import preset_files

    return preset_files.load(str(preset)) if preset is not None else preset_files.for_env(
        _preset_env(env)
    )


def _threshold(env: str, found, stop_at: Optional[float]) -> Optional[float]:
    """The solved return of ``found`` (the run's preset, or None): the curve's dashed line and
    the report; else the Gymnasium env spec's, else ``stop_at``."""
    if found is not None and found.threshold is not None:
        return found.threshold
    if is_gymnasium_target(env):
        from eggroll_rl.agents import gymnasium_trainers

        solved = gymnasium_trainers.reward_threshold(env)  # the env spec's
        if solved is not None:
            return solved
    return stop_at


def saved_run(run_dir: PathLike) -> tuple[dict, Config]:
    """The record (``config.json``) and config of the run saved in ``run_dir``.

    Raises:
        ValueError: one line, when ``run_dir`` does not exist, is not a folder, or holds no
            readable run record.
    """
    run_dir = pathlib.Path(run_dir)
    if not run_dir.exists():
        raise ValueError(
            f"cannot resume {run_dir}: no such folder (give the folder of an earlier run, its "
            "--out)."
        )
    if not run_dir.is_dir():
        raise ValueError(f"cannot resume {run_dir}: it is a file, not a run folder.")
    path = run_dir / "config.json"
    if not path.is_file():
        raise ValueError(
            f"{run_dir} is not a run folder: {path.name} missing (a run writes it when it starts); "
            "give the folder of an earlier run."
        )
    try:
        saved = json.loads(path.read_text())
        missing = [key for key in ("algo", "env", "seeds", "config", "loop") if key not in saved]
        if missing:
            raise KeyError(", ".join(missing))
        int8 = saved.get("int8", False)
        _check_algo(saved["algo"], int8)
        cls = _config_class(saved["algo"], saved["env"], int8)
        config = cls(**{k: tuple(v) if isinstance(v, list) else v
                        for k, v in saved["config"].items()})
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        detail = f"{error} missing" if isinstance(error, KeyError) else str(error)
        raise ValueError(
            f"cannot resume {run_dir}: {path} is not a readable run record ({detail}); start a "
            "new run with another --out."
        ) from None
    return saved, config


def plan_resume(
    run_dir: PathLike,
    *,
    progress: bool = True,
    total_steps: Optional[int] = None,
    time_budget: Optional[float] = None,
    restart: bool = False,
    network: Any = None,
) -> Plan:
    """The plan of the run saved in ``run_dir`` (its config.json), to continue it.

    Args:
        run_dir: the folder of an earlier run.
        progress: show a progress bar.
        total_steps: a new env-step budget per seed, at least the saved one: it extends the
            run (and is recorded in config.json; PPO's learning-rate annealing horizon moves
            with it). None: the saved budget.
        time_budget: a new total of training seconds over all sessions, at least the saved one.
        restart: when the run has no checkpoint left, or none of them restores, train it
            again from the start with its saved config (its metrics and policy are replaced)
            instead of refusing.
        network: for a run of the user's own module (its config.json names the class), that
            module, built as when the run started; None otherwise.

    Raises:
        ValueError: one line, for a missing or non-run folder, a shrunk budget, or no
            checkpoint to resume from without ``restart``, or a user module's run without its
            ``network`` (or ours with one); ``RunFolderBusy`` when another process holds the
            folder.
    """
    run_dir = pathlib.Path(run_dir)
    saved, config = saved_run(run_dir)
    int8 = saved.get("int8", False)
    module = saved.get("network")
    if module is not None and network is None:
        raise ValueError(
            f"{run_dir} trained your own module {module}: a module cannot be rebuilt from its "
            f"name, so resume it from Python with resume(run_dir, network=<a "
            f"{module.rsplit('.', 1)[-1]} instance, built as when the run started>)."
        )
    if module is None and network is not None:
        raise ValueError(
            f"{run_dir} trained the built-in network of its config.json; drop network= (it "
            "is for runs of your own modules)."
        )
    loop = saved["loop"]
    # Runs recorded before time budgets existed had a step budget only: the config's.
    saved_total = loop.get("total_steps", config.total_steps)
    saved_time = loop.get("time_budget")
    for flag, new, old in (("--total-steps", total_steps, saved_total),
                           ("--time-budget", time_budget, saved_time)):
        if new is not None and old is not None and new < old:
            raise ValueError(
                f"{flag} {new:g} is below the run's budget {old:g} (in {run_dir / 'config.json'}): "
                "on resume it extends the budget; drop it to keep the saved one."
            )
    if _primary():
        run_folder.check_writable(run_dir)
        run_folder.check_unlocked(run_dir)
    fresh = not run_folder.checkpoint_steps(run_dir)
    if fresh and not restart:
        raise ValueError(
            f"{run_dir} has no checkpoint to resume from ({run_dir / 'checkpoints'} holds none): "
            "add --restart (API: restart=True) to train it again from the start with its saved "
            "config, replacing its metrics and policy."
        )
    planned = plan(
        saved["algo"], saved["env"], seeds=saved["seeds"], config=config,
        total_steps=saved_total if total_steps is None else total_steps,
        time_budget=saved_time if time_budget is None else time_budget, out=None,
        progress=progress, stop_at=loop.get("stop_at"),
        xla_cpu_options=loop.get("xla_cpu_options", False), int8=int8,
        seeds_in_sequence=loop.get("seeds_in_sequence", False),
        iterations_per_chunk=loop["iterations_per_chunk"],
        checkpoint_every=loop["checkpoint_every"],
        network=network, outputs=saved.get("outputs", "auto") if network is not None else "auto",
    )
    planned.record["threshold"] = saved.get("threshold", planned.record["threshold"])
    return planned._replace(run_dir=run_dir, resume=not fresh, overwrite=fresh or restart)


@dataclasses.dataclass
class LoadedPolicy:
    """A deployable policy: ``act(obs)`` gives deterministic actions.

    Float policies wrap ``eggroll_rl.envs.playback.SavedPolicy`` (the folder ``save_policy``
    writes); int8 policies wrap ``eggroll_rl.int8_numpy.Int8Policy`` (``policy_int8.npz``).
    """

    env_id: str
    saved: Any  # SavedPolicy, or int8_numpy.Int8Policy
    _task: Any = dataclasses.field(default=None, repr=False)
    _act: Any = dataclasses.field(default=None, repr=False)
    _npz: Optional[bytes] = dataclasses.field(default=None, repr=False)  # int8: the file

    @property
    def int8(self) -> bool:
        return self._npz is not None

    @property
    def params(self) -> Any:
        """The float policy's params (a ``networks.Policy`` params tree; for the user's own
        module its state as a pure dict: the linen variables dict, or NNX's
        ``nnx.to_pure_dict(nnx.state(module))``); int8: the kernels."""
        return self.saved.kernels if self.int8 else self.saved.params

    def act(self, obs: Any) -> np.ndarray:
        """Deterministic action(s) (argmax / Gaussian mean, clipped to the action space).

        Args:
            obs: one observation, shaped like the env's observation space, or a batch
                ``(batch, *obs_shape)``.

        Returns:
            One action (a scalar int for discrete spaces, ``(action_dim,)`` floats otherwise),
            or a batch of them with the leading batch axis.
        """
        if self.int8:
            from eggroll_rl import int8_numpy

            return np.asarray(int8_numpy.act(self.saved, np.asarray(obs, np.float32)))
        if self._act is None:
            self._act = self._actor()
        obs = np.asarray(obs, np.float32)
        return np.asarray(self._act(obs, obs.ndim > len(self.task.observation_space.shape)))

    @property
    def task(self):
        """The env's ``Task`` (made on first use; it names the spaces ``act`` needs)."""
        if self._task is None:
            from eggroll_rl import envs

            gymnasium = is_gymnasium_target(self.env_id)
            self._task = target_task(self.env_id) if gymnasium else envs.make(self.env_id)
        return self._task

    def _actor(self):
        import jax

        from eggroll_rl.envs import playback

        one = playback._actor(self.saved, self.task.action_space, deterministic=True)
        key = jax.random.key(0)  # unused by deterministic actions
        batched = jax.jit(jax.vmap(lambda params, obs: one(params, obs, key), (None, 0)))

        def act(obs, batch: bool):
            return batched(self.saved.params, obs) if batch else one(self.saved.params, obs, key)

        return act

    def save(self, path: PathLike) -> pathlib.Path:
        """Write the policy for ``load``: a folder (``save_policy``'s format) for float
        policies, the ``.npz`` file of ``eggroll_rl.int8.save`` for int8 ones; returns the path."""
        path = pathlib.Path(path)
        if self.int8:
            path = path if path.suffix == ".npz" else path.with_suffix(".npz")
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(self._npz)
            return path
        from eggroll_rl.envs.playback import save_policy

        return save_policy(
            path, self.saved.params, self.saved.network, self.saved.env_id,
            self.saved.obs_norm_stats,
        )


def load(path: PathLike, network: Any = None) -> LoadedPolicy:
    """Read a policy written by ``TrainingRun.save`` (or by ``eggroll-rl train``).

    Args:
        path: a policy folder (``policy.json`` + ``params.msgpack``) or an int8 ``.npz``.
        network: for a policy of your own module (its ``policy.json`` names the class), that
            module, built as in training: a module cannot be rebuilt from its name, so
            ``load`` without it raises a ``ValueError`` saying so. None for our own networks.
    """
    path = pathlib.Path(path)
    if path.suffix == ".npz":
        if network is not None:
            raise ValueError(f"{path} is an int8 policy of our own MLP; drop network=.")
        import zipfile

        from eggroll_rl import int8_numpy

        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such int8 policy file.")
        try:
            policy = int8_numpy.load(path)
            with np.load(path) as data:
                env_id = str(data["env_id"]) if "env_id" in data else ""
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as error:
            raise ValueError(
                f"{path} is not a readable int8 policy ({type(error).__name__}: {error}); "
                "re-export it (TrainingRun.save, or the run folder's policy_int8.npz)."
            ) from None
        _check_int8(path, policy)
        return LoadedPolicy(env_id=env_id, saved=policy, _npz=path.read_bytes())
    from eggroll_rl.envs.playback import load_policy

    saved = load_policy(path, network)
    return LoadedPolicy(env_id=saved.env_id, saved=saved)


def _check_int8(path: pathlib.Path, policy) -> None:
    """Raise ``ValueError`` (one line, naming ``path``) unless the int8 kernels chain (each
    ``(fan_in + 1, fan_out)``, int8) and the observation statistics are finite and fit."""
    kernels = list(policy.kernels)
    fan_in = None
    for index, kernel in enumerate(kernels):
        if kernel.dtype != np.int8 or kernel.ndim != 2 or (
            fan_in is not None and kernel.shape[0] != fan_in + 1
        ):
            raise ValueError(
                f"{path}: kernel_{index} ({kernel.dtype}, shape {kernel.shape}) does not follow "
                f"the layer before it (int8, ({fan_in} + 1, fan_out) expected); re-export it."
            )
        fan_in = kernel.shape[1]
    if not kernels:
        raise ValueError(f"{path} holds no kernels; re-export it.")
    for name in ("obs_mean", "obs_var", "obs_count"):
        values = getattr(policy, name)
        if values is not None and not np.all(np.isfinite(np.asarray(values, np.float64))):
            raise ValueError(f"{path}: {name} is not finite; re-export it.")
    if policy.obs_mean is not None and np.shape(policy.obs_mean)[-1:] != (kernels[0].shape[0] - 1,):
        raise ValueError(
            f"{path}: obs_mean of shape {np.shape(policy.obs_mean)} does not fit kernel_0's "
            f"{kernels[0].shape[0] - 1} inputs; re-export it."
        )


@dataclasses.dataclass
class TrainingRun:
    """A finished run: metrics, timings, each seed's mean policy, and ``act``/``save``.

    Attributes:
        algo, env: what was trained where.
        seeds: the seeds, in the order of every per-seed list below.
        config: the resolved config dataclass (preset defaults plus overrides).
        rows: the metrics table (``TrainResult.rows``; also run_dir/metrics.csv).
        compile_s, wall_s: compile seconds and training seconds.
        run_dir: the run folder, or None when the run wrote nothing.
        policies: one ``LoadedPolicy`` per seed (the mean policy at the end).
        result: the loop's ``TrainResult`` (its state has a leading seed axis).
        threshold: the preset's solved return (else ``stop_at``), or None.
        export_path: where the run folder's policy was exported (seed 0), or None.
    """

    algo: str
    env: str
    seeds: tuple[int, ...]
    config: Config
    rows: list[dict]
    compile_s: float
    wall_s: float
    run_dir: Optional[pathlib.Path]
    policies: list[LoadedPolicy]
    result: TrainResult
    threshold: Optional[float] = None
    export_path: Optional[pathlib.Path] = None

    @property
    def params(self) -> Any:
        """Seed 0's mean params (``params_per_seed`` has them all)."""
        return self.policies[0].params

    @property
    def params_per_seed(self) -> list[Any]:
        return [policy.params for policy in self.policies]

    @property
    def stopped(self) -> str:
        """Why the run ended: "total_steps", "time_budget", "stop_at", or "interrupted" (a
        SIGINT/SIGTERM stopped it at a chunk's end; checkpoint, logs and policy were saved and
        ``result.signal`` is the signal's number)."""
        return self.result.stopped

    def final(self, key: str = "eval_return") -> list[float]:
        """``key`` at the last eval point, one value per seed."""
        return self.result.final(key)

    def first_reaching(self, threshold: float) -> Optional[dict]:
        """The first eval point where every seed's return was >= ``threshold`` (None: never)."""
        return self.result.first_reaching(threshold)

    def act(self, obs: Any, seed_index: int = 0) -> np.ndarray:
        """Deterministic action(s) of seed ``seeds[seed_index]``'s policy; see
        ``LoadedPolicy.act`` (one observation or a batch)."""
        return self.policies[seed_index].act(obs)

    def save(self, path: PathLike, seed_index: int = 0) -> pathlib.Path:
        """Write one seed's policy for ``load``: a folder (float) or an .npz file (int8)."""
        return self.policies[seed_index].save(path)


def execute(planned: Plan) -> TrainingRun:
    """Compile and run a ``Plan``; export seed 0's policy into the run folder if there is one.

    A SIGINT/SIGTERM during training ends the run at the chunk's end, saved and exported, with
    ``run.stopped == "interrupted"``. A run that diverges (``loop.TrainingDiverged``), has
    nothing to resume or cannot write its folder raises a ``faults.TrainingError`` and exports
    nothing.
    """
    trainer, loop, run_dir, resume, record = planned[:5]
    seeds = ", ".join(map(str, loop.seeds))
    import contextlib

    import jax

    # The lock is held from before compiling until the policy is exported, and released on
    # any exit (an exception included); only process 0 of a multi-host run holds it.
    owned = run_dir is not None and _primary()
    with run_folder.RunLock(run_dir) if owned else contextlib.nullcontext():
        if owned and not resume:  # checked again: another run may have finished here since
            run_folder.check_no_run(run_dir, overwrite=planned.overwrite)
            if planned.overwrite:
                run_folder.clear(run_dir)
        title = f"{trainer.name} on {record['env']} (seeds {seeds})"
        try:
            result = loop_module.run(trainer, loop, run_dir, resume=resume, config_record=record,
                                     title=title, threshold=record.get("threshold"))
        except NoUsableCheckpoint as error:
            if not (resume and planned.overwrite):
                raise
            warnings.warn(f"{error} Restarting the run from the start, as asked (restart).",
                          stacklevel=2)
            run_folder.clear(run_dir)
            result = loop_module.run(trainer, loop, run_dir, resume=False, config_record=record,
                                     title=title, threshold=record.get("threshold"))
        policies = []
        for index in range(len(loop.seeds)):
            state = jax.tree_util.tree_map(lambda x: x[index], result.state)
            policies.append(_policy(trainer, state, record))
        export_path = None
        if run_dir is not None and jax.process_index() == 0:
            export_path = export(trainer, result.state, run_dir, record)
    return TrainingRun(
        algo=record["algo"], env=record["env"], seeds=tuple(loop.seeds), config=trainer.config,
        rows=result.rows, compile_s=result.compile_s, wall_s=result.wall_s, run_dir=run_dir,
        policies=policies, result=result, threshold=record.get("threshold"),
        export_path=export_path,
    )


def _policy(trainer, state, record) -> LoadedPolicy:
    """One seed's deployable policy, in memory, exactly as ``export`` writes it."""
    import jax

    from eggroll_rl.envs.playback import SavedPolicy, network_config

    if isinstance(trainer, Int8ESTrainer):
        import tempfile

        from eggroll_rl import int8_numpy

        with tempfile.TemporaryDirectory() as folder:
            path = trainer.save(state, pathlib.Path(folder))
            return LoadedPolicy(env_id=record["env"], saved=int8_numpy.load(path),
                                _task=trainer.task, _npz=path.read_bytes())
    deployed = trainer.policy(state)
    config = record["config"]
    stats = deployed["obs_stats"] if config.get("normalize_obs", True) else None
    saved = SavedPolicy(
        env_id=record["env"],
        network=network_config(_network(trainer, config)),
        params=jax.tree_util.tree_map(np.asarray, deployed["params"]),
        obs_norm_stats=stats,
        user_module=_user_module(trainer),
    )
    return LoadedPolicy(env_id=record["env"], saved=saved, _task=trainer.task)


def _user_module(trainer) -> Any:
    """The user's module a trainer trains, or None for our own networks."""
    model = getattr(trainer, "model", None)
    return None if model is None else model.module


def _network(trainer, config: dict) -> dict:
    """What ``policy.json`` records of the trained network (``playback.network_config``)."""
    if getattr(trainer, "model", None) is not None:
        return trainer.model.describe(trainer.task)
    return {
        "action_size": trainer.task.action_size,
        "continuous": not trainer.task.discrete,
        "hidden": list(config["hidden"]),
        "layer_norm": config["layer_norm"],
    }


def export(trainer, state, run_dir: pathlib.Path, record: dict) -> pathlib.Path:
    """Write the first seed's deployable policy into ``run_dir``: ``policy/`` (mean params, obs
    statistics, env id, network config) or, for int8, ``policy_int8.npz``.

    Args:
        state: the final state with a leading seed axis (``TrainResult.state``).
    """
    import jax

    from eggroll_rl.envs.playback import save_policy

    first = jax.tree_util.tree_map(lambda x: x[0], state)
    if isinstance(trainer, Int8ESTrainer):
        return trainer.save(first, run_dir)
    deployed = trainer.policy(first)
    config = record["config"]
    stats = deployed["obs_stats"] if config.get("normalize_obs", True) else None
    return save_policy(run_dir / "policy", deployed["params"], _network(trainer, config),
                       record["env"], stats)


def train(
    algo: str,
    env: str,
    *,
    seeds: Sequence[int] = (0,),
    total_steps: Optional[int] = None,
    time_budget: Optional[float] = None,
    config: Union[None, Config, Mapping[str, Any]] = None,
    network: Any = None,
    out: Optional[PathLike] = None,
    progress: bool = True,
    stop_at: Optional[float] = None,
    xla_cpu_options: bool = False,
    preset: Optional[PathLike] = None,
    int8: bool = False,
    iterations_per_chunk: Optional[int] = None,
    checkpoint_every: int = 5,
    overwrite: bool = False,
    outputs: str = "auto",
    seeds_in_sequence: Optional[bool] = None,
) -> TrainingRun:
    """Train ``algo`` on ``env`` and return the run; the same as ``eggroll-rl train``.

    Everything is validated first: a bad algo, env id, config field or budget raises one
    ``ValueError`` before anything compiles.

    Args:
        algo: "eggroll", "openes" or "ppo".
        env: an env id, e.g. "gymnax/CartPole-v1" (``eggroll_rl.envs.list_envs()``), or any
            Gymnasium env as "gymnasium/<Id>" (e.g. "gymnasium/HalfCheetah-v5", or
            "gymnasium/my_package.envs:MyEnv-v0" to import the module that registers it),
            stepped on the host by ``agents.gymnasium_trainers``.
        seeds: seeds trained in one program, side by side (vmapped) or, with
            ``seeds_in_sequence``, one after the other.
        total_steps: env steps per seed (default: the config's, i.e. the preset's budget;
            with only ``time_budget`` given, no step budget). Each seed stops at most one
            generation/update past it.
        time_budget: wall-clock training seconds (compile excluded); the run stops at the
            first chunk end past it.
        config: the algorithm's config dataclass (``ESConfig``, ``PPOConfig``, or
            ``Int8ESConfig`` with ``int8``), or a dict of field overrides applied to the
            defaults, which come from the env's bundled preset when there is one.
        network: hidden widths (e.g. ``(64, 64)``), a dict with "hidden" and/or "layer_norm",
            or an ``eggroll_rl.networks.Policy`` whose hidden/layer_norm are used; or your own
            ``flax.linen.Module`` or ``flax.nnx.Module`` instance, trained as written (the
            config's ``hidden``/``layer_norm`` are then unused). It is applied to
            observations ``(batch, *obs_shape)`` and returns logits or an action mean alone
            or with a value and/or log-std, or a distribution alone or with a value (see
            ``outputs``). A linen module is initialised per seed with ``zeros((1,
            *obs_shape))``; an NNX module's own state is every seed's start. Only parameters
            train; other state passes through (ES) or is refused (PPO). ES ignores a value;
            PPO needs one (its critic) and learns a log-std vector of its own for continuous
            actions when the module gives none. Not with ``int8`` or Gymnasium envs. The run
            folder records the module's class; ``load``/``resume`` then need ``network=``.
        out: run folder for config.json, metrics.csv/jsonl, curve.png, checkpoints and the
            exported policy (None: write nothing). It must not hold another run (see
            ``overwrite``; ``resume`` continues one), and it is locked (``run.lock``) while
            this run trains, so a second process cannot write into it.
        progress: show a progress bar of env steps.
        stop_at: stop at the first chunk end where every seed's eval return is >= this.
        xla_cpu_options: compile with XLA:CPU options that speed up float rollouts on CPU.
        preset: a preset name (env id) or .toml path whose config is the default instead of
            ``env``'s own.
        int8: integer EGGROLL (algo "eggroll" only).
        iterations_per_chunk: generations/updates between evals (default: 5 for ES, 2 with
            ``stop_at``, 10 for PPO and int8).
        checkpoint_every: chunks between checkpoints (with ``out``).
        overwrite: when ``out`` holds an earlier run, delete its config, metrics, checkpoints
            and policy first, so that nothing of it is restored later (default: refuse).
        outputs: what your own ``network`` module returns (``envs.actions.POLICY_OUTPUTS``):
            "auto" (default: told from types and shapes), "head", "head_value",
            "head_log_std", "head_log_std_value" or "distribution".
        seeds_in_sequence: run each chunk's seeds one after the other instead of vmapped
            (``LoopConfig.seeds_in_sequence``: the same runs up to float rounding, cheaper where
            seeds' episode lengths drift apart). None: the preset's (False without one).

    Returns:
        A ``TrainingRun``.
    """
    return execute(plan(
        algo, env, seeds=seeds, total_steps=total_steps, time_budget=time_budget,
        config=config, network=network, out=out, progress=progress, stop_at=stop_at,
        xla_cpu_options=xla_cpu_options, preset=preset, int8=int8,
        iterations_per_chunk=iterations_per_chunk, checkpoint_every=checkpoint_every,
        overwrite=overwrite, outputs=outputs, seeds_in_sequence=seeds_in_sequence,
    ))


def resume(
    run_dir: PathLike,
    *,
    progress: bool = True,
    total_steps: Optional[int] = None,
    time_budget: Optional[float] = None,
    restart: bool = False,
    network: Any = None,
) -> TrainingRun:
    """Continue the run in ``run_dir`` from its newest good checkpoint, with its saved config;
    it ends exactly where an uninterrupted run would have.

    ``total_steps`` (or ``time_budget``) extends the run: a new budget, at least the saved one,
    recorded in its config.json (PPO's learning-rate annealing horizon moves with it). A run
    with no checkpoint left is refused unless ``restart``, which trains it again from the start
    with its saved config. A run of your own module needs it again: ``network=module``. See
    ``plan_resume``.
    """
    return execute(plan_resume(run_dir, progress=progress, total_steps=total_steps,
                               time_budget=time_budget, restart=restart, network=network))
