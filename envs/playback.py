"""Saved policies and watching them play: ``save_policy``, ``load_policy``, ``play``.

A trained policy is only worth what it does in the environment, and the quickest way to know
is to watch it in the Gymnasium env people already use. A saved policy is one folder:
``policy.json`` names the env id, the network (``action_size``, ``continuous``, ``hidden``,
``layer_norm``: the arguments of ``eggroll_rl.networks.Policy``) and the format version;
``params.msgpack`` (flax msgpack, an exact round trip of every array) holds the params and, if
training normalised observations, the running statistics, which ``play`` then applies with
``eggroll_rl.envs.obs_norm.normalize`` exactly as in training. ``play`` runs it in
``eggroll_rl/<name>`` / ``<suite>/<name>`` (our tasks) or any Gymnasium id, returns the episode
returns, and writes a GIF or MP4 with imageio when asked.

A policy of the user's own Flax module (``agents.train(..., network=module)``) is saved the
same way, its ``policy.json`` network naming the module's class (``module``: its
``module.qualname``), framework, output convention and spaces; its params are the module's
state as a pure dict (``eggroll_rl.user_network``). A module cannot be rebuilt from a name,
so reading one back needs the module: ``load_policy(path, network=module)``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
from typing import Any, Mapping, Optional, Union

import gymnasium
import jax
import jax.numpy as jnp
import numpy as np
from flax import serialization

from eggroll_rl.envs import obs_norm
from eggroll_rl.envs.actions import (
    distribution_of, env_action, resolve_batch_outputs, select_action, split_outputs,
)
from eggroll_rl.networks import Policy

FORMAT = 1
META_FILE = "policy.json"
PARAMS_FILE = "params.msgpack"
NETWORK_KEYS = ("action_size", "continuous", "hidden", "layer_norm")
USER_NETWORK_KEYS = ("module", "framework", "outputs", "action_size", "continuous", "obs_shape")
VIDEO_SUFFIXES = (".gif", ".mp4")
DEFAULT_FPS = 30

PathLike = Union[str, os.PathLike]


@dataclasses.dataclass(frozen=True)
class SavedPolicy:
    """What ``load_policy`` returns: everything needed to act, and nothing else.

    ``user_module`` is the user's own Flax module when ``network`` describes one (its
    ``"module"`` key), else None; ``params`` is then that module's state as a pure dict.
    """

    env_id: str
    network: dict
    params: Any
    obs_norm_stats: Optional[obs_norm.RunningStats] = None
    user_module: Any = None

    @property
    def user(self) -> Any:
        """The ``user_network.UserNetwork`` of ``user_module`` (None without one)."""
        if self.user_module is None:
            return None
        from eggroll_rl.user_network import UserNetwork

        return UserNetwork(self.user_module, self.network.get("outputs", "auto"))

    @property
    def module(self) -> Any:
        """The module these params belong to: ``user_module``, or the
        ``eggroll_rl.networks.Policy`` that ``network`` describes."""
        if self.user_module is not None:
            return self.user_module
        return Policy(
            action_size=self.network["action_size"],
            continuous=self.network["continuous"],
            hidden=tuple(self.network["hidden"]),
            layer_norm=self.network["layer_norm"],
        )


def network_config(network: Union[Policy, Mapping[str, Any]]) -> dict:
    """The JSON-able description of a ``Policy`` (or a dict of its arguments, checked), or of
    a user's module (a dict with ``USER_NETWORK_KEYS``, ``UserNetwork.describe``)."""
    if isinstance(network, Mapping) and "module" in network:
        missing = [key for key in USER_NETWORK_KEYS if key not in network]
        if missing:
            raise ValueError(f"the network config of a user module lacks {missing}.")
        return {
            "module": str(network["module"]),
            "framework": str(network["framework"]),
            "outputs": str(network["outputs"]),
            "action_size": int(network["action_size"]),
            "continuous": bool(network["continuous"]),
            "obs_shape": [int(size) for size in network["obs_shape"]],
        }
    if isinstance(network, Policy):
        network = {key: getattr(network, key) for key in NETWORK_KEYS}
    missing = [key for key in NETWORK_KEYS if key not in network]
    if missing:
        raise ValueError(
            f"the network config lacks {missing}: it needs {list(NETWORK_KEYS)} (the arguments "
            "of eggroll_rl.networks.Policy), or pass the Policy module itself."
        )
    return {
        "action_size": int(network["action_size"]),
        "continuous": bool(network["continuous"]),
        "hidden": [int(width) for width in network["hidden"]],
        "layer_norm": bool(network["layer_norm"]),
    }


def _stats(
    stats: Union[None, obs_norm.RunningStats, Mapping[str, Any]],
) -> Optional[obs_norm.RunningStats]:
    if stats is None or isinstance(stats, obs_norm.RunningStats):
        return stats
    if "mean" not in stats or "var" not in stats:
        raise ValueError(
            "observation statistics need 'mean' and 'var' (and optionally 'count'), got "
            f"{sorted(stats)}."
        )
    mean = jnp.asarray(stats["mean"], jnp.float32)
    count = jnp.asarray(stats.get("count", 1.0), jnp.float32)  # no count: the stats are data
    return obs_norm.RunningStats(count=count, mean=mean, var=jnp.asarray(stats["var"], jnp.float32))


def save_policy(
    path: PathLike,
    params: Any,
    network: Union[Policy, Mapping[str, Any]],
    env_id: str,
    obs_norm_stats: Union[None, obs_norm.RunningStats, Mapping[str, Any]] = None,
) -> pathlib.Path:
    """Write the policy folder ``path`` (created if needed); returns it."""
    path = pathlib.Path(path)
    config = network_config(network)
    stats = _stats(obs_norm_stats)
    payload = {
        "params": jax.tree_util.tree_map(np.asarray, serialization.to_state_dict(params)),
        "obs_stats": (
            None
            if stats is None
            else {name: np.asarray(getattr(stats, name)) for name in ("count", "mean", "var")}
        ),
    }
    path.mkdir(parents=True, exist_ok=True)
    (path / PARAMS_FILE).write_bytes(serialization.msgpack_serialize(payload))
    meta = {"format": FORMAT, "env_id": env_id, "network": config}
    (path / META_FILE).write_text(json.dumps(meta, indent=2) + "\n")
    return path


def load_policy(path: PathLike, network: Any = None) -> SavedPolicy:
    """Read a folder written by ``save_policy``, checked against its own network config.

    Args:
        path: the policy folder.
        network: for a policy of the user's own module (its ``policy.json`` names the class),
            that module (a ``flax.linen.Module`` or ``flax.nnx.Module`` instance built as in
            training; its params are replaced by the saved ones). None for our own network.

    Raises:
        FileNotFoundError: ``path`` lacks ``policy.json`` or ``params.msgpack``.
        ValueError: one line naming the file, when a file does not decode, or the params do not
            match the network in ``policy.json`` (a missing, unused or misshapen leaf, e.g.
            LayerNorm params with ``layer_norm: false``) or the given module, or a value is not
            finite; or when a user module's policy is read without ``network`` (or ours with).
    """
    path = pathlib.Path(path)
    missing = [name for name in (META_FILE, PARAMS_FILE) if not (path / name).is_file()]
    if missing:
        raise FileNotFoundError(
            f"{path} is not a saved policy: {', '.join(missing)} missing (save_policy writes "
            f"{META_FILE} and {PARAMS_FILE} into a folder)."
        )
    meta_path, params_path = path / META_FILE, path / PARAMS_FILE
    try:
        meta = json.loads(meta_path.read_text())
    except (ValueError, UnicodeDecodeError) as error:
        raise ValueError(
            f"{meta_path} is not valid JSON ({error}); re-export the policy."
        ) from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        found = meta.get("format") if isinstance(meta, dict) else None
        raise ValueError(
            f"{path}: saved policy format {found!r}, but this version reads format "
            f"{FORMAT}; re-export it with this version's save_policy."
        )
    if "env_id" not in meta or not isinstance(meta.get("network"), dict):
        raise ValueError(f"{meta_path} lacks 'env_id' or 'network'; re-export the policy.")
    try:
        config = network_config(meta["network"])
    except (ValueError, TypeError) as error:
        raise ValueError(f"{meta_path}: {error}") from None
    _check_network_argument(path, config, network)
    try:
        payload = serialization.msgpack_restore(params_path.read_bytes())
    except Exception as error:  # msgpack raises its own types (ExtraData, FormatError, ...)
        raise ValueError(
            f"{params_path} does not decode ({type(error).__name__}: {error}); the file is "
            "corrupt or truncated: re-export the policy."
        ) from None
    if not isinstance(payload, dict) or not isinstance(payload.get("params"), dict):
        raise ValueError(f"{params_path} holds no 'params' tree; re-export the policy.")
    stats = payload.get("obs_stats")
    saved = SavedPolicy(
        env_id=meta["env_id"],
        network=config,
        params=payload["params"],
        obs_norm_stats=None if stats is None else _stats(stats),
        user_module=network,
    )
    check_params(saved, str(params_path))
    return saved


def _check_network_argument(path: pathlib.Path, config: dict, network: Any) -> None:
    """A user module's policy needs its module; ours takes none."""
    if "module" in config and network is None:
        name = config["module"]
        raise ValueError(
            f"{path} holds a policy of your own {config['framework']} module {name}: a module "
            f"cannot be rebuilt from its name, so pass it: load(path, network=<a "
            f"{name.rsplit('.', 1)[-1]} instance, built as in training>)."
        )
    if "module" not in config and network is not None:
        raise ValueError(
            f"{path} holds an eggroll_rl.networks.Policy described by its {META_FILE}; drop "
            "network= (it is for policies of your own modules)."
        )
    if network is not None:
        from eggroll_rl.user_network import is_user_module

        if not is_user_module(network):
            raise ValueError(
                f"network must be the flax.linen.Module or flax.nnx.Module instance trained, "
                f"got {type(network).__name__}."
            )


def check_params(saved: SavedPolicy, where: str) -> None:
    """Raise ``ValueError`` (one line, naming ``where``) unless ``saved.params`` is exactly the
    params tree of ``saved.module`` (same leaves and shapes, float values, all finite) and its
    observation statistics, if any, are finite and of the network's input size."""
    if saved.user_module is not None:
        return _check_user_params(saved, where)
    leaves = dict(_flat(saved.params))
    kernels = [(name, leaf) for name, leaf in leaves.items() if name.endswith("/kernel")]
    first = min(kernels, default=None, key=lambda item: _layer_order(item[0]))
    if first is None or np.ndim(first[1]) != 2:
        raise ValueError(f"{where}: no Dense kernel among the params ({sorted(leaves)[:4]}).")
    obs_size = int(np.shape(first[1])[0])
    expected = dict(_flat(jax.eval_shape(saved.module.init, jax.random.key(0),
                                         jnp.zeros((obs_size,), jnp.float32))))
    problems = _tree_mismatches(leaves, expected)
    if problems:
        raise ValueError(
            f"{where} does not match the network in {META_FILE} ({json.dumps(saved.network)}): "
            f"{'; '.join(problems)}."
        )
    for name, leaf in leaves.items():
        values = np.asarray(leaf)
        if not np.issubdtype(values.dtype, np.floating):
            raise ValueError(f"{where}: {name} has dtype {values.dtype}, expected floats.")
        bad = int(np.size(values) - np.count_nonzero(np.isfinite(values)))
        if bad:
            raise ValueError(
                f"{where}: {name} holds {bad} non-finite value(s) (NaN or inf); the policy is "
                "corrupt or comes from a diverged run: re-export a good one."
            )
    stats = saved.obs_norm_stats
    if stats is not None:
        for name in ("count", "mean", "var"):
            values = np.asarray(getattr(stats, name))
            if not np.all(np.isfinite(values)):
                raise ValueError(f"{where}: the observation statistics' {name} is not finite.")
        shape = np.shape(stats.mean)
        if np.shape(stats.var) != shape or not shape or shape[-1] != obs_size:
            raise ValueError(
                f"{where}: observation statistics of shape {np.shape(stats.mean)}, but the "
                f"network reads {obs_size} inputs."
            )


def _tree_mismatches(leaves: dict, expected: dict) -> list[str]:
    """What differs between saved leaves and the expected ones (by path): missing leaves,
    unused leaves, and shapes; empty when they match."""
    problems = []
    absent = sorted(set(expected) - set(leaves))
    unused = sorted(set(leaves) - set(expected))
    if absent:
        problems.append(f"missing {', '.join(absent)}")
    if unused:
        problems.append(f"unused {', '.join(unused)}")
    for name in sorted(set(leaves) & set(expected)):
        got, want = tuple(np.shape(leaves[name])), tuple(expected[name].shape)
        if got != want:
            problems.append(f"{name} has shape {got}, expected {want}")
    return problems


def _check_user_params(saved: SavedPolicy, where: str) -> None:
    """``check_params`` for a user module: the saved state has exactly the leaves and shapes
    of the given module's (initialised for the saved observation shape), float leaves are
    finite, and the observation statistics fit that shape."""
    obs_shape = tuple(saved.network["obs_shape"])
    leaves = dict(_flat(saved.params))
    expected = dict(_flat(saved.user.expected_state_dict(obs_shape)))
    problems = _tree_mismatches(leaves, expected)
    if problems:
        raise ValueError(
            f"{where} does not match the module given ({saved.user.name}; saved from "
            f"{saved.network['module']}): {'; '.join(problems)}."
        )
    for name, leaf in leaves.items():
        values = np.asarray(leaf)
        if np.issubdtype(values.dtype, np.floating) and not np.all(np.isfinite(values)):
            raise ValueError(
                f"{where}: {name} holds non-finite values (NaN or inf); the policy is corrupt "
                "or comes from a diverged run: re-export a good one."
            )
    stats = saved.obs_norm_stats
    if stats is not None:
        for name in ("count", "mean", "var"):
            if not np.all(np.isfinite(np.asarray(getattr(stats, name)))):
                raise ValueError(f"{where}: the observation statistics' {name} is not finite.")
        if np.shape(stats.mean) != obs_shape or np.shape(stats.var) != obs_shape:
            raise ValueError(
                f"{where}: observation statistics of shape {np.shape(stats.mean)}, but the "
                f"policy reads observations of shape {obs_shape}."
            )


def _flat(tree) -> list:
    """``(path, leaf)`` pairs of a params tree, paths as ``params/MLP_0/EggrollDense_0/kernel``."""
    return [
        ("/".join(str(getattr(key, "key", key)) for key in path), leaf)
        for path, leaf in jax.tree_util.tree_leaves_with_path(tree)
    ]


def _layer_order(name: str) -> tuple:
    """Sort key putting the first Dense layer of the trunk first (``EggrollDense_0`` < ``_10``)."""
    parts = name.split("/")
    return tuple(int(p.rsplit("_", 1)[1]) if p.rsplit("_", 1)[-1].isdigit() else 0 for p in parts)


def _make_env(env_id: str, render_mode: Optional[str]) -> gymnasium.Env:
    """A Gymnasium env for a Gymnasium id, ``gymnasium/<Id>``, or one of our task ids."""
    if env_id in gymnasium.registry:
        return gymnasium.make(env_id, render_mode=render_mode)
    from eggroll_rl.envs.gymnasium_target import gymnasium_name, is_gymnasium_target

    if is_gymnasium_target(env_id):
        return gymnasium.make(gymnasium_name(env_id), render_mode=render_mode)
    from eggroll_rl.envs.gymnasium_env import TaskEnv

    return TaskEnv(env_id, render_mode=render_mode)


def _actor(saved: SavedPolicy, space: gymnasium.spaces.Space, deterministic: bool):
    """``act(params, obs, key)``: one action for one observation, jitted."""
    from eggroll_rl.envs.gymnasium_target import policy_action_space

    if saved.user_module is not None:
        return _user_actor(saved, policy_action_space(space), deterministic)
    module, stats, space = saved.module, saved.obs_norm_stats, policy_action_space(space)

    @jax.jit
    def act(params, obs, key):
        obs = jnp.asarray(obs, jnp.float32)
        head, log_std = module.apply(
            params, obs if stats is None else obs_norm.normalize(stats, obs)
        )
        log_std = jnp.zeros_like(head) if log_std is None else log_std
        return select_action(space, head, log_std, key, deterministic)

    return act


def _user_actor(saved: SavedPolicy, space: gymnasium.spaces.Space, deterministic: bool):
    """``_actor`` for a user module: applied to a batch of one observation (as in training),
    its outputs read by their convention; a distribution acts by ``mode()`` or ``sample``."""
    user, stats = saved.user, saved.obs_norm_stats

    @jax.jit
    def act(params, obs, key):
        obs = jnp.asarray(obs, jnp.float32)
        obs = (obs if stats is None else obs_norm.normalize(stats, obs))[None]
        convention = resolve_batch_outputs(
            user.outputs, space, lambda x: user.apply_state_dict(params, x), obs
        )
        out = user.apply_state_dict(params, obs)
        if convention == "distribution":
            dist = distribution_of(out)
            raw = dist.mode() if deterministic else dist.sample(seed=key)
            return env_action(space, raw, (1,))[0]
        head, log_std = split_outputs(out, convention)
        if log_std is not None and jnp.ndim(log_std) == jnp.ndim(head):  # one per observation
            log_std = log_std[0]
        head = head[0]
        log_std = jnp.zeros_like(head) if log_std is None else log_std
        return select_action(space, head, log_std, key, deterministic)

    return act


def _write_video(path: pathlib.Path, frames: list, fps: float) -> None:
    try:
        import imageio.v3 as iio
    except ImportError as error:
        raise ImportError(
            f"writing {path.name} needs imageio: pip install 'eggroll-rl[render]'"
        ) from error

    frames = np.stack([np.asarray(frame, np.uint8) for frame in frames])
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() == ".gif":
        iio.imwrite(path, frames, duration=1000.0 / fps, loop=0)
        return
    # H.264 needs even sides.
    pad = ((0, 0), (0, frames.shape[1] % 2), (0, frames.shape[2] % 2), (0, 0))
    try:
        iio.imwrite(path, np.pad(frames, pad, mode="edge"), fps=fps, codec="libx264")
    except ImportError as error:
        raise ImportError(
            f"writing {path.name} needs PyAV (pip install av); a .gif needs nothing more."
        ) from error


def play(
    policy: Union[PathLike, SavedPolicy, Any],
    env_id: Optional[str] = None,
    *,
    episodes: int = 1,
    seed: int = 0,
    video_path: Optional[PathLike] = None,
    deterministic: bool = True,
    max_steps: Optional[int] = None,
    network: Union[None, Policy, Mapping[str, Any]] = None,
    obs_norm_stats: Union[None, obs_norm.RunningStats, Mapping[str, Any]] = None,
    fps: Optional[float] = None,
) -> list[float]:
    """Play ``episodes`` episodes and return their returns; optionally record them.

    ``policy`` is a saved-policy folder, a ``SavedPolicy``, or raw params (then ``network``,
    and ``env_id``, are required, and ``obs_norm_stats`` optional). A folder saved from the
    user's own module needs that module as ``network``. ``env_id`` defaults to the
    saved one and may be any Gymnasium id, ``gymnasium/<Id>`` or one of our ids. The env is
    reset with ``seed`` once, then without a seed between episodes (Gymnasium's convention);
    ``max_steps`` cuts each episode short. ``video_path`` (``.gif`` or ``.mp4``) records every
    frame with ``render_mode="rgb_array"`` at ``fps`` (default: the env's ``render_fps``).
    """
    if isinstance(policy, (str, os.PathLike)):
        from eggroll_rl.user_network import is_user_module

        saved = load_policy(policy, network if is_user_module(network) else None)
    elif isinstance(policy, SavedPolicy):
        saved = policy
    else:
        if network is None or env_id is None:
            raise ValueError(
                "play(params, ...) needs network= (a Policy or its config dict) and env_id=; "
                "or pass the folder written by save_policy."
            )
        saved = SavedPolicy(env_id, network_config(network), policy, _stats(obs_norm_stats))
    if episodes < 1:
        raise ValueError(f"episodes must be >= 1, got {episodes}.")
    env_id = saved.env_id if env_id is None else env_id
    video_path = None if video_path is None else pathlib.Path(video_path)
    if video_path is not None and video_path.suffix.lower() not in VIDEO_SUFFIXES:
        raise ValueError(
            f"video_path must end in one of {VIDEO_SUFFIXES}, got {video_path.name!r}."
        )

    env = _make_env(env_id, "rgb_array" if video_path is not None else None)
    try:
        act = _actor(saved, env.action_space, deterministic)
        discrete = isinstance(env.action_space, gymnasium.spaces.Discrete)
        key, steps = jax.random.key(seed), 0
        returns, frames = [], []
        for episode in range(episodes):
            obs, _ = env.reset(seed=seed) if episode == 0 else env.reset()
            if video_path is not None:
                frames.append(env.render())
            total, length, done = 0.0, 0, False
            while not done and (max_steps is None or length < max_steps):
                action = np.asarray(act(saved.params, obs, jax.random.fold_in(key, steps)))
                action = int(action) if discrete else action.astype(env.action_space.dtype)
                obs, reward, terminated, truncated, _ = env.step(action)
                total, length, steps = total + float(reward), length + 1, steps + 1
                done = terminated or truncated
                if video_path is not None:
                    frames.append(env.render())
            returns.append(total)
        if video_path is not None:
            _write_video(video_path, frames, fps or env.metadata.get("render_fps") or DEFAULT_FPS)
    finally:
        env.close()
    return returns
