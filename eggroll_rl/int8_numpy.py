"""Integer inference of an exported int8 policy in plain NumPy (no JAX needed to deploy).

Reads the ``.npz`` that ``eggroll_rl.int8.save`` writes (int8 kernels, right shifts, obs
statistics) and reproduces ``Int8MLP`` step by step: float32 normalisation and the int8
quantiser, then int8 x int8 products summed in int32 (wrapping exactly like XLA's int32),
arithmetic right shifts, saturating ReLU to [0, 127], and the argmax of the int32 logits or the
dequantised mean. This file imports only NumPy so it can be copied next to any deployment.
"""

from __future__ import annotations

from typing import NamedTuple, Optional

import numpy as np

CLIP, EPS = 10.0, 1e-8  # must equal eggroll_rl.envs.obs_norm.CLIP / EPS


class Int8Policy(NamedTuple):
    """An exported int8 policy as loaded from its ``.npz``: one kernel and shift per layer,
    the input quantiser's bits, the head's kind and scale, and optional obs statistics."""

    kernels: list  # int8 (fan_in + 1, fan_out) per layer, bias in the last row
    shifts: np.ndarray  # int32 right shift per layer
    input_bits: int
    continuous: bool
    action_scale: np.ndarray  # float32 per action (continuous heads)
    obs_mean: Optional[np.ndarray]
    obs_var: Optional[np.ndarray]
    obs_count: Optional[np.ndarray]


def load(path) -> Int8Policy:
    """Read a policy written by ``eggroll_rl.int8.save`` (e.g. ``run_dir/policy_int8.npz``)."""
    with np.load(path) as data:
        if "format" not in data or not str(data["format"]).startswith("eggroll_rl.int8/"):
            raise ValueError(f"{path} is not an int8 policy written by eggroll_rl.int8.save.")
        count = sum(1 for name in data.files if name.startswith("kernel_"))
        stats = "obs_mean" in data.files
        return Int8Policy(
            kernels=[data[f"kernel_{i}"] for i in range(count)],
            shifts=data["shifts"],
            input_bits=int(data["input_bits"]),
            continuous=bool(data["continuous"]),
            action_scale=data["action_scale"],
            obs_mean=data["obs_mean"] if stats else None,
            obs_var=data["obs_var"] if stats else None,
            obs_count=data["obs_count"] if stats else None,
        )


def quantize(policy: Int8Policy, obs: np.ndarray) -> np.ndarray:
    """Observations ``(..., obs_size)`` to int8, normalised as in training."""
    x = np.asarray(obs, np.float32)
    if policy.obs_mean is not None and float(policy.obs_count) > 0:
        x = (x - policy.obs_mean) / np.sqrt(policy.obs_var + np.float32(EPS))
        x = np.clip(x, np.float32(-CLIP), np.float32(CLIP))
    scaled = np.round(x * np.float32(2.0**policy.input_bits))
    return np.clip(scaled, -127, 127).astype(np.int8)


def forward(policy: Int8Policy, x: np.ndarray) -> np.ndarray:
    """int8 inputs to the int32 head (logits, or the mean clipped to [-127, 127])."""
    x = np.asarray(x, np.int8)
    one = np.int8(2**policy.input_bits)
    last = len(policy.kernels) - 1
    for i, (w, shift) in enumerate(zip(policy.kernels, policy.shifts)):
        x = np.concatenate([x, np.full(x.shape[:-1] + (1,), one, np.int8)], axis=-1)
        with np.errstate(over="ignore"):
            acc = np.matmul(x.astype(np.int32), w.astype(np.int32)) >> np.int32(shift)
        if i < last:
            x = np.clip(acc, 0, 127).astype(np.int8)
        elif policy.continuous:
            return np.clip(acc, -127, 127).astype(np.int32)
        else:
            return acc.astype(np.int32)
    raise AssertionError("unreachable")


def act(policy: Int8Policy, obs: np.ndarray) -> np.ndarray:
    """Actions for observations ``(..., obs_size)``: int argmax, or the float32 mean."""
    head = forward(policy, quantize(policy, obs))
    if policy.continuous:
        return head.astype(np.float32) * policy.action_scale
    return np.argmax(head, axis=-1)
