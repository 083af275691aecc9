"""Opt-in compilation helpers: XLA:CPU per-program options and JAX's persistent compile cache.

Nothing here runs on import. The algorithm is fast under a plain ``jax.jit``; these are extra,
documented gains that a program asks for explicitly.
"""
