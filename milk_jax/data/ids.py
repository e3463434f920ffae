"""Raw user and item ids: reading them, mapping them to dense indices, writing the maps.

Training indexes tables by dense 0-based ids. With config.data.ids='raw' the
interaction files may name users and items by any strings; they become dense
indices here:

- users: the distinct raw ids of the kept rows, sorted as strings (code-point
  order, so '10' < '9'); index = position. The order does not depend on the
  order of the rows.
- items: their dense index is their feature row. `item_ids.txt`
  (config.data.item_ids_file) lists one raw item id per line, line i naming
  the item of feature row i. Without it, item ids must be the integers
  0..rows-1 written plainly ('7', not '07' or '7.0').

A run writes both maps (`users.tsv`, `items.tsv`) beside its results, so its
numbers can be traced back to the raw ids.

Id files are split into lines at '\n' only (a trailing '\r' dropped): a form
feed or U+2028 inside an id, which `str.splitlines` would break at, stays
part of the id.
"""

import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from milk_jax import runfolder
from milk_jax.data.errors import DataError
from milk_jax.errors import RunFolderError

if TYPE_CHECKING:  # dataset.py imports this module through readers.py.
  from milk_jax.data.dataset import Dataset

ITEM_IDS_FILE = 'item_ids.txt'  # Default of config.data.item_ids_file.
ID_MAP_FILES = ('users.tsv', 'items.tsv')


def dense_ids(count: int) -> np.ndarray:
  """(count,) str: the decimal strings '0'..str(count - 1), the raw ids of dense data."""
  return np.arange(count).astype(str)


def users_to_dense(raw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Dense indices for raw user ids.

  Args:
    raw: (n,) str raw user id per row.
  Returns:
    user_ids: (U,) str sorted distinct raw ids; index = dense id.
    users: (n,) int64 dense id per row.
  """
  user_ids, users = np.unique(raw, return_inverse=True)
  return user_ids, users.reshape(-1).astype(np.int64)


def text_lines(text: str) -> list[str]:
  """The lines of a text file's content: split at '\n' only, a trailing '\r' dropped."""
  lines = text.split('\n')
  if lines[-1] == '':  # The newline that ends the last line (or an empty file).
    lines.pop()
  return [line[:-1] if line.endswith('\r') else line for line in lines]


def read_item_ids(path: Path, text: str, num_rows: int, features_path: Path) -> np.ndarray:
  """(num_rows,) str raw item ids from the text of an item-id file, line i = feature row i."""
  lines = [line.strip() for line in text_lines(text)]
  if len(lines) != num_rows:
    raise DataError(f'{path}: {len(lines)} item ids but {num_rows} feature rows in '
                    f'{features_path}; line i must name the item of feature row i')
  for number, line in enumerate(lines, start=1):
    if not line or '\t' in line:
      raise DataError(f'{path}: line {number}: item id {line!r} is empty or holds a tab')
  item_ids = np.asarray(lines, dtype=str)
  distinct, first, counts = np.unique(item_ids, return_index=True, return_counts=True)
  if distinct.size != item_ids.size:
    repeated = np.flatnonzero(counts > 1)
    example = repeated[np.argmin(first[repeated])]  # The one that repeats earliest in the file.
    lines_of = np.flatnonzero(item_ids == distinct[example]) + 1
    raise DataError(f'{path}: {repeated.size} item ids appear more than once (first: '
                    f'{str(distinct[example])!r} on lines {lines_of[0]} and {lines_of[1]}); each '
                    f'feature row needs its own id')
  return item_ids


def items_to_dense(raw: np.ndarray, item_ids: np.ndarray | None, num_rows: int, path: Path,
                   item_ids_path: Path) -> np.ndarray:
  """(n,) int64 feature row of each row's raw item id.

  Args:
    raw: (n,) str raw item id per row of the interactions file `path`.
    item_ids: (num_rows,) str raw id of each feature row, or None when the
      folder has no item-id file (then ids must be plain integers < num_rows).
    num_rows: feature rows.
    path, item_ids_path: named in errors.
  """
  if item_ids is None:
    rows = {str(row): row for row in range(num_rows)}  # Plain decimal ids only.
    problem = f'is not a feature row 0..{num_rows - 1}'
    advice = (f'; with config.data.ids=raw add {item_ids_path}, one raw item id per line, '
              f'line i = feature row i')
  else:
    rows = {raw_id: row for row, raw_id in enumerate(item_ids.tolist())}
    problem, advice = f'is missing from {item_ids_path}', ''
  items = np.fromiter((rows.get(v, -1) for v in raw.tolist()), np.int64, raw.size)
  unknown = np.flatnonzero(items < 0)
  if unknown.size:
    raise DataError(f'{path}: {unknown.size} rows have an item id that {problem} (first: '
                    f'{str(raw[unknown[0]])!r} on data row {unknown[0] + 1}){advice}')
  return items


def id_map_text(ids: np.ndarray) -> str:
  """`index<TAB>id` lines under a header, one per dense index."""
  return ''.join(['index\tid\n'] + [f'{index}\t{raw}\n' for index, raw in enumerate(ids)])


def write_id_maps(folder: str, dataset: 'Dataset') -> None:
  """Writes `users.tsv` and `items.tsv` (dense index -> raw id) into `folder`, atomically."""
  for name, ids in zip(ID_MAP_FILES, (dataset.user_ids, dataset.item_ids)):
    runfolder.write_text(os.path.join(folder, name), id_map_text(ids))


def read_id_map(folder: str, name: str) -> np.ndarray:
  """(n,) str raw ids of a run's users.tsv or items.tsv, as write_id_maps writes them."""
  path = os.path.join(folder, name)
  if not os.path.exists(path):
    raise RunFolderError(f'{path} is missing (the id map of the run): train the run again')
  runfolder.check_regular_file(path)
  with open(path, 'rb') as f:
    raw = f.read()
  try:
    lines = text_lines(raw.decode('utf-8'))
  except UnicodeDecodeError as e:
    raise RunFolderError(f'{path}: not UTF-8 text ({e.reason}: byte {raw[e.start]:#04x} at '
                         f'offset {e.start}); the id map is damaged: train the run again'
                         ) from None
  if not lines or lines[0] != 'index\tid':
    raise RunFolderError(f'{path}: line 1 is not the header `index<TAB>id`; the id map is '
                         'damaged: train the run again')
  ids = []
  for number, line in enumerate(lines[1:], start=2):
    index, _, raw_id = line.partition('\t')
    if index != str(number - 2) or not raw_id:
      raise RunFolderError(f'{path}: line {number} is not `{number - 2}<TAB>id`; the id map is '
                           'damaged: train the run again')
    ids.append(raw_id)
  return np.asarray(ids, str)
