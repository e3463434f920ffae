"""What the tests of milk_jax/data share, requested as fixtures: tiny configs, folders of
each layout, checks.

`data_config` and `tsv_config` build configs of a catalogue smaller than make_config's
(the data tests train nothing); `tsv_folder` is a folder of the interactions layout over
`catalogue`; the write_* fixtures write each layout's files; `as_set`, `new_items_of` and
`assert_data_error` check what loading gives; `ml100k` is the real data set's folder.
Fixtures that tests call with arguments return the function.
"""

from pathlib import Path

import numpy as np
import pytest

from configs import base
from milk_jax import data


class TinyCatalogue:
  """The catalogue of `tsv_folder`: every user has every item, so any split has val and test
  pairs; and the raw ids of `write_raw_folder`."""

  NUM_USERS, NUM_ITEMS = 4, 20
  DIMS = {'image': 3, 'text': 2}
  RAW_ITEMS = [f'tt{7 * i + 3:04d}' for i in range(NUM_ITEMS)]  # Feature row i is RAW_ITEMS[i].
  RAW_USERS = ['zoe', 'amy', 'user 7', 'Bob']


@pytest.fixture(scope='session')
def catalogue():
  return TinyCatalogue


@pytest.fixture(scope='session')
def ml100k():
  """The folder of ../shared/data/ml100k-mm; the test is skipped where it is absent."""
  folder = Path(__file__).resolve().parents[2].parent / 'shared' / 'data' / 'ml100k-mm'
  if not folder.is_dir():
    pytest.skip(f'{folder} is absent')
  return folder


def _data_config(**data_fields):
  config = base.get_config()
  syn = config.data.synthetic
  syn.num_users, syn.num_items, syn.feature_dims, syn.latent_dim = 60, 50, (6, 4), 4
  syn.interactions_per_user = 8
  for name, value in data_fields.items():
    config.data[name] = value
  return config


@pytest.fixture(scope='session')
def data_config():
  """data_config(**data_fields) -> configs/base.py on a synthetic catalogue of 60 users and
  50 items, with `data_fields` set in config.data."""
  return _data_config


@pytest.fixture(scope='session')
def tsv_config():
  """tsv_config(folder, **data_fields) -> data_config of the interactions layout in `folder`."""
  def config(folder: Path, **data_fields):
    return _data_config(format='interactions', path=str(folder), **data_fields)
  return config


def _write_features(folder: Path, num_items: int = TinyCatalogue.NUM_ITEMS, dims=None,
                    seed: int = 0):
  rng = np.random.default_rng(seed)
  features = {}
  for name, dim in (dims or TinyCatalogue.DIMS).items():
    features[name] = rng.standard_normal((num_items, dim)).astype(np.float32)
    np.save(folder / f'{name}_feat.npy', features[name])
  return features


def _write_tsv(path: Path, header: str, rows) -> None:
  lines = [header] + ['\t'.join(str(v) for v in row) for row in rows]
  path.write_text('\n'.join(lines) + '\n')


def _dense_rows(num_users: int = TinyCatalogue.NUM_USERS,
                num_items: int = TinyCatalogue.NUM_ITEMS):
  return [(u, i, 1000 + u) for u in range(num_users) for i in range(num_items)]


@pytest.fixture(scope='session')
def write_features():
  """write_features(folder, num_items=20, dims=catalogue.DIMS, seed=0) -> {name: features}:
  random <name>_feat.npy files."""
  return _write_features


@pytest.fixture(scope='session')
def write_tsv():
  """write_tsv(path, header, rows): a tab-separated file."""
  return _write_tsv


@pytest.fixture(scope='session')
def dense_rows():
  """dense_rows(num_users=4, num_items=20) -> (user, item, timestamp) rows, every pair."""
  return _dense_rows


@pytest.fixture
def tsv_folder(tmp_path):
  _write_features(tmp_path)
  _write_tsv(tmp_path / 'interactions.tsv', 'user\titem\ttimestamp', _dense_rows())
  return tmp_path


@pytest.fixture(scope='session')
def write_milk():
  """write_milk(folder, train=..., val=..., test=..., cold=(5, 6, 7, 8)): the authors' layout
  over 10 items (warm 0-4 and 9, cold 5-8 by default)."""
  def write(folder: Path, train='0 0 1 2\n1 3\n2\n', val='0 5\n1 6\n', test='1 7\n3 7\n',
            cold=(5, 6, 7, 8)):
    _write_features(folder, num_items=10)
    (folder / 'train.txt').write_text(train)
    (folder / 'val.txt').write_text(val)
    (folder / 'test.txt').write_text(test)
    np.save(folder / 'cold_item_index.npy', np.array(cold, np.int64))
  return write


@pytest.fixture(scope='session')
def write_raw_folder():
  """write_raw_folder(folder, rows, item_ids=catalogue.RAW_ITEMS, header=...): the
  interactions layout in raw ids, with item_ids.txt (none if item_ids is None)."""
  def write(folder: Path, rows, item_ids=TinyCatalogue.RAW_ITEMS,
            header='user\titem\ttimestamp'):
    _write_features(folder, num_items=len(TinyCatalogue.RAW_ITEMS))
    _write_tsv(folder / 'interactions.tsv', header, rows)
    if item_ids is not None:
      (folder / 'item_ids.txt').write_text(''.join(f'{i}\n' for i in item_ids))
  return write


@pytest.fixture(scope='session')
def write_declared_folder():
  """write_declared_folder(folder, num_items=200, seed=0) -> the declared mask: three
  modalities, every user has every item, a random availability.npy."""
  def write(folder: Path, num_items: int = 200, seed: int = 0) -> np.ndarray:
    _write_features(folder, num_items=num_items, dims={'image': 3, 'audio': 2, 'text': 2})
    _write_tsv(folder / 'interactions.tsv', 'user\titem', [(u, i) for u in range(3)
                                                           for i in range(num_items)])
    rng = np.random.default_rng(seed)
    declared = rng.random((num_items, 3)) < 0.6
    declared[~declared.any(axis=1), 0] = True
    np.save(folder / 'availability.npy', declared)
    return declared
  return write


@pytest.fixture(scope='session')
def as_set():
  """as_set(pairs) -> the (n, 2) pairs as a set of tuples."""
  def pairs_set(pairs: np.ndarray) -> set[tuple[int, int]]:
    return {tuple(p) for p in pairs.tolist()}
  return pairs_set


@pytest.fixture(scope='session')
def new_items_of():
  """new_items_of(dataset) -> its validation and test items."""
  return lambda dataset: np.union1d(dataset.val_items, dataset.test_items)


@pytest.fixture(scope='session')
def assert_data_error():
  """assert_data_error(config, *fragments): loading fails with a DataError holding each."""
  def check(config, *fragments):
    with pytest.raises(data.DataError) as info:
      data.load_dataset(config)
    for fragment in fragments:
      assert fragment in str(info.value), (fragment, str(info.value))
  return check
