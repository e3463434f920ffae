"""Checkpoints with orbax: the latest state for resuming and the best for evaluation.

Everything orbax-specific lives here so a move to another checkpoint API
touches one file. A checkpoint is a pytree
  {'state': {'step', 'params', 'opt_state'}, 'loop': {...loop counters...}}
restored into the structure of a freshly built tree of the same config.
"""

import os
from typing import Any

import jax
import orbax.checkpoint as ocp

LATEST = 'latest'
BEST = 'best'


def _manager(directory: str) -> ocp.CheckpointManager:
  options = ocp.CheckpointManagerOptions(
      preservation_policy=ocp.checkpoint_managers.LatestN(1), create=True)
  return ocp.CheckpointManager(os.path.abspath(directory), options=options)


def _delete(manager: ocp.CheckpointManager, epochs) -> None:
  """Delete checkpoints once pending saves are complete (a save in flight may be one of them)."""
  if epochs:
    manager.wait_until_finished()
  for epoch in list(epochs):
    manager.delete(epoch)


class Checkpoints:
  """Two orbax managers under `<workdir>/checkpoints`: 'latest' and 'best'.

  Keys are epochs. Each keeps one checkpoint; saving is asynchronous, and
  `wait()` or `close()` makes the files complete.
  """

  def __init__(self, workdir: str):
    root = os.path.join(workdir, 'checkpoints')
    self._managers = {LATEST: _manager(os.path.join(root, LATEST)),
                      BEST: _manager(os.path.join(root, BEST))}

  def save(self, which: str, epoch: int, tree: Any) -> None:
    """Save `tree` as `epoch`, replacing a checkpoint of the same epoch.

    A run interrupted between two saves redoes its last epoch and saves it again.
    """
    manager = self._managers[which]
    _delete(manager, [epoch] if epoch in manager.all_steps() else [])
    manager.save(epoch, args=ocp.args.StandardSave(tree), force=True)

  def discard(self, which: str) -> None:
    """Delete every checkpoint of `which` (leftovers of an attempt that is started over)."""
    manager = self._managers[which]
    _delete(manager, manager.all_steps())

  def latest_epoch(self, which: str) -> int | None:
    return self._managers[which].latest_step()

  def restore(self, which: str, like: Any) -> tuple[int, Any] | None:
    """(epoch, tree) of the newest checkpoint, shaped like `like`; None if none."""
    manager = self._managers[which]
    epoch = manager.latest_step()
    if epoch is None:
      return None
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, like)
    return epoch, manager.restore(epoch, args=ocp.args.StandardRestore(abstract))

  def wait(self) -> None:
    for manager in self._managers.values():
      manager.wait_until_finished()

  def close(self) -> None:
    for manager in self._managers.values():
      manager.wait_until_finished()
      manager.close()
