"""Environments (``eggroll_rl.envs``): one vectorised JAX task interface over gymnax, Brax and
the paper's other suites, so strategies and trainers never see a suite's quirks."""

from eggroll_rl.envs.registry import list_envs, make, register
from eggroll_rl.envs.task import Task

__all__ = ["Task", "list_envs", "make", "register"]

from eggroll_rl.envs.obs_norm import RunningStats  # noqa: E402
from eggroll_rl.envs.rollout import (  # noqa: E402
    Episodes,
    Evaluation,
    RolloutResult,
    evaluate,
    rollout,
    run_episodes,
)

__all__ += [
    "Episodes", "Evaluation", "RolloutResult", "RunningStats", "evaluate", "rollout", "run_episodes"
]

from eggroll_rl.envs.gymnasium_env import (  # noqa: E402
    TaskEnv,
    TaskVectorEnv,
    gymnasium_id,
    key_for_seed,
    register_gymnasium,
)
from eggroll_rl.envs.gymnasium_target import (  # noqa: E402
    describe,
    host_evaluate,
    host_rollout,
    is_gymnasium_target,
    make_vector_env,
)
from eggroll_rl.envs.playback import SavedPolicy, load_policy, play, save_policy  # noqa: E402

__all__ += [
    "SavedPolicy", "TaskEnv", "TaskVectorEnv", "describe", "gymnasium_id", "host_evaluate",
    "host_rollout", "is_gymnasium_target", "key_for_seed", "load_policy", "make_vector_env",
    "play", "register_gymnasium", "save_policy",
]

from eggroll_rl.envs.gymnasium_env import register_on_import as _register_on_import  # noqa: E402

_register_on_import()  # every id as gymnasium.make("eggroll_rl/<name>")
