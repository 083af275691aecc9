"""Scale: exact env-step counts far past 2^31, and EGGROLL memory that grows with N r (m + n).

The counter is exercised directly (no rollouts): 10,000 generations of 65,536 members x 1,000
steps is 6.5e11 env steps, which an int32 count wraps after 33 generations. The memory checks
only compile (XLA's own accounting of the compiled program), so they run in seconds.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from eggroll_rl import Eggroll, envs
from eggroll_rl.envs.rollout import StepCount
from eggroll_rl.layer import EggrollDense


# ---- env-step counter ------------------------------------------------------------------------
def test_step_count_reaches_six_hundred_billion_exactly():
    per_generation = 65_536 * 1_000
    generations = 10_000

    @jax.jit
    def count(start):
        return jax.lax.scan(
            lambda c, _: (c.add(jnp.uint32(per_generation)), None), start, None, generations
        )[0]

    total = count(StepCount.zero())
    assert int(total) == per_generation * generations == 655_360_000_000
    assert np.asarray(total).dtype == np.int64 and np.asarray(total).shape == ()
    # An int32 count of the same steps would have wrapped long before.
    assert np.asarray(per_generation * 33).astype(np.int32) < 0


def test_step_count_adds_exactly_near_every_word_boundary():
    rng = np.random.default_rng(0)
    steps = np.concatenate([
        rng.integers(0, 2**32, 500, dtype=np.uint64),
        [2**31 - 1, 2**31, 2**32 - 1, 0, 1, 2**31 + 1, 2**32 - 2],
    ]).astype(np.uint32)
    add = jax.jit(lambda c, s: c.add(s))
    count, expected = StepCount.zero(), 0
    for s in steps:
        count = add(count, s)
        expected += int(s)
        assert int(count) == expected
        assert 0 <= int(count.low) < 2**31
    # int32 inputs (the rollout sums of earlier versions) and Python ints add the same way.
    assert int(add(count, np.int32(2**31 - 1))) == expected + 2**31 - 1
    assert int(count.add(12345)) == expected + 12345


def test_step_count_is_a_pytree_that_vmaps_over_seeds():
    counts = jax.vmap(lambda s: StepCount.zero().add(s).add(s))(
        jnp.asarray([2**31 - 1, 5, 2**32 - 1], jnp.uint32)
    )
    np.testing.assert_array_equal(np.asarray(counts), [2**32 - 2, 10, 2**33 - 2])
    assert np.asarray(counts).dtype == np.int64


def test_trainers_count_steps_past_int32(monkeypatch):
    """Every trainer's generation adds through ``StepCount``: start one step short of 2^31."""
    from eggroll_rl.agents.es import ESConfig, ESTrainer
    from eggroll_rl.agents.int8_es import Int8ESConfig, Int8ESTrainer
    from eggroll_rl.agents.ppo import PPO, PPOConfig

    task = envs.make("gymnax/CartPole-v1")
    trainers = [
        ESTrainer(task, ESConfig(population_size=4, hidden=(4,), layer_norm=False)),
        Int8ESTrainer(task, Int8ESConfig(population_size=4, hidden=(4,))),
        PPO(task, PPOConfig(num_envs=2, num_steps=4, num_minibatches=1, update_epochs=1,
                            hidden=(4,))),
    ]
    start = StepCount(high=jnp.int32(0), low=jnp.int32(2**31 - 1))
    for trainer in trainers:
        state = dataclasses.replace(trainer.init(jax.random.key(0)), env_steps=start)
        state, metrics = jax.jit(lambda s: trainer.train_chunk(s, 2))(state)
        steps = int(state.env_steps)
        assert steps > 2**31, trainer.name
        assert int(np.asarray(metrics["env_steps"])[-1]) == steps


def test_a_generation_that_could_overflow_the_step_sum_is_rejected():
    from eggroll_rl.agents.es import ESConfig, ESTrainer

    task = envs.make("gymnax/CartPole-v1")  # 500 steps: 2^32 / 500 = 8.6M episodes
    with pytest.raises(ValueError, match="exceed 2\\^32 env steps in one generation"):
        ESTrainer(task, ESConfig(population_size=2**22, episodes_per_member=4, hidden=(4,)))


# ---- EGGROLL memory: O(N r (m + n)), never O(N m n) -------------------------------------------
MEMBERS, WIDTH = 4096, 1024  # N m n float32 = 17 GB; N r (m + n) = 34 MB
LIMIT = 1 << 30


def _bytes(compiled) -> int:
    stats = compiled.memory_analysis()
    return stats.temp_size_in_bytes + stats.output_size_in_bytes


def test_ask_tell_and_forward_compile_to_low_rank_memory():
    assert MEMBERS * WIDTH * WIDTH * 4 > 10 * LIMIT
    model = EggrollDense(WIDTH)
    params = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((WIDTH,)))
    strategy = Eggroll(MEMBERS, 0.01, rank=1, noise_dtype="float32")
    state = jax.eval_shape(strategy.init, jax.random.key(1), params)
    population = jax.eval_shape(strategy.ask, state)
    fitness = jax.ShapeDtypeStruct((MEMBERS,), jnp.float32)
    obs = jax.ShapeDtypeStruct((MEMBERS, 1, WIDTH), jnp.float32)

    ask = jax.jit(strategy.ask).lower(state).compile()
    tell = jax.jit(lambda s, p, f: strategy.tell(s, p, f)).lower(state, population, fitness).compile()
    forward = jax.jit(lambda p, x: strategy.population_apply(p, model.apply, x)).lower(
        population, obs
    ).compile()
    sizes = {"ask": _bytes(ask), "tell": _bytes(tell), "forward": _bytes(forward)}
    low_rank = MEMBERS * 1 * (2 * WIDTH) * 4
    assert all(size < LIMIT for size in sizes.values()), sizes
    # ask's output is the noise itself: about N r (m + n) floats, nothing of size N m n.
    assert low_rank <= sizes["ask"] < 4 * low_rank + 16 * WIDTH * WIDTH, sizes
