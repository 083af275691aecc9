"""The one task interface every suite is adapted to: pure functions plus Gymnasium spaces.

ES evaluates thousands of policies at once, so an environment must be a pair of pure functions
that ``jit``, ``vmap`` and ``lax.scan`` can trace: ``reset(key) -> (obs, state)`` and
``step(key, state, action) -> (obs, state, reward, terminated, truncated, info)``. Gymnax,
Brax and the other suites all differ in these details; adapters hide them behind ``Task``.

Contract of ``step`` (the same for every suite, and the same as Gymnasium's "same-step"
autoreset): when ``terminated | truncated``, the returned ``obs`` and ``state`` already belong
to a fresh episode and ``info["final_obs"]`` holds the last observation of the finished one.
``truncated`` is true when the episode hits ``max_episode_steps`` without terminating.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Optional

import gymnasium
import jax
import jax.numpy as jnp
import numpy as np


@dataclasses.dataclass(frozen=True, eq=False)
class Task:
    """A vectorisable environment. Hashable by identity, so it can be a static jit argument."""

    env_id: str
    reset: Callable[[jax.Array], tuple[Any, Any]]
    step: Callable[[jax.Array, Any, jax.Array], tuple]
    observation_space: gymnasium.spaces.Space
    action_space: gymnasium.spaces.Space
    max_episode_steps: int
    render: Optional[Callable[[Any], np.ndarray]] = None
    step_without_reset: Optional[Callable[[jax.Array, Any, jax.Array], tuple]] = None
    """Optional: ``step`` with the same results until an episode ends, minus the autoreset
    (after a done, ``obs`` and ``state`` stay the finished episode's). Rollouts use only each
    slot's first episode, so they call this when a suite has it, and skip a reset (random
    draws, physics init) per env per step; ``episode_step`` picks it or falls back to ``step``."""

    @property
    def episode_step(self) -> Callable[[jax.Array, Any, jax.Array], tuple]:
        """The step for loops that mask each slot after its first episode."""
        return self.step if self.step_without_reset is None else self.step_without_reset

    @property
    def discrete(self) -> bool:
        """True for a ``gymnasium.spaces.Discrete`` action space, False for a ``Box``."""
        return isinstance(self.action_space, gymnasium.spaces.Discrete)

    @property
    def action_size(self) -> int:
        """Number of policy outputs: logits for discrete actions, means for continuous ones."""
        if self.discrete:
            return int(self.action_space.n)
        return int(np.prod(self.action_space.shape))


def check_env_params(
    env_id: str, params: Any, env_params: dict, episode_limit_field: Optional[str] = None
) -> None:
    """Raise a one-line ``ValueError`` if ``env_params`` names a field that the suite's params
    dataclass ``params`` lacks, or sets ``episode_limit_field`` (the suite's own episode limit,
    which ``max_episode_steps=`` sets instead, so that the Task's truncation agrees with it)."""
    fields = set(params.__dataclass_fields__)
    unknown = set(env_params) - fields
    if unknown:
        raise ValueError(f"{env_id} has no env params {sorted(unknown)}; known: {sorted(fields)}.")
    if episode_limit_field is not None and episode_limit_field in env_params:
        raise ValueError(
            f"{env_id}: pass max_episode_steps= instead of {episode_limit_field}=."
        )


def check_action(env_id: str, space: gymnasium.spaces.Space, action: Any) -> jax.Array:
    """Reject actions of the wrong shape or dtype while tracing; reject concrete bad values.

    Values of traced actions cannot be seen at trace time; policy heads keep them in range.
    """
    action = jnp.asarray(action)
    if isinstance(space, gymnasium.spaces.Discrete):
        if action.shape != () or not jnp.issubdtype(action.dtype, jnp.integer):
            raise ValueError(
                f"{env_id}: the action must be an integer scalar (Discrete({space.n})), got "
                f"shape {action.shape} dtype {action.dtype}."
            )
        if not isinstance(action, jax.core.Tracer):
            value = int(action)
            if not space.start <= value < space.start + space.n:
                raise ValueError(
                    f"{env_id}: action {value} is outside Discrete({space.n}) "
                    f"(valid: {space.start}..{space.start + space.n - 1})."
                )
        return action
    if isinstance(space, gymnasium.spaces.Box):
        if action.shape != space.shape or not jnp.issubdtype(action.dtype, jnp.floating):
            raise ValueError(
                f"{env_id}: the action must be a float array of shape {space.shape}, got shape "
                f"{action.shape} dtype {action.dtype}."
            )
        if not isinstance(action, jax.core.Tracer):
            values = np.asarray(action)
            if np.any(values < space.low) or np.any(values > space.high) or np.any(np.isnan(values)):
                raise ValueError(
                    f"{env_id}: action {values.tolist()} is outside the action space bounds "
                    f"[{space.low.tolist()}, {space.high.tolist()}]."
                )
        return action
    return action
