"""Policy outputs -> valid actions: categorical for Discrete, clipped diagonal Gaussian for Box.

Policies return what their authors wrote them to return: logits or an action mean alone,
``(logits, value)`` or ``(mean, value)`` as actor-critics do (the value is ignored here),
``(mean, log_std)`` as ``eggroll_rl.networks.Policy`` does, ``(mean, log_std, value)``, or a
distribution object (distrax, TFP on JAX, or anything with ``sample(seed=...)``, ``mode()``,
``log_prob`` and ``entropy``), alone or as ``(distribution, value)`` as PureJaxRL's
actor-critics do. ``resolve_outputs`` says which one a policy follows, from the caller's word
or from the output's shapes checked against the action space, and raises when that cannot be
told apart rather than guess. The paper's ``deterministic_policy`` switch picks the mode
(argmax / mean) instead of sampling. Actions always come out inside the space, with the dtype
and shape ``Task.step`` checks.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Optional

import gymnasium
import jax
import jax.numpy as jnp


def select_action(
    space: gymnasium.spaces.Space,
    head: jax.Array,
    log_std: Optional[jax.Array],
    key: jax.Array,
    deterministic: bool,
) -> jax.Array:
    """One action for one policy output (vmap it for a batch)."""
    if isinstance(space, gymnasium.spaces.Discrete):
        index = jnp.argmax(head) if deterministic else jax.random.categorical(key, head)
        return (index + space.start).astype(jnp.int32)
    if isinstance(space, gymnasium.spaces.Box):
        mean = head.reshape(space.shape)
        if deterministic:
            action = mean
        else:
            std = jnp.exp(log_std.reshape(space.shape))
            action = mean + std * jax.random.normal(key, space.shape, mean.dtype)
        return jnp.clip(action, space.low, space.high).astype(space.dtype)
    raise ValueError(f"no policy head for action space {space!r}")


POLICY_OUTPUTS = (
    "auto", "head", "head_log_std", "head_value", "head_log_std_value", "distribution",
)
"""What a policy returns: "head" (logits or action mean alone), "head_log_std" (``(mean,
log_std)``, or ``(logits, None)``), "head_value" (``(logits, value)`` / ``(mean, value)``),
"head_log_std_value" (``(mean, log_std, value)``, or ``(logits, None, value)``),
"distribution" (a distribution object, or ``(distribution, value)``; see
``is_distribution``), or "auto" (told from the output's types and shapes, see
``resolve_outputs``). Acting ignores the value; PPO trains its critic on it."""


def is_distribution(value: Any) -> bool:
    """Whether ``value`` is an action distribution: duck-typed, it has ``sample`` (called as
    ``sample(seed=key)``), ``mode``, ``log_prob`` and ``entropy`` (distrax and TFP-on-JAX
    distributions do), and is not an array."""
    return not hasattr(value, "shape") and all(
        callable(getattr(value, name, None)) for name in ("sample", "mode", "log_prob", "entropy")
    )


def distribution_of(out: Any) -> Any:
    """The distribution of a "distribution" output: ``out`` itself, or the first of a pair."""
    return out[0] if isinstance(out, (tuple, list)) else out


def env_action(space: gymnasium.spaces.Space, raw: jax.Array, batch: tuple) -> jax.Array:
    """What the env receives for ``raw`` draws (or modes) of a distribution over a ``batch``.

    Args:
        space: the action space (Discrete or Box).
        raw: int indices ``batch`` (Discrete), or floats with ``prod(batch) * action_size``
            elements (Box; e.g. ``batch + (action_size,)``).
        batch: the leading axes, e.g. ``(members, episodes)`` or ``(num_envs,)``.

    Returns:
        int32 ``batch`` (index plus ``space.start``), or ``batch + space.shape`` clipped to the
        box in ``space.dtype``, as ``select_action`` gives.
    """
    if isinstance(space, gymnasium.spaces.Discrete):
        if tuple(raw.shape) != tuple(batch):
            raise ValueError(
                f"the policy's distribution gave actions of shape {tuple(raw.shape)}, expected "
                f"{tuple(batch)} (one index per observation): use a categorical over the "
                f"{space.n} actions."
            )
        return (raw + space.start).astype(jnp.int32)
    if isinstance(space, gymnasium.spaces.Box):
        want = tuple(batch) + tuple(space.shape)
        if math.prod(raw.shape) != math.prod(want):
            raise ValueError(
                f"the policy's distribution gave actions of shape {tuple(raw.shape)}, expected "
                f"{want} (one action of shape {space.shape} per observation)."
            )
        return jnp.clip(raw.reshape(want), space.low, space.high).astype(space.dtype)
    raise ValueError(f"no policy head for action space {space!r}")


def _describe(out: Any) -> str:
    if is_distribution(out):
        return f"a {type(out).__name__} distribution"
    if isinstance(out, (tuple, list)):
        return f"a {type(out).__name__} of {len(out)} (" + ", ".join(_describe(o) for o in out) + ")"
    shape = getattr(out, "shape", None)
    return f"an array of shape {tuple(shape)}" if shape is not None else type(out).__name__


def _check_convention(outputs: str) -> None:
    if outputs not in POLICY_OUTPUTS:
        raise ValueError(f"outputs must be one of {POLICY_OUTPUTS}, got {outputs!r}.")


def resolve_outputs(
    outputs: str,
    space: gymnasium.spaces.Space,
    out: Any,
    out_at_other_batch: Optional[Callable[[], Any]] = None,
) -> str:
    """The convention (``POLICY_OUTPUTS`` less "auto") that the policy output ``out`` follows.

    ``out`` is the output (shapes suffice: ``jax.eval_shape``) for observations with leading
    axes ``(members, episodes)``; ``out_at_other_batch()`` gives it for one more episode per
    member. With ``outputs="auto"``: a distribution, or a pair whose first is one, is
    "distribution"; a triple of (head, log-std or None, value) is "head_log_std_value"; an array
    is the head; ``(head, None)`` is the head; for discrete actions the second of a pair is
    ignored (a value); for continuous actions it is a log-std if it does not change with the
    number of observations (a parameter, like ``networks.Policy``'s), a value if it does and
    has no action axis, a state-dependent log-std if it does and ends with the action size
    (> 1). A per-observation output of size 1 with a 1-D action is either: that raises and
    asks for ``outputs``.
    """
    _check_convention(outputs)
    sequence = isinstance(out, (tuple, list))
    if is_distribution(out) or (sequence and len(out) == 2 and is_distribution(out[0])):
        if outputs not in ("auto", "distribution"):
            raise ValueError(
                f"outputs={outputs!r} but the policy returned {_describe(out)}: use "
                "outputs='distribution' (or 'auto')."
            )
        return "distribution"
    if outputs == "distribution":
        raise ValueError(
            f"outputs='distribution' but the policy returned {_describe(out)}, not a "
            "distribution (an object with sample(seed=...), mode(), log_prob and entropy) or "
            "(distribution, value)."
        )
    triple = sequence and len(out) == 3 and hasattr(out[0], "shape") and hasattr(out[2], "shape")
    if triple and outputs in ("auto", "head_log_std_value"):
        return "head_log_std_value"
    if outputs == "head_log_std_value":
        raise ValueError(
            f"outputs='head_log_std_value' but the policy returned {_describe(out)}, not "
            "(head, log_std, value)."
        )
    pair = sequence and len(out) == 2 and hasattr(out[0], "shape")
    if not pair and not hasattr(out, "shape"):
        raise ValueError(
            f"the policy returned {_describe(out)}; expected an array of logits or action means, "
            "a pair (logits, value), (mean, value) or (mean, log_std), a triple (mean, log_std, "
            "value), or a distribution (alone or with a value). Return one of those and say "
            f"which with outputs= one of {POLICY_OUTPUTS[1:]}."
        )
    if outputs == "head":
        if pair:
            raise ValueError(
                f"outputs='head' but the policy returned {_describe(out)}: use outputs="
                "'head_value' for (head, value) or 'head_log_std' for (mean, log_std)."
            )
        return "head"
    if outputs in ("head_log_std", "head_value"):
        if not pair:
            raise ValueError(
                f"outputs={outputs!r} but the policy returned {_describe(out)}, not a pair: "
                "use outputs='head'."
            )
        return outputs
    if not pair:
        return "head"
    second = out[1]
    if second is None or isinstance(space, gymnasium.spaces.Discrete):
        return "head_log_std" if second is None else "head_value"
    action_size = math.prod(space.shape)
    batch = tuple(out[0].shape[:2])
    other = _second_at_other_batch(out_at_other_batch)
    shape = tuple(second.shape)
    if other is not None and tuple(other.shape) == shape:
        return "head_log_std"  # independent of the observations: a parameter
    if shape in ((action_size,), (batch[0], action_size)) and shape != batch:
        return "head_log_std"  # a parameter, per member or shared
    if shape in (batch, batch + (1,)) and action_size != 1:
        return "head_value"
    if shape == batch:
        return "head_value"
    if shape == batch + (action_size,) and action_size != 1:
        return "head_log_std"
    if shape == batch + (1,):
        raise ValueError(
            "the policy returned (mean, x) with x of shape (..., 1) for a 1-D action: x may be "
            "a value or a state-dependent log-std. Say which: outputs='head_value' or "
            "outputs='head_log_std'."
        )
    raise ValueError(
        f"the policy returned {_describe(out)} for observations of batch shape {batch} and an "
        f"action of size {action_size}: its second output is neither a log-std ((A,) or "
        "(..., A)) nor a value ((...,) or (..., 1)). Say which with outputs=."
    )


def resolve_batch_outputs(
    outputs: str, space: gymnasium.spaces.Space, apply: Callable, obs: Any
) -> str:
    """``resolve_outputs`` for one policy applied to one batch: ``apply(obs)`` with ``obs``
    (or its shape) ``(batch, *obs_shape)``, as PPO and a saved policy apply it. Traced
    abstractly (``jax.eval_shape``): nothing is computed."""
    obs = jax.ShapeDtypeStruct(tuple(obs.shape), obs.dtype)
    more = jax.ShapeDtypeStruct((obs.shape[0] + 1,) + tuple(obs.shape[1:]), obs.dtype)

    def stacked(x):  # a member axis of 1, as resolve_outputs expects
        return jax.tree_util.tree_map(
            lambda y: y if is_distribution(y) else jnp.asarray(y)[None], apply(x),
            is_leaf=is_distribution,
        )

    return resolve_outputs(
        outputs, space, jax.eval_shape(stacked, obs), lambda: jax.eval_shape(stacked, more)
    )


def _second_at_other_batch(out_at_other_batch) -> Any:
    """The second output for one more observation, or None if the policy cannot take that
    batch (one written for a fixed number of rows): the shape rules then decide alone."""
    if out_at_other_batch is None:
        return None
    try:
        return out_at_other_batch()[1]
    except Exception:  # any failure to trace at that batch only means "not known"
        return None


def split_outputs(out: Any, convention: str) -> tuple[Any, Any]:
    """``(head, log_std or None)`` from a policy output following ``convention`` (not
    "distribution": act on those with ``distribution_of``)."""
    if convention == "distribution":
        raise ValueError("a distribution has no (head, log_std): use distribution_of(out).")
    if convention == "head":
        return out, None
    if convention == "head_value":
        return out[0], None
    return out[0], out[1]


def value_of(out: Any, convention: str) -> Any:
    """The value (critic) output of a policy output following ``convention``, or None when
    the convention has none ("head", "head_log_std", a distribution alone)."""
    if convention in ("head_value",) or (
        convention == "distribution" and isinstance(out, (tuple, list))
    ):
        return out[1]
    if convention == "head_log_std_value":
        return out[2]
    return None
