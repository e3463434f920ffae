"""A trained run as a Python object: embed items that arrive after training and rank them.

  import milk_jax
  run = milk_jax.load('runs/ml100k')
  vectors = run.item_vectors({'text': text_rows, 'genre': genre_rows})
  top = run.recommend(['12', '40'], k=10, items='new_movies/')

The run folder alone is enough (see milk_jax/serving.py): new items are
imputed with the training run's statistics, normalised as in training and
embedded by the run's method from the best checkpoint, in chunks of the
training catalogue's size, so any number of items fits in memory.

Serving only reads the run folder (read-only restore, no lock): it creates,
repairs and deletes nothing there, so it may run while the run trains on
(see milk_jax/checkpoint.py `read_newest`). A `Run` ranks with one epoch's
parameters, `Run.epoch`: the best checkpoint's, for users and items alike.
When vectors.npz (written when training ends) holds another epoch (the run
is training, or was stopped while it was being extended), the users'
vectors are computed from the best checkpoint's parameters instead, and the
warm items' vectors, which only vectors.npz holds, are refused.

A run trained with `eval.calibration='validation'` ranks new items by their
calibrated scores, a_p * (user . item) + b_p with the map of the item's
modality pattern saved in calibration.json (milk_jax/calibration.py), as its
test metrics did; warm items keep their plain scores.
"""

import logging
import os
import time
from typing import Mapping, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from milk_jax import calibration as calibration_lib
from milk_jax import checkpoint
from milk_jax import methods
from milk_jax import new_items as new_items_lib
from milk_jax import runfolder
from milk_jax import serving as serving_lib
from milk_jax import topk
from milk_jax.config import FEATURE_DTYPES
from milk_jax.data.errors import DataError
from milk_jax.errors import ConfigError
from milk_jax.errors import RunFolderError
from milk_jax.methods import Tables
from milk_jax.training import state as state_lib

log = logging.getLogger('milk_jax')

# What building or tracing the new items' tables raises when serving.npz's extras do not fit.
_EXTRAS_ERRORS = (KeyError, IndexError, TypeError, ValueError)
ITEM_CHUNK = 32768  # Items ranked per device call (config.recommend.item_chunk).
USER_CHUNK = 2048  # Users ranked per device call (config.recommend.user_chunk).


class Recommendations(NamedTuple):
  """Top-k lists in raw ids, best first; a user with fewer than k candidates has '' / -inf."""
  users: np.ndarray  # (n,) str.
  items: np.ndarray  # (n, k) str.
  scores: np.ndarray  # (n, k) float32.


def run_config(folder: str) -> ml_collections.ConfigDict:
  """The config a run folder was trained with (its config.json)."""
  saved = runfolder.saved_config(folder)
  if saved is None:
    raise RunFolderError(f'{os.path.join(folder, runfolder.CONFIG_FILE)} is missing: {folder} '
                         'is not a trained milk-jax run folder')
  return ml_collections.ConfigDict(saved)


def new_item_tables(method: methods.Method, extras: Mapping[str, np.ndarray],
                    warm_items: np.ndarray, num_items: int, features: tuple[np.ndarray, ...],
                    available: np.ndarray, feature_dtype: str = 'float32',
                    device_extras: Mapping[str, jax.Array] | None = None) -> Tables:
  """Tables of exactly the training catalogue's size whose every row is a new item.

  Args:
    extras: the run's saved extras (host); `method.serve_extras` adapts them
      to these items (GoRec's clusters), unless `device_extras` (the same,
      already on device) is given for a method whose extras do not change.
    features, available: n <= num_items prepared rows; padded to num_items.
  """
  n = available.shape[0]
  def pad(x, value):
    return np.concatenate([x, np.full((num_items - n,) + x.shape[1:], value, x.dtype)])
  features = tuple(pad(np.asarray(f, np.float32), 0) for f in features)
  available = pad(np.asarray(available, bool), True)
  if device_extras is None:
    device_extras = {k: jnp.asarray(v) for k, v in
                     method.serve_extras(extras, features, available).items()}
  dtype = FEATURE_DTYPES[feature_dtype]
  return Tables(features=tuple(jnp.asarray(f, dtype) for f in features),
                availability=jnp.asarray(available),
                warm_items=jnp.asarray(warm_items, jnp.int32),
                is_new=jnp.ones(num_items, bool), extras=device_extras)


class Run:
  """A trained run folder, ready to embed and rank new items (see the module doc)."""

  def __init__(self, folder: str, config: ml_collections.ConfigDict | None = None):
    """Args: config: when given, it must be the run's own (ConfigError names the fields)."""
    if not os.path.isdir(folder):
      raise RunFolderError(f'{folder} is not a folder: give a trained run folder (--workdir)')
    saved = runfolder.saved_config(folder)
    if config is not None:
      runfolder.check_same_run(folder, saved, config)
    self.folder = folder
    self.config = run_config(folder)
    new_items_lib.check_file_fields(self.config.data,
                                    os.path.join(folder, runfolder.CONFIG_FILE))
    if not os.path.isdir(os.path.join(folder, 'checkpoints')):
      raise RunFolderError(f'no checkpoints under {folder}: train the run first')
    self.serving = serving_lib.read_serving(folder)
    self.user_ids = serving_lib.read_id_map(folder, 'users.tsv')
    self.catalogue_ids = serving_lib.read_id_map(folder, 'items.tsv')
    for name, ids, count in (('users.tsv', self.user_ids, self.serving.num_users),
                             ('items.tsv', self.catalogue_ids, self.serving.num_items)):
      if len(ids) != count:
        raise RunFolderError(f'{os.path.join(folder, name)}: {len(ids)} ids, but '
                             f'{serving_lib.SERVING_FILE} says the run has {count}; the run '
                             'folder is damaged: train the run again')
    # The vectors of `epoch`; the catalogue's is None when not saved for it (see the module doc).
    self.user_vectors, self.catalogue_vectors, self.epoch = serving_lib.read_vectors(
        folder, self.serving.num_users, self.serving.num_items)
    self.modality_names = self.serving.preprocessing.modality_names
    self.feature_dims = self.serving.preprocessing.feature_dims
    spec = methods.DataSpec(num_users=self.serving.num_users, num_items=self.serving.num_items,
                            feature_dims=self.feature_dims,
                            num_warm_items=int(self.serving.warm_items.size))
    self.method = methods.get(self.config.method).make(self.config, spec)
    self._params = None
    self._embed_items = jax.jit(lambda params, tables: self.method.embed(params, tables)[1])
    self._compiled_embed = None
    self.compile_seconds = 0.0  # Compiling the item embedding, once per Run.
    self._device_extras = None
    self._user_rows = {raw: row for row, raw in enumerate(self.user_ids.tolist())}
    self._vectors_epoch = self.epoch
    # The score maps per modality pattern (None: plain inner products); of epoch calibration.epoch.
    self.calibration = None
    if self.config.eval.get('calibration', 'none') != 'none':
      self.calibration = calibration_lib.read(folder, self.modality_names)
    if self.method.serve_extras is not None:  # It embeds new items: the epoch is the best's.
      self._use_best_epoch()

  @property
  def best_epoch(self) -> int:
    """The epoch this Run ranks with (an older name of `epoch`)."""
    return self.epoch

  def _restore(self) -> tuple[int, object]:
    key = jax.random.fold_in(jax.random.key(self.config.seed), state_lib.INIT_STREAM)
    state = state_lib.create_train_state(self.config, self.method, key, self.serving.num_users)
    return checkpoint.restore_best_params(self.folder, state)

  def _epochs_differ(self, best_epoch: int) -> str:
    return (f'{os.path.join(self.folder, serving_lib.VECTORS_FILE)} holds epoch '
            f'{self._vectors_epoch}, but {os.path.join(self.folder, "checkpoints", "best")} '
            f'holds epoch {best_epoch} (the run is training, or stopped before it finished)')

  def _use_best_epoch(self) -> None:
    """Rank with the best checkpoint's epoch; users' vectors from its parameters if need be."""
    best_epoch, self._params = self._restore()
    if best_epoch == self._vectors_epoch:
      return
    log.warning('%s: ranking with epoch %d; the users\' vectors are computed from its '
                'parameters', self._epochs_differ(best_epoch), best_epoch)
    self.epoch = best_epoch
    try:
      tables = self._new_item_tables(
          tuple(np.zeros((0, d), np.float32) for d in self.feature_dims),
          np.zeros((0, len(self.feature_dims)), bool))
      users = jax.jit(lambda params, tables: self.method.embed(params, tables)[0])(
          self._params, tables)
    except _EXTRAS_ERRORS as error:
      raise self._extras_error(error) from None
    self.user_vectors = np.asarray(users, np.float32)[:self.serving.num_users]
    self.catalogue_vectors = None

  def catalogue(self) -> np.ndarray:
    """(I, d) the training catalogue's vectors of `epoch`; RunFolderError when not saved."""
    if self.catalogue_vectors is None:
      raise RunFolderError(f'{self._epochs_differ(self.epoch)}, and only {serving_lib.VECTORS_FILE}'
                           " holds the warm items' vectors: let the training finish (or run its "
                           'command again), or run `--mode=eval` on the run, then try again')
    return self.catalogue_vectors

  # ------------------------------------------------------------------ vectors

  @property
  def params(self):
    """The parameters of `epoch` (the best checkpoint's), restored on first use."""
    if self._params is None:
      best_epoch, params = self._restore()
      if best_epoch != self.epoch:
        raise RunFolderError(f'{self._epochs_differ(best_epoch)}: the parameters of epoch '
                             f'{self.epoch} are not saved any more; let the training finish, or '
                             'run `--mode=eval` on the run')
      self._params = params
    return self._params

  def _new_item_tables(self, features: tuple[np.ndarray, ...], available: np.ndarray) -> Tables:
    if self._device_extras is None and self.method.serve_extras is methods.same_extras:
      # The same for every chunk: moved to the device once.
      self._device_extras = {k: jnp.asarray(v) for k, v in self.serving.extras.items()}
    return new_item_tables(self.method, self.serving.extras, self.serving.warm_items,
                           self.serving.num_items, features, available,
                           self.config.train.feature_dtype, self._device_extras)

  def _embed_prepared(self, features: tuple[np.ndarray, ...], available: np.ndarray
                      ) -> np.ndarray:
    """(n, d) vectors of prepared (imputed, normalised) rows, a catalogue-sized call at a time."""
    if self.method.serve_extras is None:
      reason = methods.info(self.config.method).no_serving_reason or ''
      raise ConfigError(f'config.method={self.config.method!r} cannot embed items that arrive '
                        f'after training ({reason}); serve a run of another method')
    out, size = [], self.serving.num_items
    for start in range(0, available.shape[0], size):
      stop = min(start + size, available.shape[0])
      chunk = (tuple(f[start:stop] for f in features), available[start:stop])
      if self._compiled_embed is None:
        tables = self._compile_embed(*chunk)
      else:
        tables = self._new_item_tables(*chunk)
      out.append(np.asarray(self._compiled_embed(self.params, tables))[:stop - start])
    if not out:
      return np.zeros((0, self.user_vectors.shape[1]), np.float32)
    return np.concatenate(out).astype(np.float32, copy=False)

  def _compile_embed(self, features: tuple[np.ndarray, ...], available: np.ndarray) -> Tables:
    """The first chunk's tables, on which the item embedding is compiled ahead (timed apart)."""
    tic = time.perf_counter()
    try:
      tables = self._new_item_tables(features, available)
      self._compiled_embed = self._embed_items.lower(self.params, tables).compile()
    except _EXTRAS_ERRORS as error:
      raise self._extras_error(error) from None
    self.compile_seconds += time.perf_counter() - tic
    return tables

  def _extras_error(self, error: Exception) -> RunFolderError:
    """What a failure to build or trace the tables means: every shape is the run's own but
    those of the extras saved in serving.npz, so that file is crafted or damaged."""
    shapes = ', '.join(f'{k} {v.shape}' for k, v in self.serving.extras.items()) or 'none'
    first = (str(error).strip().splitlines() or [''])[0][:200]
    return RunFolderError(
        f'{os.path.join(self.folder, serving_lib.SERVING_FILE)}: the saved extras ({shapes}) do '
        f'not fit config.method={self.config.method!r} ({type(error).__name__}: {first}); run '
        '`--mode=eval` on the run to write the file again')

  def embed(self, items: new_items_lib.NewItems, start: int = 0, stop: int | None = None
            ) -> np.ndarray:
    """(stop - start, d) vectors of checked new items' rows, prepared as in training."""
    stop = len(items) if stop is None else stop
    raw, available = items.rows(start, stop)
    return self._embed_prepared(self.serving.preprocessing.apply(raw, available), available)

  def new_items(self, features: Mapping[str, np.ndarray] | Sequence[np.ndarray | None],
                availability: np.ndarray | None = None,
                item_ids: Sequence[str] | None = None) -> new_items_lib.NewItems:
    """Checked NewItems from arrays: one per modality (a mapping by name, or in the run's
    order), None or absent for a modality no item has; availability (N, M) bool marks more."""
    if isinstance(features, Mapping):
      unknown = sorted(set(features) - set(self.modality_names))
      if unknown:
        raise DataError(f'features[{unknown[0]!r}]: not a modality of the run '
                        f'({", ".join(self.modality_names)})')
      features = [features.get(name) for name in self.modality_names]
    rows = next((np.shape(f)[0] for f in features if f is not None), 0)
    ids = [f'new_{i}' for i in range(rows)] if item_ids is None else item_ids
    return new_items_lib.from_arrays(features, ids, availability, self.modality_names,
                                     self.feature_dims)

  def item_vectors(self, features: Mapping[str, np.ndarray] | Sequence[np.ndarray | None],
                   availability: np.ndarray | None = None) -> np.ndarray:
    """(N, d) vectors of new items from raw features (see `new_items`); rank with
    `user_vectors` by inner product."""
    return self.embed(self.new_items(features, availability))

  # ------------------------------------------------------------------ ranking

  def user_rows(self, user_ids: Sequence[str] | None, source: str = 'user_ids') -> np.ndarray:
    """Dense rows of raw user ids (all users when None); DataError names an unknown one."""
    if user_ids is None:
      return np.arange(len(self.user_ids))
    rows = np.fromiter((self._user_rows.get(str(u), -1) for u in user_ids), np.int64)
    if (rows < 0).any():
      first = int(np.flatnonzero(rows < 0)[0])
      raise DataError(f'{source}: {int((rows < 0).sum())} user ids are not users of the run '
                      f'(first: {str(list(user_ids)[first])!r}, entry {first + 1})')
    return rows

  def load_items(self, items) -> new_items_lib.NewItems | None:
    """A folder path (checked, training layout) or NewItems as they are; None stays None."""
    if items is None or isinstance(items, new_items_lib.NewItems):
      checked = items
    else:
      checked = new_items_lib.read_folder(str(items), self.modality_names, self.feature_dims,
                                          self.config.data)
    if checked is not None:
      where = str(items) if not isinstance(items, new_items_lib.NewItems) else 'items'
      new_items_lib.refuse_catalogue_ids(checked, self.catalogue_ids, self.serving.warm_items,
                                         where)
    return checked

  def recommend(self, user_ids: Sequence[str] | None = None, k: int = 20, items=None,
                include_warm: bool = False, item_chunk: int = ITEM_CHUNK,
                user_chunk: int = USER_CHUNK) -> Recommendations:
    """Each user's top-k among new items (a folder or NewItems) and, when asked, the warm
    items the user has not interacted with in training.

    Memory is bounded by the chunk sizes, whatever the number of items or users.
    """
    checked = self.load_items(items)
    if checked is None and not include_warm:
      raise ConfigError('config.recommend.new_items is None and include_warm is False: give the '
                        'folder of the new items to rank')
    if int(k) < 1:
      raise ConfigError(f'config.recommend.k={k}: must be at least 1')
    rows = self.user_rows(user_ids)
    catalogue = self.catalogue() if include_warm else None
    user_vectors = self.user_vectors[rows]
    calibrated = checked is not None and self._check_calibration()
    if calibrated:  # A column of ones carries each item's offset: user . [a v, b] = a s + b.
      user_vectors = np.concatenate([user_vectors, np.ones((rows.size, 1), np.float32)], axis=1)
      if catalogue is not None:  # Warm items: offset 0, plain scores.
        catalogue = np.concatenate([catalogue, np.zeros((catalogue.shape[0], 1), np.float32)],
                                   axis=1)
    ranking = topk.TopK(user_vectors, int(k), user_chunk)
    ids = []
    offset = 0
    if include_warm:
      warm = self.serving.warm_items
      offset = self._rank_warm(ranking, rows, warm, catalogue, item_chunk)
      ids.append(self.catalogue_ids[warm])
    if checked is not None:
      self._rank_new(ranking, checked, offset, item_chunk, calibrated)
      ids.append(checked.ids)
    all_ids = np.concatenate(ids + [np.asarray([''], str)])  # -1 -> ''.
    indices, scores = ranking.result()
    return Recommendations(users=self.user_ids[rows], items=all_ids[indices], scores=scores)

  def _rank_warm(self, ranking: topk.TopK, rows: np.ndarray, warm: np.ndarray,
                 catalogue: np.ndarray, item_chunk: int) -> int:
    """Adds the warm items' vectors, each user's training items left out; returns their count."""
    position = np.full(self.serving.num_items, -1, np.int64)
    position[warm] = np.arange(warm.size)
    out_row = np.full(len(self.user_ids), -1, np.int64)
    out_row[rows] = np.arange(rows.size)
    pairs = self.serving.train_pairs.astype(np.int64)
    pair_rows, pair_cols = out_row[pairs[:, 0]], position[pairs[:, 1]]
    keep = (pair_rows >= 0) & (pair_cols >= 0)
    pair_rows, pair_cols = pair_rows[keep], pair_cols[keep]
    for start in range(0, warm.size, item_chunk):
      stop = min(start + item_chunk, warm.size)
      inside = (pair_cols >= start) & (pair_cols < stop)
      ranking.add(catalogue[warm[start:stop]], start, item_chunk,
                  seen=(pair_rows[inside], pair_cols[inside] - start))
    return int(warm.size)

  def _check_calibration(self) -> bool:
    """True when new items are ranked calibrated; RunFolderError when the saved maps are of
    another epoch than the one ranked with."""
    if self.calibration is None:
      return False
    if self.calibration.epoch != self.epoch:
      raise RunFolderError(
          f'{os.path.join(self.folder, calibration_lib.CALIBRATION_FILE)} holds the score maps '
          f'of epoch {self.calibration.epoch}, but the run ranks with epoch {self.epoch} (the '
          'run is training, or stopped before it finished): let the training finish, or run '
          '`--mode=eval` on the run, then try again')
    return True

  def score_maps(self, availability: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(scale (N,), offset (N,)) that rank items of these (N, M) availability rows:
    scale * (user . item) + offset; ones and zeros for a run without calibration."""
    if self.calibration is None:
      n = np.asarray(availability).shape[0]
      return np.ones(n, np.float32), np.zeros(n, np.float32)
    return self.calibration.item_maps(availability)

  def _rank_new(self, ranking: topk.TopK, items: new_items_lib.NewItems, offset: int,
                item_chunk: int, calibrated: bool = False) -> None:
    """Adds the new items' vectors (calibrated: [scale * v, offset]), a chunk at a time.

    The first chunk's time includes compiling (said apart); the rate is
    measured from the end of the first chunk on, when nothing compiles.
    """
    total, tic, compiled = len(items), time.perf_counter(), self.compile_seconds
    first_stop, first_done = 0, tic
    for start in range(0, total, item_chunk):
      stop = min(start + item_chunk, total)
      vectors = self.embed(items, start, stop)
      if calibrated:
        scale, shift = self.calibration.item_maps(items.available[start:stop])
        vectors = np.concatenate([vectors * scale[:, None], shift[:, None]], axis=1)
      ranking.add(vectors, offset + start, item_chunk)
      now = time.perf_counter()
      if start == 0:
        first_stop, first_done = stop, now
        log.info('ranked %d/%d new items in %.1f s (%.1f s of it compiling)', stop, total,
                 now - tic, self.compile_seconds - compiled)
      else:
        log.info('ranked %d/%d new items (%.0f items/s)', stop, total,
                 (stop - first_stop) / max(now - first_done, 1e-9))


def load(run_dir: str) -> Run:
  """The trained run in `run_dir` (see `Run`)."""
  return Run(run_dir)
