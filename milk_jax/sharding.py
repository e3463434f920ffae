"""Data-parallel training over all devices with `jax.sharding`.

One mesh axis, 'data', over every device (every host's, after
`jax.distributed.initialize()`). The batch axis of the epoch's triples is
split over it; parameters and item features are replicated, and with
`config.train.shard_user_table` the user table and its Adam moments are
split by rows, for catalogues whose user table does not fit one device.
XLA inserts the gradient all-reduce; the math is the single-device step's.
"""

import math
from typing import Any

import jax
import ml_collections
import numpy as np
from jax.sharding import Mesh
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

AXIS = 'data'


def make_mesh(devices: list[jax.Device] | None = None) -> Mesh:
  """A 1-D mesh named 'data' over `devices` (default: all devices of all hosts)."""
  devices = jax.devices() if devices is None else devices
  return Mesh(np.asarray(devices), (AXIS,))


def mesh_from_config(config: ml_collections.ConfigDict) -> Mesh | None:
  """The mesh when config.train.data_parallel is set, else None (plain single device)."""
  return make_mesh() if config.train.data_parallel else None


def num_user_rows(config: ml_collections.ConfigDict, num_users: int) -> int:
  """Rows of the user table: padded to a multiple of the device count when it is sharded.

  Padding rows are zeros that no batch indexes, so they never change.
  """
  if not (config.train.data_parallel and config.train.shard_user_table):
    return num_users
  devices = jax.device_count()
  return math.ceil(num_users / devices) * devices


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """For (steps, batch) arrays: the batch axis split over the devices."""
  return NamedSharding(mesh, P(None, AXIS))


def state_shardings(state: Any, mesh: Mesh, shard_user_table: bool) -> Any:
  """A NamedSharding per leaf of a train state: replicated, or by rows for the user table.

  The user table's Adam moments share its path key, so they follow it.
  """
  by_rows = NamedSharding(mesh, P(AXIS, None))
  def choose(path, leaf):
    on_user_table = any(getattr(k, 'key', None) == 'user_embedding' for k in path)
    return by_rows if (shard_user_table and on_user_table and leaf.ndim == 2) else (
        replicated(mesh))
  return jax.tree_util.tree_map_with_path(choose, state)


def check_batch(batch_size: int, mesh: Mesh) -> str | None:
  """An error message when the batch does not split evenly over the mesh, else None."""
  if batch_size % mesh.size:
    return (f'must be divisible by the {mesh.size} devices of the data-parallel mesh '
            f'(try {math.ceil(batch_size / mesh.size) * mesh.size})')
  return None
