"""Multi-device and multi-host helpers built on ``jax.sharding`` and ``jax.distributed``.

Typical use (same code on 1 CPU, 8 GPUs or many hosts)::

    difphys.sharding.initialize_distributed()      # no-op unless launched by a multi-host launcher
    mesh = difphys.sharding.make_mesh()            # 1-D mesh over all devices, axis "batch"
    batch = difphys.sharding.shard_batch(batch, mesh)
    out = jax.jit(step)(params, batch)             # XLA partitions the computation along "batch"
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec


def make_mesh(axis_name: str = "batch", devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A 1-D :class:`jax.sharding.Mesh` named ``axis_name`` over ``devices`` (default: all)."""
    devices = list(jax.devices() if devices is None else devices)
    if not devices:
        raise ValueError("make_mesh needs at least one device")
    return Mesh(np.asarray(devices), (axis_name,))


def batch_sharding(mesh: Mesh, axis_name: str = "batch") -> NamedSharding:
    """Sharding that splits the leading axis over ``axis_name`` and replicates the rest."""
    return NamedSharding(mesh, PartitionSpec(axis_name))


def replicated(mesh: Mesh) -> NamedSharding:
    """Sharding that places a full copy on every device of ``mesh`` (for parameters)."""
    return NamedSharding(mesh, PartitionSpec())


def shard_batch(tree, mesh: Mesh, axis_name: str = "batch"):
    """Place every array leaf of ``tree`` on ``mesh``, split along its leading axis.

    Raises ``ValueError`` if a leaf is a scalar or its leading size is not divisible by the
    number of devices along ``axis_name`` (pad with a mask first; nothing is dropped silently).
    """
    n_shards = mesh.shape[axis_name]
    sharding = batch_sharding(mesh, axis_name)

    def place(x):
        shape = np.shape(x)
        if len(shape) == 0 or shape[0] % n_shards:
            raise ValueError(
                f"cannot shard a leaf of shape {shape} over {n_shards} devices along "
                f"{axis_name!r}: the leading axis must be divisible by {n_shards}"
            )
        return jax.device_put(x, sharding)

    return jax.tree.map(place, tree)


def launched_multihost(environ: dict[str, str] | None = None) -> bool:
    """True when the environment shows a multi-process launch (coordinator, SLURM, MPI)."""
    env = os.environ if environ is None else environ
    if env.get("JAX_COORDINATOR_ADDRESS"):
        return True
    for var in ("SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE", "PMI_SIZE"):
        try:
            if int(env.get(var, "1")) > 1:
                return True
        except ValueError:
            continue
    return False


def initialize_distributed(environ: dict[str, str] | None = None, **kwargs) -> bool:
    """Call :func:`jax.distributed.initialize` if launched under a multi-host launcher.

    Detection: ``JAX_COORDINATOR_ADDRESS`` set, or more than one task under SLURM or MPI
    (``SLURM_NTASKS``, ``OMPI_COMM_WORLD_SIZE``, ``PMI_SIZE``). With the coordinator variables
    (``JAX_COORDINATOR_ADDRESS=host:port``, ``JAX_NUM_PROCESSES``, ``JAX_PROCESS_ID``) those
    are passed on; on SLURM/MPI clusters ``jax.distributed.initialize`` finds them itself.
    ``kwargs`` go to ``jax.distributed.initialize`` and win over the variables. Returns True
    if the distributed runtime is (now) initialised, False on a single process. Safe to call
    twice. Every ``difphys`` command calls it first.
    """
    env = os.environ if environ is None else environ
    if not launched_multihost(env):
        return False
    if jax.distributed.is_initialized():
        return True
    if env.get("JAX_COORDINATOR_ADDRESS"):
        for var, arg in (("JAX_NUM_PROCESSES", "num_processes"),
                         ("JAX_PROCESS_ID", "process_id")):
            if arg not in kwargs:
                if var not in env:
                    raise ValueError(f"JAX_COORDINATOR_ADDRESS is set but {var} is not: set "
                                     "JAX_NUM_PROCESSES and JAX_PROCESS_ID for every process")
                try:
                    kwargs[arg] = int(env[var])
                except ValueError:
                    raise ValueError(f"{var} must be an integer; got {env[var]!r}") from None
        kwargs.setdefault("coordinator_address", env["JAX_COORDINATOR_ADDRESS"])
    jax.distributed.initialize(**kwargs)
    return True
