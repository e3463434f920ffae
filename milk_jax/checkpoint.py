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

A train state is saved as a plain dict (`state_tree`) and put back into a
like-shaped state (`state_from_tree`); `restore_best_params` is how serving
and evaluation get a run's best variables, read only. Run folders written
before the train state had a model state (BatchNorm statistics and MICRO's
graphs inside the params, the optimiser a multi_transform that froze them)
still restore and resume: a restore given older `Layout`s reads the saved
tree's structure first and, when it is an older one, restores in that layout
(its digest checked as saved) and converts it (`latest_like`).
"""

import hashlib
import json
import logging
import os
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
from jax.experimental import multihost_utils

from milk_jax.errors import RunFolderError

LATEST = 'latest'
BEST = 'best'
_KEEP = {LATEST: 2, BEST: 1}

log = logging.getLogger('milk_jax')


class DamagedCheckpoint(Exception):
  """A checkpoint that cannot be read back, or whose digest does not match."""


def _whole_value(leaf: Any) -> np.ndarray:
  """A leaf's whole value on this host.

  An array split over the devices of several processes (a row-sharded user
  table on several hosts) is gathered from all of them: every process digests
  the same leaves in the same order, so each takes part in each gather.
  """
  if isinstance(leaf, jax.Array) and not leaf.is_fully_addressable and (
      not leaf.is_fully_replicated):
    return np.asarray(multihost_utils.process_allgather(leaf, tiled=True))
  return np.asarray(jax.device_get(leaf))


def tree_digest(arrays: Any, meta: dict[str, Any]) -> str:
  """SHA-256 over every array's dtype, shape and bytes, in tree order, and the JSON meta."""
  digest = hashlib.sha256()
  for path, leaf in jax.tree_util.tree_flatten_with_path(arrays)[0]:
    value = _whole_value(leaf)
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


def _handler() -> ocp.CompositeCheckpointHandler:
  return ocp.CompositeCheckpointHandler(arrays=ocp.StandardCheckpointHandler(),
                                        meta=ocp.JsonCheckpointHandler())


class Layout(NamedTuple):
  """An older layout of a checkpoint's arrays: a like-shaped tree of it, and the conversion
  of arrays restored in it to the current layout."""
  like: Any
  convert: Callable[[Any], Any]


def _key_name(key: Any) -> str:
  for field in ('key', 'name', 'idx'):  # DictKey, GetAttrKey, SequenceKey.
    if hasattr(key, field):
      return str(getattr(key, field))
  return str(key)


def _leaf_names(tree: Any) -> frozenset[str]:
  """'state.params.user_embedding', ...: each leaf's path as orbax names the saved arrays."""
  return frozenset('.'.join(_key_name(k) for k in path)
                   for path, _ in jax.tree_util.tree_flatten_with_path(tree)[0])


def _saved_names(path: str) -> frozenset[str] | None:
  """The leaf names of the arrays saved in checkpoint `path`; None when they cannot be read."""
  try:
    with ocp.Checkpointer(_handler()) as reader:
      arrays = reader.metadata(os.path.abspath(path)).item_metadata['arrays']
    return _leaf_names(getattr(arrays, 'tree', arrays))
  except Exception:  # pylint: disable=broad-except
    return None  # Damaged: the restore itself reports it.


def _layout_of(path: str, like: Any, older: tuple[Layout, ...]
               ) -> tuple[Any, Callable[[Any], Any] | None]:
  """(the tree to restore `path` into, the conversion to apply after, or None)."""
  if older:
    saved = _saved_names(path)
    if saved is not None and saved != _leaf_names(like):
      for layout in older:
        if saved == _leaf_names(layout.like):
          return layout.like, layout.convert
  return like, None


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


def read_checkpoint(directory: str, epoch: int, like: Any,
                    older: tuple[Layout, ...] = ()) -> tuple[Any, dict[str, Any]]:
  """(arrays, meta) of `directory/<epoch>`, read without writing anything; digest checked.

  Arrays saved in one of the `older` layouts are converted to `like`'s.

  Raises:
    DamagedCheckpoint: unreadable (or vanished) files, another tree shape, a digest mismatch.
  """
  path = os.path.join(directory, str(epoch))
  target, convert = _layout_of(path, like, older)
  try:
    with ocp.Checkpointer(_handler()) as reader:
      restored = reader.restore(os.path.abspath(path), args=_restore_args(target))
    arrays, meta = restored['arrays'], dict(restored['meta'])
  except Exception as error:  # Orbax and tensorstore raise many types for damaged files.
    raise DamagedCheckpoint(f'{path} cannot be read ({type(error).__name__}: '
                            f'{_first_line(error)})') from error
  arrays, meta = _checked(arrays, meta, path)
  return (arrays if convert is None else convert(arrays)), meta


def read_newest(directory: str, like: Any, older: tuple[Layout, ...] = (), attempts: int = 5
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
        arrays, meta = read_checkpoint(directory, epoch, like, older)
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
      cleanup_tmp_directories=True,  # Half-written saves of a killed run are removed.
      # Several processes meet at barriers named by the step: 'latest' and 'best' save the
      # same epoch at once, so each manager's barriers get its own prefix.
      multiprocessing_options=ocp.options.MultiprocessingOptions(
          barrier_sync_key_prefix=os.path.basename(directory)))
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

  def restore(self, which: str, epoch: int, like: Any,
              older: tuple[Layout, ...] = ()) -> tuple[Any, dict[str, Any]]:
    """(arrays, meta) of one checkpoint, checked against its digest; arrays saved in one of
    the `older` layouts are converted to `like`'s.

    Raises:
      DamagedCheckpoint: unreadable files, a tree of another shape, or a digest mismatch.
    """
    manager = self._managers[which]
    target, convert = _layout_of(self.path(which, epoch), like, older)
    try:
      restored = manager.restore(epoch, args=_restore_args(target))
      arrays, meta = restored['arrays'], dict(restored['meta'])
    except Exception as error:  # Orbax and tensorstore raise many types for damaged files.
      raise DamagedCheckpoint(f'{self.path(which, epoch)} cannot be read '
                              f'({type(error).__name__}: {_first_line(error)})') from error
    arrays, meta = _checked(arrays, meta, self.path(which, epoch))
    return (arrays if convert is None else convert(arrays)), meta

  def restore_newest(self, which: str, like: Any, older: tuple[Layout, ...] = ()
                     ) -> tuple[int, Any, dict[str, Any]] | None:
    """(epoch, arrays, meta) of the newest intact checkpoint of `which`; None if none saved.

    A damaged newer checkpoint is reported, then deleted once an older one
    has been read, so it cannot shadow the good one again.

    Raises:
      RunFolderError: checkpoints exist but none of them can be read.
    """
    damaged = []
    for epoch in self.epochs(which):
      try:
        arrays, meta = self.restore(which, epoch, like, older)
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
  """A train state as the checkpoints hold it: a dict of its step, params, opt_state and, when
  it has one, its model_state (the tree of a method without model state is as it always was)."""
  tree = {'step': state.step, 'params': state.params, 'opt_state': state.opt_state}
  if state.model_state:
    tree['model_state'] = state.model_state
  return tree


def state_from_tree(tree: dict[str, Any], like: Any) -> Any:
  """`like` (a train state, a flax struct) with the step, params, opt_state and model state of
  `tree`."""
  return like.replace(step=jnp.asarray(tree['step'], jnp.int32), params=tree['params'],
                      opt_state=tree['opt_state'], model_state=tree.get('model_state', {}))


def _frozen_opt_state(state: Any) -> Any:
  """`state`'s optimiser state as the older layout held it: that of
  optax.multi_transform({'trained': the optimiser, 'frozen': set_to_zero()}) over the params
  merged with the model state, the model state's entries labelled 'frozen'.

  The trained leaves are the same arrays in the same order: every params-shaped part of the
  optimiser state (Adam's moments, momentum's trace) held MaskedNodes for the frozen
  entries, which have no leaves.
  """
  variables = {**state.params, **state.model_state}
  params_shape = jax.tree.structure(state.params)
  masked = jax.tree.map(lambda _: optax.MaskedNode(), state.model_state)

  def params_shaped(x):
    return isinstance(x, dict) and jax.tree.structure(x) == params_shape

  widened = jax.tree.map(lambda x: {**x, **masked} if params_shaped(x) else x,
                         state.opt_state, is_leaf=params_shaped)
  labels = {k: jax.tree.map(lambda _, k=k: 'frozen' if k in state.model_state else 'trained', v)
            for k, v in variables.items()}
  trained = optax.GradientTransformation(lambda _: widened, None)  # Only its init is used.
  return optax.multi_transform({'trained': trained, 'frozen': optax.set_to_zero()},
                               labels).init(variables)


def _older_state_layouts(state: Any) -> tuple[tuple[dict[str, Any], Callable], ...]:
  """(older state tree, conversion to state_tree's) pairs for a state with a model state.

  Before the model state, its entries sat in params and the optimiser state was either
  the same as now (GAR's per-player Adam, which ignored them) or that of a multi_transform
  that froze them (`_frozen_opt_state`). Either way the optimiser's leaves are the
  current ones, in the same order.
  """
  if not state.model_state:
    return ()
  keys = tuple(state.model_state)
  opt_structure = jax.tree.structure(state.opt_state)

  def convert(tree):
    old = tree['params']
    return {'step': tree['step'], 'params': {k: v for k, v in old.items() if k not in keys},
            'opt_state': jax.tree.unflatten(opt_structure, jax.tree.leaves(tree['opt_state'])),
            'model_state': {k: old[k] for k in keys}}

  variables = {**state.params, **state.model_state}
  return tuple(({'step': state.step, 'params': variables, 'opt_state': opt_state}, convert)
               for opt_state in (state.opt_state, _frozen_opt_state(state)))


def latest_like(state: Any) -> tuple[dict[str, Any], tuple[Layout, ...]]:
  """(like, older): the tree a latest checkpoint of `state`'s run is read into ({'state',
  'best_params'}), and the older layouts run folders may hold it in, converted on restore."""
  variables = state.variables
  older = tuple(
      Layout({'state': tree, 'best_params': variables},
             lambda arrays, convert=convert: {**arrays, 'state': convert(arrays['state'])})
      for tree, convert in _older_state_layouts(state))
  return {'state': state_tree(state), 'best_params': variables}, older


def restore_best_params(workdir: str, state: Any) -> tuple[int, Any]:
  """(epoch, variables) of the best checkpoint, or of the latest one's copy when it is damaged.

  `state` is a fresh train state of the run: the shapes to read into. The
  best checkpoint holds the variables (params merged with the model state,
  what `Method.embed` reads) under 'params', as run folders always saved them.
  Reads only (read_newest): no lock, nothing created, repaired or deleted, so
  serving may call it on a folder that a training process is still writing.
  """
  root = os.path.join(workdir, 'checkpoints')
  best, latest = os.path.join(root, BEST), os.path.join(root, LATEST)
  try:
    found = read_newest(best, {'params': state.variables})
    if found is None:
      raise RunFolderError(f'{best} is empty')
    epoch, arrays, _ = found
    return epoch, arrays['params']
  except RunFolderError as error:
    like, older = latest_like(state)
    try:
      found = read_newest(latest, like, older)
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
