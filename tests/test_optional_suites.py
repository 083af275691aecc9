"""The optional suites' adapters (Jumanji, Navix, Craftax, Kinetix) against the libraries
themselves.

Each paper env runs one compiled program: a short rollout of the Task, ``vmap``-ed over two
episodes, next to the library's own env fed the same keys and actions. The tests then compare
rewards, observations and the end-of-episode flags, including a forced truncation or
termination. Compilation dominates on a CPU, so each program is compiled once (module
fixtures) with XLA's cheap CPU settings (``FAST_COMPILE``: fewer LLVM and fusion passes, the
same arithmetic). The Craftax rollouts (minutes of compilation) and the checks of every
registered env, not only the paper's, run only with ``EGGROLL_SLOW_TESTS=1``. A suite that is
not installed is skipped; the registry's errors for missing and uninstallable suites are
tested without any of them.
"""

import os

import gymnasium
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from eggroll_rl import envs
from eggroll_rl.envs import suites

FAST_COMPILE = {
    "xla_backend_optimization_level": 0,
    "xla_llvm_disable_expensive_passes": True,
    "xla_cpu_use_fusion_emitters": False,
}
_OPT_IN = pytest.mark.skipif(
    not os.environ.get("EGGROLL_SLOW_TESTS"),
    reason="minutes of compiling or tracing (Craftax rollouts, every env): EGGROLL_SLOW_TESTS=1",
)


def SLOW(test):
    """Marked ``slow``, and run only with ``EGGROLL_SLOW_TESTS=1`` (minutes each)."""
    return pytest.mark.slow(_OPT_IN(test))
BATCH = 2


def run_compiled(fn, *args):
    """``jax.jit(fn)(*args)``, compiled with FAST_COMPILE, as NumPy arrays."""
    compiled = jax.jit(fn).lower(*args).compile(compiler_options=FAST_COMPILE)
    return jax.tree_util.tree_map(np.asarray, compiled(*args))


def first_done(terminated, truncated) -> int:
    done = np.flatnonzero(np.logical_or(terminated, truncated))
    assert done.size, "the rollout never ended an episode"
    return int(done[0])


def assert_obs_in_space(task, obs):
    assert obs.dtype == np.float32 and obs.shape[-1:] == task.observation_space.shape
    for row in obs.reshape(-1, obs.shape[-1]):
        assert task.observation_space.contains(row)


def _scanned_episode(task):
    """``(reset_key, keys, actions) -> (first obs, per-step outputs)``: our Task reset once,
    then stepped through ``actions`` in a ``lax.scan``."""

    def run(reset_key, keys, actions):
        obs, state = task.reset(reset_key)

        def body(state, inputs):
            key, action = inputs
            obs, state, reward, terminated, truncated, info = task.step(key, state, action)
            return state, dict(obs=obs, reward=reward, terminated=terminated,
                               truncated=truncated, final_obs=info["final_obs"])

        return obs, jax.lax.scan(body, state, (keys, actions))[1]

    return run


# ----------------------------------------------------------------------------- the registry


def test_uninstalled_optional_suite_is_not_registered_and_names_its_extra(monkeypatch):
    monkeypatch.setitem(suites.OPTIONAL_EXTRAS, "jumanji", ("jumanji", "no_such_package_j"))
    monkeypatch.setitem(suites.OPTIONAL_EXTRAS, "fakesuite", ("fakesuite", "no_such_package_f"))
    registered = []
    suites.register_all(lambda env_id, factory: registered.append(env_id))
    assert "gymnax/CartPole-v1" in registered
    assert not any(env_id.startswith("jumanji/") for env_id in registered)
    message = suites.missing_extra("jumanji/Snake-v1")
    assert "'no_such_package_j'" in message and 'pip install -e ".[jumanji]"' in message
    with pytest.raises(ValueError, match=r'pip install -e "\.\[fakesuite\]"'):
        envs.make("fakesuite/Thing-v0")


def test_missing_kinetix_names_both_install_commands_and_the_jax_downgrade(monkeypatch):
    monkeypatch.setitem(suites.OPTIONAL_EXTRAS, "kinetix", ("kinetix", "no_such_package_k"))
    registered = []
    suites.register_all(lambda env_id, factory: registered.append(env_id))
    assert not any(env_id.startswith("kinetix/") for env_id in registered)
    message = suites.missing_extra("kinetix/s-h1_thrust_over_ball")
    extra, no_deps = 'pip install -e ".[kinetix]"', "pip install --no-deps kinetix-env==3.0.2"
    assert extra in message and no_deps in message
    assert message.index(extra) < message.index(no_deps)  # the extra first
    assert "plain `pip install kinetix-env` would downgrade jax" in message


def test_uninstallable_suite_explains_why(monkeypatch):
    monkeypatch.setitem(suites.OPTIONAL_EXTRAS, "fakesuite", ("fakesuite", "no_such_package_f"))
    monkeypatch.setitem(suites.UNINSTALLABLE, "fakesuite", "it pins jax<0.5")
    message = suites.missing_extra("fakesuite/Thing-v0")
    assert "it pins jax<0.5" in message and 'extra "fakesuite"' in message


def test_installed_suites_register_the_paper_ids():
    ids = envs.list_envs()
    paper = {
        "jumanji": ["jumanji/Game2048-v1", "jumanji/Knapsack-v1", "jumanji/Snake-v1"],
        "navix": ["navix/DoorKey-8x8", "navix/Dynamic-Obstacles-6x6-Random", "navix/FourRooms"],
        "craftax": [
            "craftax/Craftax-Classic-Symbolic-AutoReset-v1",
            "craftax/Craftax-Symbolic-AutoReset-v1",
        ],
        "kinetix": [
            "kinetix/l-hard_pinball",
            "kinetix/m-h17_thrustcontrol_left",
            "kinetix/s-h1_thrust_over_ball",
        ],
    }
    for suite, wanted in paper.items():
        installed = suites.missing_extra(wanted[0]) is None
        assert all((env_id in ids) == installed for env_id in wanted), suite


# ----------------------------------------------------------------------------- Jumanji


def test_jumanji_names_cover_its_registry():
    jumanji = pytest.importorskip("jumanji")
    from eggroll_rl.envs import jumanji_tasks

    adapted = set(jumanji_tasks.names())
    assert adapted.isdisjoint(jumanji_tasks.NOT_ADAPTED)
    assert adapted | set(jumanji_tasks.NOT_ADAPTED) == set(jumanji.registered_environments())


def test_jumanji_joint_actions_become_one_discrete_action():
    pytest.importorskip("jumanji")
    import jumanji

    from eggroll_rl.envs import jumanji_tasks

    task = envs.make("jumanji/Tetris-v0")  # (rotation 4, column 10)
    assert task.action_space.n == 40 and task.max_episode_steps == 400
    to_env, _ = jumanji_tasks._action_adapter("t", jumanji.make("Tetris-v0").action_spec)
    assert to_env(jnp.int32(23)).tolist() == [2, 3]  # row-major, like the flattened mask
    with pytest.raises(ValueError, match="outside Discrete"):
        task.step(jax.random.key(1), None, jnp.int32(40))
    with pytest.raises(ValueError, match="max_episode_steps=9 instead of time_limit"):
        envs.make("jumanji/Snake-v1", time_limit=9)


def assert_traces_under_vmap(task):
    """Reset and step trace under ``vmap`` (no compilation) with the declared shapes and dtypes."""
    keys = jax.random.split(jax.random.key(0), BATCH)
    obs, state = jax.eval_shape(jax.vmap(task.reset), keys)
    action = jax.ShapeDtypeStruct((BATCH,), jnp.int32)
    next_obs, _, reward, terminated, truncated, info = jax.eval_shape(
        jax.vmap(task.step), keys, state, action
    )
    shape = (BATCH,) + task.observation_space.shape
    assert obs.shape == next_obs.shape == info["final_obs"].shape == shape, task.env_id
    assert obs.dtype == next_obs.dtype == reward.dtype == jnp.float32, task.env_id
    assert reward.shape == terminated.shape == truncated.shape == (BATCH,), task.env_id
    assert terminated.dtype == truncated.dtype == jnp.bool_, task.env_id


@SLOW
def test_every_jumanji_env_traces_under_vmap():
    pytest.importorskip("jumanji")
    from eggroll_rl.envs import jumanji_tasks

    for name in jumanji_tasks.names():
        assert_traces_under_vmap(envs.make(f"jumanji/{name}"))


# name -> (make kwargs, reference env kwargs, mask size, step that repeats the last action,
#          expected (flag, steps at which it fires))
JUMANJI_CASES = {
    # No limit of its own: the adapter truncates at 3, and again 3 steps into the next episode.
    "Game2048-v1": (dict(max_episode_steps=3), {}, 4, -1, ("truncated", [2, 5])),
    # Packing the same item twice is invalid: Knapsack terminates (reward 0).
    "Knapsack-v1": ({}, {}, 50, 4, ("terminated", [4])),
    # Jumanji ends Snake at its time limit as a *termination*; the adapter calls it truncation.
    "Snake-v1": (dict(max_episode_steps=3), dict(time_limit=3), 4, -1, ("truncated", [2, 5])),
}
JUMANJI_STEPS = 7


@pytest.fixture(scope="module", params=sorted(JUMANJI_CASES))
def jumanji_run(request):
    jumanji = pytest.importorskip("jumanji")
    from eggroll_rl.envs.jumanji_tasks import flatten_observation

    name = request.param
    kwargs, ref_kwargs, mask_size, repeat_at, _ = JUMANJI_CASES[name]
    task = envs.make(f"jumanji/{name}", **kwargs)
    ref = jumanji.make(name, **ref_kwargs)

    def episode(reset_key, keys):
        obs, state = task.reset(reset_key)
        ref_state, ref_timestep = ref.reset(reset_key)
        start = (obs, flatten_observation(ref_timestep.observation))

        def body(carry, inputs):
            obs, state, ref_state, last = carry
            t, key = inputs
            key_action, key_env = jax.random.split(key)
            mask = obs[-mask_size:] > 0.5  # the action mask is the observation's last field
            valid = jax.random.categorical(key_action, jnp.where(mask, 0.0, -jnp.inf))
            action = jnp.where(t == repeat_at, last, valid).astype(jnp.int32)
            obs, state, reward, terminated, truncated, info = task.step(key_env, state, action)
            ref_state, ref_timestep = ref.step(ref_state, action)
            out = dict(
                obs=obs, reward=reward, terminated=terminated, truncated=truncated,
                final_obs=info["final_obs"], ref_reward=ref_timestep.reward,
                ref_last=ref_timestep.last(), ref_discount=ref_timestep.discount,
                ref_obs=flatten_observation(ref_timestep.observation),
                ref_reset_obs=flatten_observation(ref.reset(key_env)[1].observation),
            )
            return (obs, state, ref_state, action), out

        carry = (obs, state, ref_state, jnp.int32(0))
        _, steps = jax.lax.scan(body, carry, (jnp.arange(JUMANJI_STEPS), keys))
        return start, steps

    reset_keys = jax.random.split(jax.random.key(0), BATCH)
    keys = jax.random.split(jax.random.key(1), (BATCH, JUMANJI_STEPS))
    start, steps = run_compiled(jax.vmap(episode), reset_keys, keys)
    return name, task, start, steps


def test_jumanji_obs_are_flat_float32_in_the_space(jumanji_run):
    name, task, (obs0, ref_obs0), steps = jumanji_run
    assert obs0.shape == (BATCH,) + task.observation_space.shape
    np.testing.assert_array_equal(obs0, ref_obs0)
    assert_obs_in_space(task, obs0)
    assert_obs_in_space(task, steps["obs"])
    assert steps["reward"].dtype == np.float32 and steps["terminated"].dtype == bool


def test_jumanji_matches_jumanji_until_the_episode_ends(jumanji_run):
    name, task, _, steps = jumanji_run
    for b in range(BATCH):
        end = first_done(steps["terminated"][b], steps["truncated"][b])
        span = slice(0, end + 1)
        np.testing.assert_array_equal(steps["reward"][b, span], steps["ref_reward"][b, span])
        np.testing.assert_array_equal(steps["final_obs"][b, span], steps["ref_obs"][b, span])
        np.testing.assert_array_equal(steps["obs"][b, :end], steps["final_obs"][b, :end])
        # same-step autoreset: the ending step returns the next episode's first observation
        np.testing.assert_array_equal(steps["obs"][b, end], steps["ref_reset_obs"][b, end])
        if name == "Knapsack-v1":  # packing pays: the comparison is not of zeros
            assert steps["reward"][b, :end].min() > 0


def test_jumanji_ends_are_reported_in_the_right_flag(jumanji_run):
    name, task, _, steps = jumanji_run
    flag, at = JUMANJI_CASES[name][-1]
    other = "terminated" if flag == "truncated" else "truncated"
    for b in range(BATCH):
        assert np.flatnonzero(steps[flag][b]).tolist() == at, (name, b)
        assert not steps[other][b].any(), (name, b)
        end = at[0]
        if name == "Knapsack-v1":  # invalid action: termination, no reward
            assert steps["ref_last"][b, end] and steps["ref_discount"][b, end] == 0
            assert steps["reward"][b, end] == 0
        if name == "Snake-v1":  # Jumanji's own verdict on its time limit: discount 0
            assert steps["ref_last"][b, end] and steps["ref_discount"][b, end] == 0
        if name == "Game2048-v1":
            assert not steps["ref_last"][b, end]


# ----------------------------------------------------------------------------- Navix


def test_navix_names_cover_its_registry():
    navix = pytest.importorskip("navix")
    from eggroll_rl.envs import navix_tasks

    assert {navix_tasks.navix_id(name) for name in navix_tasks.names()} == set(navix.registry())
    task = envs.make("navix/DoorKey-8x8")
    assert task.max_episode_steps == 100 and task.action_space.n == 7
    assert task.observation_space.shape == (8 * 8 * 3,)


@SLOW
def test_every_navix_env_traces_under_vmap():
    pytest.importorskip("navix")
    from eggroll_rl.envs import navix_tasks

    for name in navix_tasks.names():
        assert_traces_under_vmap(envs.make(f"navix/{name}"))


NAVIX_NAMES = ["DoorKey-8x8", "Dynamic-Obstacles-6x6-Random", "FourRooms"]
NAVIX_LIMIT = 4
NAVIX_STEPS = 6


@pytest.fixture(scope="module", params=NAVIX_NAMES)
def navix_run(request):
    navix = pytest.importorskip("navix")
    name = request.param
    task = envs.make(f"navix/{name}", max_episode_steps=NAVIX_LIMIT)
    ref = navix.make(f"Navix-{name}-v0", max_steps=NAVIX_LIMIT)
    flat = lambda observation: jnp.asarray(observation, jnp.float32).reshape(-1)

    ours = _scanned_episode(task)

    def reference(inputs):  # the library's own step (it autoresets on the *next* call)
        reset_key, keys, actions = inputs
        timestep = ref.reset(reset_key)

        def body(timestep, inputs):
            key, action = inputs
            timestep = ref.step(timestep, action)
            return timestep, dict(reward=timestep.reward, step_type=timestep.step_type,
                                  obs=flat(timestep.observation),
                                  reset_obs=flat(ref.reset(key).observation))

        return flat(timestep.observation), jax.lax.scan(body, timestep, (keys, actions))[1]

    def program(reset_keys, keys, actions):
        # ours under vmap; the reference one episode at a time (lax.map), as the library runs it
        inputs = (reset_keys, keys, actions)
        return jax.vmap(ours)(*inputs), jax.lax.map(reference, inputs)

    reset_keys = jax.random.split(jax.random.key(2), BATCH)
    keys = jax.random.split(jax.random.key(3), (BATCH, NAVIX_STEPS))
    actions = jax.random.randint(jax.random.key(4), (BATCH, NAVIX_STEPS), 0, 7, jnp.int32)
    (obs0, steps), (ref_obs0, ref) = run_compiled(program, reset_keys, keys, actions)
    return name, task, obs0, steps, ref_obs0, ref


def test_navix_obs_are_flat_float32_in_the_space(navix_run):
    _, task, obs0, steps, ref_obs0, _ = navix_run
    assert obs0.shape == (BATCH,) + task.observation_space.shape
    np.testing.assert_array_equal(obs0, ref_obs0)
    assert_obs_in_space(task, obs0)
    assert_obs_in_space(task, steps["obs"])
    assert steps["reward"].dtype == np.float32


def test_navix_matches_navix_and_reports_its_step_types(navix_run):
    name, task, _, steps, _, ref = navix_run
    for b in range(BATCH):
        end = first_done(steps["terminated"][b], steps["truncated"][b])
        assert end <= NAVIX_LIMIT - 1
        span = slice(0, end + 1)
        np.testing.assert_array_equal(steps["reward"][b, span], ref["reward"][b, span])
        np.testing.assert_array_equal(steps["final_obs"][b, span], ref["obs"][b, span])
        # navix step types: 1 truncation, 2 termination
        np.testing.assert_array_equal(steps["truncated"][b, span], ref["step_type"][b, span] == 1)
        np.testing.assert_array_equal(steps["terminated"][b, span], ref["step_type"][b, span] == 2)
        np.testing.assert_array_equal(steps["obs"][b, end], ref["reset_obs"][b, end])
        if steps["truncated"][b, end]:
            assert end == NAVIX_LIMIT - 1
    if name != "Dynamic-Obstacles-6x6-Random":  # 4 random steps reach no goal: the limit ends them
        assert steps["truncated"][:, NAVIX_LIMIT - 1].all() and not steps["terminated"].any()


# ----------------------------------------------------------------------------- Craftax

CRAFTAX = {
    "Craftax-Classic-Symbolic-AutoReset-v1": ("Craftax-Classic-Symbolic-v1", 1345, 17, 10_000),
    "Craftax-Symbolic-AutoReset-v1": ("Craftax-Symbolic-v1", 8268, 43, 100_000),
}


@pytest.mark.parametrize("name", sorted(CRAFTAX))
def test_craftax_spaces_and_limits(name):
    pytest.importorskip("craftax")
    _, size, actions, limit = CRAFTAX[name]
    task = envs.make(f"craftax/{name}")
    assert task.observation_space.shape == (size,) and task.observation_space.dtype == np.float32
    assert task.action_space.n == actions and task.max_episode_steps == limit
    assert envs.make(f"craftax/{name}", max_episode_steps=7).max_episode_steps == 7
    with pytest.raises(ValueError, match="max_episode_steps= instead of max_timesteps"):
        envs.make(f"craftax/{name}", max_timesteps=7)


@pytest.mark.parametrize("name", sorted(CRAFTAX))
def test_craftax_death_terminates_and_the_time_limit_truncates(name):
    pytest.importorskip("craftax")
    from craftax.craftax_env import make_craftax_env_from_name

    from eggroll_rl.envs import craftax_tasks

    env = make_craftax_env_from_name(CRAFTAX[name][0], auto_reset=False)
    params = env.default_params.replace(max_timesteps=5)
    lifted = params.replace(max_timesteps=craftax_tasks.NO_TIME_LIMIT)
    shapes = jax.eval_shape(lambda key: env.reset(key, params)[1], jax.random.key(0))
    zeros = jax.tree_util.tree_map(
        lambda s: jax.random.key(0) if jax.dtypes.issubdtype(s.dtype, jax.dtypes.prng_key)
        else jnp.zeros(s.shape, s.dtype), shapes,
    )
    alive = zeros.replace(player_health=jnp.asarray(9, zeros.player_health.dtype))

    def flags(state):
        done = env.is_terminal(state, params)
        return tuple(bool(x) for x in craftax_tasks.split_done(env, state, done, lifted))

    assert flags(alive) == (False, False)
    assert flags(alive.replace(timestep=jnp.asarray(5, alive.timestep.dtype))) == (False, True)
    assert flags(zeros) == (True, False)  # health 0: dead
    assert flags(zeros.replace(timestep=jnp.asarray(5, zeros.timestep.dtype))) == (True, False)


def test_craftax_classic_traces_under_vmap():
    pytest.importorskip("craftax")
    assert_traces_under_vmap(envs.make("craftax/Craftax-Classic-Symbolic-AutoReset-v1"))


CRAFTAX_LIMIT = 3
CRAFTAX_STEPS = 5


@SLOW
@pytest.mark.parametrize("name", sorted(CRAFTAX))
def test_craftax_matches_the_autoreset_env_and_truncates(name):
    pytest.importorskip("craftax")
    from craftax.craftax_env import make_craftax_env_from_name

    task = envs.make(f"craftax/{name}", max_episode_steps=CRAFTAX_LIMIT)
    ref = make_craftax_env_from_name(name, auto_reset=True)  # the paper's env, run by Craftax
    params = ref.default_params.replace(max_timesteps=CRAFTAX_LIMIT)

    def ours(reset_key, keys, actions):
        obs, state = task.reset(reset_key)

        def body(state, inputs):
            key, action = inputs
            obs, state, reward, terminated, truncated, info = task.step(key, state, action)
            return state, (obs, reward, terminated, truncated, info["final_obs"])

        return obs, jax.lax.scan(body, state, (keys, actions))[1]

    def reference(inputs):
        reset_key, keys, actions = inputs
        obs, state = ref.reset(reset_key, params)

        def body(state, inputs):
            key, action = inputs
            obs, state, reward, done, _ = ref.step(key, state, action, params)
            return state, (obs, reward, done)

        return obs, jax.lax.scan(body, state, (keys, actions))[1]

    def program(reset_keys, keys, actions):
        inputs = (reset_keys, keys, actions)
        return jax.vmap(ours)(*inputs), jax.lax.map(reference, inputs)

    reset_keys = jax.random.split(jax.random.key(5), BATCH)
    keys = jax.random.split(jax.random.key(6), (BATCH, CRAFTAX_STEPS))
    actions = jax.random.randint(
        jax.random.key(7), (BATCH, CRAFTAX_STEPS), 0, task.action_space.n, jnp.int32
    )
    ours_out, ref_out = run_compiled(program, reset_keys, keys, actions)
    obs0, (obs, reward, terminated, truncated, final_obs) = ours_out
    ref_obs0, (ref_obs, ref_reward, ref_done) = ref_out
    np.testing.assert_array_equal(obs0, ref_obs0)
    assert_obs_in_space(task, obs)
    # the same keys drive the same worlds, across the reset too
    np.testing.assert_array_equal(obs, ref_obs)
    np.testing.assert_array_equal(reward, ref_reward)
    np.testing.assert_array_equal(terminated | truncated, ref_done)
    assert not terminated.any()
    assert truncated.tolist() == [[False, False, True, False, False]] * BATCH
    np.testing.assert_array_equal(final_obs[:, :2], obs[:, :2])
    assert not np.array_equal(final_obs[:, 2], obs[:, 2])  # the old world's last view


# ----------------------------------------------------------------------------- Kinetix

# Our name -> Kinetix's level name.
KINETIX = {
    "s-h1_thrust_over_ball": "s/h1_thrust_over_ball",
    "m-h17_thrustcontrol_left": "m/h17_thrustcontrol_left",
    "l-hard_pinball": "l/hard_pinball",
}
KINETIX_LIMIT = 3
KINETIX_STEPS = 5


def test_kinetix_ids_fit_gymnasium_and_name_the_paper_levels():
    from eggroll_rl.envs import gymnasium_env, kinetix_tasks

    assert kinetix_tasks.names() == sorted(KINETIX)
    for name, level in KINETIX.items():
        assert kinetix_tasks.level_file(name) == level
        gymnasium_env.gymnasium_id(f"kinetix/{name}")  # one slash: a valid Gymnasium id
        assert gymnasium.envs.registration.parse_env_id(f"eggroll_rl/{name}")[1] == name
    with pytest.raises(ValueError, match="unknown Kinetix level"):
        kinetix_tasks.level_file("s/h1_thrust_over_ball")


@pytest.mark.parametrize("name", sorted(KINETIX))
def test_kinetix_spaces_limits_and_the_task_contract(name):
    pytest.importorskip("kinetix")
    from kinetix.util.saving import load_from_json_file

    from eggroll_rl.agents.api import check_task

    task = envs.make(f"kinetix/{name}")
    _, static, _ = load_from_json_file(KINETIX[name])
    assert task.max_episode_steps == 256 and not task.discrete
    assert task.action_space.shape == (static.num_motor_bindings + static.num_thruster_bindings,)
    assert task.observation_space.dtype == np.float32 and len(task.observation_space.shape) == 1
    check_task(task)  # reset and step agree with the declared spaces (traced, not run)
    discrete = envs.make(f"kinetix/{name}", action_type="discrete", max_episode_steps=9)
    assert discrete.action_space.n == 2 * static.num_motor_bindings + 1 + static.num_thruster_bindings
    assert discrete.max_episode_steps == 9
    with pytest.raises(ValueError, match="max_episode_steps= instead of max_timesteps"):
        envs.make(f"kinetix/{name}", max_timesteps=7)
    with pytest.raises(ValueError, match="action_type must be one of"):
        envs.make(f"kinetix/{name}", action_type="multi_discrete")


@pytest.fixture(scope="module", params=sorted(KINETIX))
def kinetix_run(request):
    pytest.importorskip("kinetix")
    from kinetix.environment.env import make_kinetix_env
    from kinetix.environment.spaces import ActionType, ObservationType
    from kinetix.util.saving import load_from_json_file

    name = request.param
    task = envs.make(f"kinetix/{name}", max_episode_steps=KINETIX_LIMIT)
    level, static, params = load_from_json_file(KINETIX[name])
    params = params.replace(max_timesteps=KINETIX_LIMIT)
    ref = make_kinetix_env(  # Kinetix's own auto-resetting env on the same level
        ActionType.CONTINUOUS, ObservationType.SYMBOLIC_FLAT, lambda key: level,
        params, static, auto_reset=True,
    )

    ours = _scanned_episode(task)

    def reference(reset_key, keys, actions):
        obs, state = ref.reset(reset_key, params)

        def body(state, inputs):
            key, action = inputs
            obs, state, reward, done, _ = ref.step(key, state, action, params)
            return state, dict(obs=obs, reward=reward, done=done)

        return obs, jax.lax.scan(body, state, (keys, actions))[1]

    def program(reset_keys, keys, actions):
        inputs = (reset_keys, keys, actions)
        return jax.vmap(ours)(*inputs), jax.vmap(reference)(*inputs)

    size = task.action_space.shape[0]
    reset_keys = jax.random.split(jax.random.key(8), BATCH)
    keys = jax.random.split(jax.random.key(9), (BATCH, KINETIX_STEPS))
    actions = jax.random.uniform(jax.random.key(10), (BATCH, KINETIX_STEPS, size), jnp.float32, -1, 1)
    return name, task, run_compiled(program, reset_keys, keys, actions)


def test_kinetix_steps_under_jit_and_vmap_with_finite_rewards(kinetix_run):
    _, task, ((obs0, steps), _) = kinetix_run
    assert obs0.shape == (BATCH,) + task.observation_space.shape
    assert steps["obs"].shape == steps["final_obs"].shape == (BATCH, KINETIX_STEPS) + obs0.shape[1:]
    assert steps["reward"].shape == (BATCH, KINETIX_STEPS) and steps["reward"].dtype == np.float32
    assert steps["terminated"].dtype == steps["truncated"].dtype == bool
    assert np.isfinite(steps["reward"]).all()
    assert_obs_in_space(task, obs0)
    assert_obs_in_space(task, steps["obs"])


def test_kinetix_matches_kinetix_and_splits_its_done(kinetix_run):
    _, task, ((obs0, steps), (ref_obs0, ref)) = kinetix_run
    np.testing.assert_array_equal(obs0, ref_obs0)
    # the same level, actions and physics: Kinetix's own rewards, observations and ends (up to
    # float rounding: XLA may fuse the two programs' arithmetic differently)
    np.testing.assert_allclose(steps["reward"], ref["reward"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(steps["obs"], ref["obs"], rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(steps["terminated"] | steps["truncated"], ref["done"])
    assert not (steps["terminated"] & steps["truncated"]).any()
    for b in range(BATCH):
        end = first_done(steps["terminated"][b], steps["truncated"][b])
        assert end <= KINETIX_LIMIT - 1
        if not steps["terminated"][b, :KINETIX_LIMIT].any():  # no goal or hazard: the time limit
            assert end == KINETIX_LIMIT - 1 and steps["truncated"][b, end]
        # same-step autoreset: the next episode starts from the level again
        np.testing.assert_array_equal(steps["obs"][b, end], obs0[b])
        np.testing.assert_array_equal(steps["obs"][b, :end], steps["final_obs"][b, :end])


def test_kinetix_eggroll_trains_two_generations():
    pytest.importorskip("kinetix")
    from eggroll_rl.agents import train

    name = "kinetix/s-h1_thrust_over_ball"
    population = 4
    run = train(
        "eggroll", name, total_steps=population * 256 + 1, progress=False, iterations_per_chunk=1,
        config={"population_size": population, "hidden": (8,), "eval_episodes": 1},
    )
    generations = max(row["iteration"] for row in run.rows)
    assert generations >= 2 and run.final("env_steps")[0] > population * 256
    assert all(np.isfinite(row["eval_return"]) for row in run.rows)
