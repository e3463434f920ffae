"""Raw user and item ids: parsing them and mapping them to dense indices.

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

A run saves both maps beside its results (`id_map_text`; written and read
back by milk_jax/serving.py), so its numbers can be traced back to the raw ids.

Id files are split into lines at '\n' only (a trailing '\r' dropped,
`files.text_lines`): a form feed or U+2028 inside an id, which
`str.splitlines` would break at, stays part of the id.
"""

from pathlib import Path

import numpy as np

from milk_jax.data import files
from milk_jax.data.errors import DataError

ITEM_IDS_FILE = 'item_ids.txt'  # Default of config.data.item_ids_file.


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


def read_item_ids(path: Path, text: str, num_rows: int, features_path: Path) -> np.ndarray:
  """(num_rows,) str raw item ids from the text of an item-id file, line i = feature row i."""
  lines = [line.strip() for line in files.text_lines(text)]
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
