"""Benchmark of whole ES generations: EGGROLL's training throughput against its inference
ceiling, and our OpenES against evosax's ``Open_ES``.

A generation is ``ask`` -> population rollout -> ``tell``, exactly as ``ESTrainer.generation``
runs it (with the trainer's strategy options), but over a fixed number of env steps (no early
stop) so every variant does the same work. The ceiling is the same rollout loop with one
shared, unperturbed policy on as many slots (no noise, no update), its params a jit argument.
EGGROLL and the ceiling are compiled in each mode of ``bench.jits`` (plain ``jax.jit``, and
with the XLA:CPU options on a CPU) and timed in the same interleaved rounds. evosax is timed
when it is installed (``pip install evosax``): its ``Open_ES`` works on flat parameter vectors,
so its members are unravelled and vmapped through the same Flax policy, env and loop; the two
OpenES programs are compiled by a plain ``jax.jit`` only.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Optional, Sequence

import jax
import jax.numpy as jnp
import optax

from eggroll_rl.bench import jits
from eggroll_rl.bench.timing import (
    describe_paired, faster_variant, paired_ratio, time_rounds, warm_up,
)
from eggroll_rl.networks import Policy
from eggroll_rl.strategies import Eggroll, OpenES


# As ``agents.es.ESTrainer`` builds its strategies by default: noise held in int8, and a
# generation with non-finite fitness skipped and reported in the metrics. The strategy's own
# default, "raise", puts a host callback in the program, which training never pays.
TRAINER_STRATEGY_OPTIONS = dict(nonfinite_fitness="skip", noise_dtype="int8")


@dataclasses.dataclass(frozen=True)
class TrainingCase:
    """EGGROLL generations on ``env_id``: policy widths, population, env steps per generation.

    ``openes`` also times our OpenES and evosax's ``Open_ES`` (plain jit only); off where
    their per-member weights would not fit or their compile would not pay.
    """

    name: str
    env_id: str
    hidden: tuple[int, ...]
    population_size: int
    steps: int
    openes: bool = True


def _generation(task, strategy, model, steps, jit: Callable = jax.jit):
    """One ES generation over exactly ``steps`` env steps per member, as the trainer runs it."""
    from eggroll_rl.envs.rollout import rollout

    @jit
    def generation(state, key):
        population = strategy.ask(state)
        result = rollout(
            task, strategy, population, model.apply, key, max_steps=steps, stop_when_done=False,
            deterministic=True,
        )
        return strategy.tell(state, population, result.fitness)[0]

    return generation


def shared_policy_rollout(task, model, slots, jit: Callable = jax.jit, **loop):
    """The rollout loop with one unperturbed policy, laid out like a population: ``slots``
    ``(N, k)``, the policy vmapped over N with shared params. With ``envs.evaluate`` (one call on
    all ``N * k`` observations) it gives the inference ceiling: the faster of the two counts, as
    XLA sometimes compiles one layout better than the other.

    The params are an argument of the compiled program (``run(params, key) -> returns``), as
    the ES mean is in training. Closed over, they would be compile-time constants: XLA then
    folds the freshly initialised zero biases and unit LayerNorm scales away, a ceiling no
    policy being trained or deployed can reach. ``jit`` compiles it (see ``bench.jits``)."""
    from eggroll_rl.envs.rollout import run_episodes

    @jit
    def run(params, key):
        policy = jax.vmap(lambda obs: model.apply(params, obs))
        return run_episodes(task, policy, key, slots, **loop).returns

    return run


def _evosax_generation(task, model, params, population_size, steps, sigma, lr):
    """evosax's Open_ES on the same policy, env and loop; None when evosax is not installed."""
    try:
        from evosax.algorithms import Open_ES
    except ImportError:
        return None
    from jax.flatten_util import ravel_pytree

    from eggroll_rl.envs.rollout import run_episodes

    flat, unravel = ravel_pytree(params)
    es = Open_ES(
        population_size=population_size, solution=flat, optimizer=optax.adam(lr),
        std_schedule=optax.constant_schedule(sigma),
    )
    es_params = es.default_params
    member_apply = jax.vmap(lambda p, obs: model.apply(unravel(p), obs))

    @jax.jit
    def generation(state, key):
        key_ask, key_run, key_tell = jax.random.split(key, 3)
        members, state = es.ask(key_ask, state, es_params)
        episodes = run_episodes(
            task, lambda obs: member_apply(members, obs), key_run, (population_size, 1),
            deterministic=True, max_steps=steps, stop_when_done=False,
        )
        return es.tell(key_tell, members, -episodes.returns[:, 0], state, es_params)[0]

    return generation, es.init(jax.random.key(1), flat, es_params)


def run_training_case(
    case: TrainingCase, rank: int = 1, repeats: int = 3, min_seconds: float = 0.0,
    modes: Optional[Sequence[str]] = None,
) -> dict:
    """Time EGGROLL generations against the shared-policy rollout, in every mode, interleaved.

    Returns the per-mode figures (default jit: plain keys; options: ``_with_options`` keys):
    ``seconds`` (best of the rounds), ``env_steps_per_s``, ``training_eggroll_vs_inference``
    (ceiling time / generation time, best-of), ``training_eggroll_vs_inference_paired``
    (``timing.paired_ratio``) and ``ceiling_variant`` (``inference_batched`` or
    ``inference_vmapped``, chosen once per mode by ``timing.faster_variant``). With
    ``case.openes``: ``openes_vs_evosax`` (evosax time / ours, plain jit) when evosax is here.
    """
    from eggroll_rl import envs
    from eggroll_rl.envs.rollout import evaluate

    modes = jits.available_modes(modes)
    sigma, lr = 0.05, 0.05
    task = envs.make(case.env_id)
    model = Policy(task.action_size, continuous=not task.discrete, hidden=case.hidden)
    key_params, key_es, key_run = jax.random.split(jax.random.key(0), 3)
    params = model.init(key_params, jnp.zeros(task.observation_space.shape))
    n = case.population_size
    loop = dict(deterministic=True, max_steps=case.steps, stop_when_done=False)
    options = dict(optimizer=optax.adam(lr), **TRAINER_STRATEGY_OPTIONS)
    eggroll = Eggroll(n, sigma, rank=rank, **options)
    eggroll_state = eggroll.init(key_es, params)
    fns = {}
    for mode in modes:
        jit = jits.compiler(mode)
        batched = jit(lambda params, key: evaluate(task, model.apply, params, key, n, **loop).returns)
        vmapped = shared_policy_rollout(task, model, (n, 1), jit=jit, **loop)
        generation = _generation(task, eggroll, model, case.steps, jit=jit)
        fns[jits.key("inference_batched", mode)] = lambda f=batched: f(params, key_run)
        fns[jits.key("inference_vmapped", mode)] = lambda f=vmapped: f(params, key_run)
        fns[jits.key("eggroll_generation", mode)] = (
            lambda g=generation: g(eggroll_state, key_run).mean
        )
    slow = {}  # OpenES is far slower: timed in rounds of its own, without min_seconds
    evosax = None
    if case.openes:
        openes = OpenES(n, sigma, **options)
        openes_generation = _generation(task, openes, model, case.steps)
        openes_state = openes.init(key_es, params)
        slow["openes_generation"] = lambda: openes_generation(openes_state, key_run).mean
        evosax = _evosax_generation(task, model, params, n, case.steps, sigma, lr)
        if evosax is not None:
            evosax_generation, evosax_state = evosax
            slow["evosax_openes_generation"] = (
                lambda: evosax_generation(evosax_state, key_run).mean
            )
    warm_up({**fns, **slow})
    rounds = time_rounds(fns, repeats, min_seconds, warm=False)
    if slow:
        rounds.update(time_rounds(slow, repeats, warm=False))
    env_steps = n * case.steps
    per_mode = {}
    for mode in modes:
        names = ("inference_batched", "inference_vmapped", "eggroll_generation")
        mine = {name: rounds[jits.key(name, mode)] for name in names}
        if mode == jits.DEFAULT:
            mine.update({name: rounds[name] for name in slow})
        seconds = {name: float(v.min()) for name, v in mine.items()}
        ceiling = faster_variant(mine, ("inference_batched", "inference_vmapped"))
        seconds["inference_rollout"] = seconds[ceiling]
        per_mode[mode] = {
            "seconds": seconds,
            "env_steps_per_s": {k: env_steps / v for k, v in seconds.items()},
            "training_eggroll_vs_inference": (
                seconds["inference_rollout"] / seconds["eggroll_generation"]
            ),
            "training_eggroll_vs_inference_paired": paired_ratio(
                mine, ceiling, "eggroll_generation"
            ),
            "ceiling_variant": ceiling,
        }
    result = {
        "case": case.name,
        "status": "ok",
        "env_id": case.env_id,
        "hidden": list(case.hidden),
        "population_size": n,
        "timed_steps": case.steps,
        "rank": rank,
        "openes_vs_evosax": None,
    }
    jits.merge(result, per_mode, modes, (
        "training_eggroll_vs_inference", "training_eggroll_vs_inference_paired", "ceiling_variant",
    ))
    if evosax is not None:
        import evosax as evosax_module

        seconds = result["seconds"]
        result["evosax_version"] = getattr(evosax_module, "__version__", "unknown")
        result["openes_vs_evosax"] = seconds["evosax_openes_generation"] / seconds["openes_generation"]
    elif case.openes:
        result["openes_vs_evosax_skipped"] = "evosax is not installed"
    return result


def describe(result: dict) -> str:
    """One line: the training ratio in each mode (paired median, best-of), then OpenES/evosax."""
    rates = result["env_steps_per_s"]
    line = (
        f"{result['case']}  N={result['population_size']} {result['timed_steps']} steps of "
        f"{result['env_id']}: EGGROLL training/inference {result['training_eggroll_vs_inference']:.3f}"
        f"   ({rates['eggroll_generation']:.3g} vs {rates['inference_rollout']:.3g} env steps/s, "
        f"{describe_paired(result['training_eggroll_vs_inference_paired'])})"
    )
    with_options = result.get("training_eggroll_vs_inference_paired_with_options")
    if with_options is not None:
        line += (
            f"; with options {result['training_eggroll_vs_inference_with_options']:.3f} "
            f"({describe_paired(with_options)})"
        )
    if result.get("openes_vs_evosax") is None:
        return line + "; OpenES/evosax row skipped"
    return line + (
        f"; our OpenES vs evosax Open_ES: {result['openes_vs_evosax']:.2f}x "
        f"({rates['openes_generation']:.3g} vs {rates['evosax_openes_generation']:.3g} env steps/s)"
    )
