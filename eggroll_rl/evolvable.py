"""Which part of a model evolves: the parameters, never its statistics, RNG counters or caches.

A strategy's ``init`` accepts what users already hold: a pytree of parameters, a linen
variables dict from ``model.init`` (``{"params": ..., "batch_stats": ...}``), or a Flax NNX
``nnx.Module``. Only the parameters (linen's ``params`` collection, NNX's ``nnx.Param`` state)
get noise and updates; everything else is carried unchanged and handed back to the model at
every apply, so BatchNorm statistics, dropout RNG state and caches are never perturbed.
``Split`` holds the two parts; ``user_view`` rebuilds what the user's ``apply_fn`` expects:
the variables dict for linen, the module itself (``nnx.merge``) for NNX.
"""

from __future__ import annotations

from typing import Any, Optional

import jax
from flax import struct


@struct.dataclass
class Split:
    """A model's evolved ``params`` and the ``rest`` passed through unchanged.

    ``graphdef`` is the NNX graph definition (None for linen variables); ``collections`` is
    the linen collections' order, so that ``user_view`` rebuilds the dict as ``model.init``
    made it.
    """

    params: Any
    rest: Any
    graphdef: Any = struct.field(pytree_node=False, default=None)
    collections: tuple = struct.field(pytree_node=False, default=())

    @property
    def framework(self) -> str:
        return "linen" if self.graphdef is None else "nnx"


def _is_nnx_module(value: Any) -> bool:
    try:
        from flax import nnx
    except ImportError:  # pragma: no cover - flax always ships nnx from 0.8
        return False
    return isinstance(value, nnx.Module)


def _is_linen_variables(value: Any) -> bool:
    return (
        isinstance(value, dict) or type(value).__name__ == "FrozenDict"
    ) and "params" in value and len(value) > 1


def split(model: Any) -> Any:
    """``model`` as a strategy holds it: a ``Split`` for linen variables with collections other
    than ``params`` and for NNX modules, else unchanged (a plain pytree of parameters, or a
    linen ``{"params": ...}`` dict, which evolves whole).

    NNX: ``nnx.split(model, nnx.Param, ...)``; only ``nnx.Param`` state evolves.
    """
    if _is_nnx_module(model):
        from flax import nnx

        graphdef, params, rest = nnx.split(model, nnx.Param, ...)
        return Split(params=params, rest=rest, graphdef=graphdef)
    if _is_linen_variables(model):
        rest = {name: value for name, value in model.items() if name != "params"}
        return Split(params=model["params"], rest=rest, collections=tuple(model.keys()))
    return model


def evolved(mean: Any) -> Any:
    """The pytree that gets noise and updates."""
    return mean.params if isinstance(mean, Split) else mean


def with_evolved(mean: Any, params: Any) -> Any:
    """``mean`` with its evolved part replaced by ``params`` (same structure)."""
    return mean.replace(params=params) if isinstance(mean, Split) else params


def user_view(mean: Any, params: Optional[Any] = None) -> Any:
    """What ``apply_fn`` receives: the variables dict (linen), the module (NNX), or the pytree.

    ``params`` (default: ``mean``'s own) replaces the evolved part.
    """
    if not isinstance(mean, Split):
        return mean if params is None else params
    params = mean.params if params is None else params
    if mean.graphdef is None:
        parts = dict(mean.rest, params=params)
        return {name: parts[name] for name in mean.collections}
    from flax import nnx

    return nnx.merge(mean.graphdef, params, mean.rest, copy=True)


def framework(mean: Any) -> str:
    """"nnx" for an NNX module, else "linen" (the fixes a warning suggests depend on it)."""
    return mean.framework if isinstance(mean, Split) else "linen"


def leaf_paths(mean: Any) -> list[str]:
    """Readable paths of the evolved leaves, in leaf order: ``params/Dense_0/kernel`` for
    linen, ``linear1/kernel`` for NNX, ``w`` or ``layers/0/b`` for a plain pytree."""
    prefix = "params/" if isinstance(mean, Split) and mean.graphdef is None else ""
    paths = []
    for path, _ in jax.tree_util.tree_leaves_with_path(evolved(mean)):
        parts = []
        for entry in path:
            if isinstance(entry, jax.tree_util.DictKey):
                parts.append(str(entry.key))
            elif isinstance(entry, jax.tree_util.SequenceKey):
                parts.append(str(entry.idx))
            elif isinstance(entry, jax.tree_util.GetAttrKey):
                if entry.name != "value":  # an NNX Variable's payload
                    parts.append(entry.name)
            else:
                parts.append(str(entry))
        paths.append(prefix + "/".join(parts))
    return paths
