"""Items that arrive after training: a folder of their features, checked before any work.

The folder has the training data's layout: `<modality>_feat.npy` for the
run's modalities (a file may be left out when no new item has that
modality), `item_ids.txt` (line i = the id of feature row i) and, when some
items lack a modality, the declared availability in the training format
(the run's config.data.availability_file: `.npy` (N, M) 0/1, or `.tsv` keyed
by id), or marker rows as config.data.missing_rows says. Feature files are
memory-mapped a chunk at a time, so any number of items fits in memory.

Only regular files are opened (a FIFO would block forever, a device never
ends), and the run's file names are read inside the folder only.
"""

import dataclasses
import os
from pathlib import Path, PurePath
from typing import Sequence

import numpy as np

from milk_jax import runfolder
from milk_jax.data import features as features_lib
from milk_jax.data import files
from milk_jax.data import ids
from milk_jax.data.errors import DataError

CHECK_CHUNK = 65536  # Rows checked at a time: memory stays bounded for any file.


@dataclasses.dataclass(eq=False)
class NewItems:
  """Checked new items: their ids, raw feature rows and what each has."""
  ids: np.ndarray  # (N,) str.
  # Per modality: an (N, dim_m) array in memory, a .npy path (mapped a chunk at a time, so
  # that no more than a chunk stays resident), or None when no item has it.
  raw: tuple[np.ndarray | Path | None, ...]
  available: np.ndarray  # (N, M) bool.
  sources: tuple[str, ...]  # What each modality's rows are named by in errors.
  dims: tuple[int, ...]  # The run's feature widths.
  missing_rows: str = 'error'

  def __len__(self) -> int:
    return len(self.ids)

  def rows(self, start: int, stop: int) -> tuple[tuple[np.ndarray, ...], np.ndarray]:
    """Features (float32, a missing modality's rows zero) and availability of start:stop."""
    features = []
    for m, source in enumerate(self.raw):
      if source is None:  # Nobody has it: zeros, which imputation replaces.
        features.append(np.zeros((stop - start, self.dims[m]), np.float32))
        continue
      chunk, _ = features_lib.check_feature_rows(_read_rows(source, start, stop),
                                                 Path(self.sources[m]), self.missing_rows, start)
      features.append(chunk)
    return tuple(features), self.available[start:stop]


def _read_rows(source: np.ndarray | Path, start: int, stop: int) -> np.ndarray:
  """Rows start:stop of an array, or of a .npy file mapped only for this read."""
  if isinstance(source, np.ndarray):
    return source[start:stop]
  mapped = np.load(source, mmap_mode='r', allow_pickle=False)
  rows = np.array(mapped[start:stop])
  del mapped  # Unmapped: the pages read do not stay in this process's memory.
  return rows


def _check_rows(array: np.ndarray | Path, num_rows: int, source: Path, missing_rows: str
                ) -> np.ndarray:
  """(N,) bool present rows; every value of the file checked, a chunk at a time."""
  present = np.ones(num_rows, bool)
  for start in range(0, num_rows, CHECK_CHUNK):
    stop = min(start + CHECK_CHUNK, num_rows)
    _, present[start:stop] = features_lib.check_feature_rows(
        _read_rows(array, start, stop), source, missing_rows, start)
  return present


def _check_width(array: np.ndarray, source: object, name: str, dim: int) -> None:
  if array.ndim != 2 or array.shape[1] != dim:
    raise DataError(f'{source}: shape {array.shape}, but the run\'s {name!r} features are '
                    f'(items, {dim})')


def from_arrays(features: Sequence[np.ndarray | None], item_ids: Sequence[str],
                availability: np.ndarray | None, modality_names: Sequence[str],
                feature_dims: Sequence[int]) -> NewItems:
  """NewItems from arrays in memory (the Python API); None = a modality no item has."""
  if len(features) != len(modality_names):
    raise DataError(f'features: {len(features)} arrays, but the run has {len(modality_names)} '
                    f'modalities ({", ".join(modality_names)})')
  given = [np.asarray(f) if f is not None else None for f in features]
  rows = {f.shape[0] for f in given if f is not None and f.ndim >= 1}
  if not rows:
    raise DataError('features: every modality is None; new items need at least one')
  if len(rows) > 1:
    raise DataError(f'features: the arrays disagree on the number of items ({sorted(rows)})')
  num_items = rows.pop()
  if num_items == 0:
    raise DataError('features: 0 rows: there are no new items')
  sources, present = [], np.ones((num_items, len(modality_names)), bool)
  for m, (array, name, dim) in enumerate(zip(given, modality_names, feature_dims)):
    source = f'features[{name!r}]'
    sources.append(source)
    if array is None:
      present[:, m] = False
      continue
    _check_width(array, source, name, dim)
    present[:, m] = _check_rows(array, num_items, Path(source), 'error')
  if availability is not None:
    availability = np.asarray(availability)
    if availability.shape != present.shape or availability.dtype != bool:
      raise DataError(f'availability: expected a bool array of shape {present.shape}, found '
                      f'{availability.dtype} {availability.shape}')
    present &= availability
  item_ids = np.asarray([str(i) for i in item_ids], str)
  if item_ids.shape != (num_items,):
    raise DataError(f'item_ids: {item_ids.size} ids for {num_items} feature rows')
  features_lib.refuse_items_without_modality(present, ['features and availability'])
  return NewItems(ids=item_ids, raw=tuple(given), available=present, sources=tuple(sources),
                  dims=tuple(feature_dims))


FOLDER_FILE_FIELDS = ('item_ids_file', 'availability_file')  # config.data names, per folder.
_AVAILABILITY_FORMATS = {'.npy': '(N, M) 0/1 array', '.tsv': 'table by item id'}


def check_file_fields(data_config, where: str) -> None:
  """DataError when a file name of config.data read inside a data folder could name a file
  outside it (an absolute path, or '..'); `where` names the config ('RUN/config.json')."""
  for field in FOLDER_FILE_FIELDS:
    name = data_config.get(field)
    if name is None:
      continue
    parts = PurePath(str(name)).parts
    if not parts or os.path.isabs(str(name)) or '..' in parts:
      raise DataError(f'{where}: data.{field}={name!r} must be a file name inside the data '
                      "folder (not absolute, no '..')")


def _regular(path: Path) -> None:
  runfolder.check_regular_file(str(path), DataError)


def _declared_availability(path: Path, name: str | None) -> Path | None:
  """The availability file of the run's format in `path`, if there; DataError when a file
  of the other format is there instead (it would be ignored) or the file is not regular."""
  if name is None:
    return None
  declared = path / name
  for suffix, form in _AVAILABILITY_FORMATS.items():
    other = declared.with_suffix(suffix)
    if declared.suffix in _AVAILABILITY_FORMATS and other != declared and os.path.lexists(other):
      raise DataError(f'{other}: the run reads the availability from {declared.name} '
                      f'(config.data.availability_file, a {_AVAILABILITY_FORMATS[declared.suffix]}'
                      f'), not a {form}: convert it to {declared.name}')
  if not os.path.lexists(declared):
    return None
  if not declared.exists():
    raise DataError(f'{declared}: a link to a file that does not exist')
  _regular(declared)
  return declared


def read_folder(folder: str, modality_names: Sequence[str], feature_dims: Sequence[int],
                data_config) -> NewItems:
  """NewItems of a folder in the training data's layout; DataError names the file at fault.

  Args:
    data_config: the run's config.data (availability_file, missing_rows, item_ids_file).
  """
  check_file_fields(data_config, 'config.data')
  path = Path(folder).expanduser()
  if not path.is_dir():
    raise DataError(f'{path}: not a folder (the new items: <modality>_feat.npy, item_ids.txt)')
  suffix = '_feat.npy'
  found = sorted(p.name[:-len(suffix)] for p in path.glob(f'*{suffix}'))
  unknown = [name for name in found if name not in modality_names]
  if unknown:
    raise DataError(f'{features_lib.feature_path(path, unknown[0])}: modality {unknown[0]!r} is '
                    f'not one of the run\'s ({", ".join(modality_names)})')
  if not found:
    raise DataError(f'{path}: no feature file; expected one or more of '
                    f'{", ".join(n + suffix for n in modality_names)}')
  missing_rows = data_config.missing_rows
  raw, sources, present, shapes = [], [], [], {}
  for name, dim in zip(modality_names, feature_dims):
    source = features_lib.feature_path(path, name)
    sources.append(str(source))
    if name not in found:
      raw.append(None)
      continue
    _regular(source)
    array = features_lib.open_feature_file(source, mmap=True)
    _check_width(array, source, name, dim)
    shapes[str(source)] = array.shape[0]
    del array  # Mapped again a chunk at a time.
    raw.append(source)
  rows = shapes
  if len(set(rows.values())) > 1:
    listed = ', '.join(f'{s}: {r}' for s, r in rows.items())
    raise DataError(f'feature files disagree on the number of items (rows): {listed}')
  num_items = next(iter(rows.values()))
  first_file = Path(next(iter(rows)))
  if num_items == 0:
    raise DataError(f'{first_file}: 0 rows: there are no new items in {path}')
  declared = _declared_availability(path, data_config.availability_file)
  ids_path = path / (data_config.item_ids_file or ids.ITEM_IDS_FILE)
  _regular(ids_path)
  if not ids_path.is_file():
    raise DataError(f'{ids_path}: missing; new items need their ids, one per line, line i '
                    f'naming the item of feature row i')
  item_ids = ids.read_item_ids(ids_path, files.read_text(ids_path), num_items, first_file)
  for array, source in zip(raw, sources):
    present.append(np.zeros(num_items, bool) if array is None
                   else _check_rows(array, num_items, Path(source), missing_rows))
  available = np.stack(present, axis=1)
  named = [Path(s) for s, a in zip(sources, raw) if a is None or missing_rows != 'error']
  if declared is not None:
    if declared.suffix == '.tsv':
      available &= features_lib.read_availability_table(declared, item_ids, modality_names)
    else:
      available &= features_lib.read_availability_file(declared, num_items, modality_names)
    named.insert(0, declared)
  features_lib.refuse_items_without_modality(available, named)
  return NewItems(ids=item_ids, raw=tuple(raw), available=available, sources=tuple(sources),
                  dims=tuple(feature_dims), missing_rows=missing_rows)


def refuse_catalogue_ids(new: NewItems, catalogue_ids: np.ndarray, warm_items: np.ndarray,
                         where: str) -> None:
  """DataError when a new item reuses the id of a warm item of the run."""
  clash = np.isin(new.ids, catalogue_ids[warm_items])
  if clash.any():
    first = int(np.flatnonzero(clash)[0])
    raise DataError(f'{where}: {int(clash.sum())} new items have the id of an item the run '
                    f'trained on (first: {str(new.ids[first])!r}, row {first}); give new items '
                    'ids of their own')
