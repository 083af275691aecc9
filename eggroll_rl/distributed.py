"""Scale-out over devices and hosts with JAX's own runtime: one mesh, sharding constraints, no pools.

ES needs almost no communication: every member's noise is a pure function of the key, so a
device that rolls out a slice of the population sends back only those members' fitness scalars,
and every device then regenerates all the noise and computes the identical update. We express
that with GSPMD rather than hand-written collectives: the population axis (PPO: the environment
axis) is constrained to be sharded over every axis of a mesh, params and optimiser state are
left replicated, and XLA partitions the rollout and inserts the gathers. The program is the
same one that runs on one device, so results match it up to float32 rounding, constraints work
under ``vmap`` (over seeds), and a mesh of one device adds nothing at all. Multi-host runs call
``initialize()`` once per process before anything else touches JAX; the mesh then spans every
process's devices.

Inside a population rollout the stop check ``any(alive)`` is a cross-device reduction; the
rollout evaluates it once per chunk of env steps (``envs.rollout.steps_per_check``), not per
step. Pooled observation statistics (``normalize_obs``) are the one per-step exchange left: two
all-reduces of ``obs_dim + 1`` floats per env step.
"""

from __future__ import annotations

import os
from typing import Any, Optional, Sequence

import jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

AXIS = "population"


def make_population_mesh(devices: Optional[int | Sequence[Any]] = None) -> Mesh:
    """A 1-D mesh over ``devices``: a count (0 or None: all devices of all processes) or a list.

    With several processes the count is global (every process's devices together) and must
    cover whole processes, since each process drives all of its local devices.
    """
    available = jax.devices()
    if devices is None or isinstance(devices, (int,)) and devices == 0:
        chosen = available
    elif isinstance(devices, int):
        if devices < 0 or devices > len(available):
            raise ValueError(
                f"devices={devices}, but this run has {len(available)} device(s) "
                f"({available[0].platform}): use 1..{len(available)}, or 0 for all. On a CPU, "
                "XLA_FLAGS=--xla_force_host_platform_device_count=N simulates N devices."
            )
        chosen = available[:devices]
        if jax.process_count() > 1 and devices % jax.local_device_count():
            raise ValueError(
                f"devices={devices} does not cover whole processes ({jax.process_count()} "
                f"processes with {jax.local_device_count()} devices each): use a multiple of "
                f"{jax.local_device_count()}, or 0 for all."
            )
    else:
        chosen = list(devices)
    return Mesh(chosen, (AXIS,))


def mesh_size(mesh: Optional[Mesh]) -> int:
    return 1 if mesh is None else mesh.size


def check_divisible(size: int, mesh: Optional[Mesh], what: str, group: int = 1) -> None:
    """Raise at construction if ``size`` rows cannot be split evenly over the mesh.

    ``group`` rows must stay together on one device (2 for antithetic pairs).
    """
    n = mesh_size(mesh) * group
    if n > 1 and size % n:
        lower, upper = size // n * n, -(-size // n) * n
        together = f" in groups of {group} (antithetic pairs)" if group > 1 else ""
        raise ValueError(
            f"{what}={size} cannot be split evenly over {mesh_size(mesh)} devices{together}: "
            f"use a multiple of {n} (e.g. {lower or upper} or {upper}), or fewer devices."
        )


def round_up(size: int, mesh: Optional[Mesh], group: int = 1) -> int:
    """The smallest multiple of ``mesh_size(mesh) * group`` that is >= ``size``."""
    n = mesh_size(mesh) * group
    return -(-size // n) * n


def shard_rows(tree: Any, mesh: Optional[Mesh], axis: int = 0) -> Any:
    """Constrain axis ``axis`` of every leaf to be split over all mesh axes (no-op on 1 device)."""
    if mesh_size(mesh) == 1:
        return tree

    def one(x):
        spec = [None] * x.ndim
        spec[axis] = tuple(mesh.axis_names)
        return jax.lax.with_sharding_constraint(x, NamedSharding(mesh, PartitionSpec(*spec)))

    return jax.tree_util.tree_map(one, tree)


def replicate(tree: Any, mesh: Optional[Mesh]) -> Any:
    """Constrain every leaf to be whole on every device (no-op on 1 device)."""
    if mesh_size(mesh) == 1:
        return tree
    sharding = NamedSharding(mesh, PartitionSpec())
    return jax.tree_util.tree_map(lambda x: jax.lax.with_sharding_constraint(x, sharding), tree)


def initialize(
    coordinator_address: Optional[str] = None,
    num_processes: Optional[int] = None,
    process_id: Optional[int] = None,
    **kwargs,
) -> bool:
    """``jax.distributed.initialize`` from arguments or env vars; False if nothing asks for it.

    Reads ``JAX_COORDINATOR_ADDRESS`` (``host:port`` of process 0, the same on every host),
    ``JAX_NUM_PROCESSES`` and ``JAX_PROCESS_ID`` where an argument is None. On a single
    process with none of them set it does nothing, so it is safe to call unconditionally. It
    selects the gloo CPU collectives, which multi-process CPU runs need. Call it before
    any other JAX call; on SLURM/MPI/TPU clusters JAX can also detect all three itself
    (``jax.distributed.initialize()`` with no arguments).
    """
    env = os.environ
    coordinator_address = coordinator_address or env.get("JAX_COORDINATOR_ADDRESS")
    if num_processes is None and env.get("JAX_NUM_PROCESSES"):
        num_processes = int(env["JAX_NUM_PROCESSES"])
    if process_id is None and env.get("JAX_PROCESS_ID"):
        process_id = int(env["JAX_PROCESS_ID"])
    if coordinator_address is None and num_processes is None and process_id is None:
        return False
    if None in (coordinator_address, num_processes, process_id):
        raise ValueError(
            "multi-process runs need all of coordinator address, number of processes and "
            f"process id; got coordinator_address={coordinator_address!r}, "
            f"num_processes={num_processes!r}, process_id={process_id!r}. Set "
            "JAX_COORDINATOR_ADDRESS=host:port, JAX_NUM_PROCESSES and JAX_PROCESS_ID on "
            "every host (or pass them)."
        )
    # Only the CPU backend reads this (GPU/TPU keep NCCL/ICI); CPU runs across processes need it.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(
        coordinator_address=coordinator_address,
        num_processes=num_processes,
        process_id=process_id,
        **kwargs,
    )
    return True

