"""Benchmark of whole ES generations: EGGROLL's training throughput against its inference
ceiling, and our OpenES against evosax's ``Open_ES``.

A generation is ``ask`` -> population rollout -> ``tell``, exactly as ``ESTrainer.generation``
runs it (with the trainer's strategy options), but over a fixed number of env steps (no early
stop) so every variant does the same work. The ceiling is the same rollout loop with one
shared, unperturbed policy on as many slots (no noise, no update). evosax is timed when it is
installed (``pip install evosax``): its ``Open_ES`` works on flat parameter vectors, so its
members are unravelled and vmapped through the same Flax policy, env and loop.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import optax

from eggroll_rl.xla import cpu_options as xla_options
from eggroll_rl.bench.timing import describe_paired, faster_variant, paired_ratio, time_rounds
from eggroll_rl.networks import Policy
from eggroll_rl.strategies import Eggroll, OpenES


# As ``agents.es.ESTrainer`` builds its strategies by default: noise held in int8, and a
# generation with non-finite fitness skipped and reported in the metrics. The strategy's own
# default, "raise", puts a host callback in the program, which cost 2-5% of a generation in
# one-off timings (README, Benchmarks); training never pays it.
TRAINER_STRATEGY_OPTIONS = dict(nonfinite_fitness="skip", noise_dtype="int8")


@dataclasses.dataclass(frozen=True)
class TrainingCase:
    name: str
    env_id: str
    hidden: tuple[int, ...]
    population_size: int
    steps: int


def _generation(task, strategy, model, steps):
    """One ES generation over exactly ``steps`` env steps per member, as the trainer runs it."""
    from eggroll_rl.envs.rollout import rollout

    @xla_options.jit
    def generation(state, key):
        population = strategy.ask(state)
        result = rollout(
            task, strategy, population, model.apply, key, max_steps=steps, stop_when_done=False,
            deterministic=True,
        )
        return strategy.tell(state, population, result.fitness)[0]

    return generation


def shared_policy_rollout(task, model, slots, **loop):
    """The rollout loop with one unperturbed policy, laid out like a population: ``slots``
    ``(N, k)``, the policy vmapped over N with shared params. With ``envs.evaluate`` (one call on
    all ``N * k`` observations) it gives the inference ceiling: the faster of the two counts, as
    XLA sometimes compiles one layout better than the other.

    The params are an argument of the compiled program, as the ES mean is in training. Closed
    over, they became compile-time constants: XLA then folded the freshly initialised zero biases
    and unit LayerNorm scales away, a ceiling no policy being trained or deployed can reach
    (12-25% faster than the same rollout with params passed in, README, Benchmarks)."""
    from eggroll_rl.envs.rollout import run_episodes

    @xla_options.jit
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

    @xla_options.jit
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
    case: TrainingCase, rank: int = 1, repeats: int = 3, min_seconds: float = 0.0
) -> dict:
    from eggroll_rl import envs
    from eggroll_rl.envs.rollout import evaluate

    sigma, lr = 0.05, 0.05
    task = envs.make(case.env_id)
    model = Policy(task.action_size, continuous=not task.discrete, hidden=case.hidden)
    key_params, key_es, key_run = jax.random.split(jax.random.key(0), 3)
    params = model.init(key_params, jnp.zeros(task.observation_space.shape))
    n = case.population_size
    vmapped = shared_policy_rollout(
        task, model, (n, 1), deterministic=True, max_steps=case.steps, stop_when_done=False
    )
    fns = {
        "inference_batched": lambda: evaluate(
            task, model.apply, params, key_run, n, deterministic=True, max_steps=case.steps,
            stop_when_done=False,
        ).returns,
        "inference_vmapped": lambda: vmapped(params, key_run),
    }
    slow = {}  # OpenES takes ~15x longer: timed in rounds of its own, without min_seconds
    options = dict(optimizer=optax.adam(lr), **TRAINER_STRATEGY_OPTIONS)
    for name, strategy in {
        "eggroll": Eggroll(n, sigma, rank=rank, **options),
        "openes": OpenES(n, sigma, **options),
    }.items():
        generation = _generation(task, strategy, model, case.steps)
        state = strategy.init(key_es, params)
        (fns if name == "eggroll" else slow)[f"{name}_generation"] = (
            lambda g=generation, s=state: g(s, key_run).mean
        )
    evosax = _evosax_generation(task, model, params, n, case.steps, sigma, lr)
    if evosax is not None:
        generation, state = evosax
        slow["evosax_openes_generation"] = lambda: generation(state, key_run).mean
    rounds = {**time_rounds(fns, repeats, min_seconds), **time_rounds(slow, repeats)}
    seconds = {name: float(v.min()) for name, v in rounds.items()}
    ceiling = faster_variant(rounds, ("inference_batched", "inference_vmapped"))
    seconds["inference_rollout"] = seconds[ceiling]
    env_steps = n * case.steps
    result = {
        "case": case.name,
        "env_id": case.env_id,
        "hidden": list(case.hidden),
        "population_size": n,
        "timed_steps": case.steps,
        "rank": rank,
        "seconds": seconds,
        "env_steps_per_s": {k: env_steps / v for k, v in seconds.items()},
        "training_eggroll_vs_inference": seconds["inference_rollout"] / seconds["eggroll_generation"],
        "training_eggroll_vs_inference_paired": paired_ratio(rounds, ceiling, "eggroll_generation"),
        "ceiling_variant": ceiling,
        "openes_vs_evosax": None,
    }
    if evosax is not None:
        import evosax as evosax_module

        result["evosax_version"] = getattr(evosax_module, "__version__", "unknown")
        result["openes_vs_evosax"] = seconds["evosax_openes_generation"] / seconds["openes_generation"]
    return result


def describe(result: dict) -> str:
    rates = result["env_steps_per_s"]
    line = (
        f"{result['case']}  N={result['population_size']} {result['timed_steps']} steps of "
        f"{result['env_id']}: EGGROLL training/inference {result['training_eggroll_vs_inference']:.3f}"
        f"   ({rates['eggroll_generation']:.3g} vs {rates['inference_rollout']:.3g} env steps/s, "
        f"{describe_paired(result['training_eggroll_vs_inference_paired'])})"
    )
    if result["openes_vs_evosax"] is None:
        return line + "; evosax not installed: OpenES row skipped"
    return line + (
        f"; our OpenES vs evosax Open_ES: {result['openes_vs_evosax']:.2f}x "
        f"({rates['openes_generation']:.3g} vs {rates['evosax_openes_generation']:.3g} env steps/s)"
    )
