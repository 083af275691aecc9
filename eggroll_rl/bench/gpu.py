"""``eggroll-rl bench --suite gpu``: the accelerator suite, in one command under a time budget.

Cases, in the order they run:

1. ``agreement``: a small ``population_apply`` and ``tell`` on the default device and on the
   CPU, both under ``jax.default_matmul_precision("highest")``, with the same fitness given to
   both ``tell`` calls. Reports the max abs difference of the forward outputs and of the
   updated mean, and passes when each is at most ``AGREEMENT_RTOL * max(1, max|CPU value|)``.
2. ``dense_w{width}_n{N}``: one ``EggrollDense(width)`` layer (input ``width``) at every width
   in ``WIDTHS`` and N in ``POPULATIONS``, as ``suite.run_case``: EGGROLL's population forward
   in a ``lax.scan`` of fresh inputs against plain inference of the same layer (the faster of
   batched and vmapped, named by ``ceiling_variant``), and against OpenES where its
   materialised members fit (``suite.openes_memory_check``; else ``openes`` says what they
   would need). The scan length is chosen per cell so one call does about ``TARGET_FLOP``.
3. ``rollout_cartpole_3x256_n65536``: ``suite.run_rollout_case`` at N = 65,536.
4. ``training_cartpole_3x256_n16384`` (200 steps) and ``training_ant_3x256_n4096`` (100
   steps, ``brax/ant``): ``training.run_training_case`` (generation time against the
   shared-policy rollout), EGGROLL only.

Case names carry the sizes actually run (``--scale`` changes them); ``--case`` also takes a
kind (``agreement``, ``dense``, ``rollout``, ``training``).

Every program is compiled by a plain ``jax.jit``; the XLA:CPU options do not exist off the CPU,
so this suite has no "with options" figure. A time guard keeps the whole run, compiles
included, within ``max_minutes``: before each case starts, its estimated duration (a fixed
guess per kind, raised to the longest case of that kind seen so far) is checked against the
time left, and a case that does not fit is recorded as skipped with the reason. ``scale``
multiplies widths and populations (``--tiny``: 0.001, a smoke test that runs on a CPU; on a
CPU its cost is mostly compiling, Brax's Ant most of all).
"""

from __future__ import annotations

import dataclasses
import time
from typing import Callable, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from eggroll_rl.bench import jits, suite
from eggroll_rl.bench.training import TrainingCase, run_training_case
from eggroll_rl.layer import EggrollDense
from eggroll_rl.networks import MLP
from eggroll_rl.strategies import Eggroll

WIDTHS = (256, 1024, 4096, 8192)
POPULATIONS = (1024, 4096, 16384, 65536)
TARGET_FLOP = 2e12  # per timed call of a dense cell: long enough to time, short enough to fit
MAX_INPUT_BYTES = 4 * 2**30  # the scanned inputs of one dense cell
MAX_STEPS = 40
AGREEMENT_RTOL = 1e-4
# Guessed seconds per case kind (compile + timing) before one of that kind has run.
ESTIMATE_S = {"agreement": 20.0, "dense": 15.0, "rollout": 60.0, "training": 120.0}
SAFETY_S = 5.0  # left unplanned at the end of the budget


@dataclasses.dataclass(frozen=True)
class Planned:
    """A case of the suite: its name, kind (``ESTIMATE_S``) and how to run it (-> result)."""

    name: str
    kind: str
    run: Callable[[], dict]


def _width(width: int, scale: float) -> int:
    return width if scale >= 1 else max(8, int(width * scale))


def _population(size: int, scale: float) -> int:
    return size if scale >= 1 else max(2, int(size * scale) // 2 * 2)


def dense_steps(width: int, population_size: int) -> int:
    """Scan length of a dense cell: about ``TARGET_FLOP`` per call, 1 to ``MAX_STEPS`` steps,
    inputs at most ``MAX_INPUT_BYTES``."""
    flop = 2.0 * population_size * width * width
    by_flop = int(TARGET_FLOP // flop)
    by_memory = int(MAX_INPUT_BYTES // (population_size * width * 4))
    return max(1, min(MAX_STEPS, by_flop, by_memory))


def dense_cases(scale: float = 1.0) -> list[suite.Case]:
    """Every (width, N) cell of the grid, scaled and without duplicates, smallest first; below
    ``scale`` 0.01 (a smoke test) only the smallest and the largest cell."""
    cells = sorted({
        (_width(w, scale), _population(n, scale)) for w in WIDTHS for n in POPULATIONS
    })
    if scale < 0.01:
        cells = sorted({cells[0], cells[-1]})
    return [
        suite.Case(
            f"dense_w{w}_n{n}", EggrollDense(w), w, n, steps=dense_steps(w, n),
        )
        for w, n in cells
    ]


def agreement_check(
    population_size: int = 64, hidden: Sequence[int] = (64, 64), in_features: int = 4,
    rtol: float = AGREEMENT_RTOL,
) -> dict:
    """EGGROLL's forward and ``tell`` on the default device against the CPU, highest precision.

    Both sides get the same population (drawn on the CPU), inputs and fitness. Returns
    ``forward_max_abs_diff`` and ``tell_max_abs_diff`` (of the updated mean params), the
    tolerances they are held to and ``passed``; ``ask_noise_max_abs_diff`` (each device's own
    draw of the same generation's noise) is reported beside them, not held to a tolerance. On a CPU-only host both sides run on the
    CPU (``same_device`` is True) and must agree exactly up to the tolerance.
    """
    model = MLP(hidden=tuple(hidden), out_features=2)
    key_params, key_es, key_x, key_f = jax.random.split(jax.random.key(7), 4)
    cpu = jax.devices("cpu")[0]
    with jax.default_device(cpu):
        params = model.init(key_params, jnp.ones((in_features,)))
        xs = jax.random.normal(key_x, (population_size, in_features))
        fitness = jax.random.normal(key_f, (population_size,))
    strategy = Eggroll(population_size, 0.05, rank=1)
    forward = jax.jit(lambda population, xs: strategy.population_apply(population, model.apply, xs))

    # The population is drawn once, on the CPU, and given to both sides: the check is of the
    # forward and update arithmetic, not of the random-number kernels (compared apart, below).
    with jax.default_device(cpu):
        state = strategy.init(key_es, params)
        population = strategy.ask(state)

    def on(device):
        with jax.default_device(device), jax.default_matmul_precision("highest"):
            put = lambda tree: jax.device_put(tree, device)
            out = forward(put(population), put(xs))
            new_state, _ = strategy.tell(put(state), put(population), put(fitness))
            own = strategy.ask(put(state))  # this device's own draw of the same noise
            return (
                np.asarray(out),
                [np.asarray(v) for v in jax.tree_util.tree_leaves(new_state.mean)],
                [np.asarray(v, np.float32) for v in jax.tree_util.tree_leaves(own.noise)],
            )

    device = jax.devices()[0]
    out_dev, mean_dev, noise_dev = on(device)
    out_cpu, mean_cpu, noise_cpu = on(cpu)
    forward_diff = float(np.max(np.abs(out_dev - out_cpu)))
    tell_diff = max(float(np.max(np.abs(a - b))) for a, b in zip(mean_dev, mean_cpu))
    forward_tol = rtol * max(1.0, float(np.max(np.abs(out_cpu))))
    tell_tol = rtol * max(1.0, max(float(np.max(np.abs(b))) for b in mean_cpu))
    return {
        "case": "agreement",
        "status": "ok",
        "device": str(device),
        "reference": str(cpu),
        "same_device": device.platform == "cpu",
        "matmul_precision": "highest",
        "population_size": population_size,
        "hidden": list(hidden),
        "forward_max_abs_diff": forward_diff,
        "forward_tolerance": forward_tol,
        "tell_max_abs_diff": tell_diff,
        "tell_tolerance": tell_tol,
        "tolerance_rule": f"max abs diff <= {rtol:g} * max(1, max |CPU value|)",
        "ask_noise_max_abs_diff": max(
            (float(np.max(np.abs(a - b))) for a, b in zip(noise_dev, noise_cpu)), default=0.0
        ),
        "passed": bool(forward_diff <= forward_tol and tell_diff <= tell_tol),
    }


def tf32_record() -> dict:
    """Whether float32 matmuls may run in TF32 here: ``jax_default_matmul_precision`` left at
    its default on an NVIDIA GPU of compute capability 8.0 or newer."""
    precision = jax.config.jax_default_matmul_precision
    device = jax.devices()[0]
    capability = getattr(device, "compute_capability", None)
    may = (
        device.platform == "gpu"
        and precision in (None, "default", "DEFAULT", "bfloat16", "tensorfloat32")
        and (capability is None or float(str(capability)) >= 8.0)
    )
    return {
        "jax_default_matmul_precision": precision,
        "compute_capability": None if capability is None else str(capability),
        "tf32_may_apply": bool(may),
    }


def plan(scale: float = 1.0, repeats: int = 5, rank: int = 1) -> list[Planned]:
    """The suite's cases in running order (see the module docstring)."""
    modes = (jits.DEFAULT,)
    hidden = tuple(_width(256, scale) for _ in range(3))
    planned = [Planned("agreement", "agreement", agreement_check)]
    for case in dense_cases(scale):
        planned.append(Planned(case.name, "dense", lambda case=case: _dense(case, rank, repeats)))
    tag = f"3x{hidden[0]}"
    n = _population(65536, scale)
    rollout = suite.RolloutCase(f"rollout_cartpole_{tag}_n{n}", "gymnax/CartPole-v1", hidden, n, 128)
    planned.append(Planned(rollout.name, "rollout", lambda: suite.run_rollout_case(
        rollout, rank=rank, repeats=repeats, modes=modes
    )))
    for env, env_id, n, steps in (
        ("cartpole", "gymnax/CartPole-v1", 16384, 200),
        ("ant", "brax/ant", 4096, 100),
    ):
        n = _population(n, scale)
        name = f"training_{env}_{tag}_n{n}"
        case = TrainingCase(name, env_id, hidden, n, steps, openes=False)
        planned.append(Planned(name, "training", lambda case=case: run_training_case(
            case, rank=rank, repeats=repeats, modes=modes
        )))
    return planned


def _dense(case: suite.Case, rank: int, repeats: int) -> dict:
    result = suite.run_case(case, rank=rank, repeats=repeats, modes=(jits.DEFAULT,))
    flop = 2.0 * case.population_size * case.in_features * case.in_features
    result["width"] = case.in_features
    result["matmul_flop_per_step"] = flop  # of the shared x @ W alone
    result["matmul_tflop_per_s"] = {k: flop / v / 1e12 for k, v in result["step_s"].items()}
    return result


def _selected(item: Planned, cases: Optional[Sequence[str]]) -> bool:
    return not cases or item.name in cases or item.kind in cases


def run(
    scale: float = 1.0, max_minutes: float = 8.0, repeats: int = 5,
    cases: Optional[Sequence[str]] = None, rank: int = 1, log=print,
    clock: Callable[[], float] = time.perf_counter,
) -> dict:
    """Run the suite within ``max_minutes`` (compiles included) and return its JSON record.

    ``cases`` keeps only the named cases or kinds (``agreement``, ``dense``, ``rollout``,
    ``training``). The record holds the environment (devices, backend, TF32), the time
    guard's budget and use, ``agreement`` (the check's result), ``cases`` (every case: its
    result, ``skipped`` with the time guard's reason, or ``failed``/``out_of_memory`` with
    the error) and ``headline`` (``suite.headline_rows``).
    """
    began = clock()
    budget = max_minutes * 60.0
    modes = (jits.DEFAULT,)
    report = {
        "suite": "gpu",
        **suite.environment(modes),
        "modes": list(modes),
        "scale": scale,
        "repeats": repeats,
        "memory_bytes_limit": suite.memory_limit_bytes(),
        "tf32": tf32_record(),
        "time_guard": {"max_minutes": max_minutes, "estimate_s": dict(ESTIMATE_S)},
        "agreement": None,
        "cases": [],
    }
    longest: dict[str, float] = {}
    planned = plan(scale, repeats, rank)
    known = {item.name for item in planned} | {item.kind for item in planned}
    report["unknown_cases"] = sorted(set(cases or ()) - known)  # named but not in this plan
    for item in planned:
        if not _selected(item, cases):
            continue
        left = budget - (clock() - began)
        estimate = max(ESTIMATE_S[item.kind], longest.get(item.kind, 0.0))
        if estimate + SAFETY_S > left:
            result = {
                "case": item.name, "status": "skipped",
                "reason": f"time guard: estimated {estimate:.0f} s, {max(left, 0):.0f} s left "
                f"of the {max_minutes:g}-minute budget",
            }
        else:
            start = clock()
            try:
                result = item.run()
            except Exception as error:  # noqa: BLE001 - recorded, not dropped
                result = suite.failure(item.name, error)
            result["seconds_in_suite"] = clock() - start
            longest[item.kind] = max(longest.get(item.kind, 0.0), result["seconds_in_suite"])
        if item.kind == "agreement":
            report["agreement"] = result
        report["cases"].append(result)
        log(_describe(result))
    report["time_guard"]["spent_s"] = clock() - began
    report["headline"] = suite.headline_rows(report)
    log(suite.format_table(report["headline"]))
    return report


def _describe(result: dict) -> str:
    name, status = result["case"], result["status"]
    if status != "ok":
        return f"{name}: {status}: {result.get('reason') or result.get('error', '')[:300]}"
    if "forward_max_abs_diff" in result:
        return (
            f"agreement {result['device']} vs {result['reference']}: forward "
            f"{result['forward_max_abs_diff']:.2e} (tol {result['forward_tolerance']:.1e}), tell "
            f"{result['tell_max_abs_diff']:.2e} (tol {result['tell_tolerance']:.1e}): "
            + ("passed" if result["passed"] else "FAILED")
        )
    for ratio in ("eggroll_vs_inference", "rollout_eggroll_vs_inference", "training_eggroll_vs_inference"):
        if ratio in result:
            paired = result[f"{ratio}_paired"]
            line = (
                f"{name}  N={result['population_size']}: {ratio} paired {paired['median']:.3f}, "
                f"best-of {result[ratio]:.3f} vs {result['ceiling_variant']}"
            )
            if ratio == "eggroll_vs_inference":
                openes = result["eggroll_vs_openes_step"]
                line += f"; openes {result['openes']}" if openes is None else (
                    f"; vs OpenES {openes:.2f}x per step"
                )
            return line
    return f"{name}: ok"
