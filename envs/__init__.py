"""Environments (``eggroll_rl.envs``): one vectorised JAX task interface over gymnax, Brax and
the paper's other suites. Not built yet: see the environments issue."""
