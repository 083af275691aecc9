"""Training on Gymnasium envs (``gymnasium/<Id>``): CLI, resume after SIGKILL, spaces, clipping.

The envs are defined and registered by a module this file writes (``MODULE``), trained as
``gymnasium/<module>:<Id>-v0`` as a user's own env would be; the training subprocesses import it
from ``PYTHONPATH``.
"""

import json
import os
import shutil
import sys
import textwrap

import numpy as np
import pytest

from eggroll_rl.agents import api, resume, train

from cli_runs import cached_env, checkpoint_steps, kill_after_checkpoints, train_process

MODULE = "eggroll_test_gym_envs"
ENVS = textwrap.dedent(
    '''
    """Tiny Gymnasium envs for tests/test_gymnasium_train.py."""
    import gymnasium
    import numpy as np
    from gymnasium import spaces


    class Walk(gymnasium.Env):
        """Walk on a line: +1 reward per step right of the start, episode ends off the edge."""

        observation_space = spaces.Box(-2.0, 2.0, (2,), np.float32)
        action_space = spaces.Discrete(3)

        def __init__(self, render_mode=None):
            self.render_mode = render_mode

        def reset(self, *, seed=None, options=None):
            super().reset(seed=seed)
            self.x = float(self.np_random.uniform(-0.2, 0.2))
            return self._obs(), {}

        def _obs(self):
            return np.array([self.x, self.x * self.x], np.float32)

        def step(self, action):
            self.x += 0.1 * (int(action) - 1) + float(self.np_random.normal(0.0, 0.01))
            return self._obs(), float(self.x > 0), abs(self.x) > 1.5, False, {}


    class Recorder(gymnasium.Env):
        """A narrow continuous action box; every action it receives is kept in ACTIONS."""

        ACTIONS = []
        observation_space = spaces.Box(-1.0, 1.0, (3,), np.float32)
        action_space = spaces.Box(-0.01, 0.01, (2,), np.float32)

        def __init__(self, render_mode=None):
            self.render_mode = render_mode

        def reset(self, *, seed=None, options=None):
            super().reset(seed=seed)
            return self.np_random.uniform(-1, 1, 3).astype(np.float32), {}

        def step(self, action):
            Recorder.ACTIONS.append(np.array(action))
            obs = self.np_random.uniform(-1, 1, 3).astype(np.float32)
            return obs, -float(np.sum(np.square(action))), False, False, {}


    class MultiAction(Recorder):
        action_space = spaces.MultiDiscrete([2, 3])


    gymnasium.register("TestWalk-v0", entry_point=Walk, max_episode_steps=30)
    gymnasium.register("TestRecorder-v0", entry_point=Recorder, max_episode_steps=16)
    gymnasium.register("TestMultiAction-v0", entry_point=MultiAction, max_episode_steps=16)
    '''
)
WALK = f"gymnasium/{MODULE}:TestWalk-v0"
RECORDER = f"gymnasium/{MODULE}:TestRecorder-v0"
MULTI = f"gymnasium/{MODULE}:TestMultiAction-v0"
ES_CONFIG = {"population_size": 8, "hidden": (8,), "eval_episodes": 2}
ES_ARGS = [
    "--algo", "eggroll", "--env", WALK, "--total-steps", "1200", "--population-size", "8",
    "--hidden", "8", "--eval-episodes", "2", "--iterations-per-chunk", "1",
    "--checkpoint-every", "1", "--no-progress",
]


@pytest.fixture(scope="module")
def envs_path(tmp_path_factory):
    """The folder holding the env module, on this process's path and the subprocesses'."""
    folder = tmp_path_factory.mktemp("gym-envs")
    (folder / f"{MODULE}.py").write_text(ENVS)
    sys.path.insert(0, str(folder))
    yield folder
    sys.path.remove(str(folder))
    sys.modules.pop(MODULE, None)


def _env(envs_path, cache):
    path = os.pathsep.join([str(envs_path), os.environ.get("PYTHONPATH", "")])
    return cached_env(cache, PYTHONPATH=path)


def _cli(env, *args, wait=True):
    return train_process(args, env, wait=wait, timeout=240)


def _rows(run_dir):
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if k != "wall_s"} for line in lines]


def test_user_env_trains_and_resumes_bit_identically_after_sigkill(envs_path, tmp_path):
    env = _env(envs_path, tmp_path / "jax-cache")
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    # the uninterrupted run in this process: the API is what the CLI runs, flags as ES_ARGS
    train("eggroll", WALK, total_steps=1200, config=ES_CONFIG, out=straight, progress=False,
          iterations_per_chunk=1, checkpoint_every=1)

    process = _cli(env, *ES_ARGS, "--out", str(killed), wait=False)
    kill_after_checkpoints(process, killed)
    assert 2 <= max(checkpoint_steps(killed)) < max(checkpoint_steps(straight))

    _cli(env, "--resume", str(killed), "--no-progress")
    assert (killed / "policy" / "params.msgpack").read_bytes() == (
        straight / "policy" / "params.msgpack"
    ).read_bytes()
    assert _rows(killed) == _rows(straight)
    rows = _rows(straight)
    assert rows[-1]["env_steps"] >= 1200 and {"fitness_mean", "eval_return"} <= set(rows[-1])
    assert (straight / "curve.png").is_file() and (straight / "tensorboard").is_dir()
    config = json.loads((straight / "config.json").read_text())
    assert config["env"] == WALK and config["config"]["vectorization_mode"] == "sync"

    # the exported policy plays on the same Gymnasium id
    from eggroll_rl.envs.playback import load_policy, play

    assert load_policy(straight / "policy").env_id == WALK
    returns = play(straight / "policy", episodes=2, seed=0)
    assert len(returns) == 2 and all(0 <= r <= 30 for r in returns)


def test_ppo_resumes_from_an_earlier_checkpoint_bit_identically(envs_path, tmp_path):
    config = {"num_envs": 2, "num_steps": 16, "num_minibatches": 2, "update_epochs": 1,
              "hidden": (8,)}
    straight = tmp_path / "straight"
    run = train("ppo", WALK, total_steps=320, config=config, out=straight, progress=False,
                iterations_per_chunk=2, checkpoint_every=1)
    assert run.final("env_steps") == [320] and len(checkpoint_steps(straight)) == 3
    cut = tmp_path / "cut"
    shutil.copytree(straight, cut)
    for step in checkpoint_steps(cut)[-2:]:  # as if killed two chunks before the end
        shutil.rmtree(cut / "checkpoints" / str(step))
    resumed = resume(cut, progress=False)
    iterations = lambda run_dir: [row["iteration"] for row in _rows(run_dir)]
    assert iterations(cut) == iterations(straight)
    assert _rows(cut) == _rows(straight)
    assert (cut / "policy" / "params.msgpack").read_bytes() == (
        straight / "policy" / "params.msgpack"
    ).read_bytes()
    assert resumed.final() == run.final()


@pytest.mark.parametrize("algo, config", [
    ("ppo", {"num_envs": 2, "num_steps": 32, "num_minibatches": 2, "update_epochs": 1,
             "hidden": (8,)}),
    ("openes", {"population_size": 4, "hidden": (8,), "eval_episodes": 2}),
])
def test_ppo_and_openes_train_on_gymnasium_cartpole(algo, config, tmp_path):
    run = train(algo, "gymnasium/CartPole-v1", total_steps=200, config=config,
                out=tmp_path / "run", progress=False, seeds=(0, 1))
    assert min(run.final("env_steps")) >= 200 and run.threshold == 475.0
    assert all(1 <= r <= 500 for r in run.final())
    assert run.act(np.zeros(4, np.float32)) in (0, 1)
    from eggroll_rl.envs.playback import play

    assert play(tmp_path / "run" / "policy", episodes=1, max_steps=5)[0] <= 5


def test_unsupported_spaces_fail_in_one_line_before_compiling(envs_path, monkeypatch):
    import jax

    from eggroll_rl.agents import gymnasium_trainers  # noqa: F401  (jits helpers on import)

    monkeypatch.setattr(jax, "jit", lambda *a, **k: pytest.fail("compiled before checking"))
    with pytest.raises(ValueError, match="MultiDiscrete") as error:
        api.plan("eggroll", MULTI, total_steps=100)
    assert "\n" not in str(error.value)
    with pytest.raises(ValueError, match="Tuple"):
        api.plan("ppo", "gymnasium/Blackjack-v1", total_steps=100)
    with pytest.raises(ValueError, match="int8"):
        api.plan("eggroll", "gymnasium/CartPole-v1", total_steps=100, int8=True)


@pytest.mark.parametrize("algo, config", [
    ("ppo", {"num_envs": 2, "num_steps": 16, "num_minibatches": 1, "update_epochs": 1,
             "hidden": (4,)}),
    ("eggroll", {"population_size": 4, "hidden": (4,), "sigma": 1.0, "eval_episodes": 1,
                 "deterministic_policy": False}),
])
def test_continuous_actions_are_clipped_to_the_box(algo, config, envs_path):
    from eggroll_test_gym_envs import Recorder

    Recorder.ACTIONS.clear()
    train(algo, RECORDER, total_steps=64, config=config, progress=False)
    actions = np.stack(Recorder.ACTIONS)
    assert actions.shape[1:] == (2,) and actions.dtype == np.float32
    assert np.all(np.abs(actions) <= 0.01)
    assert np.mean(np.abs(actions) == np.float32(0.01)) > 0.5  # unit-std samples hit the bounds
