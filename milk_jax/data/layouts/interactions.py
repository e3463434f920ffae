"""The `interactions` layout, and the interaction-table reader it shares with `mmrec`.

`<interactions_file>` is tab-separated: a header line, then
`user item [timestamp]` (ml100k-mm, tiktok-mm); extra columns may instead
be named `timestamp` and `rating` in the header. Ids are dense 0-based
integers by default (TableOptions.ids='dense'), or any strings with
ids='raw' (see milk_jax/data/ids.py); `min_rating` keeps only well-rated
rows as positives, and `first_times` reads each item's first interaction
time for the time split.
"""

import dataclasses
from pathlib import Path
from typing import Callable, NamedTuple, Sequence

import numpy as np

from milk_jax.data import files
from milk_jax.data import ids
from milk_jax.data import layouts
from milk_jax.data.errors import DataError
from milk_jax.data.features import feature_path
from milk_jax.data.features import read_features
from milk_jax.data.ids import ITEM_IDS_FILE


@dataclasses.dataclass(frozen=True)
class TableOptions:
  """How to read an interaction table (`interactions`, `mmrec`); mirrors config.data."""
  ids: str = 'dense'  # dense: 0-based integers, feature row = item id | raw: any strings.
  item_ids_file: str = ITEM_IDS_FILE  # raw: line i = raw id of feature row i.
  min_rating: float | None = None  # Only rows rated at least this are positives; None = all.
  first_times: bool = False  # Read timestamps: each item's first interaction time.


class Columns(NamedTuple):
  """Positions of the columns a table's header names; None = the table lacks it."""
  user: int
  item: int
  rating: int | None
  timestamp: int | None


def _as_ids(values: np.ndarray, path: Path, what: str) -> np.ndarray:
  """Float-parsed id column -> int64, refusing fractions, NaN and ids beyond int64."""
  bad = np.flatnonzero(values != np.round(values))
  if bad.size:
    raise DataError(f'{path}: non-integer {what} id {values[bad[0]]:g} on data row {bad[0] + 1}')
  huge = np.flatnonzero(np.abs(values) >= layouts.INT64_RANGE)
  if huge.size:
    raise DataError(f'{path}: {what} id {values[huge[0]]:g} on data row {huge[0] + 1} is out of '
                    f'range; ids must be dense, 0-based and fit int32{layouts.RAW_IDS_HINT}')
  return values.astype(np.int64)


def _numeric_column(body: np.ndarray, column: int, path: Path, what: str) -> np.ndarray:
  """(rows,) float64 finite values of one column; text tables (raw ids) are parsed here."""
  if body.dtype.kind == 'U':
    values = np.empty(body.shape[0])
    for row, cell in enumerate(body[:, column].tolist()):
      try:
        values[row] = float(cell)
      except ValueError:
        raise DataError(f'{path}: {what} {cell!r} on data row {row + 1} is not a number') from None
  else:
    values = body[:, column]
  bad = np.flatnonzero(~np.isfinite(values))
  if bad.size:
    raise DataError(f'{path}: {what} {values[bad[0]]} on data row {bad[0] + 1} is not finite '
                    f'({bad.size} such rows)')
  return values


def interaction_columns(header: list[str], path: Path) -> Columns:
  """`interactions` layout: user and item by position, then `timestamp` and `rating` by name.

  A lone unnamed 3rd column is the timestamp, as in ml100k-mm.
  """
  extra = header[2:]
  named = {name: 2 + extra.index(name) for name in ('timestamp', 'rating') if name in extra}
  if len(extra) == 1 and not named:
    named['timestamp'] = 2
  if len(header) < 2 or len(named) != len(extra):
    raise DataError(f'{path}: expected columns user, item[, timestamp][, rating] (a 3rd and '
                    f'4th column named timestamp and rating; an unnamed 3rd column is the '
                    f'timestamp), found {len(header)}: {header!r}')
  return Columns(0, 1, named.get('rating'), named.get('timestamp'))


def _check_optional_columns(columns: Columns, header: list[str], path: Path,
                            options: TableOptions) -> None:
  """The rating and timestamp columns must exist when the options use them."""
  if options.min_rating is not None and columns.rating is None:
    raise DataError(f'{path}: config.data.min_rating={options.min_rating} needs a column named '
                    f"'rating', found columns {header!r}")
  if options.first_times and columns.timestamp is None:
    raise DataError(f'{path}: config.data.split=time needs timestamps, found columns {header!r} '
                    f"without one; add a 'timestamp' column or use config.data.split=random")


def positive_rows(ratings: np.ndarray, min_rating: float, path: Path) -> np.ndarray:
  """(rows,) bool: rows rated at least `min_rating`; DataError when none is."""
  keep = ratings >= min_rating
  if not keep.any():
    raise DataError(f'{path}: no row has a rating >= config.data.min_rating={min_rating} '
                    f'(ratings lie in [{ratings.min():g}, {ratings.max():g}])')
  return keep


def first_interaction_times(items: np.ndarray, times: np.ndarray, num_items: int) -> np.ndarray:
  """(num_items,) float64 earliest of `times` (rows,) per item of `items` (rows,); NaN = no row."""
  first = np.full(num_items, np.inf)
  np.minimum.at(first, items, times)
  return np.where(np.isinf(first), np.nan, first)


def _item_id_file(folder: Path, options: TableOptions, num_items: int,
                  features_path: Path) -> np.ndarray | None:
  """Raw item id per feature row from the item-id file, or None when the folder has none."""
  path = folder / options.item_ids_file
  if not path.is_file():
    return None
  return ids.read_item_ids(path, files.read_text(path), num_items, features_path)


def read_table(path: Path, columns_of: Callable[[list[str], Path], Columns], folder: Path,
               modalities: Sequence[str], features: tuple[np.ndarray, ...],
               options: TableOptions, present: np.ndarray | None = None) -> layouts.RawData:
  """RawData from an interaction table whose columns `columns_of(header, path)` locates.

  Every row is checked (ids, ratings, timestamps) before `min_rating` drops
  the poorly rated ones; an item's first interaction time counts all its
  rows, poorly rated ones included, since the item existed from then on.
  """
  num_items, features_path = features[0].shape[0], feature_path(folder, modalities[0])
  raw_ids = options.ids == 'raw'
  header, body = files.read_tsv_text(path) if raw_ids else files.read_tsv(path)
  columns = columns_of(header, path)
  _check_optional_columns(columns, header, path, options)
  item_ids = None
  if raw_ids:
    users = body[:, columns.user]
    empty = np.flatnonzero(users == '')
    if empty.size:
      raise DataError(f'{path}: empty user id on data row {empty[0] + 1} ({empty.size} such rows)')
    item_ids = _item_id_file(folder, options, num_items, features_path)
    items = ids.items_to_dense(body[:, columns.item], item_ids, num_items, path,
                               folder / options.item_ids_file)
  else:
    users = _as_ids(body[:, columns.user], path, 'user')
    items = _as_ids(body[:, columns.item], path, 'item')
    layouts.check_pairs(np.stack([users, items], 1), path, num_items, features_path)
    layouts.check_user_ids(users, path, raw_ids_hint=True)
  keep = np.ones(len(body), bool)
  if options.min_rating is not None:
    ratings = _numeric_column(body, columns.rating, path, 'rating')
    keep = positive_rows(ratings, options.min_rating, path)
  first_time = None
  if options.first_times:
    times = _numeric_column(body, columns.timestamp, path, 'timestamp')
    first_time = first_interaction_times(items, times, num_items)
  if raw_ids:
    user_ids, users = ids.users_to_dense(users[keep])
    num_users = len(user_ids)
  else:
    user_ids, num_users, users = None, int(users.max()) + 1, users[keep]
  pairs = layouts.unique_pairs(np.stack([users, items[keep]], 1))
  return layouts.RawData(features, pairs, num_users, user_ids=user_ids, item_ids=item_ids,
                         first_time=first_time, present=present)


def read_interactions(folder: Path, modalities: Sequence[str], interactions_file: str,
                      options: TableOptions = TableOptions(),
                      missing_rows: str = 'error') -> layouts.RawData:
  """The `interactions` layout: a user/item[/timestamp][/rating] table and feature files."""
  path = folder / interactions_file
  files.require_files([path] + [feature_path(folder, m) for m in modalities])
  features, present = read_features(folder, modalities, missing_rows)
  return read_table(path, interaction_columns, folder, modalities, features, options, present)
