"""Suite spaces -> real ``gymnasium.spaces`` objects, so users and Gymnasium see one language."""

from __future__ import annotations

from typing import Any

import gymnasium
import numpy as np


def to_gymnasium(space: Any) -> gymnasium.spaces.Space:
    """Convert a gymnax-style space (Discrete, Box, Dict, Tuple) to its Gymnasium twin."""
    kind = type(space).__name__
    if isinstance(space, gymnasium.spaces.Space):
        return space
    if kind == "Discrete":
        n = getattr(space, "num_categories", getattr(space, "n", None))
        return gymnasium.spaces.Discrete(int(n))
    if kind == "Box":
        dtype = np.dtype(getattr(space, "dtype", np.float32))
        shape = tuple(space.shape)
        low = np.broadcast_to(np.asarray(space.low, dtype), shape)
        high = np.broadcast_to(np.asarray(space.high, dtype), shape)
        return gymnasium.spaces.Box(low=low, high=high, shape=shape, dtype=dtype)
    if kind == "Dict":
        return gymnasium.spaces.Dict({k: to_gymnasium(v) for k, v in space.spaces.items()})
    if kind == "Tuple":
        return gymnasium.spaces.Tuple([to_gymnasium(v) for v in space.spaces])
    raise ValueError(f"cannot convert space {space!r} to a gymnasium space")
