"""The on-disk layouts a dataset folder may have, read into one `RawData`.

Every layout stores one feature matrix per modality as `<name>_feat.npy`
(row = item id; see milk_jax/data/features.py). The interactions differ,
one module per layout:

- `interactions`: `<interactions_file>`, tab-separated, a header line, then
  `user item [timestamp]` (ml100k-mm, tiktok-mm); extra columns may instead
  be named `timestamp` and `rating` in the header.
- `mmrec`: MMRec's `<name>.inter`, tab-separated with a header naming
  `userID` and `itemID` (and `rating`, `timestamp`) among its columns.
- `milk`: the authors' `train.txt`, `val.txt`, `test.txt` (one line per user,
  `user item item ...`) and `cold_item_index.npy`; the split is given.

This module holds what they share: the `RawData` they return and the checks
of (user, item) pairs. Readers check everything they read and raise
`DataError` before returning, so nothing downstream ever sees a half-valid
dataset. Dense user ids must be 0-based and fit int32, because they index a
table with one row per id up to the largest. `milk_jax.data.dataset.read_layout`
picks the reader of config.data.format.
"""

import dataclasses
from pathlib import Path

import numpy as np

from milk_jax.data.errors import DataError
from milk_jax.data.split import ItemSplit

MAX_ID = 2**31 - 1  # Ids are stored as int32 downstream.
# Unused user rows tolerated before ids count as sparse: gaps from filtering are
# fine, but an id of 1e12 would make a table of 1e12 rows and fail far later.
MAX_UNUSED_USER_ROWS = 1000
INT64_RANGE = 2.0**63  # Ids at or beyond it cannot even be cast to int64.
# Appended to id errors of the two layouts that can read raw ids instead.
RAW_IDS_HINT = ', or pass --config.data.ids=raw to map any ids to dense indices'


@dataclasses.dataclass(frozen=True)
class RawData:
  """What a layout holds before the split and missing-modality steps."""
  features: tuple[np.ndarray, ...]  # M arrays (num_items, dim_m) float32, finite.
  pairs: np.ndarray  # (n, 2) int64 unique (user, item), all of the layout's interactions.
  num_users: int  # Max user id + 1 (dense ids); distinct users of the kept rows (raw ids).
  item_split: ItemSplit | None = None  # Given by the layout (milk); None = draw one.
  user_ids: np.ndarray | None = None  # (num_users,) str raw id per dense user; None = dense.
  item_ids: np.ndarray | None = None  # (num_items,) str raw id per feature row; None = dense.
  first_time: np.ndarray | None = None  # (num_items,) float64 first interaction time; NaN = none.
  # (num_items, M) bool, True = present, as the layout declares it: feature rows that mark a
  # missing modality (data.missing_rows) and the authors' missing files; None = all present.
  present: np.ndarray | None = None
  # The authors' missing files `present` was derived from; non-empty = no simulation on top.
  missing_files: tuple[Path, ...] = ()


def check_pairs(pairs: np.ndarray, path: Path, num_items: int, features_path: Path) -> None:
  """Ids must be non-negative and every item must have a feature row."""
  negative = np.flatnonzero((pairs < 0).any(axis=1))
  if negative.size:
    raise DataError(f'{path}: {negative.size} rows with a negative id '
                    f'(first: {pairs[negative[0]].tolist()})')
  max_item = int(pairs[:, 1].max()) if pairs.size else -1
  if max_item >= num_items:
    raise DataError(f'{path}: item id {max_item} >= {num_items}, the number of feature rows '
                    f'in {features_path}')


def check_user_ids(users: np.ndarray, path: Path, raw_ids_hint: bool = False) -> None:
  """Non-negative int user ids index a table up to the largest: dense, 0-based, int32.

  `raw_ids_hint`: the layout can read raw ids instead; the errors say how.
  """
  if not users.size:
    return
  hint = RAW_IDS_HINT if raw_ids_hint else ''
  max_user = int(users.max())
  distinct = int(np.unique(users).size)
  unused = max_user + 1 - distinct
  if unused > MAX_UNUSED_USER_ROWS and 2 * unused > max_user + 1:
    raise DataError(f'{path}: user ids are sparse: max id {max_user} but {distinct} distinct '
                    f'ids, leaving {unused} of {max_user + 1} user rows unused; ids must be '
                    f'dense and 0-based{hint}')
  if max_user > MAX_ID:
    raise DataError(f'{path}: user id {max_user} does not fit int32 (max {MAX_ID}); ids must '
                    f'be dense and 0-based{hint}')


def unique_pairs(pairs: np.ndarray) -> np.ndarray:
  """Collapses repeated (user, item) rows: implicit feedback counts once."""
  return np.unique(pairs.reshape(-1, 2), axis=0)
