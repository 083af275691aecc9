"""The ways a training run can end badly, as exceptions a caller can tell apart.

A run that says "done" must be a run that trained: the train loop raises one of these instead
of finishing over a wrong or unsaved result. Each message is one line naming what went wrong,
where, and what to do; the command line prints it as is and exits with status 1. All of them
derive from ``TrainingError``, so ``except TrainingError`` catches every expected failure and
lets real bugs through with their traceback.
"""

from __future__ import annotations


class TrainingError(Exception):
    """An expected failure of a training run; its message is one line for the user."""


class TrainingDiverged(TrainingError):
    """Training produced non-finite values: too many ES generations skipped over non-finite
    fitness, or non-finite parameters. The last good state is checkpointed (or, for non-finite
    parameters, the last finite checkpoint is left as it was) before this is raised."""


class NoUsableCheckpoint(TrainingError):
    """``resume`` was asked for but no checkpoint of the run folder restores."""


class RunWriteError(TrainingError, OSError):
    """Writing a checkpoint or a log failed (disk full, read-only or removed folder); the
    checkpoints written before are intact."""
