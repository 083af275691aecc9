"""The train loop every algorithm shares: compiled chunks, progress, logs, evals, checkpoints.

A trainer supplies pure functions (``init``, ``train_chunk``, ``evaluate``, ``policy``); this
loop compiles them once (seeds vmapped, compile time measured apart), then runs chunk after
chunk until the env-step budget is spent. Between chunks, and only there, it does the Python
side effects: evaluate the mean policy on fresh episodes, append metrics, update the progress
bar, and checkpoint every few chunks. Resuming restores the newest good checkpoint and replays
nothing twice, so a killed run ends exactly where an uninterrupted one would.
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
    """How long to train and how often to look: shared by every algorithm."""

    total_steps: int
    iterations_per_chunk: int = 10
    checkpoint_every: int = 5
    seeds: Sequence[int] = (0,)
    progress: bool = True
    stop_at: Optional[float] = None
    """Stop early, at a chunk's end, once every seed's eval return is >= this."""
    xla_cpu_options: bool = False
    """Compile the run's programs with ``eggroll_rl.xla.cpu_options`` (CPU only; opt-in)."""

    def validate(self) -> None:
        if self.total_steps < 1:
            raise ValueError(f"total_steps must be >= 1, got {self.total_steps}.")
        if self.iterations_per_chunk < 1:
            raise ValueError(f"iterations_per_chunk must be >= 1, got {self.iterations_per_chunk}.")
        if self.checkpoint_every < 1:
            raise ValueError(f"checkpoint_every must be >= 1, got {self.checkpoint_every}.")
        if not self.seeds:
            raise ValueError("seeds must name at least one seed.")


@dataclasses.dataclass
class TrainResult:
    """What a run produced: the metrics table, the final (seed-stacked) state, and timings."""

    rows: list[dict]
    state: Any
    compile_s: float
    wall_s: float
    run_dir: Optional[pathlib.Path]

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


def run(
    trainer: Trainer,
    loop: LoopConfig,
    run_dir: Optional[pathlib.Path] = None,
    *,
    resume: bool = False,
    config_record: Optional[dict] = None,
    on_chunk: Optional[Callable[[int, Any], None]] = None,
) -> TrainResult:
    """Train until ``loop.total_steps`` env steps per seed; see the module docstring."""
    loop.validate()
    keys = _seed_keys(loop.seeds)
    init_keys, eval_keys = jax.vmap(lambda k: jax.random.split(k))(keys).swapaxes(0, 1)

    start = time.perf_counter()
    options = (
        cpu_options.compiler_options(getattr(trainer, "integer_dots", False))
        if loop.xla_cpu_options else {}
    )
    over_seeds = functools.partial(_over_seeds, single=len(loop.seeds) == 1)
    init = jax.jit(over_seeds(trainer.init), compiler_options=options)
    chunk_fn = jax.jit(
        over_seeds(lambda s: trainer.train_chunk(s, loop.iterations_per_chunk)),
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
        chunk, evaluate = chunk.result(), evaluate.result()
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

    bar = _progress(loop, trainer.name) if primary else None
    steps_done = int(np.min(np.asarray(_env_steps(state))))
    if bar is not None:
        bar.update(min(steps_done, loop.total_steps))
    while steps_done < loop.total_steps:
        tick = time.perf_counter()
        state, metrics = chunk(state)
        iteration = (done_chunks + 1) * loop.iterations_per_chunk
        returns = evaluate(state, jax.vmap(jax.random.fold_in, (0, None))(eval_keys, iteration))
        jax.block_until_ready(returns)
        elapsed = time.perf_counter() - tick
        wall_s += elapsed
        done_chunks += 1
        new_rows = _rows(loop.seeds, iteration, metrics, returns, state, wall_s)
        rows.extend(new_rows)
        previous_steps, steps_done = steps_done, min(row["env_steps"] for row in new_rows)
        stop = loop.stop_at is not None and min(r["eval_return"] for r in new_rows) >= loop.stop_at
        if log is not None:
            log.append(new_rows)
        if checkpointer is not None:
            if done_chunks % loop.checkpoint_every == 0 or steps_done >= loop.total_steps or stop:
                checkpointer.save(done_chunks, state)
        if bar is not None:
            bar.update(min(steps_done, loop.total_steps) - min(previous_steps, loop.total_steps))
            bar.set_postfix(
                eval_return=f"{np.mean(np.asarray(returns)):.1f}",
                steps_per_s=f"{(steps_done - previous_steps) / max(elapsed, 1e-9):,.0f}",
            )
        if on_chunk is not None:
            on_chunk(done_chunks, state)
        if stop:
            break
    if bar is not None:
        bar.close()
    if log is not None:
        log.plot(f"{trainer.name}")
        log.close()
    if checkpointer is not None:
        checkpointer.close()
    return TrainResult(rows=rows, state=state, compile_s=compile_s, wall_s=wall_s, run_dir=run_dir)


def _env_steps(state: Any) -> jax.Array:
    return state.env_steps


def _rows(seeds, iteration, metrics, returns, state, wall_s) -> list[dict]:
    last = jax.tree_util.tree_map(lambda m: np.asarray(m)[:, -1], metrics)
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


def _progress(loop: LoopConfig, name: str):
    if not loop.progress:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=loop.total_steps, unit="step", unit_scale=True, desc=name, dynamic_ncols=True)
