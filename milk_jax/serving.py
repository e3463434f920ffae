"""What a run saves so that its folder alone serves items that arrive after training.

Besides config.json and the best checkpoint, a run folder holds
- users.tsv and items.tsv, written when training starts: the id maps
  (dense index -> raw id), by which requests and answers name users and items;
- serving.npz, written when training starts: the preprocessing the model
  depends on (modality names and widths, the imputation fitted on the warm
  items, whether rows are L2-normalised), the method's extras (backbone
  vectors, tables of `Method.prepare`), the warm items and the training
  pairs (to leave a user's own items out when warm items are ranked too);
- vectors.npz, written when training ends: the user and catalogue item
  vectors of the best epoch, which the evaluation ranked with.

`--mode=eval` writes them again, so a run trained before they existed can
be brought up to date.

Reading checks every key, shape, dtype and range, and that the floats are
finite, so a damaged or crafted file is one RunFolderError naming it, not a
wrong ranking or a traceback further on.
"""

import dataclasses
import os
import re
from typing import Mapping, Sequence

import numpy as np

from milk_jax import runfolder
from milk_jax.data import files
from milk_jax.data import ids
from milk_jax.data import missing
from milk_jax.data.dataset import Dataset
from milk_jax.errors import RunFolderError

SERVING_FILE = 'serving.npz'
VECTORS_FILE = 'vectors.npz'
FORMAT_VERSION = 1
ID_MAP_FILES = ('users.tsv', 'items.tsv')  # Dense index -> raw id, of users and of items.
_EXTRA_PREFIX = 'extra__'


@dataclasses.dataclass(eq=False)
class Preprocessing:
  """How raw feature rows became the model's input during training."""
  modality_names: tuple[str, ...]
  feature_dims: tuple[int, ...]
  imputation: missing.Imputation
  normalize: bool

  def apply(self, features: Sequence[np.ndarray], available: np.ndarray
            ) -> tuple[np.ndarray, ...]:
    """Raw rows (a missing modality's row is ignored) -> the rows training would have used.

    The fills are the training run's, never refitted on the rows given. With
    'learned' imputation, a call whose rows include one that no ridge map can
    predict falls back to the mean for all its rows, as training did for the
    whole catalogue.
    """
    filled = missing.apply_imputation(self.imputation, features, available)
    return tuple(missing.l2_normalize(x) for x in filled) if self.normalize else filled


@dataclasses.dataclass(eq=False)
class Serving:
  """The contents of serving.npz."""
  preprocessing: Preprocessing
  num_users: int
  num_items: int
  warm_items: np.ndarray  # (I_w,) int32.
  train_pairs: np.ndarray  # (n, 2) int32 dense (user, item).
  extras: dict[str, np.ndarray]  # The method's Tables.extras, host copies.


def _atomic_savez(path: str, arrays: Mapping[str, np.ndarray]) -> None:
  runfolder.write_file(path, lambda f: np.savez(f, **arrays))


def _load_npz(path: str, what: str) -> dict[str, np.ndarray]:
  if not os.path.exists(path):
    raise RunFolderError(f'{path} is missing ({what}); run `--mode=eval` on the run once to '
                         'write it, or train the run again')
  runfolder.check_regular_file(path)
  try:
    with np.load(path, allow_pickle=False) as archive:
      return {key: archive[key] for key in archive.files}
  except Exception as error:  # pylint: disable=broad-except  # Any corruption of the archive.
    raise RunFolderError(f'{path} is damaged ({type(error).__name__}: {error}); it holds '
                         f'{what}: run `--mode=eval` on the run to write it again') from None


def write_serving(folder: str, dataset, extras: Mapping[str, np.ndarray], normalize: bool
                  ) -> None:
  """Writes serving.npz for `dataset` (a data.Dataset with its imputation) into `folder`."""
  imputation = dataset.imputation
  arrays = {'version': np.asarray(FORMAT_VERSION),
            'modality_names': np.asarray(dataset.modality_names, str),
            'feature_dims': np.asarray([f.shape[1] for f in dataset.features], np.int64),
            'imputation_method': np.asarray(imputation.method),
            'normalize': np.asarray(bool(normalize)),
            'num_users': np.asarray(dataset.num_users), 'num_items': np.asarray(dataset.num_items),
            'warm_items': np.asarray(dataset.warm_items, np.int32),
            'train_pairs': np.asarray(dataset.train_pairs, np.int32)}
  for m, fill in enumerate(imputation.fills):
    arrays[f'fill_{m}'] = fill
  for (target, source), (weights, bias) in imputation.maps.items():
    arrays[f'map_{target}_{source}_weights'] = weights
    arrays[f'map_{target}_{source}_bias'] = bias
  for key, value in extras.items():
    arrays[_EXTRA_PREFIX + key] = np.asarray(value)
  _atomic_savez(os.path.join(folder, SERVING_FILE), arrays)


class _Fields:
  """The arrays of one .npz file, each taken with its expected rank and kind checked."""

  def __init__(self, path: str, arrays: dict[str, np.ndarray]):
    self.path, self.arrays = path, arrays

  def fail(self, problem: str) -> RunFolderError:
    return RunFolderError(f'{self.path}: {problem}; the file is damaged: run `--mode=eval` on '
                          'the run to write it again')

  def get(self, key: str, ndim: int | None, kinds: str, shape: tuple | None = None
          ) -> np.ndarray:
    """arrays[key]; `kinds` are the allowed dtype kinds (numpy's 'b', 'i', 'u', 'f', 'U')."""
    if key not in self.arrays:
      raise self.fail(f'no {key!r} array')
    value = self.arrays[key]
    if (value.dtype.kind not in kinds or (ndim is not None and value.ndim != ndim)
        or (shape is not None and value.shape != shape)):
      wanted = f'shape {shape}' if shape is not None else f'{ndim}-D'
      raise self.fail(f'{key!r} is {value.dtype} of shape {value.shape}, expected {wanted} '
                      f'({"/".join(_KIND_NAMES[k] for k in kinds)})')
    if value.dtype.kind == 'f' and not np.isfinite(value).all():
      raise self.fail(f'{key!r} holds NaN or inf')
    return value

  def count(self, key: str) -> int:
    value = int(self.get(key, 0, 'iu'))
    if value < 1:
      raise self.fail(f'{key!r} is {value}, expected at least 1')
    return value

  def indices(self, key: str, ndim: int, bounds: Sequence[int]) -> np.ndarray:
    """An integer array whose last axis indexes tables of sizes `bounds` (one per column)."""
    value = self.get(key, ndim, 'iu')
    if value.ndim == 2 and value.shape[1] != len(bounds):
      raise self.fail(f'{key!r} has shape {value.shape}, expected (n, {len(bounds)})')
    columns = value.reshape(-1, len(bounds))
    if columns.size and ((columns < 0) | (columns >= np.asarray(bounds))).any():
      raise self.fail(f'{key!r} holds indices outside 0..{"/".join(str(b - 1) for b in bounds)}')
    return value


_KIND_NAMES = {'b': 'bool', 'i': 'int', 'u': 'uint', 'f': 'float', 'U': 'str'}
_MAP_KEY = re.compile(r'map_(\d+)_(\d+)_(weights|bias)')
_SERVING_KEYS = ('version', 'modality_names', 'feature_dims', 'imputation_method', 'normalize',
                 'num_users', 'num_items', 'warm_items', 'train_pairs')


def read_serving(folder: str) -> Serving:
  path = os.path.join(folder, SERVING_FILE)
  fields = _Fields(path, _load_npz(path, 'the preprocessing that new items need'))
  if fields.arrays.get('version', np.asarray(-1)).tolist() != FORMAT_VERSION:
    raise RunFolderError(f'{path}: unknown format version; run `--mode=eval` on the run to '
                         'write it again')
  names = fields.get('modality_names', 1, 'U')
  num_modalities = len(names)
  if num_modalities < 1:
    raise fields.fail("'modality_names' is empty")
  dims = fields.get('feature_dims', 1, 'iu', (num_modalities,))
  if (dims < 1).any():
    raise fields.fail(f"'feature_dims' {dims.tolist()}: every width must be at least 1")
  method = str(fields.get('imputation_method', 0, 'U'))
  if method not in missing.IMPUTATIONS:
    raise fields.fail(f"'imputation_method' is {method!r}, not one of "
                      f'{", ".join(missing.IMPUTATIONS)}')
  num_users, num_items = fields.count('num_users'), fields.count('num_items')
  fills = tuple(fields.get(f'fill_{m}', 1, 'f', (int(dims[m]),)) for m in range(num_modalities))
  maps = {}
  for key in fields.arrays:
    match = _MAP_KEY.fullmatch(key)
    if match is None:
      if not (key in _SERVING_KEYS or key.startswith(_EXTRA_PREFIX)
              or re.fullmatch(r'fill_\d+', key) and int(key[5:]) < num_modalities):
        raise fields.fail(f'unknown array {key!r}')
      continue
    target, source = int(match.group(1)), int(match.group(2))
    if max(target, source) >= num_modalities or target == source:
      raise fields.fail(f'{key!r} maps modalities {source} -> {target} of {num_modalities}')
    if match.group(3) == 'weights':
      maps[(target, source)] = (
          fields.get(key, 2, 'f', (int(dims[source]), int(dims[target]))),
          fields.get(f'map_{target}_{source}_bias', 1, 'f', (int(dims[target]),)))
  imputation = missing.Imputation(method=method, fills=fills, maps=maps)
  preprocessing = Preprocessing(
      modality_names=tuple(str(n) for n in names), feature_dims=tuple(int(d) for d in dims),
      imputation=imputation, normalize=bool(fields.get('normalize', 0, 'b')))
  extras = {}
  for key in fields.arrays:
    if key.startswith(_EXTRA_PREFIX):
      extras[key[len(_EXTRA_PREFIX):]] = fields.get(key, None, 'biuf')
  return Serving(preprocessing=preprocessing, num_users=num_users, num_items=num_items,
                 warm_items=fields.indices('warm_items', 1, [num_items]),
                 train_pairs=fields.indices('train_pairs', 2, [num_users, num_items]),
                 extras=extras)


def write_vectors(folder: str, users: np.ndarray, items: np.ndarray, epoch: int) -> None:
  """Writes vectors.npz: users (U, d), catalogue items (I, d) of the best epoch."""
  _atomic_savez(os.path.join(folder, VECTORS_FILE),
                {'users': np.asarray(users, np.float32), 'items': np.asarray(items, np.float32),
                 'epoch': np.asarray(epoch)})


def read_vectors(folder: str, num_users: int, num_items: int
                 ) -> tuple[np.ndarray, np.ndarray, int]:
  """(users (U, d), catalogue items (I, d), epoch) of vectors.npz, checked against the
  run's sizes (serving.npz's num_users, num_items)."""
  path = os.path.join(folder, VECTORS_FILE)
  fields = _Fields(path, _load_npz(path, "the best epoch's vectors"))
  unknown = sorted(set(fields.arrays) - {'users', 'items', 'epoch'})
  if unknown:
    raise fields.fail(f'unknown array {unknown[0]!r}')
  users = fields.get('users', 2, 'f')
  width = users.shape[1]
  if users.shape[0] != num_users or width < 1:
    raise fields.fail(f"'users' has shape {users.shape}, but the run has {num_users} users")
  items = fields.get('items', 2, 'f', (num_items, width))
  epoch = int(fields.get('epoch', 0, 'iu'))
  return users, items, epoch


def write_id_maps(folder: str, dataset: Dataset) -> None:
  """Writes `users.tsv` and `items.tsv` (dense index -> raw id) into `folder`, atomically."""
  for name, raw_ids in zip(ID_MAP_FILES, (dataset.user_ids, dataset.item_ids)):
    runfolder.write_text(os.path.join(folder, name), ids.id_map_text(raw_ids))


def read_id_map(folder: str, name: str) -> np.ndarray:
  """(n,) str raw ids of a run's users.tsv or items.tsv, as write_id_maps writes them."""
  path = os.path.join(folder, name)
  if not os.path.exists(path):
    raise RunFolderError(f'{path} is missing (the id map of the run): train the run again')
  runfolder.check_regular_file(path)
  with open(path, 'rb') as f:
    raw = f.read()
  try:
    lines = files.text_lines(raw.decode('utf-8'))
  except UnicodeDecodeError as e:
    raise RunFolderError(f'{path}: not UTF-8 text ({e.reason}: byte {raw[e.start]:#04x} at '
                         f'offset {e.start}); the id map is damaged: train the run again'
                         ) from None
  if not lines or lines[0] != 'index\tid':
    raise RunFolderError(f'{path}: line 1 is not the header `index<TAB>id`; the id map is '
                         'damaged: train the run again')
  raw_ids = []
  for number, line in enumerate(lines[1:], start=2):
    index, _, raw_id = line.partition('\t')
    if index != str(number - 2) or not raw_id:
      raise RunFolderError(f'{path}: line {number} is not `{number - 2}<TAB>id`; the id map is '
                           'damaged: train the run again')
    raw_ids.append(raw_id)
  return np.asarray(raw_ids, str)


def write_run_files(folder: str, dataset, extras: Mapping[str, np.ndarray], config) -> None:
  """The id maps and serving.npz: what a run writes before its first epoch."""
  write_id_maps(folder, dataset)
  write_serving(folder, dataset, extras, bool(config.data.normalize))
