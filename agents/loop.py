"""The train loop every algorithm shares: compiled chunks, progress, logs, evals, checkpoints.

A trainer supplies pure functions (``init``, ``train_chunk``, ``evaluate``, ``policy``); this
loop compiles them once (seeds vmapped, compile time measured apart), then runs chunk after
chunk until the budget is spent: an env-step budget, a wall-clock budget, or both. Inside a
chunk, each generation/update runs only while its seed is still under the env-step budget, so a
run ends at most one generation/update past ``total_steps`` whatever the chunk length, with one
compiled program; a slow chunk runs in pieces of ``chunk_seconds``, so a slow env still shows
progress soon, through the same program. Between chunks, and only there, it does the Python side effects: evaluate the
mean policy on fresh episodes, append metrics, update the progress bar, and checkpoint every
few chunks and every few minutes. Checkpoints are numbered by iterations done. Resuming
restores the newest good checkpoint and replays nothing twice, so a killed run ends exactly
where an uninterrupted one would.

Nothing fails silently: non-finite values are counted in every row, skipped ES updates warn,
too many of them or non-finite parameters stop the run with ``TrainingDiverged`` after saving
the last good state, and a SIGINT/SIGTERM ends the run cleanly at the chunk's end.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import functools
import os
import pathlib
import signal
import sys
import threading
import time
import warnings
from typing import Any, Callable, Optional, Protocol, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from eggroll_rl.agents.checkpoints import Checkpointer
from eggroll_rl.agents.faults import (  # noqa: F401  (re-exported for callers of the loop)
    NoUsableCheckpoint,
    RunWriteError,
    TrainingDiverged,
    TrainingError,
)
from eggroll_rl.agents.run_log import RunLog
from eggroll_rl.xla import cpu_options


class Trainer(Protocol):
    name: str
    # Optional ``integer_dots = True``: the trainer's matmuls are int8, so with
    # ``LoopConfig.xla_cpu_options`` it keeps YNNPACK's int8 dots (``cpu_options``).

    def init(self, key: jax.Array) -> Any: ...

    def train_chunk(self, state: Any, num_iterations: int) -> tuple[Any, dict]: ...

    def evaluate(self, state: Any, key: jax.Array) -> jax.Array: ...

    def policy(self, state: Any) -> dict: ...


@dataclasses.dataclass(frozen=True)
class LoopConfig:
    """How long to train and how often to look: shared by every algorithm.

    At least one budget is needed: ``total_steps``, ``time_budget``, or both (the run stops at
    whichever comes first).
    """

    total_steps: Optional[int] = None
    """Env steps per seed; each seed stops at most one generation/update past it (None: no
    step budget, then time_budget is needed)."""
    iterations_per_chunk: int = 10
    """Generations (ES) or updates (PPO) per chunk: evals and metrics rows come at every
    multiple of it (and at the end of the run), whatever the timing."""
    checkpoint_every: int = 5
    """Chunks between checkpoints (the last chunk is always checkpointed)."""
    checkpoint_seconds: Optional[float] = 300.0
    """Also checkpoint at the first chunk end this many training seconds after the last
    checkpoint, so a slow env never leaves a long stretch of unsaved work (None: by count only;
    ignored in multi-process runs, whose processes must checkpoint in step)."""
    chunk_seconds: Optional[float] = 30.0
    """Run a chunk in pieces of about this many seconds (at least one iteration each; the
    first iteration of a run is timed alone), so the progress bar, SIGINT/SIGTERM and
    time-based checkpoints are never a whole slow chunk away. Results do not depend on it
    (None: one piece per chunk; multi-process runs always run whole chunks, and leave SIGINT and
    SIGTERM to their default handlers)."""
    max_skipped_fraction: Optional[float] = 0.5
    """Stop with ``TrainingDiverged`` once more than this fraction of a seed's last
    ``skip_window`` generations skipped their update for non-finite fitness (also judged over
    fewer generations at the end of a run; None: never stop for this)."""
    skip_window: int = 10
    """Generations over which ``max_skipped_fraction`` is judged."""
    seeds: Sequence[int] = (0,)
    """Seeds trained in one program: side by side (vmapped), or one after the other within each
    chunk with ``seeds_in_sequence``."""
    seeds_in_sequence: bool = False
    """Run each chunk's seeds one after the other (``lax.map``) instead of side by side
    (``vmap``). The runs are the same up to float rounding (a batched computation may sum in
    another order, and a chaotic task can amplify that over many generations, as on other
    hardware); the cost differs. Vmapped seeds run every generation of the slowest: a seed
    whose step budget is spent is still computed (masked) until the last seed's is, and one
    generation lasts until the longest episode of any seed ends. In sequence, each seed costs
    only its own generations. Worth it where seeds' episode lengths drift apart (a seed that
    learns to end episodes early takes many more generations to spend its budget) and batching
    seeds gains little (a CPU); on an accelerator, vmapped seeds fill the device."""
    progress: bool = True
    """Show a progress bar of env steps."""
    stop_at: Optional[float] = None
    """Stop early, at a chunk's end, once every seed's eval return is >= this."""
    xla_cpu_options: bool = False
    """Compile the run's programs with the XLA:CPU options of eggroll_rl.xla.cpu_options, which
    speed up float rollouts on CPU (opt-in)."""
    time_budget: Optional[float] = None
    """Wall-clock training seconds (compile excluded): stop at the first chunk end past it."""

    def validate(self) -> None:
        if self.total_steps is None and self.time_budget is None:
            raise ValueError("a run needs a budget: total_steps, time_budget, or both.")
        if self.total_steps is not None and self.total_steps < 1:
            raise ValueError(f"total_steps must be >= 1, got {self.total_steps}.")
        if self.time_budget is not None and not self.time_budget > 0:
            raise ValueError(f"time_budget must be > 0 seconds, got {self.time_budget}.")
        if self.iterations_per_chunk < 1:
            raise ValueError(f"iterations_per_chunk must be >= 1, got {self.iterations_per_chunk}.")
        if self.checkpoint_every < 1:
            raise ValueError(f"checkpoint_every must be >= 1, got {self.checkpoint_every}.")
        for name in ("checkpoint_seconds", "chunk_seconds"):
            value = getattr(self, name)
            if value is not None and not 0 < value < float("inf"):
                raise ValueError(f"{name} must be a positive number of seconds or None, got {value}.")
        if self.max_skipped_fraction is not None and not 0 <= self.max_skipped_fraction < 1:
            raise ValueError(
                f"max_skipped_fraction must be in [0, 1) or None, got {self.max_skipped_fraction}."
            )
        if self.skip_window < 1:
            raise ValueError(f"skip_window must be >= 1, got {self.skip_window}.")
        if not self.seeds:
            raise ValueError("seeds must name at least one seed.")


@dataclasses.dataclass
class TrainResult:
    """What a run produced.

    Attributes:
        rows: the metrics table, one dict per (eval point, seed): ``iteration``, ``seed``,
            ``env_steps``, ``wall_s``, ``eval_return`` and the trainer's scalar metrics.
        state: the final trainer state, every leaf with a leading seed axis ``(len(seeds), ...)``.
        compile_s: seconds spent compiling (and the first init).
        wall_s: training seconds (evals included, compile excluded), summed over resumes.
        run_dir: the run folder, or None when nothing was written.
        stopped: why the run ended: "total_steps", "time_budget", "stop_at", or
            "interrupted" (a SIGINT/SIGTERM; everything was saved at the chunk's end).
        signal: the signal number that interrupted the run, else None.
    """

    rows: list[dict]
    state: Any
    compile_s: float
    wall_s: float
    run_dir: Optional[pathlib.Path]
    stopped: str = "total_steps"
    signal: Optional[int] = None

    def first_reaching(self, threshold: float) -> Optional[dict]:
        """The first eval point where every seed's return was >= ``threshold`` (None: never)."""
        by_iteration: dict[int, list[dict]] = {}
        for row in self.rows:
            by_iteration.setdefault(row["iteration"], []).append(row)
        for iteration in sorted(by_iteration):
            group = by_iteration[iteration]
            if min(row["eval_return"] for row in group) >= threshold:
                return {"iteration": iteration, "env_steps": max(r["env_steps"] for r in group),
                        "wall_s": group[0]["wall_s"]}
        return None

    def final(self, key: str = "eval_return") -> list[float]:
        """``key`` at the last eval point, one value per seed."""
        last = max(row["iteration"] for row in self.rows)
        return [row[key] for row in self.rows if row["iteration"] == last]


def _over_seeds(fn: Callable, single: bool) -> Callable:
    """``jax.vmap(fn)``; for one seed, the same leading axis without batching the traced
    program (vmapping a scan re-traces its body, seconds of compile time for nothing)."""
    if not single:
        return jax.vmap(fn)

    def one(*args):
        out = fn(*jax.tree_util.tree_map(lambda x: x[0], args))
        return jax.tree_util.tree_map(lambda x: jnp.expand_dims(x, 0), out)

    return one


def _seed_keys(seeds: Sequence[int]) -> jax.Array:
    return jnp.stack([jax.random.key(int(seed)) for seed in seeds])



# Per-iteration metrics that count events (non-finite values, skipped updates): a chunk's row
# holds their sum over the chunk, not the last iteration's value.
COUNTED = ("skipped", "nonfinite_fitness", "nonfinite_rewards", "nonfinite_obs", "nonfinite_loss")


def _chunk(trainer: Trainer, total_steps: Optional[int]) -> Callable:
    """One seed's chunk: ``(state, n) -> (state, last metrics, iterations run, counts, finite)``.

    Up to ``n`` (traced, so one program serves every chunk length) generations/updates run in a
    ``lax.while_loop``, each only while ``state.env_steps`` is under the step budget, so the chunk
    stops at most one iteration past it. The metrics are those of the last iteration that ran
    (zeros if none did); ``counts`` sums the ``COUNTED`` metrics over the chunk; ``finite`` says
    whether every float leaf of the deployable policy (``trainer.policy``) is finite.
    """

    @jax.jit  # traced once: for the metrics' shapes and for the loop body below
    def one(state):
        state, metrics = trainer.train_chunk(state, 1)
        return state, jax.tree_util.tree_map(lambda m: m[0], metrics)

    def chunk(state, n):
        shapes = jax.eval_shape(one, state)[1]
        none = jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)
        counted = [key for key in COUNTED if key in shapes]
        zeros = {key: jnp.zeros((), jnp.int32) for key in counted}

        def go(carry):
            state, _, ran, _ = carry
            going = ran < n
            if total_steps is not None:
                going = going & _below(_env_steps(state), total_steps)
            return going

        def body(carry):
            state, _, ran, counts = carry
            state, last = one(state)
            counts = {key: counts[key] + jnp.asarray(last[key]).astype(jnp.int32) for key in counted}
            return state, last, ran + 1, counts

        start = (state, none, jnp.zeros((), jnp.int32), zeros)
        state, last, ran, counts = jax.lax.while_loop(go, body, start)
        return state, last, ran, counts, _all_finite(trainer.policy(state))

    return chunk


def _all_finite(tree: Any) -> jax.Array:
    """Traced: every element of every float leaf of ``tree`` is finite."""
    checks = [
        jnp.all(jnp.isfinite(leaf)) for leaf in jax.tree_util.tree_leaves(tree)
        if jnp.issubdtype(jnp.result_type(leaf), jnp.floating)
    ]
    return jnp.all(jnp.stack(checks)) if checks else jnp.asarray(True)


class _Interrupts:
    """SIGINT/SIGTERM while a run trains: the first asks the loop to stop at the end of the
    current chunk (and save everything); a second one exits the process at once with status
    128 + signal. Installed only in the main thread, for the ``with`` block only; the previous
    handlers and wakeup fd are restored after it.

    A compiled chunk holds the main thread in native code, where Python signal handlers cannot
    run; the signal's byte written to a wakeup fd is read by a watcher thread instead, so the
    second signal takes effect even in the middle of a chunk.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self, where: Optional[pathlib.Path], active: bool = True):
        self.received: Optional[int] = None
        self._where = where
        self._wanted = active
        self._active = False

    def __enter__(self) -> "_Interrupts":
        if not self._wanted or threading.current_thread() is not threading.main_thread():
            return self
        self._read, self._write = os.pipe()
        os.set_blocking(self._write, False)
        self._closing = False
        try:
            self._previous_fd = signal.set_wakeup_fd(self._write, warn_on_full_buffer=False)
        except ValueError:  # not the main interpreter
            os.close(self._read), os.close(self._write)
            return self
        self._previous = {sig: signal.signal(sig, self._ignore) for sig in self.SIGNALS}
        self._thread = threading.Thread(target=self._watch, name="eggroll-rl-signals", daemon=True)
        self._thread.start()
        self._active = True
        return self

    @staticmethod
    def _ignore(signum, frame) -> None:
        """The Python-level handler: nothing to do here, ``_watch`` acts on the wakeup byte."""

    def _watch(self) -> None:
        while True:
            try:
                data = os.read(self._read, 1)
            except OSError:
                return
            if not data or self._closing:
                return
            signum = data[0]
            if signum not in self.SIGNALS:
                continue
            name = signal.Signals(signum).name
            if self.received is None:
                self.received = signum
                sys.stderr.write(
                    f"\n{name}: stopping at the end of this chunk and saving "
                    f"({'press Ctrl-C' if signum == signal.SIGINT else 'send it'} again to exit "
                    "at once, losing the chunk).\n"
                )
                sys.stderr.flush()
            else:
                where = f"; the last checkpoint in {self._where} is kept" if self._where else ""
                sys.stderr.write(f"\nsecond {name}: exiting at once{where}.\n")
                sys.stderr.flush()
                os._exit(128 + signum)

    def __exit__(self, *exc) -> None:
        if not self._active:
            return
        self._closing = True
        signal.set_wakeup_fd(self._previous_fd)
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        try:
            os.write(self._write, b"\0")  # wakes the watcher, which sees _closing and returns
        except BlockingIOError:  # the pipe is full of signal bytes: the watcher is awake anyway
            pass
        self._thread.join(timeout=5)
        os.close(self._read), os.close(self._write)
        self._active = False


def run(
    trainer: Trainer,
    loop: LoopConfig,
    run_dir: Optional[pathlib.Path] = None,
    *,
    resume: bool = False,
    config_record: Optional[dict] = None,
    on_chunk: Optional[Callable[[int, Any], None]] = None,
    title: Optional[str] = None,
    threshold: Optional[float] = None,
) -> TrainResult:
    """Train until the budget in ``loop`` is spent; see the module docstring.

    Args:
        trainer: the algorithm's pure functions (``Trainer``).
        loop: budgets, seeds, chunking, checkpointing and health limits.
        run_dir: where logs, the curve and checkpoints go (None: nothing is written).
        resume: restore the newest good checkpoint in ``run_dir`` first.
        config_record: written to ``run_dir/config.json``.
        on_chunk: called as ``on_chunk(chunks_done, state)`` after every chunk (chunks of this
            call, resumed ones not counted).
        title: the learning curve's title (default: the trainer's name).
        threshold: drawn as a dashed horizontal line on the curve.

    Returns:
        A ``TrainResult``; its state has a leading seed axis. After a SIGINT/SIGTERM it returns
        normally at the end of the chunk, everything saved, with ``stopped="interrupted"`` and
        ``signal`` set: the caller exports the policy, then exits with ``128 + signal``.

    Raises:
        NoUsableCheckpoint: ``resume`` and no checkpoint in ``run_dir`` restores (nothing is
            changed in the folder).
        TrainingDiverged: more than ``loop.max_skipped_fraction`` of the generations in a
            window were skipped for non-finite fitness (the state, whose params those skips
            left unchanged, is checkpointed first), or the policy's parameters became
            non-finite (the last finite state is checkpointed; nothing non-finite is saved).
        RunWriteError: a checkpoint or log could not be written; the checkpoints before are
            intact.
    """
    loop.validate()
    keys = _seed_keys(loop.seeds)
    init_keys, eval_keys = jax.vmap(lambda k: jax.random.split(k))(keys).swapaxes(0, 1)

    start = time.perf_counter()
    if getattr(trainer, "host_side", False):
        state, chunk, evaluate = _host_programs(trainer, loop, init_keys)
    else:
        state, chunk, evaluate = _compiled_programs(trainer, loop, init_keys, eval_keys)
    compile_s = time.perf_counter() - start

    # Every process of a multi-host run takes part in checkpoints (orbax coordinates them);
    # only process 0 writes the logs, the curve and the progress bar, so that processes sharing
    # a run folder never write the same file at once.
    primary = jax.process_index() == 0
    checkpointer = Checkpointer(run_dir) if run_dir is not None else None
    iteration, wall_s, saved_at = 0, 0.0, None
    if checkpointer is not None and resume:
        step, state = checkpointer.restore_latest(state)
        if step is None:
            checkpointer.close()
            raise NoUsableCheckpoint(
                f"nothing to resume in {run_dir}: no checkpoint in {checkpointer.directory} "
                "restores (none was written, or each one failed its check); train again from the "
                "start with --restart (API: resume(..., restart=True)), or pick a new --out (the "
                "folder is left as it was)."
            )
        checkpointer.discard_after(step)
        iteration = saved_at = step
        if checkpointer.step_unit == "chunk":  # a folder of an older version: renumber it
            iteration = saved_at = step * loop.iterations_per_chunk
            checkpointer.save(iteration, state)
            checkpointer.keep_only(iteration)
    log = RunLog(run_dir) if run_dir is not None and primary else None
    if log is not None:
        if config_record is not None:
            log.write_config(config_record)
        log.truncate_after(iteration if resume else -1)
        wall_s = max((row["wall_s"] for row in log.rows()), default=0.0)
    rows = log.rows() if log is not None else []

    steps_done = int(np.min(np.asarray(_env_steps(state))))
    bar = _progress(loop, trainer.name, steps_done) if primary else None
    health = _Health(trainer.name, loop)
    stopped = _budget_spent(loop, steps_done, wall_s)
    ipc, num_seeds = loop.iterations_per_chunk, len(loop.seeds)
    chunks, per_iteration, saved_clock = 0, None, time.perf_counter()
    # Processes of a multi-host run must run the same programs and checkpoints in step: no
    # decision there may depend on one host's clock or signals.
    single_host = jax.process_count() == 1
    piece_seconds = loop.chunk_seconds if single_host else None
    checkpoint_seconds = loop.checkpoint_seconds if single_host else None
    try:
        with _Interrupts(run_dir, active=single_host) as interrupts:
            while stopped is None:
                # A chunk ends at the next multiple of iterations_per_chunk (evals and rows fall
                # there whatever the timing, so a resumed run logs what a straight one does); it
                # runs in pieces short enough for the progress bar, signals and time-based
                # checkpoints to come every chunk_seconds or so.
                tick = time.perf_counter()
                target = (iteration // ipc + 1) * ipc
                first_iteration, done, row_due = iteration, None, True
                while True:
                    want = target - iteration
                    if piece_seconds is None:
                        size = want
                    elif per_iteration is None:
                        size = 1  # time one iteration first: a slow env shows progress after it
                    else:
                        size = max(1, min(want, int(piece_seconds // per_iteration)))
                    before, before_iteration = state, iteration
                    piece_tick = time.perf_counter()
                    state, metrics, ran, counts, finite = _run_chunk(chunk, state, size, num_seeds)
                    most = int(np.max(ran))
                    if most > 0:
                        per_iteration = (time.perf_counter() - piece_tick) / most
                    done = (metrics, ran, counts) if done is None else _merge_chunks(done, (metrics, ran, counts))
                    iteration += most
                    if bar is not None:
                        now_steps = int(np.min(np.asarray(_env_steps(state))))
                        bar.update(now_steps - steps_done)  # true env steps, even past the total
                        steps_done = now_steps
                    if not np.all(finite) or most < size or iteration >= target:
                        break  # diverged, every seed's step budget spent, or the chunk is done
                    if interrupts.received is not None:
                        row_due = False  # inside a chunk: no eval and no row (see below)
                        break
                    if loop.time_budget is not None and wall_s + time.perf_counter() - tick >= loop.time_budget:
                        break
                    if (checkpointer is not None and checkpoint_seconds is not None
                            and time.perf_counter() - saved_clock >= checkpoint_seconds):
                        checkpointer.save(iteration, state)
                        saved_at, saved_clock = iteration, time.perf_counter()
                metrics, ran, counts = done
                # Interrupted inside a chunk: no eval and no row here (the resumed run writes
                # the chunk's row where a straight run would), just the checkpoint below.
                if row_due:
                    returns = evaluate(state, jax.vmap(jax.random.fold_in, (0, None))(eval_keys, iteration))
                    jax.block_until_ready(returns)
                wall_s += time.perf_counter() - tick
                new_rows = []
                if row_due:
                    chunks += 1
                    new_rows = _rows(loop.seeds, iteration, metrics, returns, state, wall_s, counts)
                    rows.extend(new_rows)
                    steps_done = min(row["env_steps"] for row in new_rows)
                    reached = loop.stop_at is not None and min(r["eval_return"] for r in new_rows) >= loop.stop_at
                    stopped = "stop_at" if reached else _budget_spent(loop, steps_done, wall_s)
                if interrupts.received is not None and stopped is None:
                    stopped = "interrupted"
                if log is not None:
                    log.append(new_rows)
                diverged = health.check(first_iteration, iteration, ran, counts, finite,
                                        final=stopped not in (None, "interrupted"))
                if diverged is not None and not np.all(finite):
                    # nothing non-finite is saved: the state before the last piece is the last good one
                    if checkpointer is not None and saved_at != before_iteration:
                        checkpointer.save(before_iteration, before)
                        saved_at = before_iteration
                    raise TrainingDiverged(_where_saved(diverged, checkpointer, saved_at))
                due = (
                    (row_due and chunks % loop.checkpoint_every == 0)
                    or stopped is not None
                    or diverged is not None
                    or (checkpoint_seconds is not None
                        and time.perf_counter() - saved_clock >= checkpoint_seconds)
                )
                if checkpointer is not None and due and saved_at != iteration:
                    checkpointer.save(iteration, state)
                    saved_at, saved_clock = iteration, time.perf_counter()
                if diverged is not None:
                    raise TrainingDiverged(_where_saved(diverged, checkpointer, saved_at))
                if bar is not None and row_due:
                    bar.set_postfix(**_postfix(returns, counts))
                health.warn_skips(first_iteration, iteration, ran, counts)
                if on_chunk is not None and row_due:
                    on_chunk(chunks, state)
        signum = interrupts.received
    except TrainingDiverged:
        _finish(bar, log, checkpointer, title or trainer.name, threshold)
        raise
    except BaseException:
        _finish(bar, log, checkpointer, None, None, quietly=True)
        raise
    _finish(bar, log, checkpointer, title or trainer.name, threshold)
    return TrainResult(rows=rows, state=state, compile_s=compile_s, wall_s=wall_s,
                       run_dir=run_dir, stopped=stopped, signal=signum if stopped == "interrupted" else None)


def _run_chunk(chunk: Callable, state: Any, n: int, num_seeds: int):
    """``chunk(state, n)`` with its outputs on the host, except the state."""
    state, metrics, ran, counts, finite = chunk(state, np.full(num_seeds, n, np.int32))
    metrics = jax.tree_util.tree_map(np.asarray, metrics)
    counts = {key: np.asarray(value) for key, value in counts.items()}
    return state, metrics, np.asarray(ran), counts, np.asarray(finite)


def _merge_chunks(first: tuple, second: tuple) -> tuple:
    """``(last metrics, iterations run, counts)`` of two consecutive pieces of a chunk as one:
    the second's last metrics where a seed ran in it, the first's where it did not; iterations
    and counts added."""
    metrics, ran, counts = first
    metrics_2, ran_2, counts_2 = second

    def pick(a, b):
        ran_here = ran_2.reshape(ran_2.shape + (1,) * (np.ndim(b) - 1)) > 0
        return np.where(ran_here, b, a)

    merged = jax.tree_util.tree_map(pick, metrics, metrics_2)
    total = {key: counts[key] + counts_2[key] for key in counts}
    return merged, ran + ran_2, total


class _Health:
    """Watches the counts of non-finite values and skipped updates between chunks."""

    def __init__(self, name: str, loop: LoopConfig):
        self.name, self.loop = name, loop
        self.history: list[tuple[np.ndarray, np.ndarray]] = []  # per chunk: (ran, skipped)

    def check(self, first, last, ran, counts, finite, final: bool) -> Optional[str]:
        """Why the run must stop, or None."""
        causes = _causes(counts)
        if not np.all(finite):
            seeds = np.flatnonzero(~np.asarray(finite).reshape(-1)).tolist()
            return (
                f"{self.name}: the policy's parameters became non-finite (NaN/inf) in iterations "
                f"{first + 1}-{last} (seed index {seeds}{', ' + causes if causes else ''}); "
                "lower the learning rate or fix the env"
            )
        if "skipped" not in counts or self.loop.max_skipped_fraction is None:
            return None
        self.history.append((np.asarray(ran, np.int64), np.asarray(counts["skipped"], np.int64)))
        window_ran = np.zeros_like(self.history[-1][0])
        window_skipped = np.zeros_like(window_ran)
        for chunk_ran, chunk_skipped in reversed(self.history):
            if np.min(window_ran) >= self.loop.skip_window:
                break
            window_ran, window_skipped = window_ran + chunk_ran, window_skipped + chunk_skipped
        judged = (window_ran >= self.loop.skip_window) | (final & (window_ran > 0))
        fraction = window_skipped / np.maximum(window_ran, 1)
        bad = judged & (fraction > self.loop.max_skipped_fraction)
        if not np.any(bad):
            return None
        i = int(np.flatnonzero(bad)[0])
        return (
            f"{self.name}: {int(window_skipped[i])} of the last {int(window_ran[i])} generations "
            f"skipped their update (more than max_skipped_fraction="
            f"{self.loop.max_skipped_fraction:g}), because fitness was non-finite"
            f"{' (' + causes + ')' if causes else ''}: the env returned NaN/inf rewards or the "
            "policy's outputs were non-finite; fix the env or lower lr/sigma"
        )

    def warn_skips(self, first, last, ran, counts) -> None:
        skipped = int(np.max(counts.get("skipped", 0)))
        if skipped:
            causes = _causes(counts)
            warnings.warn(
                f"{self.name}: {skipped} of {int(np.max(ran))} generations in iterations "
                f"{first + 1}-{last} skipped their update: non-finite fitness"
                f"{' (' + causes + ')' if causes else ''}.",
                RuntimeWarning, stacklevel=3,
            )


def _causes(counts: dict) -> str:
    """``"nonfinite_fitness 12, nonfinite_rewards 3"``: the non-zero non-finite counts."""
    return ", ".join(
        f"{key} {int(np.max(value))}" for key, value in counts.items()
        if key != "skipped" and np.max(value) > 0
    )


def _where_saved(message: str, checkpointer: Optional[Checkpointer], step: Optional[int]) -> str:
    if checkpointer is None:
        return message + "."
    if step is None:
        return message + f"; no checkpoint was written to {checkpointer.directory}."
    return message + f"; the last good state is checkpoint {step} in {checkpointer.directory}."


def _postfix(returns, counts: dict) -> dict:
    postfix = {"eval_return": f"{np.mean(np.asarray(returns)):.1f}"}
    for key, value in counts.items():
        if np.max(value) > 0:
            postfix[key] = int(np.max(value))
    return postfix


def _finish(bar, log, checkpointer, title, threshold, quietly: bool = False) -> None:
    """Close the bar, draw the curve (unless ``quietly``: after a failure), release the log and
    the checkpointer."""
    if bar is not None:
        bar.close()
    if log is not None:
        if not quietly:
            log.plot(title, threshold=threshold)
        log.close()
    if checkpointer is not None:
        try:
            checkpointer.close()
        except Exception:
            if not quietly:
                raise


def _compiled_programs(trainer: Trainer, loop: LoopConfig, init_keys, eval_keys):
    """``(state, chunk, evaluate)`` for a JAX trainer: its pure functions vmapped over seeds
    and compiled once; ``chunk(state, n)`` as in ``_chunk``, ``n`` int32 ``(seeds,)``."""
    options = (
        cpu_options.compiler_options(getattr(trainer, "integer_dots", False))
        if loop.xla_cpu_options else {}
    )
    over_seeds = functools.partial(_over_seeds, single=len(loop.seeds) == 1)
    init = jax.jit(over_seeds(trainer.init), compiler_options=options)
    one_seed = _chunk(trainer, loop.total_steps)
    if loop.seeds_in_sequence and len(loop.seeds) > 1:
        chunk_fn = jax.jit(lambda state, n: jax.lax.map(lambda a: one_seed(*a), (state, n)),
                           compiler_options=options)
    else:
        chunk_fn = jax.jit(over_seeds(one_seed), compiler_options=options)
    lengths = jax.ShapeDtypeStruct((len(loop.seeds),), jnp.int32)
    evaluate_fn = jax.jit(over_seeds(trainer.evaluate), compiler_options=options)
    # On one device, lower from the state's shapes so both programs trace and compile (XLA
    # releases the GIL) while init compiles and runs. With several devices the programs must
    # see the state's real shardings, so init runs first.
    single_device = jax.device_count() == 1
    state = None if single_device else init(init_keys)
    like = jax.eval_shape(init, init_keys) if single_device else state
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        chunk = pool.submit(lambda: chunk_fn.lower(like, lengths).compile())
        evaluate = pool.submit(lambda: evaluate_fn.lower(like, eval_keys).compile())
        if state is None:
            state = init(init_keys)
        return state, chunk.result(), evaluate.result()


def _host_programs(trainer: Any, loop: LoopConfig, init_keys):
    """``(state, chunk, evaluate)`` for a host-side trainer (``trainer.host_side = True``,
    e.g. one stepping Gymnasium envs in Python). Such a trainer handles the seed axis itself:
    ``init(keys) -> state`` with a leading seed axis; ``train_chunk(state, iterations,
    total_steps) -> (state, last metrics (seeds, ...), iterations run)``, running each seed's
    generation/update only while its ``env_steps`` is under ``total_steps`` (None: no step
    budget); ``evaluate(state, keys) -> returns (seeds,)``. Nothing is compiled here: the
    trainer jits its own policy and update functions. Its ``COUNTED`` metrics are reported as
    the last iteration's values, and finiteness is checked on ``trainer.policy(state)``."""
    state = trainer.init(init_keys)

    def chunk(state, n):
        state, last, ran = trainer.train_chunk(
            state, iterations=int(np.max(n)), total_steps=loop.total_steps
        )
        counts = {key: np.asarray(last[key]).astype(np.int32) for key in COUNTED if key in last}
        return state, last, ran, counts, np.full(len(loop.seeds), _host_finite(trainer, state))

    return state, chunk, trainer.evaluate


def _host_finite(trainer: Any, state: Any) -> bool:
    """Every float leaf of a host-side trainer's deployable policy is finite (its ``policy``
    applied to the stacked state, or seed by seed where that fails)."""
    try:
        leaves = jax.tree_util.tree_leaves(trainer.policy(state))
    except Exception:
        num_seeds = np.shape(np.asarray(_env_steps(state)))[0]
        leaves = [
            leaf for i in range(num_seeds)
            for leaf in jax.tree_util.tree_leaves(
                trainer.policy(jax.tree_util.tree_map(lambda x, i=i: x[i], state))
            )
        ]
    return all(
        bool(np.all(np.isfinite(np.asarray(leaf)))) for leaf in leaves
        if np.issubdtype(np.asarray(leaf).dtype, np.floating)
    )


def _budget_spent(loop: LoopConfig, steps_done: int, wall_s: float) -> Optional[str]:
    """Which budget is spent ("total_steps" / "time_budget"), or None to go on."""
    if loop.total_steps is not None and steps_done >= loop.total_steps:
        return "total_steps"
    if loop.time_budget is not None and wall_s >= loop.time_budget:
        return "time_budget"
    return None


def _env_steps(state: Any) -> jax.Array:
    return state.env_steps


def _below(steps: Any, total: int) -> jax.Array:
    """Traced ``steps < total``, for an int array or a two-word ``rollout.StepCount``
    (``high * 2^31 + low``), exact for budgets up to 2^62."""
    if hasattr(steps, "high") and hasattr(steps, "low"):
        high, low = divmod(int(total), 2**31)
        high = jnp.asarray(min(high, 2**31 - 1), jnp.int32)
        return (steps.high < high) | ((steps.high == high) & (steps.low < jnp.int32(low)))
    steps = jnp.asarray(steps)
    return steps < jnp.asarray(min(int(total), int(jnp.iinfo(steps.dtype).max)), steps.dtype)


def _rows(seeds, iteration, metrics, returns, state, wall_s, counts) -> list[dict]:
    """One row per seed; ``metrics`` holds each seed's last-iteration values ``(seeds, ...)``,
    ``counts`` the ``COUNTED`` metrics summed over the chunk ``(seeds,)``."""
    last = jax.tree_util.tree_map(np.asarray, metrics)
    env_steps = np.asarray(_env_steps(state))
    rows = []
    for i, seed in enumerate(seeds):
        row = {
            "iteration": iteration,
            "seed": int(seed),
            "env_steps": int(env_steps[i]),
            "wall_s": round(wall_s, 4),
            "eval_return": float(np.asarray(returns)[i]),
        }
        for key, values in last.items():
            if key != "env_steps" and np.ndim(values[i]) == 0:
                row[key] = float(values[i])
        for key, values in counts.items():
            row[key] = int(np.asarray(values).reshape(-1)[i])
        rows.append(row)
    return rows


def _progress(loop: LoopConfig, name: str, steps_done: int):
    """A bar of true env steps (per seed, the slowest seed) with one rate: env steps/s."""
    if not loop.progress:
        return None
    from tqdm.auto import tqdm

    return tqdm(
        total=loop.total_steps, initial=steps_done, unit=" env steps", unit_scale=True,
        desc=name, dynamic_ncols=True,
    )
