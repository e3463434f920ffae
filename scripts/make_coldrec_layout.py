"""Write a milk-jax split in ColdRec's item cold-start layout, to run ColdRec's code beside ours.

  .venv/bin/python scripts/make_coldrec_layout.py --config=configs/ml100k.py --setting=ftft \
      --seed=5 --out=/path/to/ColdRec/data/ml100k_s5

The split and the content are those our methods read for that seed and
setting: the features imputed and normalised as configured, the modalities
concatenated (what `milk_jax.methods.content` gives MTPR and GAR). ColdRec
reads one content matrix per dataset, indexed by our item ids. Files, named
for ColdRec's `--dataset` argument (the folder's name):
  <name>_item_content.npy             (I, F) content rows
  cold_item/warm_train.csv            `user,item`: our training pairs
  cold_item/cold_item_{val,test}.csv  our validation and test pairs (new items)
  cold_item/warm_{val,test}.csv       empty (header only): our splits hold no warm
                                      interactions out
  cold_item/overall_{val,test}.csv    the cold pairs again: ColdRec's 'all' setting needs a
                                      file, and with no warm held-out pairs this is all there is
  cold_item/info_dict.pkl             user_num, item_num, warm/cold users and items
ColdRec's 'cold' evaluation ranks every item that is not warm, i.e. all our
new items (validation and test), as milk-jax's `eval.candidates='all_new'`.
Nothing here goes into the repository: the output holds the dataset's own data.
"""

import copy
import os
import pickle
import sys

from absl import app
from absl import flags
from ml_collections import config_flags
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from milk_jax import data as data_lib  # pylint: disable=g-import-not-at-top
from milk_jax.data.errors import DataError  # pylint: disable=g-import-not-at-top
from milk_jax.errors import ConfigError  # pylint: disable=g-import-not-at-top

PAIR_FILES = ('warm_train', 'warm_val', 'warm_test', 'cold_item_val', 'cold_item_test',
              'overall_val', 'overall_test')


def coldrec_layout(dataset: data_lib.Dataset, content: np.ndarray) -> dict:
  """{'content', 'pairs': {file stem: (n, 2) int64}, 'info'}: ColdRec's inputs for `dataset`.

  Warm items are those with training pairs and cold items those with held-out
  pairs, as ColdRec's own split writes them: ColdRec registers an item only
  when a file mentions it.
  """
  train = np.asarray(dataset.train_pairs, np.int64)
  val = np.asarray(dataset.val_pairs, np.int64)
  test = np.asarray(dataset.test_pairs, np.int64)
  empty = np.zeros((0, 2), np.int64)
  pairs = {'warm_train': train, 'warm_val': empty, 'warm_test': empty,
           'cold_item_val': val, 'cold_item_test': test, 'overall_val': val, 'overall_test': test}
  info = {'user_num': int(dataset.num_users), 'item_num': int(dataset.num_items),
          'warm_user': np.unique(train[:, 0]), 'warm_item': np.unique(train[:, 1]),
          'cold_user': np.zeros((0,), np.int64),
          'cold_item': np.unique(np.concatenate([val[:, 1], test[:, 1]]))}
  return {'content': np.asarray(content, np.float32), 'pairs': pairs, 'info': info}


def write_layout(folder: str, layout: dict) -> None:
  name = os.path.basename(os.path.normpath(folder))
  split_dir = os.path.join(folder, 'cold_item')
  os.makedirs(split_dir, exist_ok=True)
  np.save(os.path.join(folder, f'{name}_item_content.npy'), layout['content'])
  for stem, pairs in layout['pairs'].items():
    np.savetxt(os.path.join(split_dir, f'{stem}.csv'), pairs, fmt='%d', delimiter=',',
               header='user,item', comments='')
  with open(os.path.join(split_dir, 'info_dict.pkl'), 'wb') as f:
    pickle.dump(layout['info'], f)


def main(argv):
  del argv
  args = flags.FLAGS
  config = copy.deepcopy(args.config)
  with config.unlocked():
    config.seed, config.data.setting = args.seed, args.setting
  try:
    dataset = data_lib.load_dataset(config)
  except (ConfigError, DataError) as error:
    sys.exit(f'error: {error}')
  # MTPR's and GAR's content: the modalities concatenated, as milk_jax.methods.content gives it.
  content = np.concatenate([np.asarray(f, np.float32) for f in dataset.features], axis=1)
  write_layout(args.out, coldrec_layout(dataset, content))
  print(f'wrote {args.out}: {dataset.summary()}')


if __name__ == '__main__':
  # Flags are defined here, not on import, so that the tests can import the functions.
  config_flags.DEFINE_config_file('config', None, 'A dataset config.', lock_config=True)
  flags.DEFINE_string('out', None, "Output folder; its name is ColdRec's --dataset.")
  flags.DEFINE_integer('seed', 0, 'Seed of the split and the masks.')
  flags.DEFINE_enum('setting', 'ftft', ['ftft', 'ftmt', 'mtmt'], 'Missing setting.')
  flags.mark_flags_as_required(['config', 'out'])
  app.run(main)
