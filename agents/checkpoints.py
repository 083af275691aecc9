"""Checkpoints with orbax: a killed run resumes where it stopped, and bit-identically.

The whole training state (params, optimiser and ES state, obs-normalisation statistics, RNG
keys, counters) is one pytree, saved every few chunks. Typed PRNG keys are stored as their raw
key data. A checkpoint that fails to restore (a crash while writing, a corrupt file) is skipped
with a warning and the one before it is used, so finished work is never lost to a bad write.
"""

from __future__ import annotations

import pathlib
import warnings
from typing import Any, Optional

import jax
import numpy as np
import orbax.checkpoint as ocp


def _is_key(leaf: Any) -> bool:
    return hasattr(leaf, "dtype") and jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key)


def _to_storable(state: Any) -> Any:
    return jax.tree_util.tree_map(
        lambda leaf: jax.random.key_data(leaf) if _is_key(leaf) else leaf, state
    )


def _from_storable(stored: Any, template: Any) -> Any:
    return jax.tree_util.tree_map(
        lambda leaf, like: jax.random.wrap_key_data(leaf, impl=jax.random.key_impl(like))
        if _is_key(like)
        else leaf,
        stored,
        template,
    )


class Checkpointer:
    """Numbered checkpoints (by chunk) of one training state under ``run_dir/checkpoints``."""

    def __init__(self, run_dir: pathlib.Path, max_to_keep: int = 3):
        self.directory = pathlib.Path(run_dir).resolve() / "checkpoints"
        self._manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True),
        )

    def save(self, step: int, state: Any) -> None:
        """Write ``state`` (any pytree of arrays, typed PRNG keys included) as checkpoint
        ``step`` and wait until it is on disk; the oldest beyond ``max_to_keep`` are removed."""
        self._manager.save(step, args=ocp.args.StandardSave(_to_storable(state)))
        self._manager.wait_until_finished()

    def steps(self) -> list[int]:
        """The steps of the checkpoints on disk now (re-read from the directory), ascending."""
        self._manager.reload()
        return sorted(self._manager.all_steps())

    def restore_latest(self, template: Any) -> tuple[Optional[int], Any]:
        """``(step, state)`` of the newest checkpoint that restores, or ``(None, template)``."""
        abstract = jax.tree_util.tree_map(
            lambda x: jax.ShapeDtypeStruct(np.shape(x), np.asarray(x).dtype),
            _to_storable(template),
        )
        for step in reversed(self.steps()):
            try:
                stored = self._manager.restore(step, args=ocp.args.StandardRestore(abstract))
            except Exception as error:  # a partial or corrupt write: fall back to the one before
                warnings.warn(
                    f"checkpoint {step} in {self.directory} could not be restored ({error!r:.200}); "
                    "falling back to the previous one.",
                    stacklevel=2,
                )
                continue
            return step, _from_storable(stored, template)
        return None, template

    def close(self) -> None:
        """Release the checkpoint manager (its background threads); call once at the end."""
        self._manager.close()
