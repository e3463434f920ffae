"""Data-parallel training over all devices with `jax.sharding`.

One mesh axis, 'data', over every device (every host's, after
`jax.distributed.initialize()`). The batch axis of the epoch's triples is
split over it; parameters and item features are replicated, and with
`config.train.shard_user_table` the user table and its Adam moments are
split by rows, for catalogues whose user table does not fit one device.
With `config.train.shard_item_features` the per-item tables (features,
availability, is_new, item-sized extras) are split by rows too, for
catalogues whose features do not fit one device: they are padded to a
multiple of the device count, and the programs drop the padding rows
(`drop_item_padding`) before a method reads them, so a method sees exactly
the catalogue's items. XLA inserts the gradient all-reduce and, for rows
gathered from a split table, a masked local gather summed over the devices;
the math is the single-device step's.
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


def padded_rows(count: int, mesh: Mesh) -> int:
  """`count` rounded up to a multiple of the mesh's devices: the rows of a table split by rows."""
  return math.ceil(count / mesh.size) * mesh.size


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


def per_item_leaves(tables: Any, num_items: int) -> Any:
  """A bool per leaf of `tables` (a methods.Tables of unpadded arrays): True for a table with
  a row per item, which `train.shard_item_features` splits by rows.

  The features, availability and is_new always are; an extra is when its leading axis has
  `num_items` rows (cf_items, item graphs). Classifying a table wrongly costs only speed,
  never results: the padding is dropped again inside the program.
  """
  def per_item(path, leaf):
    in_extras = any(getattr(k, 'name', None) == 'extras' for k in path)
    field = getattr(path[0], 'name', None)
    if field in ('features', 'availability', 'is_new'):
      return True
    return in_extras and np.ndim(leaf) >= 1 and np.shape(leaf)[0] == num_items
  return jax.tree_util.tree_map_with_path(per_item, tables)


def pad_item_rows(tables: Any, per_item: Any, rows: int) -> Any:
  """Host arrays with each per-item table padded by zero rows to `rows`; the rest unchanged."""
  def pad(leaf, item):
    leaf = np.asarray(leaf)
    if not item or leaf.shape[0] == rows:
      return leaf
    zeros = np.zeros((rows - leaf.shape[0],) + leaf.shape[1:], leaf.dtype)
    return np.concatenate([leaf, zeros])
  return jax.tree.map(pad, tables, per_item)


def item_table_shardings(per_item: Any, mesh: Mesh) -> Any:
  """A NamedSharding per table: by rows for the per-item tables, replicated for the rest."""
  by_rows = NamedSharding(mesh, P(AXIS))
  return jax.tree.map(lambda item: by_rows if item else replicated(mesh), per_item)


def put_item_tables(padded: Any, per_item: Any, mesh: Mesh) -> Any:
  """Host tables (padded) on the mesh, each device given only its rows of a per-item table.

  Built shard by shard from this process's copy: unlike `jax.device_put` of a host array
  onto several processes' devices, no process gathers the whole table to check that the
  processes agree (every process reads the same data).
  """
  def put(leaf, placement):
    return jax.make_array_from_callback(leaf.shape, placement, lambda index: leaf[index])
  return jax.tree.map(put, padded, item_table_shardings(per_item, mesh))


def drop_item_padding(tables: Any, per_item: Any, num_items: int) -> Any:
  """The tables a method reads: each per-item table's first `num_items` rows.

  Called inside the jitted programs, where the slice keeps every row on its device (XLA
  pads the last device's shorter block internally); outside jit it would gather the
  table. (A sharding constraint on the slice was tried: it did not stop MICRO's program
  from gathering the table, and it changed the summation order of CLCRec's.)
  """
  return jax.tree.map(lambda leaf, item: leaf[:num_items] if item else leaf, tables, per_item)
