"""PPO throughput: ours against Brax's own trainer, same env, backend, batch sizes and network.

Brax's PPO trainer (``brax.training.agents.ppo.train``) no longer runs on current JAX, so it is
timed in a separate virtual environment made with
    python -m venv BRAX_VENV && BRAX_VENV/bin/pip install "jax<0.7" "jaxlib<0.7" brax==0.12.5 \
        "flax<0.11" "mujoco<3.4" "mujoco-mjx<3.4" "orbax-checkpoint<0.12"
and this script runs itself there as a worker (``--brax-worker``, which imports nothing of
ours). Both sides use Brax's inverted_double_pendulum preset batch sizes (2048 envs, batch 1024
x 32 minibatches x unroll 5 = 163,840 env steps per update, 4 epochs), the spring backend and a
64 x 64 actor and critic.

Usage: python experiments/brax_ppo_speed.py --brax-python BRAX_VENV/bin/python [--updates 3] [--rounds 2]
The two sides alternate ``--rounds`` times (ours, Brax, ours, Brax, ...) so a change in machine
load hits both; each side's best round is reported, and every round's figures are kept.
Writes experiments/results/brax_ppo_speed.json.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import subprocess
import sys
import time

ENV, BACKEND = "inverted_double_pendulum", "spring"
NUM_ENVS, BATCH, MINIBATCHES, UNROLL, EPOCHS = 2048, 1024, 32, 5, 4
HIDDEN = (64, 64)
STEPS_PER_UPDATE = BATCH * MINIBATCHES * UNROLL


def brax_worker(updates: int) -> dict:
    """Runs inside the Brax venv: Brax's PPO, env steps/s from its own 'training/sps'."""
    import functools

    import brax
    import jax
    from brax import envs as brax_envs
    from brax.training.agents.ppo import networks as ppo_networks
    from brax.training.agents.ppo import train as ppo

    sps = []
    env = brax_envs.get_environment(ENV, backend=BACKEND)
    start = time.perf_counter()
    ppo.train(
        environment=env,
        num_timesteps=STEPS_PER_UPDATE * updates,
        num_evals=updates + 1,  # one training epoch (= one update here) between evals
        episode_length=1000,
        num_envs=NUM_ENVS,
        batch_size=BATCH,
        num_minibatches=MINIBATCHES,
        unroll_length=UNROLL,
        num_updates_per_batch=EPOCHS,
        normalize_observations=True,
        reward_scaling=10,
        discounting=0.97,
        learning_rate=3e-4,
        entropy_cost=1e-2,
        num_eval_envs=1,
        network_factory=functools.partial(
            ppo_networks.make_ppo_networks,
            policy_hidden_layer_sizes=HIDDEN,
            value_hidden_layer_sizes=HIDDEN,
        ),
        progress_fn=lambda step, metrics: sps.append(metrics.get("training/sps")),
        seed=0,
    )
    measured = [s for s in sps if s is not None]
    return {
        "env_steps_per_s": max(measured[1:] or measured),  # the first epoch includes compile
        "per_update_sps": measured,
        "total_s": time.perf_counter() - start,
        "brax": brax.__version__,
        "jax": jax.__version__,
    }


def our_trainer(updates: int = 1):
    """Our PPO on Brax's preset env, backend, batch sizes and network."""
    from eggroll_rl import envs
    from eggroll_rl.agents.ppo import PPO, PPOConfig

    config = PPOConfig(
        num_envs=NUM_ENVS, num_steps=STEPS_PER_UPDATE // NUM_ENVS, num_minibatches=MINIBATCHES,
        update_epochs=EPOCHS, lr=3e-4, gamma=0.97, ent_coef=1e-2, hidden=HIDDEN,
        layer_norm=False, normalize_reward=False, total_steps=STEPS_PER_UPDATE * updates,
    )
    return PPO(envs.make(f"brax/{ENV}", backend=BACKEND), config)


def ours(updates: int) -> dict:
    """Our PPO on the same env and batch sizes; compiled chunk timed without evaluation."""
    import jax

    from eggroll_rl.xla import cpu_options as xla_options

    trainer = our_trainer(updates)
    start = time.perf_counter()
    options = xla_options.compiler_options()  # as `eggroll-rl train --xla-cpu-options` compiles
    state = jax.jit(trainer.init, compiler_options=options)(jax.random.key(0))
    update = jax.jit(lambda s: trainer.train_chunk(s, 1)[0], compiler_options=options)
    update = update.lower(state).compile()
    compile_s = time.perf_counter() - start
    state = jax.block_until_ready(update(state))  # first run, excluded like Brax's first epoch
    rates = []
    for _ in range(updates - 1):
        tick = time.perf_counter()
        state = jax.block_until_ready(update(state))
        rates.append(STEPS_PER_UPDATE / (time.perf_counter() - tick))
    return {"env_steps_per_s": max(rates), "per_update_sps": rates, "compile_s": compile_s,
            "jax": jax.__version__, "compiler_options": options}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--brax-python", help="python of the venv with brax==0.12.5")
    parser.add_argument("--updates", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=2, help="alternations of ours and Brax")
    parser.add_argument("--brax-worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--out", default=str(pathlib.Path(__file__).resolve().parents[1] / "results" / "brax_ppo_speed.json"))
    args = parser.parse_args()
    if args.updates < 2:
        parser.error("--updates must be >= 2 (the first update includes compilation)")
    if args.brax_worker:
        print(json.dumps(brax_worker(args.updates)))
        return
    if not args.brax_python:
        parser.error("--brax-python is required (see the module docstring for the venv)")
    rounds = []
    for _ in range(max(1, args.rounds)):
        ours_round = ours(args.updates)
        print("ours:", ours_round, flush=True)
        worker = subprocess.run(
            [args.brax_python, __file__, "--brax-worker", "--updates", str(args.updates)],
            capture_output=True, text=True, check=True,
            env=dict(os.environ),  # Brax's trainer at XLA's defaults
        )
        brax_round = json.loads(worker.stdout.strip().splitlines()[-1])
        print("brax:", brax_round, flush=True)
        rounds.append({"ours": ours_round, "brax_ppo": brax_round})
    best = lambda side: max((r[side] for r in rounds), key=lambda r: r["env_steps_per_s"])
    ours_result, brax_result = best("ours"), best("brax_ppo")
    report = {
        "command": " ".join([pathlib.Path(sys.argv[0]).name, *sys.argv[1:]]),
        "date": time.strftime("%Y-%m-%d"),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "env": ENV, "backend": BACKEND, "num_envs": NUM_ENVS,
        "env_steps_per_update": STEPS_PER_UPDATE, "minibatches": MINIBATCHES, "epochs": EPOCHS,
        "hidden": list(HIDDEN),
        "ours": ours_result, "brax_ppo": brax_result, "rounds": rounds,
        "ours_vs_brax": ours_result["env_steps_per_s"] / brax_result["env_steps_per_s"],
    }
    pathlib.Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(f"ours {ours_result['env_steps_per_s']:,.0f} vs Brax PPO "
          f"{brax_result['env_steps_per_s']:,.0f} env steps/s: {report['ours_vs_brax']:.2f}x")


if __name__ == "__main__":
    main()
