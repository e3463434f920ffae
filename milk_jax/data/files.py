"""Checked reads of a dataset folder's files: .npy arrays, UTF-8 text, tab-separated tables.

Every read raises `DataError` naming the file and the problem, never a
numpy or codec traceback, so a layout reader can check all it reads before
returning. Arrays are loaded without pickles (unpickling runs code). Text
must be UTF-8 (a leading BOM allowed) and is split into lines at '\n' only,
one trailing '\r' dropped so that CRLF files read the same: a form feed,
\x1c or U+2028 inside a field, which `str.splitlines` would break at, stays
part of the field.
"""

from pathlib import Path
from typing import Sequence
import warnings

import numpy as np

from milk_jax.data.errors import DataError


def require_files(paths: Sequence[Path]) -> None:
  """Raises DataError naming every path in `paths` that is not a regular file."""
  missing = [str(p) for p in paths if not p.is_file()]
  if missing:
    raise DataError(f'missing file(s): {", ".join(missing)}')


def load_npy(path: Path, kind: str) -> np.ndarray:
  """np.load without pickles; any parse failure names the file and `kind` ('a numeric', ...)."""
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


def text_lines(text: str) -> list[str]:
  """The lines of a text file's content: split at '\n' only, a trailing '\r' dropped."""
  lines = text.split('\n')
  if lines[-1] == '':  # The newline that ends the last line (or an empty file).
    lines.pop()
  return [line[:-1] if line.endswith('\r') else line for line in lines]


def refuse_rows(bad: np.ndarray, path: Path, problem: str, why: str = '',
                first_row: int = 0) -> None:
  """Raises DataError naming the count and the first of the rows flagged in `bad` (rows,).

  `first_row` is the file row of bad[0], when `bad` covers a chunk of the file.
  """
  rows = np.flatnonzero(bad)
  if rows.size:
    raise DataError(f'{path}: {problem} in {rows.size} rows (first: {rows[0] + first_row}){why}')


def header_and_body(path: Path) -> tuple[list[str], list[str]]:
  """The header's column names and the lines after it, of a tab-separated file."""
  lines = text_lines(read_text(path))
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


def read_tsv(path: Path) -> tuple[list[str], np.ndarray]:
  """Header fields and the numeric body of a tab-separated file with a header.

  Returns:
    header: the column names.
    table: (rows, columns) float64; float so that MMRec's rating column
      parses too (ids are checked to be integers by the caller).
  """
  header, body = header_and_body(path)
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


def read_tsv_text(path: Path) -> tuple[list[str], np.ndarray]:
  """Header fields and the body as text, for raw ids that need not be numbers.

  Returns:
    header: the column names.
    cells: (rows, columns) str, each field stripped of surrounding blanks;
      blank lines are skipped.
  """
  header, body = header_and_body(path)
  rows = [line.split('\t') for line in body if line.strip()]
  if not rows:
    raise DataError(f'{path}: no interaction rows after the header')
  widths = np.fromiter(map(len, rows), np.int64, len(rows))
  bad = np.flatnonzero(widths != len(header))
  if bad.size:
    raise DataError(f'{path}: malformed row: data row {bad[0] + 1} has {widths[bad[0]]} columns '
                    f'but the header has {len(header)} ({bad.size} such rows)')
  return header, np.char.strip(np.asarray(rows, dtype=str))
