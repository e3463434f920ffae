"""Feature files, the rows that mark a missing modality, and declared availability.

Every layout stores one feature matrix per modality as `<name>_feat.npy`
(row = item id). A row may mark its modality missing (all NaN, or all zero;
config.data.missing_rows, see `missing_feature_rows`), and any folder may
declare which item has what: `availability.npy`, an (items, modalities)
0/1 mask (`read_availability_file`), or a tab-separated table keyed by raw
item id (`read_availability_table`). Every item must keep at least one
modality (`refuse_items_without_modality`).

The same checks serve the training catalogue (the layouts) and items that
arrive after training (milk_jax/new_items.py), chunk by chunk.
"""

import functools
from pathlib import Path
from typing import Sequence

import numpy as np

from milk_jax.data import files
from milk_jax.data.errors import DataError

_FLOAT32_MAX = float(np.finfo(np.float32).max)


def feature_path(folder: Path, name: str) -> Path:
  return folder / f'{name}_feat.npy'


def missing_feature_rows(array: np.ndarray, missing_rows: str) -> np.ndarray:
  """(items,) bool: the rows that `missing_rows` reads as "modality missing".

  'error' reads none; 'nan' rows that are entirely NaN; 'nan_or_zero' also
  rows that are entirely zero. A row only partly NaN is never a marker.
  """
  marked = np.zeros(array.shape[0], bool)
  if missing_rows != 'error' and np.issubdtype(array.dtype, np.floating):
    marked |= np.isnan(array).all(axis=1)
  if missing_rows == 'nan_or_zero':
    marked |= (array == 0).all(axis=1)
  return marked


def open_feature_file(path: Path, mmap: bool = False) -> np.ndarray:
  """A feature file's 2-D numeric array (memory-mapped when `mmap`), its values unchecked."""
  if mmap:
    try:
      array = np.load(path, mmap_mode='r', allow_pickle=False)
    except Exception as e:  # pylint: disable=broad-except
      raise DataError(f'{path}: cannot be read as a numeric .npy array '
                      f'({type(e).__name__}: {e})') from e
  else:
    array = files.load_npy(path, 'a numeric')
  if not isinstance(array, np.ndarray):
    raise DataError(f'{path}: expected a single array, found {type(array).__name__}')
  if array.ndim != 2:
    raise DataError(f'{path}: expected a 2-D (items, dim) array, found shape {array.shape}')
  if array.shape[1] == 0:
    raise DataError(f'{path}: has no feature columns (shape {array.shape})')
  if not (np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)):
    raise DataError(f'{path}: expected numeric features, found dtype {array.dtype}')
  return array


def check_feature_rows(array: np.ndarray, path: Path, missing_rows: str = 'error',
                       first_row: int = 0) -> tuple[np.ndarray, np.ndarray]:
  """Rows of a feature file as float32, and which of them hold the modality.

  Args:
    array: (rows, dim) numeric, rows first_row.. of `path` (named in errors).
    missing_rows: 'error' | 'nan' | 'nan_or_zero', see `missing_feature_rows`.
  Returns:
    features: (rows, dim) float32, finite, no all-zero row except the
      missing ones, which are all zero so that no marker is ever read as data.
    present: (rows,) bool, False on the rows marking a missing modality.
  """
  array = np.asarray(array)
  refuse = functools.partial(files.refuse_rows, path=path, first_row=first_row)
  present = ~missing_feature_rows(array, missing_rows)
  marker_hint = ('' if missing_rows == 'error' else
                 f'; with config.data.missing_rows={missing_rows!r} only a row that is '
                 f'entirely NaN marks a missing modality')
  refuse(present & ~np.isfinite(array).all(axis=1), problem='contains NaN/inf', why=marker_hint)
  if not present.all():
    array = np.where(present[:, None], array, 0)
  with np.errstate(over='ignore', under='ignore'):  # Both are reported below, per row.
    features = array.astype(np.float32, copy=False)
  overflow = ~np.isfinite(features).all(axis=1)
  if overflow.any():
    largest = float(np.abs(array[overflow]).max())
    refuse(overflow, problem=f'values overflow float32 (largest |value| {largest:.3g} > '
           f'{_FLOAT32_MAX:.3g})')
  zero = ~features.any(axis=1) & present
  refuse(zero & array.any(axis=1), problem='values underflow float32 (nonzero rows become '
         'all-zero)')
  # Zero stands for "missing" after imputation and has no direction to normalise.
  refuse(zero, problem='only zeros',
         why='; an all-zero row is not a valid feature vector (config.data.missing_rows='
         "'nan_or_zero' reads it as a missing modality)")
  return features, present


def read_feature_file(path: Path, missing_rows: str = 'error') -> tuple[np.ndarray, np.ndarray]:
  """One modality's features and which rows hold them; see `check_feature_rows`."""
  return check_feature_rows(open_feature_file(path), path, missing_rows)


def read_features(folder: Path, modalities: Sequence[str], missing_rows: str = 'error'
                  ) -> tuple[tuple[np.ndarray, ...], np.ndarray]:
  """All modalities' features; they must agree on the number of items (rows).

  Returns:
    M arrays (num_items, dim_m) float32, and (num_items, M) bool, False where
    the row marks the modality missing (see `read_feature_file`).
  """
  read = [read_feature_file(feature_path(folder, name), missing_rows) for name in modalities]
  rows = {name: f.shape[0] for name, (f, _) in zip(modalities, read)}
  if len(set(rows.values())) > 1:
    listed = ', '.join(f'{feature_path(folder, n)}: {r}' for n, r in rows.items())
    raise DataError(f'feature files disagree on the number of items (rows): {listed}')
  return tuple(f for f, _ in read), np.stack([p for _, p in read], axis=1)


def read_availability_file(path: Path, num_items: int, modalities: Sequence[str]) -> np.ndarray:
  """A declared availability mask: (num_items, M) bool or 0/1 integers, True = present.

  Columns follow `modalities` (config.data.modalities), rows the item ids.
  """
  array = files.load_npy(path, 'a boolean')
  if not isinstance(array, np.ndarray) or not (
      array.dtype == bool or np.issubdtype(array.dtype, np.integer)):
    raise DataError(f'{path}: expected a bool or 0/1 integer array, found '
                    f'{getattr(array, "dtype", type(array).__name__)}')
  expected = (num_items, len(modalities))
  if array.shape != expected:
    raise DataError(f'{path}: expected shape (items, modalities) = {expected} (columns in the '
                    f'order of config.data.modalities: {", ".join(modalities)}), found '
                    f'{array.shape}')
  files.refuse_rows(~np.isin(array, (0, 1)).all(axis=1), path, 'values other than 0/1',
                    ' (True/1 = the item has the modality)')
  return array.astype(bool)


def read_availability_table(path: Path, item_ids: np.ndarray,
                            modalities: Sequence[str]) -> np.ndarray:
  """A declared mask keyed by item id: (num_items, M) bool, True = present.

  The file is tab-separated with a header `item <modality> ...` naming every
  modality of config.data.modalities (any order), then one row per item
  that lacks something: its raw id (as in item_ids.txt, or the feature row
  with dense ids) and 0/1 per modality. Items it does not list have every
  modality. Lines end at '\n' only (`files.text_lines`), so an id may hold
  any other character but a tab.

  Args:
    item_ids: (num_items,) str raw id of each feature row.
  """
  lines = [line for line in files.text_lines(files.read_text(path)) if line.strip()]
  header = lines[0].split('\t') if lines else []
  if not header or header[0] != 'item' or sorted(header[1:]) != sorted(modalities):
    raise DataError(f'{path}: expected a header "item" then the modalities '
                    f'{", ".join(modalities)} (tab-separated), found {header!r}')
  column = {name: header.index(name) for name in modalities}
  row_of = {raw: row for row, raw in enumerate(item_ids.tolist())}
  available = np.ones((len(item_ids), len(modalities)), bool)
  unknown, seen = [], set()
  for number, line in enumerate(lines[1:], start=2):
    cells = [cell.strip() for cell in line.split('\t')]
    if len(cells) != len(header) or any(cells[column[m]] not in ('0', '1') for m in modalities):
      raise DataError(f'{path}: line {number}: expected an item id and 0/1 for each of '
                      f'{", ".join(modalities)}, found {cells!r}')
    if cells[0] in seen:
      raise DataError(f'{path}: line {number}: item {cells[0]!r} is listed twice')
    seen.add(cells[0])
    if cells[0] not in row_of:
      unknown.append(cells[0])
      continue
    available[row_of[cells[0]]] = [cells[column[m]] == '1' for m in modalities]
  if unknown:
    raise DataError(f'{path}: {len(unknown)} item ids are not items of the dataset (first: '
                    f'{unknown[0]!r}); ids must be those of item_ids.txt, or feature rows')
  return available


def refuse_items_without_modality(available: np.ndarray, sources: Sequence[object]) -> None:
  """DataError naming `sources` when some item has no modality left in `available` (I, M)."""
  empty = np.flatnonzero(~available.any(axis=1))
  if empty.size:
    first = ', '.join(str(i) for i in empty[:5])
    named = ' + '.join(str(s) for s in sources) or 'the declared availability'
    raise DataError(f'{named}: {empty.size} items have no modality at all (first: {first}); '
                    f'every item needs at least one present modality')
