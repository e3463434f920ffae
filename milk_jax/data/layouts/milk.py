"""The authors' layout (`milk`), whose split is given.

`train.txt`, `val.txt`, `test.txt` (one line per user, `user item item ...`),
`cold_item_index.npy` (the new items) and the feature files. Their
`<name>_feat_missing_test.npy` / `_missing_all.npy` (features with the rows
of missing modalities replaced) say which item misses what under FTMT /
MTMT, see `authors_availability`.
"""

from pathlib import Path
from typing import Sequence

import numpy as np

from milk_jax.data import files
from milk_jax.data import layouts
from milk_jax.data.errors import DataError
from milk_jax.data.features import feature_path
from milk_jax.data.features import read_features
from milk_jax.data.split import ItemSplit

MILK_FILES = ('train.txt', 'val.txt', 'test.txt')
COLD_INDEX_FILE = 'cold_item_index.npy'
# The authors' record of which items miss some modality in their missing files.
COLD_MISSING_INDEX_FILE = 'cold_missing_item_index.npy'
WARM_MISSING_INDEX_FILE = 'warm_missing_item_index.npy'
# The authors' pre-imputed features per setting: `<modality>_feat_<suffix>.npy`.
AUTHORS_MISSING_SUFFIX = {'ftmt': 'missing_test', 'mtmt': 'missing_all'}


def read_user_lines(path: Path) -> tuple[np.ndarray, np.ndarray]:
  """A `user item item ...` file.

  Returns:
    pairs: (n, 2) int64 (user, item), one per item token.
    users: (lines,) int64, the leading id of every non-empty line, so that a
      user listed without items still counts towards the number of users.
  """
  users, pairs = [], []
  for line_number, line in enumerate(files.read_text(path).splitlines(), start=1):
    tokens = line.split()
    if not tokens:
      continue
    try:
      ids = [int(t) for t in tokens]
    except ValueError as e:
      raise DataError(f'{path}: line {line_number}: non-integer id ({e})') from e
    # numpy cannot hold it; the id checks come later.
    if max(map(abs, ids)) >= layouts.INT64_RANGE:
      raise DataError(f'{path}: line {line_number}: id {max(ids, key=abs)} is out of range; '
                      f'ids must be dense, 0-based and fit int32')
    users.append(ids[0])
    pairs.extend((ids[0], item) for item in ids[1:])
  return np.asarray(pairs, np.int64).reshape(-1, 2), np.asarray(users, np.int64)


def _read_item_index(path: Path, num_items: int) -> np.ndarray:
  """Sorted unique int64 item ids from an integer .npy file, each in [0, num_items)."""
  ids = files.load_npy(path, 'an integer')
  if not isinstance(ids, np.ndarray) or not np.issubdtype(ids.dtype, np.integer):
    raise DataError(f'{path}: expected integer item ids, found '
                    f'{getattr(ids, "dtype", type(ids).__name__)}')
  ids = ids.reshape(-1).astype(np.int64)
  out_of_range = ids[(ids < 0) | (ids >= num_items)]
  if out_of_range.size:
    raise DataError(f'{path}: {out_of_range.size} item ids outside [0, {num_items}) '
                    f'(first: {out_of_range[0]})')
  return np.unique(ids)


def authors_missing_path(folder: Path, name: str, setting: str) -> Path:
  """The authors' pre-imputed features of modality `name` under `setting` (ftmt or mtmt)."""
  return folder / f'{name}_feat_{AUTHORS_MISSING_SUFFIX[setting]}.npy'


def find_authors_missing_files(folder: Path, modalities: Sequence[str],
                               setting: str) -> tuple[Path, ...]:
  """The authors' missing files of `setting` for every modality, or () when there are none.

  Some but not all of them present is an error: which modality an item
  misses could not be read for the others.
  """
  paths = tuple(authors_missing_path(folder, name, setting) for name in modalities)
  absent = [str(p) for p in paths if not p.is_file()]
  if absent and len(absent) < len(paths):
    raise DataError(f'{", ".join(absent)}: missing, while the other modalities have their '
                    f'_{AUTHORS_MISSING_SUFFIX[setting]} files (set '
                    f'config.data.authors_missing_files=False to simulate instead)')
  return () if absent else paths


def changed_rows(path: Path, clean: np.ndarray, clean_path: Path) -> np.ndarray:
  """(items,) bool: the rows of the authors' file at `path` that differ from `clean`.

  Both are compared as float32 and exactly: the authors' files copy the
  clean row of every item that keeps the modality and replace the others by
  an imputed row, so any change, however small, marks a missing modality
  (an imputed row equal to the item's own clean row would pass unseen).

  Args:
    clean: (items, dim) float32, the clean features of the same modality.
  """
  array = files.load_npy(path, 'a numeric')
  if not isinstance(array, np.ndarray) or not (np.issubdtype(array.dtype, np.integer)
                                               or np.issubdtype(array.dtype, np.floating)):
    raise DataError(f'{path}: expected a numeric array, found '
                    f'{getattr(array, "dtype", type(array).__name__)}')
  if array.shape != clean.shape:
    raise DataError(f'{path}: shape {array.shape} differs from {clean_path}: {clean.shape}')
  with np.errstate(over='ignore', under='ignore', invalid='ignore'):
    return ~(array.astype(np.float32) == clean).all(axis=1)


def _check_missing_index(path: Path, items: np.ndarray, missing_items: np.ndarray,
                         described_by: Sequence[Path], num_items: int) -> None:
  """An index file, when present, must list exactly the `items` that miss some modality.

  Args:
    items: the item ids the index speaks of (cold or warm).
    missing_items: (num_items,) bool, True = some modality missing per `described_by`.
  """
  if not path.is_file():
    return
  listed = _read_item_index(path, num_items)
  expected = items[missing_items[items]]
  extra, omitted = np.setdiff1d(listed, expected), np.setdiff1d(expected, listed)
  if extra.size or omitted.size:
    files = ', '.join(p.name for p in described_by)
    parts = []
    if extra.size:
      parts.append(f'lists {extra.size} items the files do not mark (first: {extra[0]})')
    if omitted.size:
      parts.append(f'omits {omitted.size} items they mark (first: {omitted[0]})')
    raise DataError(f'{path}: disagrees with {files}: {"; ".join(parts)}')


def authors_availability(folder: Path, modalities: Sequence[str],
                         features: Sequence[np.ndarray], present: np.ndarray,
                         item_split: ItemSplit, setting: str,
                         paths: Sequence[Path]) -> np.ndarray:
  """The availability the authors' missing files of `setting` encode.

  A modality is missing for an item when the item's row in
  `<modality>_feat_missing_test.npy` (ftmt) or `_missing_all.npy` (mtmt)
  differs from its clean row (see `changed_rows`); only rows `present`
  before are compared. Under ftmt no warm row may change. The index files
  `cold_missing_item_index.npy` (and, under mtmt, `warm_missing_item_index.npy`,
  which describes `_missing_all`), when present, must list exactly the cold
  (warm) items that miss some modality.

  Args:
    features: M clean arrays (num_items, dim_m) float32.
    present: (num_items, M) bool, the availability declared so far.
    paths: the M authors' files, from `find_authors_missing_files`.
  Returns:
    (num_items, M) bool, `present` minus the modalities the files mark missing.
  """
  missing = np.stack([changed_rows(path, x, feature_path(folder, name)) & present[:, m]
                      for m, (name, x, path) in enumerate(zip(modalities, features, paths))], 1)
  if setting == 'ftmt':
    for m, path in enumerate(paths):
      changed = item_split.warm_items[missing[item_split.warm_items, m]]
      if changed.size:
        raise DataError(f'{path}: changes the rows of {changed.size} warm items (first: '
                        f'{changed[0]}); a _missing_test file may change new (cold) items only')
  num_items = len(present)
  any_missing = missing.any(axis=1)
  _check_missing_index(folder / COLD_MISSING_INDEX_FILE, item_split.new_items, any_missing,
                       paths, num_items)
  if setting == 'mtmt':
    _check_missing_index(folder / WARM_MISSING_INDEX_FILE, item_split.warm_items, any_missing,
                         paths, num_items)
  return present & ~missing


def read_milk(folder: Path, modalities: Sequence[str], missing_rows: str = 'error',
              authors_setting: str | None = None) -> layouts.RawData:
  """The authors' layout, whose split is given.

  warm items = items not in `cold_item_index.npy`; validation items = the
  items of `val.txt`; test items = the items of `test.txt` PLUS any cold item
  in neither file, so that every cold item stays a ranking candidate, as in
  the authors' evaluation over all new items.

  Args:
    authors_setting: 'ftmt' or 'mtmt' to read which item misses what from the
      authors' `<modality>_feat_missing_test.npy` / `_missing_all.npy` files
      when they are there (see `authors_availability`); None = ignore them.
  """
  paths = {name: folder / name for name in MILK_FILES}
  cold_path = folder / COLD_INDEX_FILE
  files.require_files(list(paths.values()) + [cold_path]
                      + [feature_path(folder, m) for m in modalities])
  features, present = read_features(folder, modalities, missing_rows)
  num_items = features[0].shape[0]
  cold = _read_item_index(cold_path, num_items)
  parts, users_by_path = {}, {}
  for name, path in paths.items():
    pairs, users = read_user_lines(path)
    if users.size and users.min() < 0:
      raise DataError(f'{path}: negative user id {users.min()}')
    layouts.check_pairs(pairs, path, num_items, feature_path(folder, modalities[0]))
    users_by_path[path] = users
    parts[name] = layouts.unique_pairs(pairs)
  all_users = np.concatenate(list(users_by_path.values()))
  max_user = int(all_users.max(initial=-1))
  # Named after the file holding the largest id: that is where a stray id sits.
  layouts.check_user_ids(all_users,
                         max(users_by_path, key=lambda p: users_by_path[p].max(initial=-1)))
  train, val, test = (parts[name] for name in MILK_FILES)
  leaked = np.intersect1d(train[:, 1], cold)
  if leaked.size:
    raise DataError(f'{paths["train.txt"]}: {leaked.size} training items are listed in '
                    f'{cold_path} as new (first: {leaked[0]})')
  val_items, test_items = np.unique(val[:, 1]), np.unique(test[:, 1])
  for name, items in (('val.txt', val_items), ('test.txt', test_items)):
    not_cold = np.setdiff1d(items, cold)
    if not_cold.size:
      raise DataError(f'{paths[name]}: {not_cold.size} items are not in {cold_path} '
                      f'(first: {not_cold[0]})')
  shared = np.intersect1d(val_items, test_items)
  if shared.size:
    raise DataError(f'{paths["val.txt"]} and {paths["test.txt"]} share {shared.size} items '
                    f'(first: {shared[0]}); new items must belong to one split')
  test_items = np.setdiff1d(cold, val_items)
  item_split = ItemSplit(np.setdiff1d(np.arange(num_items), cold).astype(np.int32),
                         val_items.astype(np.int32), test_items.astype(np.int32))
  pairs = np.concatenate([train, val, test])
  missing_files = ()
  if authors_setting is not None:
    missing_files = find_authors_missing_files(folder, modalities, authors_setting)
  if missing_files:
    present = authors_availability(folder, modalities, features, present, item_split,
                                   authors_setting, missing_files)
  return layouts.RawData(features, pairs, max_user + 1, item_split, present=present,
                         missing_files=missing_files)
