"""The train loop every algorithm shares: compiled chunks, progress, logs, evals, checkpoints.

A trainer supplies pure functions (``init``, ``train_chunk``, ``evaluate``, ``policy``); this
loop compiles them once (seeds vmapped, compile time measured apart), then runs chunk after
chunk until the budget is spent: an env-step budget, a wall-clock budget, or both. Inside a
chunk, each generation/update runs only while its seed is still under the env-step budget, so a
run ends at most one generation/update past ``total_steps`` whatever the chunk length, with one
compiled program. Between chunks, and only there, it does the Python side effects: evaluate the
mean policy on fresh episodes, append metrics, update the progress bar, and checkpoint every
few chunks. Resuming restores the newest good checkpoint and replays nothing twice, so a killed
run ends exactly where an uninterrupted one would.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import functools
import pathlib
import time
from typing import Any, Callable, Optional, Protocol, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from eggroll_rl.agents.checkpoints import Checkpointer
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
    """Generations (ES) or updates (PPO) per compiled chunk; evals, logs and the progress bar
    update between chunks."""
    checkpoint_every: int = 5
    """Chunks between checkpoints (the last chunk is always checkpointed)."""
    seeds: Sequence[int] = (0,)
    """Seeds trained side by side in one vmapped program."""
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
        stopped: why the run ended: "total_steps", "time_budget" or "stop_at".
    """

    rows: list[dict]
    state: Any
    compile_s: float
    wall_s: float
    run_dir: Optional[pathlib.Path]
    stopped: str = "total_steps"

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


def _chunk(trainer: Trainer, iterations: int, total_steps: Optional[int]) -> Callable:
    """One seed's chunk: ``state -> (state, last metrics, iterations run)``.

    With a step budget, each generation/update runs only while ``state.env_steps`` is under
    it (a ``lax.while_loop``), so the chunk stops at most one iteration past the budget; the metrics are
    those of the last iteration that ran (zeros if none did).
    """
    if total_steps is None:
        def plain(state):
            state, metrics = trainer.train_chunk(state, iterations)
            last = jax.tree_util.tree_map(lambda m: m[-1], metrics)
            return state, last, jnp.asarray(iterations, jnp.int32)

        return plain

    @jax.jit  # traced once: for the metrics' shapes and for the branch below
    def one(state):
        state, metrics = trainer.train_chunk(state, 1)
        return state, jax.tree_util.tree_map(lambda m: m[0], metrics)

    def budgeted(state):
        shapes = jax.eval_shape(one, state)[1]
        none = jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)
        def go(carry):
            state, _, ran = carry
            return (ran < iterations) & _below(_env_steps(state), total_steps)

        def body(carry):
            state, _, ran = carry
            state, last = one(state)
            return state, last, ran + 1

        return jax.lax.while_loop(go, body, (state, none, jnp.zeros((), jnp.int32)))

    return budgeted


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
        loop: budgets, seeds, chunking and checkpointing.
        run_dir: where logs, the curve and checkpoints go (None: nothing is written).
        resume: restore the newest good checkpoint in ``run_dir`` first.
        config_record: written to ``run_dir/config.json``.
        on_chunk: called as ``on_chunk(chunks_done, state)`` after every chunk.
        title: the learning curve's title (default: the trainer's name).
        threshold: drawn as a dashed horizontal line on the curve.

    Returns:
        A ``TrainResult``; its state has a leading seed axis.
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
    log = RunLog(run_dir) if run_dir is not None and primary else None
    done_chunks, wall_s = 0, 0.0
    if checkpointer is not None and resume:
        step, state = checkpointer.restore_latest(state)
        done_chunks = step or 0
    if log is not None:
        if config_record is not None:
            log.write_config(config_record)
        log.truncate_after(done_chunks * loop.iterations_per_chunk if done_chunks else -1)
        wall_s = max((row["wall_s"] for row in log.rows()), default=0.0)
    rows = log.rows() if log is not None else []

    steps_done = int(np.min(np.asarray(_env_steps(state))))
    bar = _progress(loop, trainer.name, steps_done) if primary else None
    stopped = _budget_spent(loop, steps_done, wall_s)
    while stopped is None:
        tick = time.perf_counter()
        state, metrics, ran = chunk(state)
        iteration = done_chunks * loop.iterations_per_chunk + int(np.max(np.asarray(ran)))
        returns = evaluate(state, jax.vmap(jax.random.fold_in, (0, None))(eval_keys, iteration))
        jax.block_until_ready(returns)
        elapsed = time.perf_counter() - tick
        wall_s += elapsed
        done_chunks += 1
        new_rows = _rows(loop.seeds, iteration, metrics, returns, state, wall_s)
        rows.extend(new_rows)
        previous_steps, steps_done = steps_done, min(row["env_steps"] for row in new_rows)
        reached = loop.stop_at is not None and min(r["eval_return"] for r in new_rows) >= loop.stop_at
        stopped = "stop_at" if reached else _budget_spent(loop, steps_done, wall_s)
        if log is not None:
            log.append(new_rows)
        if checkpointer is not None:
            if done_chunks % loop.checkpoint_every == 0 or stopped is not None:
                checkpointer.save(done_chunks, state)
        if bar is not None:
            bar.update(steps_done - previous_steps)  # true env steps, even past the total
            bar.set_postfix(eval_return=f"{np.mean(np.asarray(returns)):.1f}")
        if on_chunk is not None:
            on_chunk(done_chunks, state)
    if bar is not None:
        bar.close()
    if log is not None:
        log.plot(title or trainer.name, threshold=threshold)
        log.close()
    if checkpointer is not None:
        checkpointer.close()
    return TrainResult(rows=rows, state=state, compile_s=compile_s, wall_s=wall_s,
                       run_dir=run_dir, stopped=stopped)


def _compiled_programs(trainer: Trainer, loop: LoopConfig, init_keys, eval_keys):
    """``(state, chunk, evaluate)`` for a JAX trainer: its pure functions vmapped over seeds
    and compiled once; ``chunk(state) -> (state, last metrics, iterations run)``."""
    options = (
        cpu_options.compiler_options(getattr(trainer, "integer_dots", False))
        if loop.xla_cpu_options else {}
    )
    over_seeds = functools.partial(_over_seeds, single=len(loop.seeds) == 1)
    init = jax.jit(over_seeds(trainer.init), compiler_options=options)
    chunk_fn = jax.jit(
        over_seeds(_chunk(trainer, loop.iterations_per_chunk, loop.total_steps)),
        compiler_options=options,
    )
    evaluate_fn = jax.jit(over_seeds(trainer.evaluate), compiler_options=options)
    # On one device, lower from the state's shapes so both programs trace and compile (XLA
    # releases the GIL) while init compiles and runs. With several devices the programs must
    # see the state's real shardings, so init runs first.
    single_device = jax.device_count() == 1
    state = None if single_device else init(init_keys)
    like = jax.eval_shape(init, init_keys) if single_device else state
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        chunk = pool.submit(lambda: chunk_fn.lower(like).compile())
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
    trainer jits its own policy and update functions."""
    state = trainer.init(init_keys)
    chunk = functools.partial(
        trainer.train_chunk, iterations=loop.iterations_per_chunk, total_steps=loop.total_steps
    )
    return state, chunk, trainer.evaluate


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


def _rows(seeds, iteration, metrics, returns, state, wall_s) -> list[dict]:
    """One row per seed; ``metrics`` holds each seed's last-iteration values ``(seeds, ...)``."""
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
