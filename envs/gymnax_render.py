"""Frames for gymnax's classic-control tasks, drawn by Gymnasium's own renderers.

gymnax cannot draw an RGB frame, but its classic-control tasks are the same physics as
Gymnasium's: copying a gymnax state into the matching Gymnasium env and calling its renderer
gives the picture users know (and ``render_mode="rgb_array"`` for ``eggroll_rl/CartPole-v1``).
Other gymnax tasks have no renderer here.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

import numpy as np

# gymnax name -> (Gymnasium id, the Gymnasium env's state vector from a gymnax state)
_STATES: dict[str, tuple[str, Callable[[Any], list]]] = {
    "CartPole-v1": ("CartPole-v1", lambda s: [s.x, s.x_dot, s.theta, s.theta_dot]),
    "Pendulum-v1": ("Pendulum-v1", lambda s: [s.theta, s.theta_dot]),
    "Acrobot-v1": (
        "Acrobot-v1", lambda s: [s.joint_angle1, s.joint_angle2, s.velocity_1, s.velocity_2]
    ),
    "MountainCar-v0": ("MountainCar-v0", lambda s: [s.position, s.velocity]),
    "MountainCarContinuous-v0": ("MountainCarContinuous-v0", lambda s: [s.position, s.velocity]),
}


def renderer(name: str) -> Optional[Callable[[Any], np.ndarray]]:
    """``render(state) -> (H, W, 3) uint8`` for gymnax task ``name``, or None if it cannot draw."""
    if name not in _STATES:
        return None
    gymnasium_id, state_vector = _STATES[name]
    env = None

    def render(state) -> np.ndarray:
        nonlocal env
        if env is None:  # one Gymnasium env per task, made on first use (pygame loads then)
            import os

            import gymnasium

            os.environ.setdefault("SDL_AUDIODRIVER", "dummy")  # frames only: no sound card

            env = gymnasium.make(gymnasium_id, render_mode="rgb_array").unwrapped
            env.reset(seed=0)
        env.state = np.asarray([float(np.asarray(v)) for v in state_vector(state)])
        if name == "Pendulum-v1":
            env.last_u = float(np.asarray(state.last_u))
        return np.asarray(env.render())

    return render
