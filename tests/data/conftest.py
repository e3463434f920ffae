"""What the tests of milk_jax/data share: tiny configs, folders of each layout, checks.

Plain functions are imported by the test files (`from tests.data.conftest import
small_config`); `tsv_folder` is a fixture, requested by argument.
"""

from pathlib import Path

import numpy as np
import pytest

from configs import base
from milk_jax import data

ML100K = Path(__file__).resolve().parents[2].parent / 'shared' / 'data' / 'ml100k-mm'

# A tiny catalogue: every user has every item, so any split has val and test pairs.
NUM_USERS, NUM_ITEMS = 4, 20
DIMS = {'image': 3, 'text': 2}


def small_config(**data_fields):
  config = base.get_config()
  syn = config.data.synthetic
  syn.num_users, syn.num_items, syn.feature_dims, syn.latent_dim = 60, 50, (6, 4), 4
  syn.interactions_per_user = 8
  for name, value in data_fields.items():
    config.data[name] = value
  return config


def write_features(folder: Path, num_items: int = NUM_ITEMS, dims=None, seed: int = 0):
  rng = np.random.default_rng(seed)
  features = {}
  for name, dim in (dims or DIMS).items():
    features[name] = rng.standard_normal((num_items, dim)).astype(np.float32)
    np.save(folder / f'{name}_feat.npy', features[name])
  return features


def write_tsv(path: Path, header: str, rows) -> None:
  lines = [header] + ['\t'.join(str(v) for v in row) for row in rows]
  path.write_text('\n'.join(lines) + '\n')


def dense_rows(num_users: int = NUM_USERS, num_items: int = NUM_ITEMS):
  return [(u, i, 1000 + u) for u in range(num_users) for i in range(num_items)]


@pytest.fixture
def tsv_folder(tmp_path):
  write_features(tmp_path)
  write_tsv(tmp_path / 'interactions.tsv', 'user\titem\ttimestamp', dense_rows())
  return tmp_path


def tsv_config(folder: Path, **data_fields):
  return small_config(format='interactions', path=str(folder), **data_fields)


def as_set(pairs: np.ndarray) -> set[tuple[int, int]]:
  return {tuple(p) for p in pairs.tolist()}


def new_items_of(dataset):
  return np.union1d(dataset.val_items, dataset.test_items)


def assert_data_error(config, *fragments):
  with pytest.raises(data.DataError) as info:
    data.load_dataset(config)
  for fragment in fragments:
    assert fragment in str(info.value), (fragment, str(info.value))


def write_milk(folder: Path, train='0 0 1 2\n1 3\n2\n', val='0 5\n1 6\n',
               test='1 7\n3 7\n', cold=(5, 6, 7, 8)):
  write_features(folder, num_items=10)
  (folder / 'train.txt').write_text(train)
  (folder / 'val.txt').write_text(val)
  (folder / 'test.txt').write_text(test)
  np.save(folder / 'cold_item_index.npy', np.array(cold, np.int64))


RAW_ITEMS = [f'tt{7 * i + 3:04d}' for i in range(NUM_ITEMS)]  # Feature row i is RAW_ITEMS[i].
RAW_USERS = ['zoe', 'amy', 'user 7', 'Bob']


def write_raw_folder(folder: Path, rows, item_ids=RAW_ITEMS, header='user\titem\ttimestamp'):
  write_features(folder, num_items=len(RAW_ITEMS))
  write_tsv(folder / 'interactions.tsv', header, rows)
  if item_ids is not None:
    (folder / 'item_ids.txt').write_text(''.join(f'{i}\n' for i in item_ids))


def write_declared_folder(folder: Path, num_items: int = 200, seed: int = 0) -> np.ndarray:
  """Three modalities, every user has every item, a random declared mask; returns the mask."""
  write_features(folder, num_items=num_items, dims={'image': 3, 'audio': 2, 'text': 2})
  write_tsv(folder / 'interactions.tsv', 'user\titem', [(u, i) for u in range(3)
                                                         for i in range(num_items)])
  rng = np.random.default_rng(seed)
  declared = rng.random((num_items, 3)) < 0.6
  declared[~declared.any(axis=1), 0] = True
  np.save(folder / 'availability.npy', declared)
  return declared
