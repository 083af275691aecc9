"""Who owns a run folder: one run per folder, one process per run, checked before compiling.

A run folder (``config.json``, metrics, checkpoints, the exported policy) describes one run.
A fresh run that writes into a folder holding another run would mix the two (the old
checkpoints would later be restored under the new metrics), and two processes writing one
folder duplicate and lose metric rows. So a fresh run needs a folder with no run in it (or an
explicit overwrite, which deletes the old run's files first), and a process holds the folder's
lock file, ``run.lock`` (its pid and host), while it trains. A lock left by a process that no
longer exists on this host is stale: it is taken over with a warning. A lock from another host
cannot be checked from here, so it is refused with the command that removes it.
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import socket
import tempfile
import warnings
from typing import Optional, Union

LOCK_FILE = "run.lock"
# What a run writes into its folder (agents.loop, agents.run_log, agents.checkpoints, the
# export): the files an overwrite deletes, and the ones whose presence means "a run lives here".
RUN_FILES = ("config.json", "metrics.jsonl", "metrics.csv", "checkpoints", "policy",
             "policy_int8.npz", "curve.png", "tensorboard")
# Their subset that only a run that started training leaves behind.
RUN_MARKERS = ("config.json", "metrics.jsonl", "metrics.csv", "checkpoints", "policy",
               "policy_int8.npz")

PathLike = Union[str, os.PathLike]
_HELD: set[str] = set()  # lock files this process holds (a pid reused after a restart is not us)


class RunFolderError(ValueError):
    """A run folder this run may not write into (not writable, or holding another run)."""


class RunFolderBusy(RunFolderError):
    """Another live process holds the run folder's lock."""


def check_writable(run_dir: PathLike) -> None:
    """Raise ``RunFolderError`` (one line) unless ``run_dir`` is, or can be created as, a folder
    this process can write into. Nothing is left behind: the check creates and removes one
    empty folder in ``run_dir`` or its nearest existing parent."""
    run_dir = existing = pathlib.Path(run_dir)
    try:
        if run_dir.exists() and not run_dir.is_dir():
            raise RunFolderError(
                f"the run folder {run_dir} is a file: give a folder to write the run into."
            )
        existing = run_dir
        while not existing.exists() and existing != existing.parent:
            existing = existing.parent
        if not existing.is_dir():
            raise RunFolderError(
                f"cannot create the run folder {run_dir}: {existing} is a file, not a folder."
            )
        tempfile.TemporaryDirectory(prefix=".write-check-", dir=existing).cleanup()
    except OSError as error:
        reason = error.strerror or str(error)
        raise RunFolderError(
            f"cannot write the run folder {run_dir}: {reason} ({existing}); "
            "choose a folder you can write to."
        ) from None


def run_files(run_dir: PathLike) -> list[str]:
    """The names in ``RUN_MARKERS`` present in ``run_dir`` (an empty ``checkpoints/`` does not
    count): non-empty means the folder holds a run."""
    run_dir = pathlib.Path(run_dir)
    if not run_dir.is_dir():
        return []
    found = []
    for name in RUN_MARKERS:
        path = run_dir / name
        if path.is_dir() and not any(path.iterdir()):
            continue
        if path.exists():
            found.append(name)
    return found


def checkpoint_steps(run_dir: PathLike) -> list[int]:
    """The checkpoint steps saved in ``run_dir/checkpoints`` (orbax step folders), ascending;
    unfinished writes (orbax's temporary folders) do not count."""
    folder = pathlib.Path(run_dir) / "checkpoints"
    if not folder.is_dir():
        return []
    return sorted(
        int(path.name) for path in folder.iterdir() if path.is_dir() and path.name.isdigit()
    )


def clear(run_dir: PathLike) -> None:
    """Delete what a run wrote into ``run_dir`` (``RUN_FILES``), nothing else."""
    run_dir = pathlib.Path(run_dir)
    for name in RUN_FILES:
        path = run_dir / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists() or path.is_symlink():
            path.unlink()


def check_fresh(run_dir: PathLike, overwrite: bool) -> None:
    """Raise ``RunFolderError`` (one line) unless a fresh run may write into ``run_dir``: writable,
    not locked by a live process, and holding no run unless ``overwrite``."""
    check_writable(run_dir)
    check_unlocked(run_dir)
    check_no_run(run_dir, overwrite)


def check_no_run(run_dir: PathLike, overwrite: bool) -> None:
    """Raise ``RunFolderError`` (one line) if ``run_dir`` holds a run, unless ``overwrite``."""
    found = run_files(run_dir)
    if found and not overwrite:
        raise RunFolderError(
            f"{run_dir} already holds a run ({', '.join(found)}): continue it with --resume "
            f"{run_dir} (API: resume), start it over with --overwrite (API: overwrite=True; "
            "deletes its checkpoints, metrics and policy), or pick another --out."
        )


def _key(path: pathlib.Path) -> str:
    return os.path.abspath(path)


def _me() -> dict:
    return {"pid": os.getpid(), "host": socket.gethostname()}


def _read(path: pathlib.Path) -> Optional[dict]:
    """The lock's owner ``{"pid", "host"}``; ``{}`` if unreadable; None if there is no lock."""
    try:
        owner = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {}
    if not isinstance(owner, dict) or not isinstance(owner.get("pid"), int):
        return {}
    return owner


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: it exists, owned by someone else
        return True
    return True


def _stale(path: pathlib.Path, owner: dict) -> bool:
    """True when the lock's owner is certainly gone: an unreadable lock, or a pid of this host
    that is not running (or is this process, which does not hold it: a reused pid)."""
    if not owner:
        return True
    if owner.get("host") != socket.gethostname():
        return False
    if owner["pid"] == os.getpid():
        return _key(path) not in _HELD
    return not _alive(owner["pid"])


def _busy_message(run_dir: pathlib.Path, path: pathlib.Path, owner: dict) -> str:
    return (
        f"{run_dir} is in use by process {owner.get('pid')} on {owner.get('host')} (lock file "
        f"{path}): wait for it to finish or pick another --out; if that process is gone, "
        f"delete {path}."
    )


def check_unlocked(run_dir: PathLike) -> None:
    """Raise ``RunFolderBusy`` (one line) if a live process holds ``run_dir``'s lock."""
    run_dir = pathlib.Path(run_dir)
    path = run_dir / LOCK_FILE
    owner = _read(path)
    if owner is not None and not _stale(path, owner):
        raise RunFolderBusy(_busy_message(run_dir, path, owner))


def _create(path: pathlib.Path, owner: dict) -> bool:
    """Write the lock atomically if there is none; False if one exists."""
    text = json.dumps(owner) + "\n"
    handle, temporary = tempfile.mkstemp(prefix=f".{LOCK_FILE}.", dir=path.parent)
    try:
        with os.fdopen(handle, "w") as stream:
            stream.write(text)
        try:
            os.link(temporary, path)  # fails if the lock exists; never leaves a half-written one
        except FileExistsError:
            return False
        except OSError:  # no hard links here (some network and FUSE file systems)
            try:
                descriptor = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                return False
            with os.fdopen(descriptor, "w") as stream:
                stream.write(text)
        return True
    finally:
        os.unlink(temporary)


def _take_over(path: pathlib.Path, owner: dict) -> None:
    """Remove a stale lock, unless another process replaced it meanwhile."""
    aside = path.with_name(f"{LOCK_FILE}.stale.{os.getpid()}")
    try:
        os.replace(path, aside)
    except FileNotFoundError:
        return
    if _read(aside) != owner:  # a fresh lock of a process that took over first: put it back
        try:
            os.link(aside, path)
        except OSError:
            pass
    aside.unlink(missing_ok=True)


class RunLock:
    """The lock of one run folder, held by this process between ``acquire`` and ``release``
    (or as a context manager); the folder is created if needed.

    Raises:
        RunFolderBusy: from ``acquire``, when a live process (or one on another host) holds it.
    """

    def __init__(self, run_dir: PathLike):
        self.run_dir = pathlib.Path(run_dir)
        self.path = self.run_dir / LOCK_FILE
        self.owner = _me()

    def acquire(self) -> "RunLock":
        self.run_dir.mkdir(parents=True, exist_ok=True)
        for _ in range(5):
            if _create(self.path, self.owner):
                _HELD.add(_key(self.path))
                return self
            owner = _read(self.path)
            if owner is None:
                continue  # released meanwhile: try again
            if not _stale(self.path, owner):
                raise RunFolderBusy(_busy_message(self.run_dir, self.path, owner))
            warnings.warn(
                f"{self.path}: taking over the lock of process {owner.get('pid')} on "
                f"{owner.get('host')}, which is no longer running.",
                stacklevel=2,
            )
            _take_over(self.path, owner)
        raise RunFolderBusy(f"{self.run_dir}: could not take its lock file {self.path}; try again.")

    def release(self) -> None:
        """Remove the lock if this process still holds it (safe to call twice)."""
        if _key(self.path) not in _HELD:
            return
        _HELD.discard(_key(self.path))
        if _read(self.path) == self.owner:
            self.path.unlink(missing_ok=True)

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
