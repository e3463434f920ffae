"""milk_jax/data/layouts/milk.py: the authors' layout and their missing files."""

from pathlib import Path

import numpy as np
import pytest

from milk_jax import data
from milk_jax.data import DataError


def test_milk_layout_given_split(tmp_path, data_config, write_milk, as_set):
  write_milk(tmp_path)
  dataset = data.load_dataset(data_config(format='milk', path=str(tmp_path), setting='ftft'))
  assert as_set(dataset.train_pairs) == {(0, 0), (0, 1), (0, 2), (1, 3)}
  assert as_set(dataset.val_pairs) == {(0, 5), (1, 6)}
  assert as_set(dataset.test_pairs) == {(1, 7), (3, 7)}
  np.testing.assert_array_equal(dataset.warm_items, [0, 1, 2, 3, 4, 9])
  np.testing.assert_array_equal(dataset.val_items, [5, 6])
  np.testing.assert_array_equal(dataset.test_items, [7, 8])  # 8: cold, in neither file.
  assert dataset.num_users == 4 and dataset.num_items == 10


def test_huge_user_id_refused_in_milk_layout(tmp_path, data_config, write_milk):
  write_milk(tmp_path, test='1 7\n1000000000000 7\n')
  with pytest.raises(DataError, match=r'test\.txt: user ids are sparse: max id 1000000000000 '
                     r'but 4 distinct ids'):
    data.load_dataset(data_config(format='milk', path=str(tmp_path)))


@pytest.mark.parametrize('files,problem', [
    ({'val': '0 2\n'}, 'val.txt'),
    ({'train': '0 0 5\n'}, 'train.txt'),
    ({'test': '1 6\n'}, 'share'),
    ({'cold': (5, 6, 12)}, 'cold_item_index.npy'),
    ({'train': '0 x\n'}, 'train.txt'),
])
def test_bad_milk_layout(tmp_path, files, problem, data_config, write_milk, assert_data_error):
  write_milk(tmp_path, **files)
  assert_data_error(data_config(format='milk', path=str(tmp_path)), problem)


# Which items miss what in the authors' files below: cold 5 no image, cold 7 no text;
# under MTMT also warm 1 no image, warm 3 no text.
AUTHORS_MISSING = {'ftmt': {'image': [5], 'text': [7]},
                   'mtmt': {'image': [5, 1], 'text': [7, 3]}}


def write_authors_files(folder: Path, missing_by_setting=AUTHORS_MISSING,
                        cold_missing=(5, 7), warm_missing=(1, 3)) -> None:
  """The authors' `_missing_test` / `_missing_all` files: missing rows become the mean row."""
  suffixes = {'ftmt': 'missing_test', 'mtmt': 'missing_all'}
  for setting, by_modality in missing_by_setting.items():
    for name, rows in by_modality.items():
      x = np.load(folder / f'{name}_feat.npy')
      x[rows] = x.mean(axis=0)
      np.save(folder / f'{name}_feat_{suffixes[setting]}.npy', x)
  np.save(folder / 'cold_missing_item_index.npy', np.array(cold_missing, np.int64))
  np.save(folder / 'warm_missing_item_index.npy', np.array(warm_missing, np.int64))


def authors_mask(setting: str) -> np.ndarray:
  mask = np.ones((10, 2), bool)
  for m, name in enumerate(('image', 'text')):
    mask[AUTHORS_MISSING[setting][name], m] = False
  return mask


@pytest.mark.parametrize('setting', ['ftmt', 'mtmt'])
def test_authors_missing_files_give_the_mask(tmp_path, setting, data_config, write_milk):
  write_milk(tmp_path)
  write_authors_files(tmp_path)
  config = data_config(format='milk', path=str(tmp_path), setting=setting,
                       test_missing_rate=0.0, train_missing_rate=1.0)
  np.testing.assert_array_equal(data.load_dataset(config).availability, authors_mask(setting))
  config.data.authors_missing_files = False  # Simulated instead: none missing at rate 0 in ftmt.
  simulated = data.load_dataset(config).availability
  assert simulated[5:9].all() and simulated[:5].all() == (setting == 'ftmt')
  config.data.authors_missing_files = True
  config.data.setting = 'ftft'  # The files describe ftmt and mtmt only.
  assert data.load_dataset(config).availability.all()


@pytest.mark.parametrize('change,problem', [
    ({'cold_missing': (5, 6)}, 'cold_missing_item_index.npy: disagrees with '
     'image_feat_missing_test.npy, text_feat_missing_test.npy: lists 1 items the files do not '
     'mark (first: 6); omits 1 items they mark (first: 7)'),
    ({'missing_by_setting': {'ftmt': {'image': [5, 2], 'text': [7]}}},
     'image_feat_missing_test.npy: changes the rows of 1 warm items (first: 2)'),
    ({'missing_by_setting': {'ftmt': {'image': [5, 7], 'text': [7]}}, 'cold_missing': (5, 7)},
     'text_feat_missing_test.npy: 1 items have no modality at all (first: 7)'),
    ({'missing_by_setting': {'ftmt': {'image': [5]}}},
     'text_feat_missing_test.npy: missing, while the other modalities'),
])
def test_inconsistent_authors_files_refused(tmp_path, change, problem, data_config, write_milk,
                                            assert_data_error):
  write_milk(tmp_path)
  write_authors_files(tmp_path, **change)
  assert_data_error(data_config(format='milk', path=str(tmp_path), setting='ftmt'), problem)


def test_authors_files_of_the_wrong_shape_or_warm_index_refused(tmp_path, data_config, write_milk,
                                                                assert_data_error):
  write_milk(tmp_path)
  write_authors_files(tmp_path, warm_missing=(1,))
  config = data_config(format='milk', path=str(tmp_path), setting='mtmt')
  assert_data_error(config, 'warm_missing_item_index.npy: disagrees with', 'omits 1 items they '
                    'mark (first: 3)')
  config.data.setting = 'ftmt'  # The warm index describes _missing_all only.
  np.testing.assert_array_equal(data.load_dataset(config).availability, authors_mask('ftmt'))
  np.save(tmp_path / 'text_feat_missing_test.npy', np.zeros((9, 2), np.float32))
  assert_data_error(config, 'text_feat_missing_test.npy: shape (9, 2) differs from',
                    'text_feat.npy: (10, 2)')
