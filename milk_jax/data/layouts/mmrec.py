"""The `mmrec` layout: MMRec's `<name>.inter` and the feature files.

The table is tab-separated with a header naming `userID` and `itemID` (and
`rating`, `timestamp`) among its columns; it is read as the `interactions`
layout's table is, its columns found by name. Its `x_label` column marks a
warm split, which is of no use for new items, so all rows are pooled.
"""

from pathlib import Path
from typing import Sequence

from milk_jax.data import files
from milk_jax.data import layouts
from milk_jax.data.errors import DataError
from milk_jax.data.features import feature_path
from milk_jax.data.features import read_features
from milk_jax.data.layouts.interactions import Columns
from milk_jax.data.layouts.interactions import TableOptions
from milk_jax.data.layouts.interactions import read_table


def mmrec_columns(header: list[str], path: Path) -> Columns:
  """`mmrec` layout: every column by its name."""
  for name in ('userID', 'itemID'):
    if name not in header:
      raise DataError(f'{path}: header {header!r} lacks the column {name!r}')
  rating, timestamp = (header.index(n) if n in header else None for n in ('rating', 'timestamp'))
  return Columns(header.index('userID'), header.index('itemID'), rating, timestamp)


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
               options: TableOptions = TableOptions(),
               missing_rows: str = 'error') -> layouts.RawData:
  """The `mmrec` layout: all rows of `<name>.inter`, whatever their x_label."""
  path = find_inter_file(folder, inter_name)
  files.require_files([path] + [feature_path(folder, m) for m in modalities])
  features, present = read_features(folder, modalities, missing_rows)
  return read_table(path, mmrec_columns, folder, modalities, features, options, present)
