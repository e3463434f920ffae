"""Write a milk-jax split in the file layout of GAR's original TF code, to run it beside ours.

  .venv/bin/python scripts/make_gar_layout.py --config=configs/ml100k.py --setting=ftmt --seed=0 \
      --backbone_run=RUNS/ftmt/_backbone/seed_0 --out=runs/gar_original/ml100k

The split, the features (imputed, normalised, the modalities concatenated, as
`methods.content` gives GAR) and the BPR-MF vectors are those our GAR reads for
that seed and setting; `--backbone_run` is a finished backbone run of the same
config (an experiment's `<runs_dir>/<setting>/_backbone/seed_<seed>`). Files in
`--out`, named for the original's `--dataset` argument (the folder's name):
  <name>_item_content.npy   (I, F) content rows (the original prepends a zero row)
  ncf.npy                   [U user rows; one zero row; I item rows]
  warm_map.csv              `uid,iid` training pairs
  convert_dict.pkl          the id arrays and neighbour lists the original reads
Item ids are shifted by one (our item i is the original's item i + 1): the
original's content gets a zero row in front, and item 0 becomes a dummy that
every user's exclusion list holds, so that it is never ranked. The original's
validation then ranks exactly our new items (validation and test), warm ones
masked, as milk-jax's evaluation does. Its warm and hybrid test sets are
stand-ins (the first 50 warm users and their training items), only there
because its main.py reads them; their numbers mean nothing. Nothing here
goes into the repository: the output holds the dataset's own data.
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
from milk_jax import run as run_lib  # pylint: disable=g-import-not-at-top
from milk_jax.data.errors import DataError  # pylint: disable=g-import-not-at-top
from milk_jax.errors import ConfigError  # pylint: disable=g-import-not-at-top
from milk_jax.errors import RunFolderError  # pylint: disable=g-import-not-at-top

SHIFT = 1  # Our item i is the original's item i + 1; its item 0 is a dummy.
STAND_IN_USERS = 50  # Users of the stand-in warm and hybrid test sets.


def neighbours(pairs: np.ndarray, num_users: int, extra: tuple[int, ...] = ()) -> np.ndarray:
  """(U,) object array: each user's shifted items of `pairs`, sorted, after `extra`."""
  by_user = [[] for _ in range(num_users)]
  for user, item in pairs.tolist():
    by_user[user].append(item + SHIFT)
  lists = np.empty(num_users, dtype=object)
  for user, items in enumerate(by_user):
    lists[user] = np.asarray(list(extra) + sorted(items), np.int64)
  return lists


def gar_layout(dataset: data_lib.Dataset, content: np.ndarray, cf_users: np.ndarray,
               cf_items: np.ndarray) -> dict:
  """{'content', 'embeddings', 'train_map', 'convert_dict'}: the original's inputs."""
  num_users, dim = cf_users.shape
  train = np.asarray(dataset.train_pairs, np.int64)
  warm_users = np.unique(train[:, 0])
  stand_in_users = warm_users[:STAND_IN_USERS]
  train_lists = neighbours(train, num_users)
  hybrid = neighbours(np.concatenate([train, dataset.test_pairs]), num_users)
  convert = {
      'user_array': np.arange(num_users, dtype=np.int64),
      'item_array': np.arange(dataset.num_items + SHIFT, dtype=np.int64),
      'warm_user': warm_users,
      'warm_item': np.asarray(dataset.warm_items, np.int64) + SHIFT,
      'cold_item': np.union1d(dataset.val_items, dataset.test_items).astype(np.int64) + SHIFT,
      'emb_user_nb': train_lists,
      'pos_user_nb': neighbours(train, num_users, extra=(0,)),  # The dummy, never ranked.
      'cold_val_user': np.unique(dataset.val_pairs[:, 0]).astype(np.int64),
      'cold_val_user_nb': neighbours(dataset.val_pairs, num_users),
      'cold_test_user': np.unique(dataset.test_pairs[:, 0]).astype(np.int64),
      'cold_test_user_nb': neighbours(dataset.test_pairs, num_users),
      'warm_test_user': stand_in_users, 'warm_test_user_nb': train_lists,
      'hybrid_test_user': stand_in_users,
      'hybrid_test_user_nb': np.array([np.unique(items) for items in hybrid], dtype=object),
  }
  embeddings = np.concatenate([cf_users, np.zeros((1, dim), np.float32), cf_items])
  return {'content': np.asarray(content, np.float32),
          'embeddings': embeddings.astype(np.float32),
          'train_map': np.stack([train[:, 0], train[:, 1] + SHIFT], axis=1),
          'convert_dict': convert}


def write_layout(folder: str, layout: dict) -> None:
  name = os.path.basename(os.path.normpath(folder))
  os.makedirs(folder, exist_ok=True)
  np.save(os.path.join(folder, f'{name}_item_content.npy'), layout['content'])
  np.save(os.path.join(folder, 'ncf.npy'), layout['embeddings'])
  np.savetxt(os.path.join(folder, 'warm_map.csv'), layout['train_map'], fmt='%d', delimiter=',',
             header='uid,iid', comments='')
  with open(os.path.join(folder, 'convert_dict.pkl'), 'wb') as f:
    pickle.dump(layout['convert_dict'], f)


def main(argv):
  del argv
  args = flags.FLAGS
  config = copy.deepcopy(args.config)
  with config.unlocked():
    config.seed, config.data.setting, config.method = args.seed, args.setting, 'gar'
    config.backbone.run_dir = os.path.abspath(args.backbone_run)
  try:
    dataset = data_lib.load_dataset(config)
    vectors = run_lib.cf_vectors(config, args.out, dataset, train_if_missing=False)
  except (ConfigError, DataError, RunFolderError) as error:
    sys.exit(f'error: {error}')
  # GAR's content: the modalities concatenated, as milk_jax.methods.content gives it.
  content = np.concatenate([np.asarray(f, np.float32) for f in dataset.features], axis=1)
  write_layout(args.out, gar_layout(dataset, content, vectors['cf_users'], vectors['cf_items']))
  print(f'wrote {args.out}: {dataset.summary()}')


if __name__ == '__main__':
  # Flags are defined here, not on import, so that the tests can import the functions.
  config_flags.DEFINE_config_file('config', None, 'A dataset config.', lock_config=True)
  flags.DEFINE_string('out', None, "Output folder; its name is the original's --dataset.")
  flags.DEFINE_integer('seed', 0, 'Seed of the split and the masks.')
  flags.DEFINE_enum('setting', 'ftmt', ['ftft', 'ftmt', 'mtmt'], 'Missing setting.')
  flags.DEFINE_string('backbone_run', None, 'A finished BPR-MF backbone run folder.')
  flags.mark_flags_as_required(['config', 'out', 'backbone_run'])
  app.run(main)
