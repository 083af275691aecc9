"""Checkpoints with orbax: a killed run resumes where it stopped, and bit-identically.

The whole training state (params, optimiser and ES state, obs-normalisation statistics, RNG
keys, counters) is one pytree, saved every few chunks. Typed PRNG keys are stored as their raw
key data. Beside each checkpoint ``N`` sits ``N.sha256``, the digest of its arrays, written
atomically once orbax has finished; a restore recomputes it, so flipped bytes that orbax itself
decodes without complaint are caught too. A checkpoint that fails to restore or to verify (a
crash while writing, a corrupt file) is skipped with a one-line warning and the one before it is
used, so finished work is never lost to a bad write. A failed write raises ``RunWriteError``
naming the folder and leaves the older checkpoints as they were.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import pathlib
import warnings
from typing import Any, Optional

import jax
import numpy as np
import orbax.checkpoint as ocp

from eggroll_rl.agents.faults import RunWriteError

# Checkpoint steps count iterations (generations/updates) done; folders written before this
# file existed count chunks (see ``Checkpointer.step_unit``).
_FORMAT = "FORMAT.json"


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


def digest(tree: Any) -> Optional[str]:
    """sha256 of a pytree's arrays (path, dtype, shape and bytes of every leaf), or None when
    some leaf is not fully held by this process (multi-host shards: not verified)."""
    hasher = hashlib.sha256()
    for path, leaf in jax.tree_util.tree_leaves_with_path(tree):
        if isinstance(leaf, jax.Array) and not leaf.is_fully_addressable:
            if not leaf.is_fully_replicated:
                return None
            leaf = leaf.addressable_data(0)
        array = np.ascontiguousarray(np.asarray(leaf))
        hasher.update(f"{jax.tree_util.keystr(path)}|{array.dtype.str}|{array.shape}|".encode())
        hasher.update(array.tobytes())
    return hasher.hexdigest()


def write_atomically(path: pathlib.Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file, fsync and rename: readers see the
    old file or the whole new one, never a part."""
    path = pathlib.Path(path)
    temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(temporary, "w") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def has_checkpoint(run_dir: os.PathLike) -> bool:
    """Whether ``run_dir/checkpoints`` holds at least one finished checkpoint (without
    restoring it: ``Checkpointer.restore_latest`` says whether one is usable)."""
    folder = pathlib.Path(run_dir) / "checkpoints"
    if not folder.is_dir():
        return False
    return any(path.name.isdigit() and path.is_dir() for path in folder.iterdir())


def os_error_in(error: BaseException) -> Optional[OSError]:
    """The first ``OSError`` in ``error``'s chain of causes (itself included), or None."""
    seen = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, OSError):
            return error
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return None


def describe_os_error(error: OSError) -> str:
    """``strerror`` (or the errno's name), without the path and traceback noise."""
    text = error.strerror or (errno.errorcode.get(error.errno or 0) if error.errno else None)
    return text or str(error) or type(error).__name__


class Checkpointer:
    """Numbered checkpoints of one training state under ``run_dir/checkpoints``; the step is
    the number of iterations (generations/updates) done."""

    def __init__(self, run_dir: pathlib.Path, max_to_keep: int = 3):
        self.directory = pathlib.Path(run_dir).resolve() / "checkpoints"
        try:
            self._manager = ocp.CheckpointManager(
                self.directory,
                options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True),
            )
        except OSError as error:
            raise RunWriteError(
                f"cannot create the checkpoint folder {self.directory}: "
                f"{describe_os_error(error)}; choose a writable run folder."
            ) from error
        self._primary = jax.process_index() == 0

    @property
    def step_unit(self) -> str:
        """What the steps count: "iteration" (this format), or "chunk" for a folder written by
        an older version that holds checkpoints but no format file."""
        if (self.directory / _FORMAT).exists() or not self.steps():
            return "iteration"
        return "chunk"

    def save(self, step: int, state: Any) -> None:
        """Write ``state`` (any pytree of arrays, typed PRNG keys included) as checkpoint
        ``step``, wait until it is on disk, then write its digest; the oldest beyond
        ``max_to_keep`` are removed. Raises ``RunWriteError`` (naming the folder) if the disk
        refuses any of it; the checkpoints before stay intact."""
        storable = _to_storable(state)
        try:
            if self._primary and not (self.directory / _FORMAT).exists():
                write_atomically(self.directory / _FORMAT, json.dumps({"step": "iteration"}))
            if step in self._manager.all_steps():  # a leftover that did not restore: replace it
                self._manager.delete(step)
            self._manager.save(step, args=ocp.args.StandardSave(storable), force=True)
            self._manager.wait_until_finished()
            if self._primary:
                checksum = digest(storable)
                if checksum is not None:
                    write_atomically(self._digest_path(step), checksum + "\n")
                self._drop_stale_digests()
        except Exception as error:
            cause = os_error_in(error)
            if cause is None:
                raise
            kept = [s for s in self._steps_quietly() if s != step]
            raise RunWriteError(
                f"could not write checkpoint {step} to {self.directory}: "
                f"{describe_os_error(cause)}; "
                + (f"checkpoint {kept[-1]} is intact" if kept else "no earlier checkpoint exists")
                + " (free space or fix the folder, then resume the run)."
            ) from error

    def _digest_path(self, step: int) -> pathlib.Path:
        return self.directory / f"{step}.sha256"

    def _drop_stale_digests(self) -> None:
        steps = set(self._manager.all_steps())  # as the manager left them (no directory re-read)
        for path in self.directory.glob("*.sha256"):
            if path.stem.isdigit() and int(path.stem) not in steps:
                path.unlink(missing_ok=True)

    def _steps_quietly(self) -> list[int]:
        try:
            return self.steps()
        except Exception:
            return []

    def steps(self) -> list[int]:
        """The steps of the checkpoints on disk now (re-read from the directory), ascending."""
        self._manager.reload()
        return sorted(self._manager.all_steps())

    def restore_latest(self, template: Any) -> tuple[Optional[int], Any]:
        """``(step, state)`` of the newest checkpoint that restores and matches its digest, or
        ``(None, template)`` when none does (each one skipped is named in a warning)."""
        abstract = jax.tree_util.tree_map(
            lambda x: jax.ShapeDtypeStruct(np.shape(x), np.asarray(x).dtype),
            _to_storable(template),
        )
        for step in reversed(self.steps()):
            try:
                stored = self._manager.restore(step, args=ocp.args.StandardRestore(abstract))
            except Exception as error:  # a partial or corrupt write: fall back to the one before
                self._skip(step, f"could not be restored ({error!r:.200})")
                continue
            expected = self._expected_digest(step)
            if expected is not None and digest(stored) not in (None, expected):
                self._skip(step, "does not match its checksum (corrupt data)")
                continue
            return step, _from_storable(stored, template)
        return None, template

    def discard_after(self, step: Optional[int]) -> None:
        """Delete the checkpoints newer than ``step`` (all of them for None): after a restore
        fell back past them, they are the ones that failed, and a resumed run rewrites them."""
        for newer in self.steps():
            if step is None or newer > step:
                self._manager.delete(newer)
                self._digest_path(newer).unlink(missing_ok=True)

    def keep_only(self, step: int) -> None:
        """Delete every checkpoint but ``step``."""
        for other in self.steps():
            if other != step:
                self._manager.delete(other)
                self._digest_path(other).unlink(missing_ok=True)

    def _expected_digest(self, step: int) -> Optional[str]:
        try:
            return self._digest_path(step).read_text().strip() or None
        except OSError:
            return None

    def _skip(self, step: int, why: str) -> None:
        message = " ".join(f"checkpoint {step} in {self.directory} {why}".split())
        warnings.warn(f"{message}; falling back to the previous one.", stacklevel=3)

    def close(self) -> None:
        """Release the checkpoint manager (its background threads); call once at the end."""
        try:
            self._manager.close()
        except Exception as error:
            if os_error_in(error) is None:
                raise
