"""``eggroll-rl bench``: EGGROLL's throughput against plain batched inference and OpenES.

``suite`` (the default CPU suite and the command), ``gpu`` (``--suite gpu``), ``training``
(whole generations), ``devices`` (``--devices``: scaling over devices), ``jits`` (how each
figure is compiled: plain ``jax.jit``, or with the XLA:CPU options) and ``timing``.

Tooling, not the algorithm: it builds policies and gymnax rollouts to time them, so it may
import ``eggroll_rl.envs``; nothing in the core package imports it.
"""
