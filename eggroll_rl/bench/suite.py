"""Throughput benchmark: EGGROLL and OpenES population evaluation against plain batched inference.

The speed claim of EGGROLL is a ratio: evaluating N perturbed policies should cost about as much
as evaluating one policy on a batch of N inputs. Absolute times on a shared machine vary, so
every case times its variants side by side, interleaved, in one process, and reports ratios.

Every ratio comes in two figures (``bench.jits``): compiled by a plain ``jax.jit`` with XLA's
default options (the headline, what a user's own jit gets; plain key names) and with the
opt-in XLA:CPU options (``*_with_options``; on other backends there are none, so that figure
is None and the case says why). Both sides of a ratio are always compiled the same way, and
all programs of a case (both modes) are timed in the same interleaved rounds.

Forward cases (``Case``) time forward steps in a ``lax.scan`` over fresh inputs with the
population already drawn, as in the paper's throughput figure. The inference ceiling takes the
mean params as a jit argument and is the faster of a batched apply and a vmapped per-example
apply, chosen once over all rounds (``timing.faster_variant``); EGGROLL takes the population as
an argument. ``eggroll_vs_inference`` is ceiling time / EGGROLL time per step (best of the
rounds; 1.0 means as fast as inference), ``eggroll_vs_inference_paired`` the median of the
per-round ratios (``timing.paired_ratio``). ``eggroll_vs_openes`` compares whole generations
(one ``ask`` plus ``episode_steps`` forward steps) and the per-step speedup is beside it.

The rollout case times what a generation really runs: the same episode loop (env, action
heads, masking) on a gymnax task, once with EGGROLL's population and once with one shared
policy for every slot; ``rollout_eggroll_vs_inference`` is their time ratio. The training case
(``bench.training``) times whole generations. A case that fails to compile or run is recorded
with its status (``failed`` or ``out_of_memory``) and error, never dropped.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import platform
import sys
from typing import Callable, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax import nnx

from eggroll_rl.bench import jits
from eggroll_rl.bench.timing import (
    faster_variant, paired_ratio, time_rounds, warm_up,
)
from eggroll_rl.bench.training import TrainingCase, run_training_case
from eggroll_rl.bench.training import describe as describe_training
from eggroll_rl.bench.training import shared_policy_rollout
from eggroll_rl.layer import EggrollDense
from eggroll_rl.networks import MLP, Policy
from eggroll_rl.strategies import Eggroll, OpenES
from eggroll_rl.xla import cpu_options

DEFAULT_JSON = {"cpu": "experiments/results/bench_cpu.json", "gpu": "experiments/results/bench_gpu.json"}


class PlainDenseMLP(nn.Module):
    """The paper's policy trunk written with plain ``flax.linen.Dense``: a user's own model,
    which ``population_apply`` perturbs through its Dense interceptor."""

    hidden: Sequence[int] = (256, 256, 256)
    out_features: int = 2

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        for width in self.hidden:
            x = nn.relu(nn.LayerNorm()(nn.Dense(width)(x)))
        return nn.Dense(self.out_features)(x)


class NNXMLP(nnx.Module):
    """The same trunk as ``PlainDenseMLP`` written in Flax NNX (``nnx.Linear``, ``nnx.LayerNorm``),
    as the Flax docs write models."""

    def __init__(self, in_features: int, hidden: Sequence[int], out_features: int, *, rngs):
        widths = (in_features, *hidden)
        self.layers = nnx.List([nnx.Linear(a, b, rngs=rngs) for a, b in zip(widths, widths[1:])])
        self.norms = nnx.List([nnx.LayerNorm(b, rngs=rngs) for b in hidden])
        self.head = nnx.Linear(widths[-1], out_features, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        for layer, norm in zip(self.layers, self.norms):
            x = nnx.relu(norm(layer(x)))
        return self.head(x)


@dataclasses.dataclass(frozen=True)
class NNXModel:
    """An NNX model behind linen's ``init``/``apply``, so that a ``Case`` times it like any other:
    ``init`` returns the module (what ``Eggroll.init`` takes), ``apply(module, x)`` calls it."""

    hidden: tuple[int, ...] = (256, 256, 256)
    out_features: int = 2

    def init(self, key: jax.Array, x: jax.Array) -> NNXMLP:
        return NNXMLP(x.shape[-1], self.hidden, self.out_features, rngs=nnx.Rngs(key))

    @staticmethod
    def apply(model: NNXMLP, x: jax.Array) -> jax.Array:
        return model(x)


class MinAtarCNN(nn.Module):
    """A MinAtar-style CNN policy (conv 16 3x3, dense 128, logits) that flattens with
    ``x.reshape((x.shape[0], -1))``, as users write it."""

    action_size: int

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        x = nn.relu(nn.Conv(16, (3, 3))(x))
        x = nn.relu(nn.Dense(128)(x.reshape((x.shape[0], -1))))
        return nn.Dense(self.action_size)(x)


@dataclasses.dataclass(frozen=True)
class Case:
    """One benchmarked model: its network and input width, the population, and step counts.

    ``steps`` forward steps (a ``lax.scan`` over that many fresh input batches) are timed per
    call; ``episode_steps`` is the episode length that the per-generation comparison (one
    ``ask`` + ``episode_steps`` forward steps) assumes. ``openes`` also times OpenES, which
    builds every member's weights.
    """

    name: str
    model: nn.Module
    in_features: int
    population_size: int
    steps: int = 40
    episode_steps: int = 500
    openes: bool = True


@dataclasses.dataclass(frozen=True)
class RolloutCase:
    """A whole population rollout: env, policy width, population, episodes per member, steps.

    Both variants run exactly ``steps`` env steps (no early stop), so their work does not
    depend on when episodes happen to end.
    """

    name: str
    env_id: str
    hidden: tuple[int, ...]
    population_size: int
    steps: int
    episodes_per_member: int = 1
    network: Optional[nn.Module] = None
    """The policy (observations ``(k, *obs_shape)`` -> logits); None: the paper's MLP."""


@dataclasses.dataclass(frozen=True)
class Int8Case:
    """An int8 policy's population forward against the float32 EGGROLL one of the same MLP.

    Both are the same widths without LayerNorm (the int8 net has none): the int8 side is the
    quantiser plus ``Int8Eggroll.population_forward`` (int8 x int8 -> int32 matmuls, shifts,
    saturating ReLU), the float side ``Eggroll.population_apply`` of a float32 ReLU MLP. The
    int8 ceiling is the int8 mean policy's batched forward.
    """

    name: str
    hidden: tuple[int, ...]
    in_features: int
    out_features: int
    population_size: int
    steps: int


def default_cases(scale: float = 1.0) -> list:
    """The default (CPU) suite: the paper's 3 x 256 LayerNorm+ReLU policy at N = 1024 and 4096,
    one 1024-wide Dense at N = 512, the policy in plain ``nn.Dense`` at N = 1024, CartPole
    rollouts at N = 512 and 2048, the int8 policy, and CartPole training at N = 512.
    ``scale`` multiplies every population size (kept even, at least 2)."""
    n = lambda size: max(2, int(size * scale) // 2 * 2)
    policy = MLP(hidden=(256, 256, 256), out_features=2)
    return [
        Case("mlp_3x256_n1024", policy, 4, n(1024)),
        Case("mlp_3x256_n4096", policy, 4, n(4096), openes=False),
        Case("dense_1024", EggrollDense(1024), 1024, n(512)),
        Case("flax_dense_3x256_n1024", PlainDenseMLP(), 4, n(1024), openes=False),
        Case("nnx_linear_3x256_n1024", NNXModel(), 4, n(1024), openes=False),
        RolloutCase("rollout_cartpole_3x256_n512", "gymnax/CartPole-v1", (256, 256, 256), n(512), 64),
        RolloutCase("rollout_cartpole_3x256", "gymnax/CartPole-v1", (256, 256, 256), n(2048), 64),
        RolloutCase("rollout_breakout_cnn_n512", "gymnax/Breakout-MinAtar", (), n(512), 64,
                    network=MinAtarCNN(3)),
        Int8Case("int8_mlp_3x256", (256, 256, 256), 4, 2, n(2048), 32),
        TrainingCase("training_cartpole_3x256", "gymnax/CartPole-v1", (256, 256, 256), n(512), 128),
    ]


def _scan_total(step: Callable, xs: jax.Array) -> jax.Array:
    def body(total, x):
        return total + jnp.sum(step(x)), None

    return jax.lax.scan(body, jnp.zeros((), jnp.float32), xs)[0]


def memory_limit_bytes() -> Optional[int]:
    """The default device's memory limit (``memory_stats()["bytes_limit"]``), or None."""
    try:
        stats = jax.devices()[0].memory_stats()
    except Exception:  # noqa: BLE001 - backends without memory stats
        return None
    return int(stats["bytes_limit"]) if stats and "bytes_limit" in stats else None


# Without a device memory limit (a CPU), OpenES members above this many bytes are not built.
OPENES_BYTES_THRESHOLD = 4 * 2**30


def openes_memory_check(population_size: int, params) -> Optional[str]:
    """None if OpenES's ``population_size`` materialised members (float32) fit, else why not.

    They must fit in half the device's ``bytes_limit`` (the rest for noise, inputs and
    temporaries), or under ``OPENES_BYTES_THRESHOLD`` where no limit is reported.
    """
    member = sum(leaf.size for leaf in jax.tree_util.tree_leaves(params)) * 4
    need = population_size * member
    limit = memory_limit_bytes()
    allowed = limit // 2 if limit else OPENES_BYTES_THRESHOLD
    if need <= allowed:
        return None
    where = f"half of bytes_limit {limit / 2**30:.1f} GiB" if limit else (
        f"the {OPENES_BYTES_THRESHOLD / 2**30:.0f} GiB threshold (no device memory limit known)"
    )
    return f"skipped: would need {need / 2**30:.1f} GiB of members, over {where}"


def failure(name: str, error: BaseException) -> dict:
    """The record of a case that did not finish: ``out_of_memory`` or ``failed``, and why."""
    text = f"{type(error).__name__}: {error}"
    oom = isinstance(error, MemoryError) or any(
        marker in text for marker in ("RESOURCE_EXHAUSTED", "Out of memory", "out of memory", "OOM")
    )
    return {"case": name, "status": "out_of_memory" if oom else "failed", "error": text[:2000]}


def run_case(
    case: Case, rank: int = 1, sigma: float = 0.05, repeats: int = 3, min_seconds: float = 0.0,
    modes: Optional[Sequence[str]] = None,
) -> dict:
    """Time ``ask`` and the scanned forward steps of each variant in each mode, interleaved.

    EGGROLL and the two inference layouts of every mode share the rounds (at least
    ``repeats``, more until ``min_seconds``); OpenES and the ``ask`` calls run in ``repeats``
    rounds of their own. ``ask`` is timed once, as ``strategy.ask`` runs: a jit of its own
    (called at top level it compiles with the default options in either mode). Per mode
    (default: plain keys; options: ``_with_options``): ``step_s`` (seconds per forward step
    of the whole population), ``ask_s``,
    ``generation_s``, ``member_steps_per_s``, ``eggroll_vs_inference`` (best-of),
    ``eggroll_vs_inference_paired``, ``ceiling_variant`` and the OpenES ratios (None when
    OpenES is off, with ``openes`` saying why).
    """
    modes = jits.available_modes(modes)
    key_params, key_es, key_x = jax.random.split(jax.random.key(0), 3)
    params = case.model.init(key_params, jnp.ones((case.in_features,)))
    xs = jax.random.normal(key_x, (case.steps, case.population_size, case.in_features))
    apply = case.model.apply
    per_example = jax.vmap(apply, in_axes=(None, 0))
    openes_skip = None if case.openes else "skipped: not part of this case"
    if openes_skip is None:
        openes_skip = openes_memory_check(case.population_size, params)
    strategies = {"eggroll": Eggroll(case.population_size, sigma, rank=rank)}
    if openes_skip is None:
        strategies["openes"] = OpenES(case.population_size, sigma)
    states = {name: s.init(key_es, params) for name, s in strategies.items()}
    populations = {name: strategies[name].ask(states[name]) for name in strategies}

    fast, slow = {}, {}
    for mode in modes:
        jit = jits.compiler(mode)
        batched = jit(lambda params, xs: _scan_total(lambda x: apply(params, x), xs))
        vmapped = jit(lambda params, xs: _scan_total(lambda x: per_example(params, x), xs))
        fast[jits.key("inference_batched/steps", mode)] = lambda f=batched: f(params, xs)
        fast[jits.key("inference_vmapped/steps", mode)] = lambda f=vmapped: f(params, xs)
        for name, strategy in strategies.items():
            steps = jit(lambda population, xs, strategy=strategy: _scan_total(
                lambda x: strategy.population_apply(population, apply, x), xs
            ))
            group = fast if name == "eggroll" else slow
            group[jits.key(f"{name}/steps", mode)] = (
                lambda f=steps, p=populations[name]: f(p, xs)
            )
    for name, strategy in strategies.items():  # ``ask`` is a plain jit of its own
        slow[f"{name}/ask"] = lambda strategy=strategy, s=states[name]: strategy.ask(s)
    warm_up({**fast, **slow})
    rounds = {
        **time_rounds(fast, repeats, min_seconds, warm=False),
        **time_rounds(slow, repeats, warm=False),
    }

    per_mode = {}
    for mode in modes:
        mine = {name: rounds[jits.key(name, mode)] for name in (
            k for k in _variant_names(strategies) if jits.key(k, mode) in rounds
        )}
        seconds = {name: float(v.min()) for name, v in mine.items()}
        per_step = {k.split("/")[0]: v / case.steps for k, v in seconds.items() if k.endswith("/steps")}
        ceiling = faster_variant(mine, ("inference_batched/steps", "inference_vmapped/steps"))
        per_step["inference"] = seconds[ceiling] / case.steps
        ask = {name: float(rounds[f"{name}/ask"].min()) for name in strategies}
        ask["inference"] = 0.0
        generation = {k: ask[k] + case.episode_steps * per_step[k] for k in ask}
        figures = {
            "ask_s": ask,
            "step_s": {k: per_step[k] for k in ask},
            "inference_layouts_step_s": {
                k.split("/")[0]: seconds[k] / case.steps
                for k in ("inference_batched/steps", "inference_vmapped/steps")
            },
            "generation_s": generation,
            "member_steps_per_s": {k: case.population_size / per_step[k] for k in ask},
            "eggroll_vs_inference": per_step["inference"] / per_step["eggroll"],
            "eggroll_vs_inference_paired": paired_ratio(mine, ceiling, "eggroll/steps"),
            "ceiling_variant": ceiling.split("/")[0],
            "eggroll_vs_openes_step": None,
            "eggroll_vs_openes": None,
        }
        if "openes" in strategies:
            figures["eggroll_vs_openes_step"] = per_step["openes"] / per_step["eggroll"]
            figures["eggroll_vs_openes"] = generation["openes"] / generation["eggroll"]
        per_mode[mode] = figures
    result = {
        "case": case.name,
        "status": "ok",
        "model": type(case.model).__name__,
        "in_features": case.in_features,
        "population_size": case.population_size,
        "timed_steps": case.steps,
        "episode_steps": case.episode_steps,
        "rank": rank,
        "openes": "timed" if openes_skip is None else openes_skip,
    }
    return jits.merge(result, per_mode, modes, (
        "eggroll_vs_inference", "eggroll_vs_inference_paired", "ceiling_variant",
        "eggroll_vs_openes_step", "eggroll_vs_openes",
    ))


def _variant_names(strategies) -> list[str]:
    return ["inference_batched/steps", "inference_vmapped/steps"] + [
        f"{name}/steps" for name in strategies
    ]


def run_rollout_case(
    case: RolloutCase, rank: int = 1, sigma: float = 0.05, repeats: int = 3,
    min_seconds: float = 0.0, modes: Optional[Sequence[str]] = None,
) -> dict:
    """Time ``envs.rollout`` (EGGROLL) against the mean policy on as many slots, in each mode.

    Same loop, env, sampled action heads and slot count; the only difference is the policy
    call: ``population_apply`` for N perturbed members, or the shared mean policy (the faster
    of one batched apply via ``envs.evaluate`` and a vmapped apply in the population's layout,
    params passed in). Every program is wrapped in the mode's top-level jit, so the
    ``envs`` jits inside it compile with that mode's options. Per mode: ``rollout_s``,
    ``step_s``, ``env_steps_per_s``, ``rollout_eggroll_vs_inference`` (best-of),
    ``rollout_eggroll_vs_inference_paired`` and ``ceiling_variant``.
    """
    from eggroll_rl import envs

    modes = jits.available_modes(modes)
    task = envs.make(case.env_id)
    model = case.network or Policy(task.action_size, continuous=not task.discrete, hidden=case.hidden)
    key_params, key_es, key_run = jax.random.split(jax.random.key(0), 3)
    example = jnp.zeros(task.observation_space.shape)
    params = model.init(key_params, example if case.network is None else example[None])
    strategy = Eggroll(case.population_size, sigma, rank=rank)
    population = strategy.ask(strategy.init(key_es, params))
    slots = case.population_size * case.episodes_per_member
    loop = dict(max_steps=case.steps, stop_when_done=False, deterministic=False)
    fns = {}
    for mode in modes:
        jit = jits.compiler(mode)
        eggroll = jit(lambda population, key: envs.rollout(
            task, strategy, population, model.apply, key,
            episodes_per_member=case.episodes_per_member, **loop,
        ).returns)
        batched = jit(lambda params, key: envs.evaluate(
            task, model.apply, params, key, slots, **loop
        ).returns)
        vmapped = shared_policy_rollout(
            task, model, (case.population_size, case.episodes_per_member), jit=jit, **loop
        )
        fns[jits.key("rollout_eggroll", mode)] = lambda f=eggroll: f(population, key_run)
        fns[jits.key("rollout_inference_batched", mode)] = lambda f=batched: f(params, key_run)
        fns[jits.key("rollout_inference_vmapped", mode)] = lambda f=vmapped: f(params, key_run)
    rounds = time_rounds(fns, repeats, min_seconds)
    per_mode = {}
    names = ("rollout_eggroll", "rollout_inference_batched", "rollout_inference_vmapped")
    for mode in modes:
        mine = {name: rounds[jits.key(name, mode)] for name in names}
        seconds = {name: float(v.min()) for name, v in mine.items()}
        ceiling = faster_variant(mine, ("rollout_inference_batched", "rollout_inference_vmapped"))
        seconds["rollout_inference"] = seconds[ceiling]
        per_mode[mode] = {
            "rollout_s": seconds,
            "step_s": {k: v / case.steps for k, v in seconds.items()},
            "env_steps_per_s": {k: slots * case.steps / v for k, v in seconds.items()},
            "rollout_eggroll_vs_inference": seconds["rollout_inference"] / seconds["rollout_eggroll"],
            "rollout_eggroll_vs_inference_paired": paired_ratio(mine, ceiling, "rollout_eggroll"),
            "ceiling_variant": ceiling,
        }
    result = {
        "case": case.name,
        "status": "ok",
        "env_id": case.env_id,
        "hidden": list(case.hidden),
        "population_size": case.population_size,
        "episodes_per_member": case.episodes_per_member,
        "timed_steps": case.steps,
        "rank": rank,
    }
    return jits.merge(result, per_mode, modes, (
        "rollout_eggroll_vs_inference", "rollout_eggroll_vs_inference_paired", "ceiling_variant",
    ))


def run_int8_case(
    case: Int8Case, rank: int = 1, repeats: int = 3, min_seconds: float = 0.0,
    modes: Optional[Sequence[str]] = None,
) -> dict:
    """Time int8 and float32 EGGROLL population forwards and int8 mean inference, interleaved.

    In the options mode the int8 programs keep YNNPACK's integer dots (``integer_dots``), as
    the int8 trainer does. Per mode: ``step_s``, ``member_steps_per_s``, ``int8_vs_float32``
    (float32 EGGROLL time / int8 EGGROLL time, best-of), ``int8_eggroll_vs_int8_inference``
    (best-of) and its ``_paired`` summary, against ``ceiling_variant``.
    """
    from eggroll_rl.int8 import Int8MLP
    from eggroll_rl.int8_strategy import Int8Eggroll

    modes = jits.available_modes(modes)
    key_params, key_es, key_x = jax.random.split(jax.random.key(0), 3)
    xs = jax.random.normal(key_x, (case.steps, case.population_size, case.in_features))
    model = Int8MLP(case.in_features, case.out_features, hidden=case.hidden)
    int8 = Int8Eggroll(model, case.population_size, rank=rank)
    params = model.init(key_params)
    noise = int8.draw(key_es, jnp.int32(0))
    float_model = MLP(hidden=case.hidden, out_features=case.out_features, layer_norm=False)
    float_params = float_model.init(key_params, jnp.ones((case.in_features,)))
    eggroll = Eggroll(case.population_size, 0.05, rank=rank)
    population = eggroll.ask(eggroll.init(key_es, float_params))

    def int8_step(params, noise, x):
        return int8.population_forward(params, noise, model.quantize(x[:, None]))

    fns = {}
    for mode in modes:
        int_jit, float_jit = jits.compiler(mode, integer_dots=True), jits.compiler(mode)
        int8_steps = int_jit(lambda params, noise, xs: _scan_total(
            lambda x: int8_step(params, noise, x).astype(jnp.float32), xs))
        int8_mean = int_jit(lambda params, xs: _scan_total(
            lambda x: model.forward(params, model.quantize(x)).astype(jnp.float32), xs))
        float_steps = float_jit(lambda population, xs: _scan_total(
            lambda x: eggroll.population_apply(population, float_model.apply, x), xs))
        fns[jits.key("int8_eggroll", mode)] = lambda f=int8_steps: f(params, noise, xs)
        fns[jits.key("int8_inference", mode)] = lambda f=int8_mean: f(params, xs)
        fns[jits.key("float32_eggroll", mode)] = lambda f=float_steps: f(population, xs)
    rounds = time_rounds(fns, repeats, min_seconds)
    per_mode = {}
    for mode in modes:
        mine = {k: rounds[jits.key(k, mode)] for k in ("int8_eggroll", "int8_inference", "float32_eggroll")}
        per_step = {k: float(v.min()) / case.steps for k, v in mine.items()}
        per_mode[mode] = {
            "step_s": per_step,
            "member_steps_per_s": {k: case.population_size / v for k, v in per_step.items()},
            "int8_vs_float32": per_step["float32_eggroll"] / per_step["int8_eggroll"],
            "int8_vs_float32_paired": paired_ratio(mine, "float32_eggroll", "int8_eggroll"),
            "int8_eggroll_vs_int8_inference": per_step["int8_inference"] / per_step["int8_eggroll"],
            "int8_eggroll_vs_int8_inference_paired": paired_ratio(
                mine, "int8_inference", "int8_eggroll"
            ),
            "ceiling_variant": "int8_inference (batched forward of the int8 mean policy)",
        }
    result = {
        "case": case.name,
        "status": "ok",
        "hidden": list(case.hidden),
        "population_size": case.population_size,
        "timed_steps": case.steps,
        "rank": rank,
    }
    return jits.merge(result, per_mode, modes, (
        "int8_vs_float32", "int8_vs_float32_paired", "int8_eggroll_vs_int8_inference",
        "int8_eggroll_vs_int8_inference_paired", "ceiling_variant",
    ))


def host_cpu() -> dict:
    """The CPU the ratios were measured on: they depend on its caches and cores. Model and the
    caches seen by core 0 are read on Linux only."""
    cpu: dict = {"logical_cores": os.cpu_count(), "model_name": platform.processor() or None}
    try:
        lines = pathlib.Path("/proc/cpuinfo").read_text().splitlines()
        fields = {}
        for key, _, value in (line.partition(":") for line in lines if ":" in line):
            fields.setdefault(key.strip(), value.strip())
        cpu["model_name"] = fields.get("model name") or cpu["model_name"]
        cpu["family_model"] = f"{fields.get('cpu family')}/{fields.get('model')}"
        caches = {}
        for index in sorted(pathlib.Path("/sys/devices/system/cpu/cpu0/cache").glob("index*")):
            read = lambda name: (index / name).read_text().strip()
            kind = {"Data": "d", "Instruction": "i"}.get(read("type"), "")
            caches[f"L{read('level')}{kind}"] = read("size")
        cpu["caches"] = caches
    except OSError:
        pass
    return cpu


def environment(modes: Sequence[str]) -> dict:
    """The JSON record of where and how the figures were measured."""
    return {
        "device": str(jax.devices()[0].device_kind),
        "devices": [str(d) for d in jax.devices()],
        "backend": jax.default_backend(),
        "jax": jax.__version__,
        "machine": platform.machine(),
        "cpu": host_cpu(),
        "default_matmul_precision": jax.config.jax_default_matmul_precision,
        "figures": jits.describe_modes(modes),
        # the options of the ``_with_options`` figures ({} where that figure is not measured)
        "compiler_options": cpu_options.compiler_options() if jits.WITH_OPTIONS in modes else {},
        "int8_compiler_options": (
            cpu_options.compiler_options(integer_dots=True) if jits.WITH_OPTIONS in modes else {}
        ),
    }


# (case kind, ratio key) of every headline; the table prints one row each
HEADLINES = {
    "forward": ("eggroll_vs_inference", "eggroll_vs_openes_step"),
    "rollout": ("rollout_eggroll_vs_inference",),
    "training": ("training_eggroll_vs_inference",),
    "int8": ("int8_eggroll_vs_int8_inference", "int8_vs_float32"),
}


def headline_rows(report: dict) -> list[dict]:
    """One row per (case, ratio): both figures, best-of and paired median, and the ceilings.

    A case that did not finish gives one row with its status."""
    rows = []
    for result in report["cases"]:
        if result.get("status") != "ok":
            rows.append({"case": result["case"], "status": result.get("status")})
            continue
        for ratio in next((keys for keys in HEADLINES.values() if keys[0] in result), ()):
            row = {"case": result["case"], "status": "ok", "ratio": ratio,
                   "population_size": result.get("population_size")}
            for mode in jits.MODES:
                sfx = jits.suffix(mode)
                paired = result.get(f"{ratio}_paired{sfx}")
                row[f"best_of{sfx}"] = result.get(f"{ratio}{sfx}")
                row[f"paired_median{sfx}"] = paired["median"] if paired else None
                ceiling = result.get(f"ceiling_variant{sfx}")
                if ratio == "int8_vs_float32":
                    ceiling = "float32_eggroll"
                elif "openes" in ratio:
                    ceiling = "openes (not a ceiling: the ratio is its time / EGGROLL's)"
                row[f"ceiling_variant{sfx}"] = ceiling
            if row["best_of"] is not None or row["best_of_with_options"] is not None:
                rows.append(row)
    return rows


def format_table(rows: list[dict]) -> str:
    """The text table: one line per ratio, the default-jit and with-options columns."""
    fmt = lambda v: "   -  " if v is None else f"{v:6.3f}"
    lines = [
        f"{'case':<30} {'N':>6}  {'ratio':<31} {'plain jit: paired  best':>24}   "
        f"{'with options: paired  best':>27}   ceiling",
    ]
    for row in rows:
        if row["status"] != "ok":
            lines.append(f"{row['case']:<30} {'':>6}  {row['status']}")
            continue
        lines.append(
            f"{row['case']:<30} {row['population_size'] or '':>6}  {row['ratio']:<31} "
            f"{'':>10}{fmt(row['paired_median'])}  {fmt(row['best_of'])}   "
            f"{'':>13}{fmt(row['paired_median_with_options'])}  {fmt(row['best_of_with_options'])}   "
            f"{row['ceiling_variant']}"
        )
    return "\n".join(lines)


def describe(result: dict) -> str:
    """One line per ratio of a finished case: both figures (paired median, best-of), ceiling."""
    lines = []
    for row in headline_rows({"cases": [result]}):
        figures = []
        for mode in jits.MODES:
            sfx = jits.suffix(mode)
            if row[f"best_of{sfx}"] is None:
                continue
            paired = row[f"paired_median{sfx}"]
            figures.append(
                f"{'plain jit' if mode == jits.DEFAULT else 'with options'} "
                + (f"paired {paired:.3f}, " if paired is not None else "")
                + f"best-of {row[f'best_of{sfx}']:.3f}"
            )
        lines.append(
            f"{result['case']}  N={result.get('population_size')}  {row['ratio']}: "
            + "; ".join(figures) + f"  (vs {row['ceiling_variant']})"
        )
    return "\n".join(lines)


def _summarise(report: dict, case, result: dict) -> None:
    """Suite-level keys of the goal ratios (both figures), from one finished case."""
    for mode in jits.MODES:
        sfx = jits.suffix(mode)
        if isinstance(case, TrainingCase):
            report[f"training_eggroll_vs_inference{sfx}"] = result[f"training_eggroll_vs_inference{sfx}"]
            paired = result[f"training_eggroll_vs_inference_paired{sfx}"]
            report[f"training_eggroll_vs_inference_paired{sfx}"] = paired and paired["median"]
        elif isinstance(case, RolloutCase):
            # The goal holds for every N, so the headline is the worst population size.
            for name, value in (
                ("rollout_eggroll_vs_inference", result[f"rollout_eggroll_vs_inference{sfx}"]),
                ("rollout_eggroll_vs_inference_paired",
                 (result[f"rollout_eggroll_vs_inference_paired{sfx}"] or {}).get("median")),
            ):
                by_size = report.setdefault(f"{name}_by_population{sfx}", {})
                by_size[str(case.population_size)] = value
                known = [v for v in by_size.values() if v is not None]
                report[f"{name}{sfx}"] = min(known) if known else None
    if isinstance(case, TrainingCase):
        report["openes_vs_evosax"] = result["openes_vs_evosax"]


def run(
    cases: Optional[list] = None, rank: int = 1, repeats: int = 3, log=print,
    min_seconds: float = 0.0, modes: Optional[Sequence[str]] = None,
) -> dict:
    """Every case (default: ``default_cases()``), each in every available mode.

    Returns the JSON record: the machine and how each figure was compiled, ``cases`` (one
    result per case, in order, including those that failed), ``headline`` (``headline_rows``)
    and the suite's goal ratios (worst rollout population size, training) in both figures.
    """
    modes = jits.available_modes(modes)
    report = {**environment(modes), "modes": list(modes), "cases": []}
    for case in cases or default_cases():
        try:
            if isinstance(case, TrainingCase):
                result = run_training_case(
                    case, rank=rank, repeats=repeats, min_seconds=min_seconds, modes=modes
                )
            elif isinstance(case, Int8Case):
                result = run_int8_case(
                    case, rank=rank, repeats=repeats, min_seconds=min_seconds, modes=modes
                )
            elif isinstance(case, RolloutCase):
                result = run_rollout_case(
                    case, rank=rank, repeats=repeats, min_seconds=min_seconds, modes=modes
                )
            else:
                result = run_case(
                    case, rank=rank, repeats=repeats, min_seconds=min_seconds, modes=modes
                )
            line = describe_training(result) if isinstance(case, TrainingCase) else describe(result)
        except Exception as error:  # noqa: BLE001 - recorded, not dropped
            result = failure(case.name, error)
            line = f"{case.name}: {result['status']}: {result['error'][:300]}"
        report["cases"].append(result)
        if result["status"] == "ok":
            _summarise(report, case, result)
        log(line)
    report["headline"] = headline_rows(report)
    log(format_table(report["headline"]))
    return report


def write_json(report: dict, path: str) -> pathlib.Path:
    """Write ``report`` to ``path`` (folders made as needed) and return the path."""
    out = pathlib.Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1) + "\n")
    return out


def main(argv=None) -> None:
    import argparse
    import contextlib

    parser = argparse.ArgumentParser(prog="eggroll-rl bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--suite", choices=("cpu", "gpu"), default="cpu",
                        help="cpu: the default ratio cases; gpu: the accelerator suite "
                        "(bench.gpu: wide layers, N up to 65536, agreement check, time guard)")
    parser.add_argument("--rank", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--min-seconds", type=float, default=20.0,
        help="cpu suite: keep timing EGGROLL against its ceiling for at least this long "
        "(seconds per case, both modes in the same rounds)",
    )
    parser.add_argument("--scale", type=float, default=1.0, help="multiply population sizes "
                        "(gpu suite: also the layer widths)")
    parser.add_argument("--tiny", action="store_true",
                        help="gpu suite: the smallest sizes (a smoke test that runs on a CPU)")
    parser.add_argument("--max-minutes", type=float, default=8.0,
                        help="gpu suite: total time budget, compiles included")
    parser.add_argument("--case", action="append", help="only these cases (repeatable)")
    parser.add_argument(
        "--json", nargs="?", const="", default=None, metavar="PATH",
        help="write the JSON record (to PATH, --out, or experiments/results/bench_<suite>.json) "
        "and print it as one line at the end",
    )
    parser.add_argument("--out", default=None, help="where --json writes")
    parser.add_argument(
        "--devices", type=int, default=None,
        help="scaling instead: EGGROLL with the population split over 1, 2, 4 .. N devices "
        "(each count in a subprocess; on a CPU the devices are simulated)",
    )
    args = parser.parse_args(argv)
    log = (lambda *_: None) if args.json is not None else print
    # Some suites print on import (Brax: "Failed to import warp"); keep --json output parseable.
    quiet = (contextlib.redirect_stdout(sys.stderr) if args.json is not None
             else contextlib.nullcontext())
    with quiet:
        if args.devices is not None:
            from eggroll_rl.bench import devices as bench_devices

            report = bench_devices.run(args.devices, args.scale, args.repeats, args.case, log=log)
            default_path = "experiments/results/bench_devices_cpu.json"
        elif args.suite == "gpu":
            from eggroll_rl.bench import gpu

            report = gpu.run(
                scale=0.001 if args.tiny else args.scale, max_minutes=args.max_minutes,
                repeats=args.repeats, cases=args.case, rank=args.rank, log=log,
            )
            default_path = DEFAULT_JSON["gpu"]
        else:
            known = [c.name for c in default_cases()]
            unknown = sorted(set(args.case or ()) - set(known))
            if unknown:
                parser.error(f"unknown --case {unknown}; cpu suite cases: {known}")
            cases = [c for c in default_cases(args.scale) if not args.case or c.name in args.case]
            report = run(
                cases, rank=args.rank, repeats=args.repeats, log=log,
                min_seconds=args.min_seconds,
            )
            default_path = DEFAULT_JSON["cpu"]
    if args.json is not None:
        path = write_json(report, args.json or args.out or default_path)
        print(f"wrote {path}", file=sys.stderr)
        print(json.dumps(report))
