"""Write a milk-jax split in the layout of the DGMRec authors' code (new-item + missing mode).

  .venv/bin/python scripts/make_dgmrec_layout.py --config=configs/ml100k.py --setting=ftmt \
      --seed=0 --out=/path/to/DGMRec/data/ml100k_s0

For their `src/main.py --dataset=<folder name> --new_items 1 --missing_modal 1`. The
split, masks and features are the ones milk-jax's methods read for that seed and
setting (features imputed and normalised as configured; the authors re-impute the rows
their mask marks missing). Their code has two modality slots, 'v' (image_feat.npy) and
't' (text_feat.npy): the first configured modality goes to 'v', the second to 't'.
Files (tab-separated tables with header userID, itemID, x_label; 0 train, 1 val, 2 test):
  <name>.inter                 our training, validation and test pairs
  <name>_del.inter             the same: our training pairs hold no new item, so removing
                               the new items' training pairs (their preprocessing) changes nothing
  new_items.npy                our new items (validation and test)
  image_feat.npy, text_feat.npy  (I, dim) float32 feature rows
  missing_items_<ratio>.npy    {'v': items missing only the first modality,
                                't': items missing only the second, 'all': items missing both}
  dataset.yaml                 their dataset config (copy it to src/configs/dataset/<name>.yaml)
Nothing here goes into the repository: the output holds the dataset's own data.
"""

import copy
import os
import sys

from absl import app
from absl import flags
from ml_collections import config_flags
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from milk_jax import data as data_lib  # pylint: disable=g-import-not-at-top
from milk_jax.data.errors import DataError  # pylint: disable=g-import-not-at-top
from milk_jax.errors import ConfigError  # pylint: disable=g-import-not-at-top

HEADER = 'userID\titemID\tx_label'


def labelled(dataset: data_lib.Dataset) -> np.ndarray:
  """(n, 3) int64 rows user, item, label (0 train, 1 val, 2 test)."""
  parts = []
  for label, pairs in enumerate((dataset.train_pairs, dataset.val_pairs, dataset.test_pairs)):
    pairs = np.asarray(pairs, np.int64).reshape(-1, 2)
    parts.append(np.concatenate([pairs, np.full((len(pairs), 1), label, np.int64)], axis=1))
  return np.concatenate(parts, axis=0)


def missing_mask(dataset: data_lib.Dataset) -> dict:
  """The authors' mask dict for a two-modality dataset."""
  if len(dataset.modality_names) != 2:
    raise DataError(f'{dataset.modality_names}: the two-modality layout needs exactly 2')
  available = np.asarray(dataset.availability, bool)
  first, second = available[:, 0], available[:, 1]
  items = np.arange(dataset.num_items, dtype=np.int64)
  return {'v': items[~first & second], 't': items[first & ~second],
          'all': items[~first & ~second]}


def write_layout(dataset: data_lib.Dataset, folder: str, ratio: str) -> None:
  name = os.path.basename(os.path.normpath(folder))
  os.makedirs(folder, exist_ok=True)
  table = labelled(dataset)
  new_items = np.union1d(dataset.val_items, dataset.test_items).astype(np.int64)
  if np.isin(table[table[:, 2] == 0, 1], new_items).any():
    raise DataError('training pairs hold a new item')
  for stem in (name, f'{name}_del'):
    np.savetxt(os.path.join(folder, f'{stem}.inter'), table, fmt='%d', delimiter='\t',
               header=HEADER, comments='')
  np.save(os.path.join(folder, 'new_items.npy'), new_items)
  np.save(os.path.join(folder, 'image_feat.npy'), np.asarray(dataset.features[0], np.float32))
  np.save(os.path.join(folder, 'text_feat.npy'), np.asarray(dataset.features[1], np.float32))
  np.save(os.path.join(folder, f'missing_items_{ratio}.npy'), missing_mask(dataset),
          allow_pickle=True)
  with open(os.path.join(folder, 'dataset.yaml'), 'w') as f:
    f.write('USER_ID_FIELD: userID\nITEM_ID_FIELD: itemID\nfilter_out_cod_start_users: True\n'
            f"inter_file_name: '{name}.inter'\nvision_feature_file: 'image_feat.npy'\n"
            "text_feature_file: 'text_feat.npy'\nuser_graph_dict_file: 'user_graph_dict.npy'\n"
            f"item_graph_dict_file: 'item_graph_dict.npy'\nfield_separator: \"\\t\"\n"
            f'missing_ratio: {ratio}\n')


def main(argv):
  del argv
  args = flags.FLAGS
  config = copy.deepcopy(args.config)
  with config.unlocked():
    config.seed, config.data.setting = args.seed, args.setting
  try:
    dataset = data_lib.load_dataset(config)
    write_layout(dataset, args.out, args.ratio)
  except (ConfigError, DataError) as error:
    sys.exit(f'error: {error}')
  mask = missing_mask(dataset)
  print(f'wrote {args.out}: {dataset.summary()}; mask sizes ' +
        ', '.join(f'{k} {len(v)}' for k, v in mask.items()) +
        f"; 'v' = {dataset.modality_names[0]}, 't' = {dataset.modality_names[1]}")


if __name__ == '__main__':
  config_flags.DEFINE_config_file('config', None, 'A dataset config.', lock_config=True)
  flags.DEFINE_string('out', None, "Output folder; its name is their --dataset.")
  flags.DEFINE_integer('seed', 0, 'Seed of the split and the masks.')
  flags.DEFINE_enum('setting', 'ftmt', ['ftft', 'ftmt', 'mtmt'], 'Missing setting.')
  flags.DEFINE_string('ratio', '0.5', "Their --missing_ratio, the mask file's name part.")
  flags.mark_flags_as_required(['config', 'out'])
  app.run(main)
