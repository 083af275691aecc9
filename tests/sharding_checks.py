"""Multi-device checks for ``test_sharding.py``, run in a subprocess with simulated CPU devices.

The device count is fixed when JAX starts, so each check runs in a fresh process that the test
starts with ``XLA_FLAGS=--xla_force_host_platform_device_count=N``; it prints one JSON line.

  python tests/sharding_checks.py es             EGGROLL and OpenES: 1 device vs all devices
  python tests/sharding_checks.py ppo            PPO: 1 device vs all devices
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
        "ppo": lambda: PPO(task, dataclasses.replace(_ppo_config(n), num_envs=6)),
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
    elif argv[0] == "process":
        report = process_check(int(argv[1]), int(argv[2]))
    else:
        raise SystemExit(f"unknown check {argv[0]!r}: es, ppo or process ID PORT")
    print("RESULT " + json.dumps(report), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
