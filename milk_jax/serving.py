"""What a run saves so that its folder alone serves items that arrive after training.

Besides config.json, the id maps (users.tsv, items.tsv) and the best
checkpoint, a run folder holds
- serving.npz, written when training starts: the preprocessing the model
  depends on (modality names and widths, the imputation fitted on the warm
  items, whether rows are L2-normalised), the method's extras (backbone
  vectors, tables of `Method.prepare`), the warm items and the training
  pairs (to leave a user's own items out when warm items are ranked too);
- vectors.npz, written when training ends: the user and catalogue item
  vectors of the best epoch, which the evaluation ranked with.

`--mode=eval` writes both again, so a run trained before they existed can
be brought up to date.
"""

import dataclasses
import os
from typing import Mapping, Sequence

import numpy as np

from milk_jax import runfolder
from milk_jax.data import missing
from milk_jax.errors import RunFolderError

SERVING_FILE = 'serving.npz'
VECTORS_FILE = 'vectors.npz'
FORMAT_VERSION = 1
_EXTRA_PREFIX = 'extra__'


@dataclasses.dataclass(eq=False)
class Preprocessing:
  """How raw feature rows became the model's input during training."""
  modality_names: tuple[str, ...]
  feature_dims: tuple[int, ...]
  imputation: missing.Imputation
  normalize: bool

  def apply(self, features: Sequence[np.ndarray], available: np.ndarray
            ) -> tuple[np.ndarray, ...]:
    """Raw rows (a missing modality's row is ignored) -> the rows training would have used.

    The fills are the training run's, never refitted on the rows given. With
    'learned' imputation, a call whose rows include one that no ridge map can
    predict falls back to the mean for all its rows, as training did for the
    whole catalogue.
    """
    filled = missing.apply_imputation(self.imputation, features, available)
    return tuple(missing.l2_normalize(x) for x in filled) if self.normalize else filled


@dataclasses.dataclass(eq=False)
class Serving:
  """The contents of serving.npz."""
  preprocessing: Preprocessing
  num_users: int
  num_items: int
  warm_items: np.ndarray  # (I_w,) int32.
  train_pairs: np.ndarray  # (n, 2) int32 dense (user, item).
  extras: dict[str, np.ndarray]  # The method's Tables.extras, host copies.


def _atomic_savez(path: str, arrays: Mapping[str, np.ndarray]) -> None:
  runfolder.write_file(path, lambda f: np.savez(f, **arrays))


def _load_npz(path: str, what: str) -> dict[str, np.ndarray]:
  if not os.path.exists(path):
    raise RunFolderError(f'{path} is missing ({what}); run `--mode=eval` on the run once to '
                         'write it, or train the run again')
  try:
    with np.load(path, allow_pickle=False) as archive:
      return {key: archive[key] for key in archive.files}
  except Exception as error:  # pylint: disable=broad-except  # Any corruption of the archive.
    raise RunFolderError(f'{path} is damaged ({type(error).__name__}: {error}); it holds '
                         f'{what}: run `--mode=eval` on the run to write it again') from None


def write_serving(folder: str, dataset, extras: Mapping[str, np.ndarray], normalize: bool
                  ) -> None:
  """Writes serving.npz for `dataset` (a data.Dataset with its imputation) into `folder`."""
  imputation = dataset.imputation
  arrays = {'version': np.asarray(FORMAT_VERSION),
            'modality_names': np.asarray(dataset.modality_names, str),
            'feature_dims': np.asarray([f.shape[1] for f in dataset.features], np.int64),
            'imputation_method': np.asarray(imputation.method),
            'normalize': np.asarray(bool(normalize)),
            'num_users': np.asarray(dataset.num_users), 'num_items': np.asarray(dataset.num_items),
            'warm_items': np.asarray(dataset.warm_items, np.int32),
            'train_pairs': np.asarray(dataset.train_pairs, np.int32)}
  for m, fill in enumerate(imputation.fills):
    arrays[f'fill_{m}'] = fill
  for (target, source), (weights, bias) in imputation.maps.items():
    arrays[f'map_{target}_{source}_weights'] = weights
    arrays[f'map_{target}_{source}_bias'] = bias
  for key, value in extras.items():
    arrays[_EXTRA_PREFIX + key] = np.asarray(value)
  _atomic_savez(os.path.join(folder, SERVING_FILE), arrays)


def read_serving(folder: str) -> Serving:
  path = os.path.join(folder, SERVING_FILE)
  arrays = _load_npz(path, 'the preprocessing that new items need')
  if int(arrays.get('version', -1)) != FORMAT_VERSION:
    raise RunFolderError(f'{path}: unknown format version; run `--mode=eval` on the run to '
                         'write it again')
  num_modalities = len(arrays['modality_names'])
  maps = {}
  for key in arrays:
    if key.startswith('map_') and key.endswith('_weights'):
      target, source = (int(part) for part in key.split('_')[1:3])
      maps[(target, source)] = (arrays[key], arrays[f'map_{target}_{source}_bias'])
  imputation = missing.Imputation(
      method=str(arrays['imputation_method']),
      fills=tuple(arrays[f'fill_{m}'] for m in range(num_modalities)), maps=maps)
  preprocessing = Preprocessing(
      modality_names=tuple(str(n) for n in arrays['modality_names']),
      feature_dims=tuple(int(d) for d in arrays['feature_dims']), imputation=imputation,
      normalize=bool(arrays['normalize']))
  extras = {key[len(_EXTRA_PREFIX):]: value for key, value in arrays.items()
            if key.startswith(_EXTRA_PREFIX)}
  return Serving(preprocessing=preprocessing, num_users=int(arrays['num_users']),
                 num_items=int(arrays['num_items']), warm_items=arrays['warm_items'],
                 train_pairs=arrays['train_pairs'], extras=extras)


def write_vectors(folder: str, users: np.ndarray, items: np.ndarray, epoch: int) -> None:
  """Writes vectors.npz: users (U, d), catalogue items (I, d) of the best epoch."""
  _atomic_savez(os.path.join(folder, VECTORS_FILE),
                {'users': np.asarray(users, np.float32), 'items': np.asarray(items, np.float32),
                 'epoch': np.asarray(epoch)})


def read_vectors(folder: str) -> tuple[np.ndarray, np.ndarray, int]:
  arrays = _load_npz(os.path.join(folder, VECTORS_FILE), "the best epoch's vectors")
  return arrays['users'], arrays['items'], int(arrays['epoch'])


def write_run_files(folder: str, dataset, extras: Mapping[str, np.ndarray], config) -> None:
  """The id maps and serving.npz: what a run writes before its first epoch."""
  from milk_jax.data import ids  # Imported late: data imports runfolder, which this module does.
  ids.write_id_maps(folder, dataset)
  write_serving(folder, dataset, extras, bool(config.data.normalize))
