"""A user's own Flax module as the trainers hold it: init, apply, deployable state, checks.

``agents.train(algo, env, network=module)`` trains a ``flax.linen.Module`` or ``flax.nnx.Module``
instance the user already has (a PureJaxRL-style ``ActorCritic``, a CNN, ...) with no adapter.
``UserNetwork`` is the one place that knows how each framework is initialised, applied and
written out, so the ES and PPO trainers, the exported policy and ``load`` agree:

- linen: ``module.init(key, zeros((1, *obs_shape)))``: a *batched* dummy observation, so a
  module that flattens with ``x.reshape((x.shape[0], -1))`` works; applied as ``module.apply``
  to observations ``(batch, *obs_shape)``. The whole variables dict is what evolves (its
  ``params`` collection only; other collections pass through, ``eggroll_rl.evolvable``).
- NNX: the module's own state is the starting point, for every seed; applied as
  ``module(obs)``; only ``nnx.Param`` state evolves.

What is deployed and saved is the module's state as a pure dict of arrays: the linen variables
dict, or NNX's ``nnx.to_pure_dict`` of the module's state less its RNG state (keys and
counters, which a deterministic policy does not use and which are not plain arrays);
``from_state_dict`` rebuilds what the module is applied with, given the module (a saved policy
records only its class name), its RNG state taken from that module.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp


def call_module(module: Any, obs: jax.Array) -> Any:
    """The apply function of an NNX module: ``module(obs)``. One module-level function, so
    every rollout of the same model compiles once (jit caches compare it by identity)."""
    return module(obs)


def is_nnx_module(value: Any) -> bool:
    from flax import nnx

    return isinstance(value, nnx.Module)


def is_user_module(value: Any) -> bool:
    """A ``flax.linen.Module`` or ``flax.nnx.Module`` instance other than our
    ``eggroll_rl.networks.Policy`` (which ``train`` builds from its hidden widths)."""
    import flax.linen as nn

    from eggroll_rl.networks import Policy

    return (isinstance(value, nn.Module) and not isinstance(value, Policy)) or is_nnx_module(value)


def module_name(module: Any) -> str:
    """``module.qualname`` of the module's class, e.g. ``my_agents.ActorCritic``."""
    cls = type(module)
    return f"{cls.__module__}.{cls.__qualname__}"


@dataclasses.dataclass(frozen=True, eq=False)
class UserNetwork:
    """A user's module and how its outputs are read (``envs.actions.POLICY_OUTPUTS``).

    Attributes:
        module: a ``flax.linen.Module`` or ``flax.nnx.Module`` instance, applied to a batch of
            observations ``(batch, *obs_shape)``.
        outputs: what it returns: "auto" (told from types and shapes), "head", "head_value",
            "head_log_std", "head_log_std_value" or "distribution".
    """

    module: Any
    outputs: str = "auto"

    def __post_init__(self):
        if not is_user_module(self.module):
            raise ValueError(
                f"network must be a flax.linen.Module or flax.nnx.Module instance, got "
                f"{type(self.module).__name__}."
            )

    @property
    def framework(self) -> str:
        return "nnx" if is_nnx_module(self.module) else "linen"

    @property
    def name(self) -> str:
        return module_name(self.module)

    @property
    def apply_fn(self):
        """``apply_fn(variables, obs)``: ``module.apply`` (linen) or ``call_module`` (NNX)."""
        return call_module if self.framework == "nnx" else self.module.apply

    def init(self, key: jax.Array, obs_shape: tuple) -> Any:
        """What the module is applied with: linen variables from ``module.init(key, zeros((1,
        *obs_shape)))``, or (NNX) the module itself, whatever ``key``."""
        if self.framework == "nnx":
            return self.module
        return self.module.init(key, jnp.zeros((1, *obs_shape), jnp.float32))

    # ---- deployable state: a pure dict of arrays ------------------------------------------
    def state_dict(self, variables: Any) -> dict:
        """The pure dict of arrays that is deployed and saved (linen: the variables dict)."""
        if self.framework == "nnx":
            from flax import nnx

            return nnx.to_pure_dict(nnx.state(variables, nnx.Not(nnx.RngState)))
        from flax.core import unfreeze

        return unfreeze(variables)

    def from_state_dict(self, state: Any) -> Any:
        """What ``apply_fn`` takes, from ``state_dict``'s output (or a restored copy)."""
        if self.framework == "linen":
            return state
        from flax import nnx

        graphdef, template, rngs = nnx.split(self.module, nnx.Not(nnx.RngState), ...)
        nnx.replace_by_pure_dict(template, state)
        return nnx.merge(graphdef, template, rngs)

    def apply_state_dict(self, state: Any, obs: jax.Array) -> Any:
        return self.apply_fn(self.from_state_dict(state), obs)

    def expected_state_dict(self, obs_shape: tuple) -> Any:
        """Shapes (``jax.ShapeDtypeStruct``) of ``state_dict``'s leaves, traced, not run."""
        if self.framework == "nnx":
            return jax.eval_shape(lambda: self.state_dict(self.module))
        return jax.eval_shape(lambda key: self.state_dict(self.init(key, obs_shape)),
                              jax.random.key(0))

    # ---- PPO: gradients flow to the parameters only ---------------------------------------
    @functools.cached_property
    def _nnx_parts(self):
        from flax import nnx

        return nnx.split(self.module, nnx.Param, ...)

    def trainable(self, variables: Any) -> Any:
        """The parameters of ``init``'s output, for gradient training; raises ``ValueError``
        when the module holds other state (batch statistics, RNG counters), which PPO does
        not carry."""
        if self.framework == "nnx":
            _, params, rest = self._nnx_parts
            if jax.tree_util.tree_leaves(rest):
                raise ValueError(
                    f"ppo trains modules whose only state is their parameters; {self.name} also "
                    "holds other NNX state (batch statistics, RNG counters or caches). Train it "
                    "with eggroll/openes, or remove that state."
                )
            return params
        others = sorted(set(variables) - {"params"})
        if others:
            raise ValueError(
                f"ppo trains modules whose only state is their parameters; {self.name} also has "
                f"the linen collections {others}. Train it with eggroll/openes, or remove them."
            )
        return variables["params"]

    def with_trainable(self, params: Any) -> Any:
        """What ``apply_fn`` takes, from ``trainable``'s output (possibly updated)."""
        if self.framework == "nnx":
            from flax import nnx

            graphdef, _, rest = self._nnx_parts
            return nnx.merge(graphdef, params, rest)
        return {"params": params}

    def describe(self, task: Any) -> dict:
        """The JSON-able record of the network for ``policy.json``: the class name, framework,
        output convention and the spaces it was trained for."""
        return {
            "module": self.name,
            "framework": self.framework,
            "outputs": self.outputs,
            "action_size": int(task.action_size),
            "continuous": not task.discrete,
            "obs_shape": [int(size) for size in task.observation_space.shape],
        }
