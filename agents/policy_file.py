"""The exported policy: one folder that is everything needed to act, and nothing else.

``policy.json`` names the env id and the network (action size, continuous or not, hidden widths,
LayerNorm); ``params.msgpack`` holds the mean parameters and the observation statistics (flax
msgpack: exact float32 round trip). The Gymnasium playback helper loads it.
"""

from __future__ import annotations

import json
import pathlib
from typing import Any, Optional

import jax
import jax.numpy as jnp
import numpy as np
from flax import serialization

from eggroll_rl.envs import obs_norm
from eggroll_rl.networks import Policy

FORMAT = 1


def save(
    path: pathlib.Path,
    params: Any,
    network: dict,
    env_id: str,
    obs_stats: Optional[obs_norm.RunningStats] = None,
) -> pathlib.Path:
    path = pathlib.Path(path)
    path.mkdir(parents=True, exist_ok=True)
    stats = None
    if obs_stats is not None:
        stats = {k: np.asarray(getattr(obs_stats, k)) for k in ("count", "mean", "var")}
    payload = {"params": jax.tree_util.tree_map(np.asarray, params), "obs_stats": stats}
    (path / "params.msgpack").write_bytes(serialization.msgpack_serialize(payload))
    meta = {"format": FORMAT, "env_id": env_id, "network": network}
    (path / "policy.json").write_text(json.dumps(meta, indent=2))
    return path


def load(path: pathlib.Path) -> dict:
    """``{"env_id", "network" (a Policy), "params", "obs_stats" (or None), "forward"}``.

    ``forward(obs)`` is the policy's output ``(head, log_std)`` for raw observations, after the
    same normalisation as in training.
    """
    path = pathlib.Path(path)
    meta = json.loads((path / "policy.json").read_text())
    if meta.get("format") != FORMAT:
        raise ValueError(f"{path}: policy format {meta.get('format')} is not {FORMAT}.")
    payload = serialization.msgpack_restore((path / "params.msgpack").read_bytes())
    net = meta["network"]
    network = Policy(net["action_size"], net["continuous"], tuple(net["hidden"]), net["layer_norm"])
    stats = payload.get("obs_stats")
    stats = None if stats is None else obs_norm.RunningStats(**{k: jnp.asarray(v) for k, v in stats.items()})
    params = jax.tree_util.tree_map(jnp.asarray, payload["params"])

    @jax.jit
    def forward(obs):
        obs = jnp.asarray(obs, jnp.float32)
        return network.apply(params, obs if stats is None else obs_norm.normalize(stats, obs))

    return {"env_id": meta["env_id"], "network": network, "params": params, "obs_stats": stats, "forward": forward}
