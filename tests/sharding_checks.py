"""Multi-device checks for ``test_sharding.py``, run in a subprocess with simulated CPU devices.

The device count is fixed when JAX starts, so each check runs in a fresh process that the test
starts with ``XLA_FLAGS=--xla_force_host_platform_device_count=N``; it prints one JSON line.

  python tests/sharding_checks.py es             EGGROLL and OpenES: 1 device vs all devices
  python tests/sharding_checks.py ppo            PPO: 1 device vs all devices
  python tests/sharding_checks.py int8           integer EGGROLL: 1 device vs all devices
  python tests/sharding_checks.py ppo-defaults   PPO's default config on 1, 2, 4, ... devices
  python tests/sharding_checks.py rollout-hlo    collectives of a sharded rollout, per loop
  python tests/sharding_checks.py process ID PORT  one of two jax.distributed processes

Every run goes through the real train loop (``agents.loop.run``, seeds vmapped) on
gymnax/CartPole-v1 with a tiny network, so the comparison covers sharding under ``vmap``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import sys
import tempfile

import jax
import jax.experimental.multihost_utils
import jax.numpy as jnp
import numpy as np

SEEDS = (0, 1)
GENERATIONS = 2


def _es_config(algo: str, devices: int):
    from eggroll_rl.agents.es import ESConfig

    return ESConfig(
        algo=algo, population_size=16, hidden=(8,), layer_norm=False, devices=devices, total_steps=1,
        eval_episodes=2,
    )


def _ppo_config(devices: int):
    from eggroll_rl.agents.ppo import PPOConfig

    return PPOConfig(
        num_envs=8, num_steps=8, num_minibatches=2, update_epochs=2, hidden=(8,),
        layer_norm=False, devices=devices, total_steps=1,
    )


def _train(trainer, iterations: int = GENERATIONS, run_dir=None):
    from eggroll_rl.agents.loop import LoopConfig, run

    loop = LoopConfig(total_steps=1, iterations_per_chunk=iterations, seeds=SEEDS, progress=False)
    return run(trainer, loop, run_dir).state


def _initial(trainer):
    """The state the loop starts from (its key derivation), to show that training moved it."""
    keys = jnp.stack([jax.random.key(seed) for seed in SEEDS])
    init_keys = jax.vmap(lambda k: jax.random.split(k))(keys)[:, 0]
    return jax.jit(jax.vmap(trainer.init))(init_keys)


def _max_diff(a, b) -> float:
    pairs = zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b))
    return max(float(np.max(np.abs(np.asarray(x) - np.asarray(y)))) for x, y in pairs)


def _flat(tree) -> list[float]:
    return np.concatenate([np.ravel(np.asarray(x)) for x in jax.tree_util.tree_leaves(tree)]).tolist()


def _rows_per_device(tree, axis: int = 0) -> list[int]:
    return sorted(
        {s.data.shape[axis] for leaf in jax.tree_util.tree_leaves(tree) for s in leaf.addressable_shards}
    )


def _devices_spanned(tree) -> list[int]:
    return sorted({len(leaf.sharding.device_set) for leaf in jax.tree_util.tree_leaves(tree)})


def _replicated(tree) -> bool:
    return all(leaf.sharding.is_fully_replicated for leaf in jax.tree_util.tree_leaves(tree))


def es_check() -> dict:
    from eggroll_rl import envs
    from eggroll_rl.agents.es import ESTrainer
    from eggroll_rl.envs.rollout import rollout

    task = envs.make("gymnax/CartPole-v1")
    n = jax.device_count()
    report = {"devices": n}
    for algo in ("eggroll", "openes"):
        means = {}
        for devices in (1, n):
            trainer = ESTrainer(task, _es_config(algo, devices))
            state = _train(trainer)
            means[devices] = state.evo.mean
            if devices == 1:
                moved = _max_diff(means[1], _initial(trainer).evo.mean)
        one = jax.tree_util.tree_map(lambda x: x[0], state)
        strategy = trainer.strategy
        population = strategy.ask(one.evo)
        rows = population.members if algo == "openes" else population.noise
        result = rollout(
            task, strategy, population, trainer.network.apply, jax.random.key(3),
            deterministic=True, obs_stats=one.obs_stats,
        )
        report[algo] = {
            "max_diff": _max_diff(means[1], means[n]),
            "moved": moved,
            "one_device_params": _flat(means[1]),
            "params_replicated": _replicated(means[n]),
            "population_rows_per_device": _rows_per_device(rows),
            "population_devices": _devices_spanned(rows),
            "fitness_rows_per_device": _rows_per_device(result.fitness),
            "fitness_devices": _devices_spanned(result.fitness),
        }
    from eggroll_rl import Eggroll, distributed
    from eggroll_rl.agents.ppo import PPO

    errors = {}
    attempts = {
        "strategy": lambda: Eggroll(18, 0.1, mesh=distributed.make_population_mesh(n)),
        "es_trainer": lambda: ESTrainer(
            task, dataclasses.replace(_es_config("eggroll", n), population_size=18)
        ),
        "ppo_minibatch": lambda: PPO(
            task, dataclasses.replace(_ppo_config(n), num_envs=8, num_steps=3, num_minibatches=4)
        ),
    }
    for name, attempt in attempts.items():
        try:
            attempt()
            errors[name] = None
        except ValueError as error:
            errors[name] = str(error)
    report["errors"] = errors
    return report


def ppo_check() -> dict:
    from eggroll_rl import envs
    from eggroll_rl.agents.ppo import PPO

    task = envs.make("gymnax/CartPole-v1")
    n = jax.device_count()
    trainers = {devices: PPO(task, _ppo_config(devices)) for devices in (1, n)}
    states = {devices: _train(trainer) for devices, trainer in trainers.items()}
    return {
        "devices": n,
        "max_diff": _max_diff(states[1].params, states[n].params),
        "moved": _max_diff(states[1].params, _initial(trainers[1]).params),
        "params_replicated": _replicated(states[n].params),
        "obs_rows_per_device": _rows_per_device(states[n].obs, axis=1),
        "obs_devices": _devices_spanned(states[n].obs),
    }


def _int8_config(devices: int):
    from eggroll_rl.agents.int8_es import Int8ESConfig

    return Int8ESConfig(population_size=16, hidden=(8,), devices=devices, total_steps=1,
                        eval_episodes=2)


def int8_check() -> dict:
    from eggroll_rl import envs
    from eggroll_rl.agents.int8_es import Int8ESTrainer

    task = envs.make("gymnax/CartPole-v1")
    n = jax.device_count()
    trainers = {devices: Int8ESTrainer(task, _int8_config(devices)) for devices in (1, n)}
    states = {devices: _train(trainer, iterations=3) for devices, trainer in trainers.items()}
    one = jax.tree_util.tree_map(lambda x: x[0], states[n])
    noise = trainers[n].strategy.draw(one.key, one.generation)
    errors = {}
    try:
        Int8ESTrainer(task, dataclasses.replace(_int8_config(n), population_size=18))
    except ValueError as error:
        errors["population"] = str(error)
    initial = _initial(trainers[1]).params
    return {
        "devices": n,
        "params_equal": all(
            np.array_equal(np.asarray(a), np.asarray(b))
            for a, b in zip(jax.tree_util.tree_leaves(states[1].params),
                            jax.tree_util.tree_leaves(states[n].params))
        ),
        "moved": sum(int(np.sum(np.asarray(a) != np.asarray(b)))
                     for a, b in zip(jax.tree_util.tree_leaves(states[1].params),
                                     jax.tree_util.tree_leaves(initial))),
        "obs_stats_max_diff": _max_diff(states[1].obs_stats, states[n].obs_stats),
        "env_steps": [np.asarray(states[d].env_steps).tolist() for d in (1, n)],
        "params_replicated": _replicated(states[n].params),
        "noise_rows_per_device": _rows_per_device(noise),
        "noise_devices": _devices_spanned(noise),
        "errors": errors,
    }


def ppo_defaults_check() -> dict:
    """The default PPO config builds on every device count up to this run's, and trains on all."""
    import warnings

    from eggroll_rl import envs
    from eggroll_rl.agents.ppo import PPO, PPOConfig

    task = envs.make("gymnax/CartPole-v1")
    n = jax.device_count()
    report = {"devices": n, "num_envs": {}, "warned": {}}
    counts = sorted({d for d in (1, 2, 4, 8, n) if d <= n})
    for devices in counts:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            trainer = PPO(task, PPOConfig(devices=devices, total_steps=1))
        report["num_envs"][devices] = trainer.config.num_envs
        report["warned"][devices] = [str(w.message) for w in caught if "num_envs" in str(w.message)]
    state = _train(trainer, iterations=1)
    report["env_steps"] = np.asarray(state.env_steps).tolist()
    report["obs_devices"] = _devices_spanned(state.obs)
    report["finite"] = bool(all(np.all(np.isfinite(np.asarray(x)))
                                for x in jax.tree_util.tree_leaves(state.params)))
    return report


def rollout_hlo_check() -> dict:
    """Which collectives a sharded rollout's compiled loops hold: per chunk or per env step."""
    import re

    from eggroll_rl import envs
    from eggroll_rl.agents.es import ESTrainer
    from eggroll_rl.envs.rollout import rollout, steps_per_check

    task = envs.make("gymnax/CartPole-v1")
    trainer = ESTrainer(task, _es_config("eggroll", 0))
    state = jax.jit(trainer.init)(jax.random.key(0))
    strategy = trainer.strategy
    population = strategy.ask(state.evo)
    report = {"devices": jax.device_count(), "chunk": steps_per_check(task.max_episode_steps)}
    for variant, stats in (("obs_stats", state.obs_stats), ("no_obs_stats", None)):
        text = rollout.lower(
            task, strategy, population, trainer.network.apply, jax.random.key(1),
            deterministic=True, obs_stats=stats,
        ).compile().as_text()
        report[variant] = _loop_collectives(text)
    return report


def _loop_collectives(text: str) -> list[dict]:
    """The while loops (those carrying a bool mask) of compiled HLO ``text``, outermost first,
    with their known trip count and the collectives of their condition and of their body
    (a nested loop's own collectives are listed under it, not under its parent)."""
    import re

    # Split the module into computations; follow while loops from the entry computation.
    computations, name = {}, None
    for line in text.splitlines():
        header = re.match(r"^(?:ENTRY )?%?([\w.\-]+) .*\{$", line)
        if header and not line.startswith(" "):
            name = header.group(1)
            computations[name] = []
            if line.startswith("ENTRY"):
                entry = name
        elif name is not None:
            computations[name].append(line)
    collective = re.compile(r"= [^=]*\b(all-reduce|all-gather|all-to-all|collective-permute|reduce-scatter)(?:-start)?\(")

    def called(lines):
        for line in lines:
            for key in ("condition", "body", "to_apply", "calls", "branch_computations"):
                for match in re.finditer(key + r"=\{?%?([\w.\-]+)", line):
                    yield key, match.group(1), line

    def collectives(comp, seen=()):
        """Collectives in ``comp`` and what it calls, except inside nested while loops."""
        found = [m.group(1) for line in computations[comp] for m in [collective.search(line)] if m]
        for key, callee, line in called(computations[comp]):
            if " while(" in line or callee in seen or callee not in computations:
                continue
            found += collectives(callee, seen + (comp,))
        return found

    def loops(comp, depth=0, seen=()):
        out = []
        for line in computations[comp]:
            if " while(" not in line or "pred[" not in line:
                continue
            cond = re.search(r"condition=%?([\w.\-]+)", line).group(1)
            body = re.search(r"body=%?([\w.\-]+)", line).group(1)
            trips = re.search(r'"known_trip_count":\{"n":"(\d+)"', line)
            out.append({
                "depth": depth,
                "trip_count": int(trips.group(1)) if trips else None,
                "condition_collectives": collectives(cond),
                "body_collectives": collectives(body),
            })
            out += loops(body, depth + 1)
        return out

    return loops(entry)


def process_check(process_id: int, port: int) -> dict:
    from eggroll_rl import distributed

    distributed.initialize(f"127.0.0.1:{port}", num_processes=2, process_id=process_id)
    from eggroll_rl import envs
    from eggroll_rl.agents.es import ESTrainer

    task = envs.make("gymnax/CartPole-v1")
    # Both processes share one run folder, as hosts on a shared filesystem would.
    run_dir = pathlib.Path(tempfile.gettempdir()) / f"eggroll-rl-process-check-{os.getppid()}-{port}"
    state = _train(ESTrainer(task, _es_config("eggroll", 0)), run_dir=run_dir)
    jax.experimental.multihost_utils.sync_global_devices("logs written")
    metrics = run_dir / "metrics.jsonl"
    return {  # the one-device reference is the es check's (same config and seeds)
        "process": jax.process_index(),
        "devices": jax.device_count(),
        "local_devices": jax.local_device_count(),
        "params_replicated": _replicated(state.evo.mean),
        "params": _flat(state.evo.mean),
        "metric_rows": len(metrics.read_text().splitlines()) if metrics.exists() else 0,
        "checkpoints": sorted(p.name for p in (run_dir / "checkpoints").iterdir()),
    }


def main(argv: list[str]) -> None:
    if argv[0] == "es":
        report = es_check()
    elif argv[0] == "ppo":
        report = ppo_check()
    elif argv[0] == "int8":
        report = int8_check()
    elif argv[0] == "ppo-defaults":
        report = ppo_defaults_check()
    elif argv[0] == "rollout-hlo":
        report = rollout_hlo_check()
    elif argv[0] == "process":
        report = process_check(int(argv[1]), int(argv[2]))
    else:
        raise SystemExit(f"unknown check {argv[0]!r}: es, ppo or process ID PORT")
    print("RESULT " + json.dumps(report), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
