"""Readers for the three on-disk layouts, with checks that name the bad file.

Every layout stores one feature matrix per modality as `<name>_feat.npy`
(row = item id). The interactions differ:

- `interactions`: `<interactions_file>`, tab-separated, a header line, then
  `user item [timestamp]` (ml100k-mm, tiktok-mm); extra columns may instead
  be named `timestamp` and `rating` in the header.
- `mmrec`: MMRec's `<name>.inter`, tab-separated with a header naming
  `userID` and `itemID` (and `rating`, `timestamp`) among its columns. Its
  `x_label` column marks a warm split, which is of no use for new items, so
  all rows are pooled.
- `milk`: the authors' `train.txt`, `val.txt`, `test.txt` (one line per user,
  `user item item ...`) and `cold_item_index.npy`; the split is given. Their
  `<name>_feat_missing_test.npy` / `_missing_all.npy` (features with the
  rows of missing modalities replaced) say which item misses what under
  FTMT / MTMT, see `authors_availability`.

A feature row may also mark its modality missing (all NaN, or all zero;
`missing_rows`), and any folder may hold a declared mask (`availability.npy`,
`read_availability_file`).

In those two layouts ids are dense 0-based integers by default
(TableOptions.ids='dense'), or any strings with ids='raw' (see `ids.py`);
`min_rating` keeps only well-rated rows as positives, and `first_times`
reads each item's first interaction time for the time split.

Readers check everything they read and raise `DataError` before returning,
so nothing downstream ever sees a half-valid dataset. Text files must be
UTF-8; dense user ids must be 0-based and fit int32, because they index a
table with one row per id up to the largest.
"""

import dataclasses
import functools
from pathlib import Path
from typing import Callable, NamedTuple, Sequence
import warnings

import numpy as np

from milk_jax.data import ids
from milk_jax.data.errors import DataError
from milk_jax.data.ids import ITEM_IDS_FILE
from milk_jax.data.split import ItemSplit

MILK_FILES = ('train.txt', 'val.txt', 'test.txt')
COLD_INDEX_FILE = 'cold_item_index.npy'
# The authors' record of which items miss some modality in their missing files.
COLD_MISSING_INDEX_FILE = 'cold_missing_item_index.npy'
WARM_MISSING_INDEX_FILE = 'warm_missing_item_index.npy'
# The authors' pre-imputed features per setting: `<modality>_feat_<suffix>.npy`.
AUTHORS_MISSING_SUFFIX = {'ftmt': 'missing_test', 'mtmt': 'missing_all'}
MAX_ID = 2**31 - 1  # Ids are stored as int32 downstream.
# Unused user rows tolerated before ids count as sparse: gaps from filtering are
# fine, but an id of 1e12 would make a table of 1e12 rows and fail far later.
MAX_UNUSED_USER_ROWS = 1000
_INT64_RANGE = 2.0**63  # Ids at or beyond it cannot even be cast to int64.
_FLOAT32_MAX = float(np.finfo(np.float32).max)
# Appended to id errors of the two layouts that can read raw ids instead.
_RAW_IDS_HINT = ', or pass --config.data.ids=raw to map any ids to dense indices'


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


def feature_path(folder: Path, name: str) -> Path:
  return folder / f'{name}_feat.npy'


def require_files(paths: Sequence[Path]) -> None:
  """Raises DataError naming every path in `paths` that is not a file."""
  missing = [str(p) for p in paths if not p.is_file()]
  if missing:
    raise DataError(f'missing file(s): {", ".join(missing)}')


def _load_npy(path: Path, kind: str) -> np.ndarray:
  """np.load without pickles (unpickling runs code); any parse failure names the file."""
  try:
    return np.load(path, allow_pickle=False)
  except Exception as e:  # A corrupt header raises ValueError, SyntaxError, TokenError, ...
    raise DataError(f'{path}: cannot be read as {kind} .npy array '
                    f'({type(e).__name__}: {e})') from e


def read_text(path: Path) -> str:
  """A whole text file; anything but UTF-8 (a leading BOM allowed) is refused."""
  try:
    raw = path.read_bytes()
  except OSError as e:
    raise DataError(f'{path}: cannot be read ({e.strerror or e})') from e
  try:
    return raw.decode('utf-8').removeprefix('\ufeff')
  except UnicodeDecodeError as e:
    raise DataError(f'{path}: not UTF-8 text ({e.reason}: byte {raw[e.start]:#04x} '
                    f'at offset {e.start})') from e


def _refuse_rows(bad: np.ndarray, path: Path, problem: str, why: str = '',
                 first_row: int = 0) -> None:
  """Raises DataError naming the count and the first of the rows flagged in `bad` (rows,).

  `first_row` is the file row of bad[0], when `bad` covers a chunk of the file.
  """
  rows = np.flatnonzero(bad)
  if rows.size:
    raise DataError(f'{path}: {problem} in {rows.size} rows (first: {rows[0] + first_row}){why}')


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
    array = _load_npy(path, 'a numeric')
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
  refuse = functools.partial(_refuse_rows, path=path, first_row=first_row)
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
  array = _load_npy(path, 'a boolean')
  if not isinstance(array, np.ndarray) or not (
      array.dtype == bool or np.issubdtype(array.dtype, np.integer)):
    raise DataError(f'{path}: expected a bool or 0/1 integer array, found '
                    f'{getattr(array, "dtype", type(array).__name__)}')
  expected = (num_items, len(modalities))
  if array.shape != expected:
    raise DataError(f'{path}: expected shape (items, modalities) = {expected} (columns in the '
                    f'order of config.data.modalities: {", ".join(modalities)}), found '
                    f'{array.shape}')
  _refuse_rows(~np.isin(array, (0, 1)).all(axis=1), path, 'values other than 0/1',
               ' (True/1 = the item has the modality)')
  return array.astype(bool)


def read_availability_table(path: Path, item_ids: np.ndarray,
                            modalities: Sequence[str]) -> np.ndarray:
  """A declared mask keyed by item id: (num_items, M) bool, True = present.

  The file is tab-separated with a header `item <modality> ...` naming every
  modality of config.data.modalities (any order), then one row per item
  that lacks something: its raw id (as in item_ids.txt, or the feature row
  with dense ids) and 0/1 per modality. Items it does not list have every
  modality.

  Args:
    item_ids: (num_items,) str raw id of each feature row.
  """
  lines = [line for line in read_text(path).splitlines() if line.strip()]
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


def _as_ids(values: np.ndarray, path: Path, what: str) -> np.ndarray:
  """Float-parsed id column -> int64, refusing fractions, NaN and ids beyond int64."""
  bad = np.flatnonzero(values != np.round(values))
  if bad.size:
    raise DataError(f'{path}: non-integer {what} id {values[bad[0]]:g} on data row {bad[0] + 1}')
  huge = np.flatnonzero(np.abs(values) >= _INT64_RANGE)
  if huge.size:
    raise DataError(f'{path}: {what} id {values[huge[0]]:g} on data row {huge[0] + 1} is out of '
                    f'range; ids must be dense, 0-based and fit int32{_RAW_IDS_HINT}')
  return values.astype(np.int64)


def _header_and_body(path: Path) -> tuple[list[str], list[str]]:
  """The header's column names and the lines after it, of a tab-separated file."""
  lines = read_text(path).splitlines()
  header = [name.strip() for name in lines[0].split('\t')] if lines else ['']
  if not header[0]:
    raise DataError(f'{path}: empty file or empty header line')
  try:
    float(header[0])
  except ValueError:
    pass
  else:
    raise DataError(f'{path}: expected a header line, found data {header!r}')
  return header, lines[1:]


def _read_tsv(path: Path) -> tuple[list[str], np.ndarray]:
  """Header fields and the numeric body of a tab-separated file with a header.

  Returns:
    header: the column names.
    table: (rows, columns) float64; float so that MMRec's rating column
      parses too (ids are checked to be integers by the caller).
  """
  header, body = _header_and_body(path)
  try:
    with warnings.catch_warnings():
      warnings.simplefilter('ignore')  # An empty body is reported below instead.
      table = np.loadtxt(body, delimiter='\t', dtype=np.float64, ndmin=2)
  except ValueError as e:
    raise DataError(f'{path}: malformed row: {e}; string ids need --config.data.ids=raw') from e
  if table.shape[0] == 0:
    raise DataError(f'{path}: no interaction rows after the header')
  if table.shape[1] != len(header):
    raise DataError(f'{path}: header has {len(header)} columns but rows have {table.shape[1]}')
  return header, table


def _read_tsv_text(path: Path) -> tuple[list[str], np.ndarray]:
  """Header fields and the body as text, for raw ids that need not be numbers.

  Returns:
    header: the column names.
    cells: (rows, columns) str, each field stripped of surrounding blanks;
      blank lines are skipped.
  """
  header, body = _header_and_body(path)
  rows = [line.split('\t') for line in body if line.strip()]
  if not rows:
    raise DataError(f'{path}: no interaction rows after the header')
  widths = np.fromiter(map(len, rows), np.int64, len(rows))
  bad = np.flatnonzero(widths != len(header))
  if bad.size:
    raise DataError(f'{path}: malformed row: data row {bad[0] + 1} has {widths[bad[0]]} columns '
                    f'but the header has {len(header)} ({bad.size} such rows)')
  return header, np.char.strip(np.asarray(rows, dtype=str))


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
  hint = _RAW_IDS_HINT if raw_ids_hint else ''
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


def _unique_pairs(pairs: np.ndarray) -> np.ndarray:
  """Collapses repeated (user, item) rows: implicit feedback counts once."""
  return np.unique(pairs.reshape(-1, 2), axis=0)


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


def mmrec_columns(header: list[str], path: Path) -> Columns:
  """`mmrec` layout: every column by its name."""
  for name in ('userID', 'itemID'):
    if name not in header:
      raise DataError(f'{path}: header {header!r} lacks the column {name!r}')
  rating, timestamp = (header.index(n) if n in header else None for n in ('rating', 'timestamp'))
  return Columns(header.index('userID'), header.index('itemID'), rating, timestamp)


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
  return ids.read_item_ids(path, read_text(path), num_items, features_path)


def read_table(path: Path, columns_of: Callable[[list[str], Path], Columns], folder: Path,
               modalities: Sequence[str], features: tuple[np.ndarray, ...],
               options: TableOptions, present: np.ndarray | None = None) -> RawData:
  """RawData from an interaction table whose columns `columns_of(header, path)` locates.

  Every row is checked (ids, ratings, timestamps) before `min_rating` drops
  the poorly rated ones; an item's first interaction time counts all its
  rows, poorly rated ones included, since the item existed from then on.
  """
  num_items, features_path = features[0].shape[0], feature_path(folder, modalities[0])
  raw_ids = options.ids == 'raw'
  header, body = _read_tsv_text(path) if raw_ids else _read_tsv(path)
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
    check_pairs(np.stack([users, items], 1), path, num_items, features_path)
    check_user_ids(users, path, raw_ids_hint=True)
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
  pairs = _unique_pairs(np.stack([users, items[keep]], 1))
  return RawData(features, pairs, num_users, user_ids=user_ids, item_ids=item_ids,
                 first_time=first_time, present=present)


def read_interactions(folder: Path, modalities: Sequence[str], interactions_file: str,
                      options: TableOptions = TableOptions(),
                      missing_rows: str = 'error') -> RawData:
  """The `interactions` layout: a user/item[/timestamp][/rating] table and feature files."""
  path = folder / interactions_file
  require_files([path] + [feature_path(folder, m) for m in modalities])
  features, present = read_features(folder, modalities, missing_rows)
  return read_table(path, interaction_columns, folder, modalities, features, options, present)


def find_inter_file(folder: Path, inter_name: str | None) -> Path:
  """`<inter_name>.inter`, or the folder's only `*.inter` file when the name is None."""
  if inter_name is not None:
    return folder / f'{inter_name}.inter'
  found = sorted(folder.glob('*.inter'))
  if len(found) != 1:
    names = ', '.join(p.name for p in found) or 'none'
    raise DataError(f'{folder}: expected exactly one *.inter file (or set '
                    f'config.data.inter_name), found {names}')
  return found[0]


def read_mmrec(folder: Path, modalities: Sequence[str], inter_name: str | None,
               options: TableOptions = TableOptions(), missing_rows: str = 'error') -> RawData:
  """The `mmrec` layout: all rows of `<name>.inter`, whatever their x_label."""
  path = find_inter_file(folder, inter_name)
  require_files([path] + [feature_path(folder, m) for m in modalities])
  features, present = read_features(folder, modalities, missing_rows)
  return read_table(path, mmrec_columns, folder, modalities, features, options, present)


def read_user_lines(path: Path) -> tuple[np.ndarray, np.ndarray]:
  """A `user item item ...` file.

  Returns:
    pairs: (n, 2) int64 (user, item), one per item token.
    users: (lines,) int64, the leading id of every non-empty line, so that a
      user listed without items still counts towards the number of users.
  """
  users, pairs = [], []
  for line_number, line in enumerate(read_text(path).splitlines(), start=1):
    tokens = line.split()
    if not tokens:
      continue
    try:
      ids = [int(t) for t in tokens]
    except ValueError as e:
      raise DataError(f'{path}: line {line_number}: non-integer id ({e})') from e
    if max(map(abs, ids)) >= _INT64_RANGE:  # numpy cannot hold it; the id checks come later.
      raise DataError(f'{path}: line {line_number}: id {max(ids, key=abs)} is out of range; '
                      f'ids must be dense, 0-based and fit int32')
    users.append(ids[0])
    pairs.extend((ids[0], item) for item in ids[1:])
  return np.asarray(pairs, np.int64).reshape(-1, 2), np.asarray(users, np.int64)


def _read_item_index(path: Path, num_items: int) -> np.ndarray:
  """Sorted unique int64 item ids from an integer .npy file, each in [0, num_items)."""
  ids = _load_npy(path, 'an integer')
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
  array = _load_npy(path, 'a numeric')
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
              authors_setting: str | None = None) -> RawData:
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
  require_files(list(paths.values()) + [cold_path] + [feature_path(folder, m) for m in modalities])
  features, present = read_features(folder, modalities, missing_rows)
  num_items = features[0].shape[0]
  cold = _read_item_index(cold_path, num_items)
  parts, users_by_path = {}, {}
  for name, path in paths.items():
    pairs, users = read_user_lines(path)
    if users.size and users.min() < 0:
      raise DataError(f'{path}: negative user id {users.min()}')
    check_pairs(pairs, path, num_items, feature_path(folder, modalities[0]))
    users_by_path[path] = users
    parts[name] = _unique_pairs(pairs)
  all_users = np.concatenate(list(users_by_path.values()))
  max_user = int(all_users.max(initial=-1))
  # Named after the file holding the largest id: that is where a stray id sits.
  check_user_ids(all_users, max(users_by_path, key=lambda p: users_by_path[p].max(initial=-1)))
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
  return RawData(features, pairs, max_user + 1, item_split, present=present,
                 missing_files=missing_files)
