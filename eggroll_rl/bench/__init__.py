"""``eggroll-rl bench``: EGGROLL's throughput against plain batched inference and OpenES.

Tooling, not the algorithm: it builds policies and gymnax rollouts to time them, so it may
import ``eggroll_rl.envs``; nothing in the core package imports it.
"""
