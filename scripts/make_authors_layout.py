"""Write a dataset in the authors' MILK layout, for running their code beside milk-jax.

  .venv/bin/python scripts/make_authors_layout.py --config=configs/ml100k.py --out=runs/authors/ml100k_seed0 --seed=0

The split and the missing-modality masks are milk-jax's own for that seed
(FTMT for the new items, MTMT's extra draw for the warm items), so both
programs see the same data. The first modality is written as `image`, the
second as `text` (the authors' code reads those two names). Files:
  train.txt, val.txt, test.txt     "user item item ..." per user (users without items left out)
  cold_item_index.npy              the new (validation + test) items
  {image,text}_feat.npy            the clean features, as read
  {image,text}_feat_missing_test.npy   FTMT: new items' missing rows replaced
  {image,text}_feat_missing_train.npy  warm items' missing rows replaced
  {image,text}_feat_missing_all.npy    MTMT: both
  cold_missing_item_index.npy, warm_missing_item_index.npy: items that miss a modality
Missing rows are replaced by the modality's mean over the warm items where it
is present, as milk-jax imputes. Nothing here goes into the repository: the
output folder holds the dataset's own data.
"""

import copy
import os
from pathlib import Path
import sys

from absl import app
from absl import flags
from ml_collections import config_flags
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from milk_jax import data as data_lib  # pylint: disable=g-import-not-at-top
from milk_jax.data import features  # pylint: disable=g-import-not-at-top

_CONFIG = config_flags.DEFINE_config_file('config', None, 'A dataset config.', lock_config=True)
_OUT = flags.DEFINE_string('out', None, 'Output folder.')
_SEED = flags.DEFINE_integer('seed', 0, 'Seed of the split and the masks.')
flags.mark_flags_as_required(['config', 'out'])

AUTHORS_NAMES = ('image', 'text')


def _user_lines(pairs: np.ndarray) -> str:
  by_user = {}
  for user, item in pairs.tolist():
    by_user.setdefault(user, []).append(item)
  return ''.join(f'{u} {" ".join(map(str, sorted(items)))}\n' for u, items in sorted(by_user.items()))


def _masked_dataset(config, setting: str) -> data_lib.Dataset:
  config = copy.deepcopy(config)
  config.data.setting = setting
  config.data.normalize = False
  config.data.imputation = 'mean'
  return data_lib.load_dataset(config)


def _replace_missing(clean: np.ndarray, available: np.ndarray, rows: np.ndarray,
                     warm: np.ndarray) -> np.ndarray:
  """`clean` with the missing rows among `rows` set to the mean of warm present rows."""
  out = clean.copy()
  present_warm = warm[available[warm]]
  mean = clean[present_warm].mean(axis=0, dtype=np.float64).astype(clean.dtype)
  missing = rows[~available[rows]]
  out[missing] = mean
  return out


def main(argv):
  del argv
  config = copy.deepcopy(_CONFIG.value)
  config.seed = _SEED.value
  if len(config.data.modalities) != 2:
    sys.exit('error: the authors\' code reads exactly two modalities')
  ftmt = _masked_dataset(config, 'ftmt')
  mtmt = _masked_dataset(config, 'mtmt')
  folder = _OUT.value
  os.makedirs(folder, exist_ok=True)
  for name, pairs in (('train', ftmt.train_pairs), ('val', ftmt.val_pairs),
                      ('test', ftmt.test_pairs)):
    with open(os.path.join(folder, f'{name}.txt'), 'w') as f:
      f.write(_user_lines(pairs))
  cold = np.union1d(ftmt.val_items, ftmt.test_items).astype(np.int64)
  warm = ftmt.warm_items.astype(np.int64)
  np.save(os.path.join(folder, 'cold_item_index.npy'), cold)
  source = os.path.expanduser(config.data.path)
  for m, (name, out_name) in enumerate(zip(config.data.modalities, AUTHORS_NAMES)):
    clean, _ = features.read_feature_file(features.feature_path(Path(source), name))
    np.save(os.path.join(folder, f'{out_name}_feat.npy'), clean)
    test_mask, all_mask = ftmt.availability[:, m], mtmt.availability[:, m]
    np.save(os.path.join(folder, f'{out_name}_feat_missing_test.npy'),
            _replace_missing(clean, test_mask, cold, warm))
    np.save(os.path.join(folder, f'{out_name}_feat_missing_train.npy'),
            _replace_missing(clean, all_mask, warm, warm))
    np.save(os.path.join(folder, f'{out_name}_feat_missing_all.npy'),
            _replace_missing(clean, all_mask, np.concatenate([warm, cold]), warm))
  incomplete = ~mtmt.availability.all(axis=1)
  np.save(os.path.join(folder, 'warm_missing_item_index.npy'), warm[incomplete[warm]])
  np.save(os.path.join(folder, 'cold_missing_item_index.npy'),
          cold[~ftmt.availability[cold].all(axis=1)])
  print(f'wrote {folder}: {len(warm)} warm, {len(ftmt.val_items)} val, '
        f'{len(ftmt.test_items)} test items; {int((~ftmt.availability[cold].all(axis=1)).sum())} '
        f'new and {int(incomplete[warm].sum())} warm items miss a modality')


if __name__ == '__main__':
  app.run(main)
