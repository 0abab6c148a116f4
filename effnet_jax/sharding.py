"""Device mesh, shardings, global batches, batch-norm groups and multi-host start-up.

One code path from 1 CPU to a TPU pod (design.md): a 1-D mesh with axis 'data' over every device,
the train state replicated (P()) and the batch split along its first dimension (P('data')), all
under plain `jax.jit`.

Config fields read here (defaults in `CONFIG_DEFAULTS`):
  bn_group             'reference' | 'global' | 'per_device' | an int (or digit string) group size
  distributed          'auto' | 'on' | 'off' (see `maybe_initialize_distributed`)
  coordinator_address  'host:port' of process 0, or None to auto-detect
  num_processes        number of processes (hosts), or None to auto-detect
  process_id           this process's index, or None to auto-detect
  heartbeat_timeout_seconds  a process that sends no heartbeat for this long is declared dead and
                       every other process exits with an error naming it (instead of waiting
                       forever in a collective)
  shutdown_timeout_seconds   how long a finishing (or failing) process waits for the others at exit
"""
from __future__ import annotations

import glob
import logging
import os

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

DATA_AXIS = 'data'

CONFIG_DEFAULTS = dict(
    bn_group='reference',
    distributed='auto',
    coordinator_address=None,
    num_processes=None,
    process_id=None,
    heartbeat_timeout_seconds=100,  # JAX's default
    shutdown_timeout_seconds=300,   # JAX's default
)


# ----------------------------------------------------------------------------------------------
# Mesh and shardings


def create_mesh(devices=None) -> Mesh:
    """A 1-D mesh named 'data' over `devices` (default: every device of every process).

    Axis type is Auto: shardings are propagated by XLA from the in/out shardings we give jit,
    which is what global-view data parallelism needs (jax.make_mesh defaults to Explicit axes
    since jax 0.7).
    """
    devices = jax.devices() if devices is None else list(devices)
    return jax.make_mesh((len(devices),), (DATA_AXIS,),
                         axis_types=(jax.sharding.AxisType.Auto,), devices=devices)


def replicated_sharding(mesh: Mesh) -> NamedSharding:
    """Every device holds the full array (train state, EMA, learning rate)."""
    return NamedSharding(mesh, P())


def batch_sharding(mesh: Mesh, stacked: bool = False) -> NamedSharding:
    """Leading (batch) dimension split over the 'data' axis; the rest whole. `stacked=True`: batches
    of several steps stacked on a leading axis, which stays whole, and the batch axis second."""
    return NamedSharding(mesh, P(None, DATA_AXIS) if stacked else P(DATA_AXIS))


def replicate(tree, mesh: Mesh):
    """Places every leaf of `tree` on all devices of `mesh`; leaves must be equal on every host.

    With several processes, host-local jax.Arrays go through numpy, because device_put treats a
    committed single-device array as a cross-host transfer. Creating the state directly with
    jax.jit(init_fn, out_shardings=replicated_sharding(mesh)) avoids that host copy.
    """
    if jax.process_count() > 1:
        tree = jax.tree.map(
            lambda x: np.asarray(x) if isinstance(x, jax.Array) and x.is_fully_addressable else x, tree)
    return jax.device_put(tree, replicated_sharding(mesh))


# ----------------------------------------------------------------------------------------------
# Batch sizes and global batches


def _nearest_multiples(value: int, divisor: int) -> str:
    lower = (value // divisor) * divisor
    candidates = [c for c in (lower, lower + divisor) if c > 0]
    return ' or '.join(str(c) for c in candidates)


def check_batch_size(global_batch_size: int, mesh: Mesh) -> int:
    """Validates that the global batch splits evenly over the mesh; returns the per-device batch."""
    num_devices = mesh.size
    if global_batch_size <= 0 or global_batch_size % num_devices:
        raise ValueError(
            f'Global batch size {global_batch_size} must be a positive multiple of the number of '
            f'devices ({num_devices}). Nearest valid global batch sizes: '
            f'{_nearest_multiples(global_batch_size, num_devices)}; set --config.batch_size.')
    return global_batch_size // num_devices


def per_host_batch_size(global_batch_size: int) -> int:
    """Images each process (host) must load per step: global batch / process count."""
    num_processes = jax.process_count()
    if global_batch_size <= 0 or global_batch_size % num_processes:
        raise ValueError(
            f'Global batch size {global_batch_size} must be a positive multiple of the number of '
            f'processes ({num_processes}). Nearest valid global batch sizes: '
            f'{_nearest_multiples(global_batch_size, num_processes)}.')
    return global_batch_size // num_processes


def make_global_batch(local_batch: dict, mesh: Mesh, stacked: bool = False) -> dict:
    """Turns this host's numpy batch into global jax.Arrays sharded over 'data'.

    Each host passes its own slice (per_host_batch_size rows); the global array's batch dimension
    is the sum over hosts. Works unchanged on one host. `stacked=True`: the arrays carry a leading
    steps axis (the batches of a multi-step call, `train.make_train_step(steps_per_call=...)`) and
    the batch is their second axis.
    """
    sharding = batch_sharding(mesh, stacked)
    return jax.tree.map(
        lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)), local_batch)


# ----------------------------------------------------------------------------------------------
# Batch-norm statistic groups (reference-spec.md §2.9)

BN_GROUP_MODES = ('reference', 'global', 'per_device')


def bn_group_size(bn_group, num_devices: int) -> int:
    """Number of consecutive devices whose batch-norm statistics are averaged together.

    'reference' reproduces TpuBatchNormalization: with S devices, S <= 8 -> 1 (each device
    normalises its own batch), S > 8 -> max(8, S // 8), so 16 -> 8, 128 -> 16, 1024 -> 128.
    'global' -> S (whole-batch statistics), 'per_device' -> 1, an int (or digit string, for
    command-line overrides of a string config field) -> that size, which must divide S.
    """
    if num_devices < 1:
        raise ValueError(f'num_devices must be >= 1, got {num_devices}.')
    if isinstance(bn_group, str) and bn_group.isdigit():
        bn_group = int(bn_group)
    if bn_group == 'reference':
        return 1 if num_devices <= 8 else max(8, num_devices // 8)
    if bn_group == 'global':
        return num_devices
    if bn_group == 'per_device':
        return 1
    if isinstance(bn_group, (int, np.integer)) and not isinstance(bn_group, bool):
        if bn_group < 1 or num_devices % bn_group:
            divisors = [d for d in range(1, num_devices + 1) if num_devices % d == 0]
            raise ValueError(f'bn_group={bn_group} must divide the number of devices ({num_devices}); '
                             f'valid group sizes: {divisors}.')
        return int(bn_group)
    raise ValueError(f'Unknown bn_group={bn_group!r}; use one of {", ".join(BN_GROUP_MODES)} '
                     'or a group size that divides the number of devices.')


def axis_index_groups(group_size: int, num_devices: int) -> list[list[int]] | None:
    """Consecutive groups of 'data' axis indices for lax collectives, or None for all devices.

    group_size 4 on 8 devices -> [[0, 1, 2, 3], [4, 5, 6, 7]]. Size 1 gives singleton groups
    (callers may simply skip the collective). Indices are positions along the mesh axis, which
    jax.make_mesh orders along the physical interconnect, as TF replica ids were.
    """
    if group_size < 1 or num_devices % group_size:
        raise ValueError(f'group_size={group_size} must divide the number of devices ({num_devices}).')
    if group_size == num_devices:
        return None
    return [list(range(start, start + group_size)) for start in range(0, num_devices, group_size)]


# ----------------------------------------------------------------------------------------------
# Multi-host start-up

_CLOUD_TPU_ENV_VARS = ('TPU_WORKER_HOSTNAMES', 'TPU_PROCESS_ADDRESSES', 'TPU_WORKER_ID',
                       'CLOUD_TPU_TASK_ID', 'TPU_ACCELERATOR_TYPE', 'MEGASCALE_COORDINATOR_ADDRESS')


def _on_cloud_tpu() -> bool:
    return any(name in os.environ for name in _CLOUD_TPU_ENV_VARS) or bool(glob.glob('/dev/accel*'))


def maybe_initialize_distributed(config) -> bool:
    """Starts JAX's multi-controller runtime when this is (probably) a multi-host job.

    Must run before anything touches a device. config.distributed:
      'auto': initialise when coordinator_address is set, or on a Cloud TPU VM (TPU_* environment
              variables or /dev/accel* present); there JAX discovers the other hosts itself and also
              starts the preemption-notice service used by checkpoint.reached_preemption.
      'on':   always initialise (JAX auto-detects Cloud TPU, GKE, SLURM and Open MPI clusters;
              explicit coordinator_address/num_processes/process_id override detection).
      'off':  never.
    Returns True if the runtime is (now) initialised.

    If a process dies, the others exit within config.heartbeat_timeout_seconds with JAX's error
    "Terminating process because the JAX distributed service detected fatal errors. This most
    likely indicates that another task died"; then restart all processes to resume from the last
    checkpoint (tests/test_multiprocess.py).
    """
    mode = config.get('distributed', 'auto')
    if mode not in ('auto', 'on', 'off'):
        raise ValueError(f"Unknown config.distributed={mode!r}; use 'auto', 'on' or 'off'.")
    if jax.distributed.is_initialized():
        return True
    coordinator_address = config.get('coordinator_address')
    if mode == 'off' or (mode == 'auto' and not coordinator_address and not _on_cloud_tpu()):
        return False
    timeouts = {name: config.get(name, CONFIG_DEFAULTS[name])
                for name in ('heartbeat_timeout_seconds', 'shutdown_timeout_seconds')}
    for name, seconds in timeouts.items():
        if seconds is None or seconds <= 0:
            raise ValueError(f'config.{name} must be a positive number of seconds, got {seconds!r}.')
    jax.distributed.initialize(coordinator_address=coordinator_address or None,
                               num_processes=config.get('num_processes'),
                               process_id=config.get('process_id'), **timeouts)
    logging.info('jax.distributed initialised: process %d of %d.',
                 jax.process_index(), jax.process_count())
    return True
