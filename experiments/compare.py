"""``eggroll-rl compare``: every algorithm, every seed, one env-step budget, one results folder.

A claim such as "EGGROLL matches OpenES and is faster per step" needs the algorithms run the
same way: same env, same budget, same seeds (vmapped in one program per algorithm), the same
evaluation of the mean policy. Each (env, algo) pair appends its rows to ``results.csv`` and
updates ``meta.json``, ``summary.md`` and ``curves.png`` as soon as it finishes, and a rerun
skips the finished pairs. Configs come from the env's preset
(``eggroll_rl.experiments.preset_files``); ``--set`` changes a field for a quick test.

Long runs. A pair's seeds are not run one after another: they advance together in one
vmapped program, whose state (every seed's) is checkpointed in ``runs/<env>/<algo>/`` every
``checkpoint_every`` chunks and every 5 minutes of training. A killed compare therefore loses
at most the work since the pair's last checkpoint: the rerun resumes that pair for all its
seeds at once, from the checkpoint, and ends exactly where an uninterrupted run would (a pair
killed before its first checkpoint starts again); there is no finished seed to skip, because
no seed finishes before the others. After each pair, and at chunk ends (at most one line every
``status_seconds``), a line says how many pairs and env steps of the plan are done and
estimates the time to completion from the throughput measured so far for each algorithm
(OpenES is much slower per env step than EGGROLL), assuming the remaining pairs run at those
rates. One compare process owns an output folder: it holds ``run.lock`` there
(``agents.run_folder.RunLock``) while it runs, and a second compare on the same ``--out``
fails at once with one line.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import pathlib
import platform
import shlex
import subprocess
import sys
import time
import tomllib
from typing import Callable, Optional, Sequence

from eggroll_rl.experiments import preset_files, results

ALGOS = results.ALGOS
PAPER_ENVS = (
    "gymnax/CartPole-v1",
    "gymnax/Pendulum-v1",
    "brax/ant",
    "brax/humanoid",
    "brax/inverted_double_pendulum",
    "craftax/Craftax-Classic-Symbolic-AutoReset-v1",
    "craftax/Craftax-Symbolic-AutoReset-v1",
    "jumanji/Game2048-v1",
    "jumanji/Knapsack-v1",
    "jumanji/Snake-v1",
    "kinetix/l-hard_pinball",
    "kinetix/m-h17_thrustcontrol_left",
    "kinetix/s-h1_thrust_over_ball",
    "navix/DoorKey-8x8",
    "navix/Dynamic-Obstacles-6x6-Random",
    "navix/FourRooms",
)
# `paper-cpu`: every paper env, each at its preset's `cpu_steps` budget, sized from measured
# training speed on a 2-core CPU (experiments/results/paper_cpu_sizing.json) so that the whole
# suite, 3 algorithms x 5 seeds, fits about 8 hours there; envs whose suite is not installed are
# skipped with a note.
PAPER_CPU_ENVS = PAPER_ENVS
SUITES = {"paper": PAPER_ENVS, "paper-cpu": PAPER_CPU_ENVS}


@dataclasses.dataclass(frozen=True)
class Plan:
    """What to run: envs x algos x seeds at one budget per env, written to ``out``."""

    env_ids: tuple[str, ...]
    algos: tuple[str, ...] = ALGOS
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    out: pathlib.Path = pathlib.Path("comparison")
    total_steps: Optional[int] = None  # None: the preset's budget (cpu_steps if cpu_budget)
    cpu_budget: bool = False
    overrides: dict = dataclasses.field(default_factory=dict)  # algo -> {field: value}
    evals: int = 20  # eval points aimed for per run
    iterations_per_chunk: Optional[int] = None
    progress: bool = True
    command: str = ""
    checkpoint_every: int = 10  # chunks between a pair's checkpoints (also every 5 minutes)
    status_seconds: float = 60.0  # at most one progress line per this many seconds at chunk ends
    seeds_in_sequence: Optional[bool] = None  # None: the preset's (LoopConfig.seeds_in_sequence)
    xla_cpu_options: Optional[bool] = None  # None: the preset's (LoopConfig.xla_cpu_options)


class Interrupted(Exception):
    """A SIGINT/SIGTERM stopped a pair at a chunk's end, after saving its checkpoint: the pair
    is not finished, and rerunning the same command resumes it."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.signum = signum


def human(value: float) -> str:
    """``1234567`` -> ``1.23M``, ``12.5`` -> ``12``: three significant digits at most."""
    value = float(value)
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(value) >= size * 0.9995:  # 999,999 is 1M, not 1e+03k
            return f"{value / size:.3g}{unit}"
    return f"{value:.3g}" if abs(value) < 10 else f"{int(value)}"


def duration(seconds: float) -> str:
    """``7384`` -> ``2h03m``; ``95`` -> ``1m35s``; ``42`` -> ``42s``."""
    seconds = int(round(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    if seconds >= 60:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds}s"


def eta(remaining: dict[str, int], rates: dict[str, float]) -> tuple[float, list[str]]:
    """Seconds left if each algorithm's ``remaining`` env steps run at its measured rate (env
    steps per second), and the algorithms with steps left but no rate yet (not counted)."""
    seconds, unknown = 0.0, []
    for algo, steps in remaining.items():
        if steps <= 0:
            continue
        if rates.get(algo):
            seconds += steps / rates[algo]
        else:
            unknown.append(algo)
    return seconds, unknown


class Status:
    """How much of a plan is done and how long the rest should take: one line per event.

    The plan is every (env, algo) pair with its env steps (budget x seeds; envs skipped as
    unavailable leave it). Throughput is measured per algorithm, as env steps over seconds of
    the pairs it ran: in this process, from a pair's start (compile included) or, for a resumed
    pair, from its first chunk end; before this process, each finished pair's recorded
    ``wall_s + compile_s``. The estimate assumes the remaining pairs of each algorithm run at
    its measured rate (envs differ in cost, so it is rough until every algorithm has run on
    several envs).
    """

    def __init__(self, planned: dict, log: Callable[[str], None], every: float = 60.0,
                 clock: Callable[[], float] = time.monotonic):
        self.planned = dict(planned)  # (env, algo) -> env steps, all seeds (None: unknown)
        self.done: dict = {}  # (env, algo) -> env steps done
        self.finished: set = set()
        self.measured: dict[str, list[float]] = {}  # algo -> [env steps, seconds]
        self.log, self.every, self.clock = log, every, clock
        self._base: dict = {}  # running pair -> (steps, time) its live measure starts from
        self._last_line = None

    @classmethod
    def of_plan(cls, plan: Plan, meta: dict, log: Callable[[str], None]) -> "Status":
        planned = {}
        for env_id in plan.env_ids:
            budget = _budget(plan, preset_files.for_env(env_id))
            for algo in plan.algos:
                planned[(env_id, algo)] = None if budget is None else budget * len(plan.seeds)
        status = cls(planned, log, plan.status_seconds)
        for (env_id, algo) in planned:
            done = meta.get("envs", {}).get(env_id, {}).get("algos", {}).get(algo)
            if done is None:
                continue
            steps = done["total_steps"] * len(done["seeds"])
            status.done[(env_id, algo)] = steps
            status.finished.add((env_id, algo))
            status._measure(algo, steps, done.get("wall_s", 0) + done.get("compile_s", 0))
        return status

    def _measure(self, algo: str, steps: float, seconds: float) -> None:
        if seconds > 0 and steps > 0:
            total = self.measured.setdefault(algo, [0.0, 0.0])
            total[0] += steps
            total[1] += seconds

    def drop_env(self, env_id: str) -> None:
        """An unavailable env: its pairs leave the plan."""
        for pair in [pair for pair in self.planned if pair[0] == env_id]:
            self.planned.pop(pair)
            self.done.pop(pair, None)

    def start(self, pair: tuple, resumed: bool = False) -> None:
        """``pair`` starts (or resumes: measured from its first chunk end on)."""
        if not resumed:
            self._base[pair] = (0, self.clock())
            self.done[pair] = 0

    def chunk(self, pair: tuple, steps: int) -> None:
        """``pair`` has done ``steps`` env steps (all seeds); a line if one is due."""
        self.done[pair] = steps
        if pair not in self._base:
            self._base[pair] = (steps, self.clock())
        now = self.clock()
        if self._last_line is None or now - self._last_line >= self.every:
            self._last_line = now
            total = self.planned.get(pair)
            of = f"/{human(total)}" if total else ""
            self.log(f"{pair[0]} {pair[1]}: {human(steps)}{of} env steps | {self.line()}")

    def finish(self, pair: tuple) -> None:
        """``pair`` is done: its live measure joins its algorithm's, and a line is logged."""
        base_steps, base_time = self._base.pop(pair, (None, None))
        steps = self.planned.get(pair) or self.done.get(pair, 0)
        now = self.clock()
        if base_time is not None:
            self._measure(pair[1], steps - base_steps, now - base_time)
        self.done[pair] = steps
        self.finished.add(pair)
        self._last_line = now
        self.log(f"{pair[0]} {pair[1]}: done | {self.line()}")

    def rates(self) -> dict[str, float]:
        """Env steps per second per algorithm, the running pairs' progress included."""
        totals = {algo: list(value) for algo, value in self.measured.items()}
        now = self.clock()
        for pair, (base_steps, base_time) in self._base.items():
            steps, seconds = self.done.get(pair, 0) - base_steps, now - base_time
            if steps > 0 and seconds > 0:
                total = totals.setdefault(pair[1], [0.0, 0.0])
                total[0] += steps
                total[1] += seconds
        return {algo: steps / seconds for algo, (steps, seconds) in totals.items() if seconds > 0}

    def line(self) -> str:
        """``plan: 2/9 pairs, 1.2M/45M env steps (3%); ETA 3h12m at eggroll 12.3k, openes 1.1k,
        ppo 8.1k env steps/s, assuming ...``: the plan's state and its estimated time left."""
        known = [steps for steps in self.planned.values() if steps]
        total = sum(known)
        done = sum(min(self.done.get(pair, 0), steps or 0) for pair, steps in self.planned.items())
        finished = len(self.finished & set(self.planned))
        text = f"plan: {finished}/{len(self.planned)} pairs, {human(done)}/{human(total)} env steps"
        if total:
            text += f" ({100 * done / total:.0f}%)"
        remaining: dict[str, int] = {}  # algo -> env steps left, in the plan's order
        for pair, steps in self.planned.items():
            left = steps - min(self.done.get(pair, 0), steps) if steps else 0
            if pair not in self.finished and left > 0:
                remaining[pair[1]] = remaining.get(pair[1], 0) + left
        if not remaining:
            return text
        rates = self.rates()
        seconds, unknown = eta(remaining, rates)
        speeds = ", ".join(f"{algo} {human(rates[algo])}" if algo in rates else f"{algo} ?"
                           for algo in remaining)
        if len(unknown) == len(remaining):
            return f"{text}; ETA after a first measure of {', '.join(unknown)}"
        more = f" + the {', '.join(unknown)} pairs (no rate yet)" if unknown else ""
        return (f"{text}; ETA {duration(seconds)}{more} at {speeds} env steps/s, assuming the "
                "remaining pairs run at these measured rates")


def _say(message: str) -> None:
    """Print one line without breaking a progress bar that is being drawn."""
    from tqdm.auto import tqdm

    tqdm.write(message)


def run_plan(plan: Plan, log: Callable[[str], None] = _say) -> dict:
    """Run every unfinished (env, algo) pair of ``plan``; returns the final meta.json dict.

    Raises:
        RunFolderBusy: (a ``ValueError``) another live process holds ``plan.out``'s lock.
    """
    from eggroll_rl.agents.run_folder import RunLock

    out = pathlib.Path(plan.out)
    with RunLock(out):
        meta = _read_meta(out)
        meta.update(_machine())
        meta["command"] = plan.command or meta.get("command", "")
        meta.setdefault("history", []).append({"command": meta["command"], "date": meta["date"]})
        meta.setdefault("envs", {})
        status = Status.of_plan(plan, meta, log)
        for env_id in plan.env_ids:
            _run_env(plan, env_id, meta, log, status)
        _write_outputs(out, meta)
    return meta


def _budget(plan: Plan, preset) -> Optional[int]:
    """The env-step budget per seed: ``--total-steps``, else the preset's (None: neither)."""
    budget = plan.total_steps
    if budget is None and preset is not None:
        budget = (plan.cpu_budget and preset.cpu_steps) or preset.total_steps
    return budget


def _run_env(plan: Plan, env_id: str, meta: dict, log, status: "Status") -> None:
    from eggroll_rl import envs

    out = pathlib.Path(plan.out)
    info = meta["envs"].setdefault(env_id, {"algos": {}})
    preset = preset_files.for_env(env_id)
    try:
        task = envs.make(env_id)
    except (ValueError, ImportError) as error:
        info["skipped"] = str(error)
        log(f"skip {env_id}: {error}")
        status.drop_env(env_id)
        _write_outputs(out, meta)
        return
    info.pop("skipped", None)
    budget = _budget(plan, preset)
    if budget is None:
        raise ValueError(f"{env_id} has no preset: pass --total-steps for its budget.")
    info.update(
        total_steps=budget,
        seeds=list(plan.seeds),
        threshold=None if preset is None else preset.threshold,
        preset=None if preset is None else preset.name,
    )
    for algo in plan.algos:
        done = info["algos"].get(algo)
        if done is not None:
            if done["total_steps"] != budget or done["seeds"] != list(plan.seeds):
                raise ValueError(
                    f"{out} already holds {env_id} {algo} with budget {done['total_steps']:,} and "
                    f"seeds {done['seeds']}, not {budget:,} and {list(plan.seeds)}: pick another "
                    "--out, or delete that folder to start over."
                )
            log(f"skip {env_id} {algo}: already in {out / 'results.csv'}")
            continue
        if "random_return" not in info:
            import jax

            from eggroll_rl.experiments.baselines import random_return

            info["random_return"] = random_return(task, jax.random.key(0))
        info["algos"][algo] = _run_pair(plan, task, env_id, algo, budget, preset, log, status)
        meta["envs"][env_id] = info
        _write_outputs(out, meta)


def _config(algo: str, preset, budget: int, overrides: dict):
    fields = {**overrides.get("*", {}), **overrides.get(algo, {})}
    if "*" in overrides:  # fields set for every algo apply where the config has them
        known = {f.name for f in dataclasses.fields(preset_files.ALGOS[algo])}
        fields = {k: v for k, v in fields.items() if k in known or k in overrides.get(algo, {})}
    if preset is not None:
        return preset.config(algo, budget, **fields)
    cls = preset_files.ALGOS[algo]
    extra = {"algo": algo} if cls is preset_files.ESConfig else {}
    return preset_files._build(cls, {**extra, **fields, "total_steps": budget}, f"[{algo}]")


def _chunk(plan: Plan, config, task) -> int:
    """Iterations per compiled chunk so that a run has about ``plan.evals`` eval points."""
    if plan.iterations_per_chunk:
        return plan.iterations_per_chunk
    if isinstance(config, preset_files.PPOConfig):
        iterations = config.num_updates
    else:  # an upper bound on steps per generation, so a lower bound on generations
        per_gen = config.population_size * config.episodes_per_member * task.max_episode_steps
        iterations = config.total_steps // per_gen
    return max(1, iterations // plan.evals)


def _from_preset(given: Optional[bool], preset, field: str) -> bool:
    """A loop switch: ``given`` unless None, else the preset's field (False without a preset)."""
    return given if given is not None else bool(preset is not None and getattr(preset, field))


def _run_pair(plan: Plan, task, env_id: str, algo: str, budget: int, preset, log,
              status: "Status") -> dict:
    import numpy as np

    from eggroll_rl.agents.es import ESConfig, ESTrainer
    from eggroll_rl.agents.loop import LoopConfig, run
    from eggroll_rl.agents.ppo import PPO
    from eggroll_rl.agents.run_folder import checkpoint_steps

    config = _config(algo, preset, budget, plan.overrides)
    trainer = ESTrainer(task, config) if isinstance(config, ESConfig) else PPO(task, config)
    loop = LoopConfig(
        total_steps=budget,
        iterations_per_chunk=_chunk(plan, config, task),
        checkpoint_every=plan.checkpoint_every,
        seeds=tuple(plan.seeds),
        seeds_in_sequence=_from_preset(plan.seeds_in_sequence, preset, "seeds_in_sequence"),
        xla_cpu_options=_from_preset(plan.xla_cpu_options, preset, "xla_cpu_options"),
        progress=plan.progress,
    )
    run_dir = pathlib.Path(plan.out) / "runs" / env_id / algo
    # Every seed of the pair is in each checkpoint: resuming restores them all. A pair killed
    # before its first checkpoint starts again.
    saved = checkpoint_steps(run_dir)
    resume = bool(saved)
    record = {"algo": algo, "env": env_id, "seeds": list(plan.seeds),
              "config": dataclasses.asdict(config),
              "loop": {"iterations_per_chunk": loop.iterations_per_chunk,
                       "checkpoint_every": loop.checkpoint_every,
                       "seeds_in_sequence": loop.seeds_in_sequence,
                       "xla_cpu_options": loop.xla_cpu_options}}
    log(f"{env_id} {algo}: {budget:,} env steps x {len(plan.seeds)} seeds"
        + (f" (resuming from the checkpoint at iteration {saved[-1]:,})" if resume else ""))
    pair = (env_id, algo)
    status.start(pair, resumed=resume)

    def on_chunk(chunks: int, state) -> None:
        steps = np.minimum(np.asarray(state.env_steps).reshape(-1), budget)
        status.chunk(pair, int(steps.sum()))

    result = run(trainer, loop, run_dir, resume=resume, config_record=record, on_chunk=on_chunk)
    if result.stopped == "interrupted":  # saved, but not finished: not a result yet
        raise Interrupted(
            f"{env_id} {algo} stopped by signal {result.signal} and saved in {run_dir}; rerun "
            "the same command to resume it", result.signal,
        )
    results.replace_pair(pathlib.Path(plan.out) / "results.csv", env_id, algo, result.rows)
    status.finish(pair)
    return {
        "total_steps": budget,
        "seeds": list(plan.seeds),
        "config": record["config"],
        "iterations_per_chunk": loop.iterations_per_chunk,
        "seeds_in_sequence": loop.seeds_in_sequence,
        "xla_cpu_options": loop.xla_cpu_options,
        "compile_s": round(result.compile_s, 2),
        "wall_s": round(result.wall_s, 2),
        "finished": _now(),
    }


def _write_outputs(out: pathlib.Path, meta: dict) -> None:
    from eggroll_rl.experiments import plot, report

    tmp = out / "meta.json.tmp"
    tmp.write_text(json.dumps(meta, indent=2, default=str) + "\n")
    tmp.replace(out / "meta.json")
    rows = results.read(out / "results.csv")
    (out / "summary.md").write_text(report.summary(rows, meta))
    if rows:
        plot.draw([("", rows)], out / "curves.png", scales=report.env_scales(rows, meta))


def _read_meta(out: pathlib.Path) -> dict:
    path = out / "meta.json"
    return json.loads(path.read_text()) if path.exists() else {}


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def _machine() -> dict:
    import importlib.metadata

    import jax

    try:
        version = importlib.metadata.version("eggroll-rl")
    except importlib.metadata.PackageNotFoundError:
        version = None

    cpu = platform.processor()
    try:
        for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
            cwd=pathlib.Path(__file__).parent,
        ).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        commit = None
    return {
        "date": _now(),
        "cores": os.cpu_count(),
        "cpu": cpu,
        "python": platform.python_version(),
        "jax": jax.__version__,
        "backend": jax.default_backend(),
        "devices": [str(d) for d in jax.devices()],
        "eggroll_rl": version,
        "git_commit": commit,
    }


def parse_set(items: Sequence[str]) -> dict:
    """``["lr=0.01", "ppo.num_envs=8", "hidden=[16]"]`` -> ``{algo or "*": {field: value}}``.

    Values are TOML (``true``, ``0.01``, ``[16, 16]``, ``"sgd"``); types are checked against
    the configs.
    """
    overrides: dict = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep:
            raise ValueError(f"--set {item!r}: expected FIELD=VALUE or ALGO.FIELD=VALUE.")
        algo, _, field = key.rpartition(".")
        algo = algo or "*"
        if algo != "*" and algo not in ALGOS:
            raise ValueError(f"--set {item!r}: unknown algo {algo!r}; one of {ALGOS}.")
        try:
            value = tomllib.loads(f"v = {raw}")["v"]
        except tomllib.TOMLDecodeError:
            value = raw  # a bare word: a string
        targets = ALGOS if algo == "*" else (algo,)
        usable = [a for a in targets if field in {f.name for f in dataclasses.fields(preset_files.ALGOS[a])}]
        if not usable:
            raise ValueError(f"--set {item!r}: {field!r} is not a config field of {', '.join(targets)}.")
        checked = preset_files.check_table("--set", usable[0], {field: value})
        overrides.setdefault(algo, {}).update(checked)
    return overrides


SIZING = pathlib.Path(__file__).parent / "results" / "paper_cpu_sizing.json"


def estimate(plan: Plan, sizing: dict, gpu_speedup: float) -> str:
    """The expected run time of ``plan`` per env and algorithm, as a markdown table.

    CPU time is the plan's env steps (budget x seeds) at the training speed measured on this
    2-core CPU by ``studies/paper_cpu_sizing.py`` (``sizing``: its JSON; compile time added).
    Those speeds were measured early in training at small populations, so an env whose episodes
    lengthen as the policy improves runs faster than this. The GPU column divides by
    ``gpu_speedup``, an assumed factor, not a measurement: no GPU has run this suite yet.
    """
    lines = [
        f"Plan: {len(plan.env_ids)} envs x {', '.join(plan.algos)} x {len(plan.seeds)} seeds. "
        f"CPU: training speed measured here (2 cores); GPU: CPU time / {gpu_speedup:g}, an "
        "assumed speed-up, not measured.",
        "",
        "| env | budget (steps/seed) | " + " | ".join(f"{a} CPU h" for a in plan.algos)
        + " | all CPU h | GPU h (assumed) |",
        "| --- | --- | " + " | ".join("---" for _ in plan.algos) + " | --- | --- |",
    ]
    total, missing = 0.0, 0
    for env_id in plan.env_ids:
        budget = _budget(plan, preset_files.for_env(env_id))
        cells, env_total = [], 0.0
        for algo in plan.algos:
            measured = sizing.get("pairs", {}).get(f"{env_id} {algo}", {})
            if budget is None or not measured.get("steps_per_s"):
                cells.append("not measured")
                missing += 1
                continue
            hours = (budget * len(plan.seeds) / measured["steps_per_s"] + measured["compile_s"]) / 3600
            cells.append(f"{hours:.2f}")
            env_total += hours
        total += env_total
        lines.append(f"| {env_id} | {budget or 0:,} | {' | '.join(cells)} | {env_total:.2f} "
                     f"| {env_total / gpu_speedup:.3f} |")
    lines += ["", f"Total: {total:.1f} CPU hours; {total / gpu_speedup:.2f} GPU hours (assumed)."
              + (f" {missing} (env, algo) pairs not measured are not counted." if missing else "")]
    return "\n".join(lines) + "\n"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="eggroll-rl compare", description=__doc__.split("\n\n")[0].split(": ", 1)[1]
    )
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--env", action="append", help="env id (repeat for several)")
    where.add_argument("--suite", choices=sorted(SUITES), help="a set of envs (paper-cpu runs "
                       "each preset's cpu_steps budget): " + "; ".join(
        f"{name}: {', '.join(ids)}" for name, ids in SUITES.items()))
    parser.add_argument("--algos", default=",".join(ALGOS), help="comma-separated (default: all)")
    parser.add_argument("--seeds", type=int, default=5, help="seeds 0..N-1 (default 5)")
    parser.add_argument(
        "--seeds-in-sequence", action=argparse.BooleanOptionalAction, default=None,
        help="run each chunk's seeds one after the other instead of vmapped side by side (the "
        "same runs up to float rounding; cheaper where seeds' episode lengths drift apart; "
        "default: the preset's)",
    )
    parser.add_argument(
        "--xla-cpu-options", action=argparse.BooleanOptionalAction, default=None,
        help="compile with the opt-in XLA:CPU options of eggroll_rl.xla.cpu_options (several "
        "times faster physics for some suites on a CPU; default: the preset's)",
    )
    parser.add_argument("--total-steps", type=int, help="env steps per seed (default: the preset's)")
    parser.add_argument("--out", type=pathlib.Path, help="results folder (required unless --estimate)")
    parser.add_argument("--set", action="append", default=[], metavar="[ALGO.]FIELD=VALUE",
                        help="override a config field, e.g. --set hidden=[64,64] --set ppo.num_envs=32")
    parser.add_argument("--evals", type=int, default=20, help="eval points aimed for per run")
    parser.add_argument("--iterations-per-chunk", type=int, help="fixed iterations between evals")
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("--estimate", action="store_true",
                        help="print the plan's expected CPU and GPU time and exit (runs nothing)")
    parser.add_argument("--sizing", type=pathlib.Path, default=SIZING,
                        help="measured training speeds for --estimate (default: the committed ones)")
    parser.add_argument("--gpu-speedup", type=float, default=100.0,
                        help="assumed GPU/CPU speed ratio for --estimate's GPU column (default 100)")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> None:
    """Command-line entry point (``argv`` defaults to ``sys.argv[1:]``)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = _parser()
    args = parser.parse_args(argv)
    algos = tuple(a.strip() for a in args.algos.split(",") if a.strip())
    unknown = [a for a in algos if a not in ALGOS]
    if unknown or not algos:
        parser.error(f"--algos: unknown {unknown}; choose from {','.join(ALGOS)}.")
    if args.seeds < 1 or (args.total_steps is not None and args.total_steps < 1):
        parser.error("--seeds and --total-steps must be >= 1.")
    if args.out is None and not args.estimate:
        parser.error("--out is required (unless --estimate).")
    if not args.gpu_speedup > 0:
        parser.error("--gpu-speedup must be > 0.")
    try:
        plan = Plan(
            env_ids=tuple(args.env) if args.env else SUITES[args.suite],
            algos=algos,
            seeds=tuple(range(args.seeds)),
            out=args.out or pathlib.Path("comparison"),
            total_steps=args.total_steps,
            cpu_budget=args.suite == "paper-cpu",
            overrides=parse_set(args.set),
            evals=args.evals,
            iterations_per_chunk=args.iterations_per_chunk,
            seeds_in_sequence=args.seeds_in_sequence,
            xla_cpu_options=args.xla_cpu_options,
            progress=not args.no_progress,
            command=shlex.join(["eggroll-rl", "compare", *argv]),
        )
        if args.estimate:
            if not args.sizing.is_file():
                parser.error(f"--sizing {args.sizing}: no such file.")
            print(estimate(plan, json.loads(args.sizing.read_text()), args.gpu_speedup), end="")
            return
        run_plan(plan)
    except ValueError as error:
        raise SystemExit(f"eggroll-rl compare: {error}") from None
    except Interrupted as stop:
        print(f"eggroll-rl compare: {stop}.", file=sys.stderr)
        raise SystemExit(128 + stop.signum) from None
    print(f"done: {args.out / 'summary.md'}, {args.out / 'curves.png'}, {args.out / 'results.csv'}")


if __name__ == "__main__":
    main()
