"""Checkpoints with orbax: the latest states for resuming and the best parameters.

Everything orbax-specific lives here so a move to another checkpoint API
touches one file. A checkpoint holds two items:
  arrays  a pytree of arrays, restored into the structure of a like-shaped tree;
  meta    JSON: the loop counters and a SHA-256 digest of the arrays and counters.
Restoring recomputes the digest, so a truncated, overwritten or bit-flipped
array file is detected instead of trained on. 'latest' keeps the two newest
checkpoints, so that a damaged newest one falls back to the one before it.

Training writes through `Checkpoints` (orbax managers, which create folders
and remove a killed save's temporary folders). Everything that only reads a
run, serving and evaluation, goes through `read_newest` instead: it opens
committed step folders directly with a plain orbax checkpointer, so it
creates, repairs and deletes nothing and can run beside a training process
on the same folder without taking its lock.

A train state is saved as a plain dict (`state_tree`, as older run folders
hold it) and put back into a like-shaped state (`state_from_tree`);
`restore_best_params` is how serving and evaluation get a run's best
parameters, read only.
"""

import hashlib
import json
import logging
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from milk_jax.errors import RunFolderError

LATEST = 'latest'
BEST = 'best'
_KEEP = {LATEST: 2, BEST: 1}

log = logging.getLogger('milk_jax')


class DamagedCheckpoint(Exception):
  """A checkpoint that cannot be read back, or whose digest does not match."""


def tree_digest(arrays: Any, meta: dict[str, Any]) -> str:
  """SHA-256 over every array's dtype, shape and bytes, in tree order, and the JSON meta."""
  digest = hashlib.sha256()
  for path, leaf in jax.tree_util.tree_flatten_with_path(arrays)[0]:
    value = np.asarray(jax.device_get(leaf))
    digest.update(f'{jax.tree_util.keystr(path)}|{value.dtype.str}|{value.shape}'.encode())
    digest.update(np.ascontiguousarray(value).tobytes())
  digest.update(json.dumps(meta, sort_keys=True).encode())
  return digest.hexdigest()


def _checked(arrays: Any, meta: dict[str, Any], where: str) -> tuple[Any, dict[str, Any]]:
  """(arrays, meta without its digest); DamagedCheckpoint when the digest does not match."""
  meta = dict(meta)
  saved_digest = meta.pop('digest', None)
  if saved_digest != tree_digest(arrays, meta):
    raise DamagedCheckpoint(f'{where} does not match its digest '
                            '(the array files were changed or damaged)')
  return arrays, meta


def _restore_args(like: Any) -> ocp.args.Composite:
  abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, like)
  return ocp.args.Composite(arrays=ocp.args.StandardRestore(abstract),
                            meta=ocp.args.JsonRestore())


def committed_epochs(directory: str) -> list[int]:
  """Epochs of the committed checkpoints in `directory` (e.g. checkpoints/best), newest first.

  Orbax saves into `<epoch>.orbax-checkpoint-tmp-*` and renames the folder
  to `<epoch>` once complete, so a folder named by a number alone is whole.
  """
  try:
    names = os.listdir(directory)
  except FileNotFoundError:
    return []
  return sorted((int(n) for n in names if n.isdigit()
                 and os.path.isdir(os.path.join(directory, n))), reverse=True)


def read_checkpoint(directory: str, epoch: int, like: Any) -> tuple[Any, dict[str, Any]]:
  """(arrays, meta) of `directory/<epoch>`, read without writing anything; digest checked.

  Raises:
    DamagedCheckpoint: unreadable (or vanished) files, another tree shape, a digest mismatch.
  """
  path = os.path.join(directory, str(epoch))
  handler = ocp.CompositeCheckpointHandler(arrays=ocp.StandardCheckpointHandler(),
                                           meta=ocp.JsonCheckpointHandler())
  try:
    with ocp.Checkpointer(handler) as reader:
      restored = reader.restore(os.path.abspath(path), args=_restore_args(like))
    arrays, meta = restored['arrays'], dict(restored['meta'])
  except Exception as error:  # Orbax and tensorstore raise many types for damaged files.
    raise DamagedCheckpoint(f'{path} cannot be read ({type(error).__name__}: '
                            f'{_first_line(error)})') from error
  return _checked(arrays, meta, path)


def read_newest(directory: str, like: Any, attempts: int = 5
                ) -> tuple[int, Any, dict[str, Any]] | None:
  """(epoch, arrays, meta) of the newest intact checkpoint in `directory`; None if none.

  Reads only: a damaged checkpoint is reported and skipped, never deleted. A
  checkpoint that a training process replaces while it is read (its folder
  is gone afterwards) is not damaged: the folder is listed again.

  Raises:
    RunFolderError: checkpoints exist but none of them can be read.
  """
  damaged, replaced = [], False
  for _ in range(attempts):
    damaged, replaced = [], False
    for epoch in committed_epochs(directory):
      try:
        arrays, meta = read_checkpoint(directory, epoch, like)
      except DamagedCheckpoint as error:
        if not os.path.isdir(os.path.join(directory, str(epoch))):
          replaced = True  # By the training process: list again.
          break
        damaged.append(error)
        continue
      for error in damaged:
        log.warning('%s; using %s', error, os.path.join(directory, str(epoch)))
      return epoch, arrays, meta
    else:
      break
  if replaced:
    raise RunFolderError(f'the checkpoints in {directory} were replaced {attempts} times while '
                         'being read (a training process is saving them): try again')
  if damaged:
    raise RunFolderError(f'{damaged[0]}; no intact checkpoint is left in {directory}')
  return None


def _manager(directory: str, keep: int) -> ocp.CheckpointManager:
  options = ocp.CheckpointManagerOptions(
      preservation_policy=ocp.checkpoint_managers.LatestN(keep), create=True,
      cleanup_tmp_directories=True)  # Half-written saves of a killed run are removed.
  return ocp.CheckpointManager(os.path.abspath(directory), options=options,
                               item_names=('arrays', 'meta'))


class Checkpoints:
  """Two orbax managers under `<workdir>/checkpoints`: 'latest' and 'best'.

  Keys are epochs. Saving is asynchronous; `wait()` or `close()` makes the
  files complete. Orbax commits a checkpoint by renaming its folder, so a
  kill mid-save leaves the previous checkpoints as they were.
  """

  def __init__(self, workdir: str):
    self.root = os.path.join(workdir, 'checkpoints')
    self._managers = {which: _manager(os.path.join(self.root, which), keep)
                      for which, keep in _KEEP.items()}

  def path(self, which: str, epoch: int | None = None) -> str:
    folder = os.path.join(self.root, which)
    return folder if epoch is None else os.path.join(folder, str(epoch))

  def epochs(self, which: str) -> list[int]:
    """Saved epochs of `which`, newest first."""
    return sorted(self._managers[which].all_steps(), reverse=True)

  def save(self, which: str, epoch: int, arrays: Any, meta: dict[str, Any]) -> None:
    """Save `arrays` and `meta` as `epoch`, replacing a checkpoint of the same epoch.

    A run that resumes from an earlier checkpoint redoes later epochs and saves them again.
    """
    manager = self._managers[which]
    if epoch in manager.all_steps():
      manager.wait_until_finished()  # The checkpoint to replace may still be in flight.
      manager.delete(epoch)
    meta = dict(meta, digest=tree_digest(arrays, meta))
    manager.save(epoch, args=ocp.args.Composite(arrays=ocp.args.StandardSave(arrays),
                                                meta=ocp.args.JsonSave(meta)), force=True)

  def restore(self, which: str, epoch: int, like: Any) -> tuple[Any, dict[str, Any]]:
    """(arrays, meta) of one checkpoint, checked against its digest.

    Raises:
      DamagedCheckpoint: unreadable files, a tree of another shape, or a digest mismatch.
    """
    manager = self._managers[which]
    try:
      restored = manager.restore(epoch, args=_restore_args(like))
      arrays, meta = restored['arrays'], dict(restored['meta'])
    except Exception as error:  # Orbax and tensorstore raise many types for damaged files.
      raise DamagedCheckpoint(f'{self.path(which, epoch)} cannot be read '
                              f'({type(error).__name__}: {_first_line(error)})') from error
    return _checked(arrays, meta, self.path(which, epoch))

  def restore_newest(self, which: str, like: Any) -> tuple[int, Any, dict[str, Any]] | None:
    """(epoch, arrays, meta) of the newest intact checkpoint of `which`; None if none saved.

    A damaged newer checkpoint is reported, then deleted once an older one
    has been read, so it cannot shadow the good one again.

    Raises:
      RunFolderError: checkpoints exist but none of them can be read.
    """
    damaged = []
    for epoch in self.epochs(which):
      try:
        arrays, meta = self.restore(which, epoch, like)
      except DamagedCheckpoint as error:
        log.warning('%s', error)
        damaged.append((epoch, error))
        continue
      if damaged:
        log.warning('falling back to %s; removing the damaged %s', self.path(which, epoch),
                    ', '.join(self.path(which, e) for e, _ in damaged))
        self.delete(which, [e for e, _ in damaged])
      return epoch, arrays, meta
    if damaged:
      raise RunFolderError(f'{damaged[0][1]}; no intact checkpoint is left in '
                           f'{self.path(which)}: delete {self.root} to start the run over')
    return None

  def delete(self, which: str, epochs: list[int]) -> None:
    manager = self._managers[which]
    if epochs:
      manager.wait_until_finished()  # A save in flight may be one of them.
    for epoch in epochs:
      manager.delete(epoch)

  def discard(self, which: str) -> None:
    """Delete every checkpoint of `which` (leftovers of an attempt that is started over)."""
    self.delete(which, self.epochs(which))

  def wait(self) -> None:
    for manager in self._managers.values():
      manager.wait_until_finished()

  def close(self, quietly: bool = False) -> None:
    """Wait for saves in flight, then release the managers.

    `quietly` (while another error propagates): a failing save is logged, not
    raised, so that the first error is the one reported.
    """
    for which, manager in self._managers.items():
      try:
        manager.wait_until_finished()
        manager.close()
      except Exception as error:  # pylint: disable=broad-except
        if not quietly:
          raise
        log.warning('%s: a save did not complete (%s)', self.path(which), _first_line(error))


def state_tree(state: Any) -> dict[str, Any]:
  """A train state (step, params, opt_state) as the checkpoints hold it: a dict, as older run
  folders saved it."""
  return {'step': state.step, 'params': state.params, 'opt_state': state.opt_state}


def state_from_tree(tree: dict[str, Any], like: Any) -> Any:
  """`like` (a train state, a flax struct) with the step, params and opt_state of `tree`."""
  return like.replace(step=jnp.asarray(tree['step'], jnp.int32), params=tree['params'],
                      opt_state=tree['opt_state'])


def restore_best_params(workdir: str, state: Any) -> tuple[int, Any]:
  """(epoch, params) of the best checkpoint, or of the latest one's copy when it is damaged.

  `state` is a fresh train state of the run (step, params, opt_state): the
  shapes to read into. Reads only (read_newest): no lock, nothing created,
  repaired or deleted, so serving may call it on a folder that a training
  process is still writing.
  """
  root = os.path.join(workdir, 'checkpoints')
  best, latest = os.path.join(root, BEST), os.path.join(root, LATEST)
  try:
    found = read_newest(best, {'params': state.params})
    if found is None:
      raise RunFolderError(f'{best} is empty')
    epoch, arrays, _ = found
    return epoch, arrays['params']
  except RunFolderError as error:
    try:
      found = read_newest(latest, {'state': state_tree(state), 'best_params': state.params})
    except RunFolderError as latest_error:
      raise RunFolderError(f'{error}, and no intact copy of the best parameters is left in '
                           f'{latest} ({latest_error})') from None
    if found is None:
      raise RunFolderError(f'{error}, and {latest} holds no copy of the best parameters: train '
                           'the run again') from None
    _, arrays, meta = found
    log.warning('%s; using the copy of the best parameters (epoch %d) in the latest '
                'checkpoint', error, meta['best_epoch'])
    return meta['best_epoch'], arrays['best_params']


def _first_line(error: BaseException) -> str:
  """The start of an error's message; tensorstore appends pages of spec after it."""
  text = str(error).strip().split(' See full TensorStore details')[0]
  return text.splitlines()[0][:200] if text else 'no message'
