"""An int8 policy network: int8 weights and activations, int32 accumulation, shifts, no floats.

ES needs no gradients, so it can optimise a network in exactly the integer arithmetic it is
deployed with. ``Int8MLP`` is that network. The one float step is the input: observations are
normalised with the running statistics and quantised to int8 with ``input_bits`` fractional
bits (``x_q = clip(round(x * 2^input_bits), -127, 127)``). From there to the action everything
is integer: each layer appends a constant input of ``2^input_bits`` (1.0 in the activations'
fixed point; the bias lives in the kernel's last row), multiplies int8 by int8 into int32,
rescales by an arithmetic right shift, and applies a saturating ReLU to [0, 127] back to int8. A discrete head returns int32 logits (the action is
their argmax); a continuous head returns an int32 mean clipped to [-127, 127], turned into a
float only at the very end (``dequantize``).

A population member adds EGGROLL's rank-r term without building its matrix: with ``s`` the
noise shift, the member's kernel is the fixed-point number ``W + sign * (B^T A) / 2^s`` and its
accumulator ``((x @ W) << s) + sign * (x @ B^T) @ A``, right-shifted by ``s`` plus the layer's
shift. Because the shift comes after the sum, this equals the materialised member kernel
``(W << s) + sign * B^T A`` applied to ``x`` bit for bit. (Shifting ``B^T A`` entry by entry
before the matmul would round differently.) Accumulators are int32, like XLA's and
``int8_numpy``'s; ``Int8Eggroll`` warns when widths, rank and shift leave too little headroom.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

INT8_MAX = 127
NOISE_SCALE = 16  # int8 noise is round(16 * N(0, 1)), clipped to [-127, 127]
FORMAT = "eggroll_rl.int8/1"

Int8Params = tuple  # one int8 kernel of shape (fan_in + 1, fan_out) per layer


@struct.dataclass
class Int8Noise:
    """int8 low-rank factors of one layer: ``a (..., r, fan_out)``, ``b (..., r, fan_in + 1)``."""

    a: jax.Array
    b: jax.Array


def _dot(x: jax.Array, w: jax.Array) -> jax.Array:
    """``x @ w`` over the last axis of ``x`` and the first of ``w``, accumulated in int32."""
    return jax.lax.dot_general(
        x, w, (((x.ndim - 1,), (0,)), ((), ())), preferred_element_type=jnp.int32
    )


def _with_bias_input(x: jax.Array, one: int) -> jax.Array:
    ones = jnp.full(x.shape[:-1] + (1,), one, jnp.int8)
    return jnp.concatenate([x, ones], axis=-1)


def quantize(x: jax.Array, input_bits: int) -> jax.Array:
    """Normalised float observations to int8: ``clip(round(x * 2^input_bits), -127, 127)``."""
    scaled = jnp.round(jnp.asarray(x, jnp.float32) * (2.0**input_bits))
    return jnp.clip(scaled, -INT8_MAX, INT8_MAX).astype(jnp.int8)


@dataclasses.dataclass(frozen=True)
class Int8MLP:
    """The int8 policy's static description: sizes and fixed-point scales (hashable).

    ``weight_init`` is the std of the initial int8 weights; each layer's right shift is
    ``round(log2(sqrt(fan_in + 1) * weight_init))``, which keeps the int8 activations near the
    scale of the quantised input. ``action_scale`` multiplies the int mean of a continuous head
    (e.g. ``high / 127`` so that the int8 range spans the action bounds).
    """

    obs_size: int
    action_size: int
    hidden: tuple[int, ...] = (64, 64)
    continuous: bool = False
    input_bits: int = 5
    weight_init: int = 16
    action_scale: Optional[tuple[float, ...]] = None

    def __post_init__(self):
        if self.obs_size < 1 or self.action_size < 1 or any(h < 1 for h in self.hidden):
            raise ValueError(
                f"Int8MLP sizes must be positive: obs_size={self.obs_size}, "
                f"action_size={self.action_size}, hidden={self.hidden}."
            )
        if not 0 <= self.input_bits <= 7:
            raise ValueError(f"input_bits must be in [0, 7], got {self.input_bits}.")
        if not 1 <= self.weight_init <= 64:
            raise ValueError(f"weight_init must be in [1, 64], got {self.weight_init}.")
        if self.action_scale is not None and len(self.action_scale) != self.action_size:
            raise ValueError(
                f"action_scale has {len(self.action_scale)} entries, expected action_size="
                f"{self.action_size}."
            )

    @property
    def sizes(self) -> tuple[int, ...]:
        return (self.obs_size, *self.hidden, self.action_size)

    @property
    def kernel_shapes(self) -> list[tuple[int, int]]:
        return [(fan_in + 1, fan_out) for fan_in, fan_out in zip(self.sizes[:-1], self.sizes[1:])]

    @property
    def shifts(self) -> tuple[int, ...]:
        return tuple(
            max(0, round(math.log2(math.sqrt(fan_in) * self.weight_init)))
            for fan_in, _ in self.kernel_shapes
        )

    def init(self, key: jax.Array) -> Int8Params:
        """Kernels of ``round(weight_init * N(0, 1))`` clipped to [-127, 127]; a discrete head zero.

        A zero logit head makes the first population's behaviour come from its perturbations
        alone (the ReLU activations share a large common part that a random head turns into the
        same argmax for every observation). A continuous head starts random: with +-1 steps a
        zero head would need hundreds of generations to reach useful action magnitudes.
        """
        keys = jax.random.split(key, len(self.kernel_shapes))
        kernels = [
            jnp.clip(
                jnp.round(jax.random.normal(k, shape) * self.weight_init), -INT8_MAX, INT8_MAX
            ).astype(jnp.int8)
            for k, shape in zip(keys, self.kernel_shapes)
        ]
        if not self.continuous:
            kernels[-1] = jnp.zeros_like(kernels[-1])
        return tuple(kernels)

    def quantize(self, obs: jax.Array) -> jax.Array:
        return quantize(obs, self.input_bits)

    def forward(
        self,
        params: Int8Params,
        x: jax.Array,
        noise: Optional[Sequence[Int8Noise]] = None,
        sign: Optional[jax.Array] = None,
        noise_shift: int = 0,
    ) -> jax.Array:
        """int8 inputs ``(..., obs_size)`` to the int32 head ``(..., action_size)``.

        With ``noise`` (one member's factors per layer, ``a (r, out)``, ``b (r, in + 1)``) and
        ``sign`` (+1/-1 as int32) each layer adds ``sign * (x @ B^T) @ A`` at ``noise_shift``
        extra fractional bits; without, this is the deployed (mean) policy.
        """
        if x.dtype != jnp.int8:
            raise ValueError(f"Int8MLP.forward takes int8 inputs, got {x.dtype}: quantize first.")
        last = len(params) - 1
        for i, (w, shift) in enumerate(zip(params, self.shifts)):
            x = _with_bias_input(x, 2**self.input_bits)
            if noise is None:
                acc = _dot(x, w) >> shift
            else:
                acc = _dot(x, w) << noise_shift
                acc = acc + sign * low_rank_term(x, noise[i].a, noise[i].b)
                acc = acc >> (noise_shift + shift)
            if i < last:
                x = jnp.clip(acc, 0, INT8_MAX).astype(jnp.int8)
            elif self.continuous:
                return jnp.clip(acc, -INT8_MAX, INT8_MAX)
            else:
                return acc
        raise AssertionError("unreachable")

    def dequantize(self, head: jax.Array) -> jax.Array:
        """The head as the env's action input: int32 logits unchanged, a continuous mean scaled."""
        if not self.continuous:
            return head
        scale = self.action_scale or (2.0**-self.input_bits,) * self.action_size
        return head.astype(jnp.float32) * jnp.asarray(scale, jnp.float32)

    def apply(self, params: Int8Params, obs: jax.Array):
        """Normalised float obs to ``(head, None)``, the ``PolicyFn`` shape rollouts expect."""
        return self.dequantize(self.forward(params, self.quantize(obs))), None


def low_rank_term(x: jax.Array, a: jax.Array, b: jax.Array) -> jax.Array:
    """``(x @ b^T) @ a`` in int32 for one member: ``x (..., in)``, ``b (r, in)``, ``a (r, out)``."""
    coefficients = _dot(x, b.T)  # (..., r) int32
    return _dot(coefficients, a.astype(jnp.int32))


def materialised_kernel(w: np.ndarray, a: np.ndarray, b: np.ndarray, sign: int, noise_shift: int):
    """A member's fixed-point kernel ``(W << s) + sign * B^T A`` in NumPy int64 (reference only)."""
    w, a, b = (np.asarray(v, np.int64) for v in (w, a, b))
    return (w << noise_shift) + sign * (b.T @ a)


def save(path, model: Int8MLP, params: Int8Params, obs_stats=None, env_id: str = "") -> str:
    """Write ``params``, shifts and obs statistics to one ``.npz`` that ``int8_numpy`` reads."""
    arrays = {f"kernel_{i}": np.asarray(w, np.int8) for i, w in enumerate(params)}
    arrays["shifts"] = np.asarray(model.shifts, np.int32)
    arrays["input_bits"] = np.asarray(model.input_bits, np.int32)
    arrays["continuous"] = np.asarray(model.continuous)
    scale = model.action_scale or (2.0**-model.input_bits,) * model.action_size
    arrays["action_scale"] = np.asarray(scale, np.float32)
    if obs_stats is not None:
        for name in ("count", "mean", "var"):
            arrays[f"obs_{name}"] = np.asarray(getattr(obs_stats, name), np.float32)
    arrays["format"] = np.asarray(FORMAT)
    arrays["env_id"] = np.asarray(env_id)
    path = str(path)
    np.savez(path, **arrays)
    return path if path.endswith(".npz") else path + ".npz"
