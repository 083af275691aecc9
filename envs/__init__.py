"""Environments (``eggroll_rl.envs``): one vectorised JAX task interface over gymnax, Brax and
the paper's other suites, so strategies and trainers never see a suite's quirks."""

from eggroll_rl.envs.registry import list_envs, make, register
from eggroll_rl.envs.task import Task

__all__ = ["Task", "list_envs", "make", "register"]

from eggroll_rl.envs.obs_norm import RunningStats  # noqa: E402
from eggroll_rl.envs.rollout import RolloutResult, evaluate, rollout, run_episodes  # noqa: E402

__all__ += ["RolloutResult", "RunningStats", "evaluate", "rollout", "run_episodes"]
