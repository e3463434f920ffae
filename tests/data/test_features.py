"""milk_jax/data/features.py: feature files, marker rows, declared availability."""

from pathlib import Path

import numpy as np
import pytest

from milk_jax import data
from milk_jax.data import DataError
from milk_jax.data import features

NUM_ITEMS = 20  # The items of tsv_folder (conftest.py's catalogue); the messages below say 20.


@pytest.mark.parametrize('array,problem', [
    (np.zeros((NUM_ITEMS, 2, 2), np.float32), '2-D'),
    (np.zeros(NUM_ITEMS, np.float32), '2-D'),
    (np.array([['a', 'b']] * NUM_ITEMS), 'numeric'),
    (np.array([[object()]] * NUM_ITEMS, dtype=object), 'numeric'),
    (np.zeros((NUM_ITEMS - 1, 2), np.float32), 'rows'),
])
def test_bad_feature_file(tsv_folder, array, problem, tsv_config, assert_data_error):
  np.save(tsv_folder / 'text_feat.npy', array, allow_pickle=True)
  assert_data_error(tsv_config(tsv_folder), 'text_feat.npy', problem)


def test_nan_in_features(tsv_folder, tsv_config, assert_data_error):
  image = np.load(tsv_folder / 'image_feat.npy')
  image[[3, 7, 7], [0, 1, 2]] = [np.nan, np.inf, np.nan]
  np.save(tsv_folder / 'image_feat.npy', image)
  assert_data_error(tsv_config(tsv_folder), 'image_feat.npy', 'NaN/inf in 2 rows (first: 3)')


def test_float32_overflow_refused(tsv_folder, tsv_config):
  image = np.load(tsv_folder / 'image_feat.npy').astype(np.float64)
  image[6, 1] = 1e200
  np.save(tsv_folder / 'image_feat.npy', image)
  with pytest.raises(DataError, match=r'image_feat\.npy: values overflow float32 \(largest '
                     r'\|value\| 1e\+200 > 3\.4e\+38\) in 1 rows \(first: 6\)'):
    data.load_dataset(tsv_config(tsv_folder))


def test_float32_underflow_refused(tsv_folder, tsv_config):
  image = np.load(tsv_folder / 'image_feat.npy').astype(np.float64)
  image[2] = 1e-60
  np.save(tsv_folder / 'image_feat.npy', image)
  with pytest.raises(DataError, match=r'image_feat\.npy: values underflow float32 .* in 1 rows '
                     r'\(first: 2\)'):
    data.load_dataset(tsv_config(tsv_folder))


def test_all_zero_feature_row_refused(tsv_folder, tsv_config):
  text = np.load(tsv_folder / 'text_feat.npy')
  text[[9, 4]] = 0.0
  np.save(tsv_folder / 'text_feat.npy', text)
  with pytest.raises(DataError, match=r'text_feat\.npy: only zeros in 2 rows \(first: 4\); '
                     r'an all-zero row is not a valid feature vector'):
    data.load_dataset(tsv_config(tsv_folder))


def test_zero_width_feature_file_refused(tsv_folder, tsv_config):
  np.save(tsv_folder / 'text_feat.npy', np.zeros((NUM_ITEMS, 0), np.float32))
  with pytest.raises(DataError, match=r'text_feat\.npy: has no feature columns \(shape '
                     r'\(20, 0\)\)'):
    data.load_dataset(tsv_config(tsv_folder))


def test_missing_rows_nan_marks_missing_and_refuses_partly_nan_rows(tsv_folder, tsv_config,
                                                                    assert_data_error):
  image = np.load(tsv_folder / 'image_feat.npy')
  text = np.load(tsv_folder / 'text_feat.npy')
  image[3], text[[5, 6]] = np.nan, np.nan
  np.save(tsv_folder / 'image_feat.npy', image)
  np.save(tsv_folder / 'text_feat.npy', text)
  assert_data_error(tsv_config(tsv_folder, setting='given'), 'image_feat.npy',
                    'contains NaN/inf in 1 rows (first: 3)')
  dataset = data.load_dataset(tsv_config(tsv_folder, setting='given', missing_rows='nan'))
  expected = np.ones((NUM_ITEMS, 2), bool)
  expected[3, 0] = expected[[5, 6], 1] = False
  np.testing.assert_array_equal(dataset.availability, expected)
  for x in dataset.features:
    assert np.isfinite(x).all()
  text[8, 0] = np.nan  # Partly NaN (text has 2 columns): still bad input.
  np.save(tsv_folder / 'text_feat.npy', text)
  assert_data_error(tsv_config(tsv_folder, setting='given', missing_rows='nan'),
                    'text_feat.npy', 'contains NaN/inf in 1 rows (first: 8)', 'entirely NaN')


def test_missing_rows_nan_or_zero_reads_all_zero_rows_as_missing(tsv_folder, tsv_config,
                                                                 assert_data_error):
  text = np.load(tsv_folder / 'text_feat.npy')
  text[4], text[9] = 0.0, np.nan
  np.save(tsv_folder / 'text_feat.npy', text)
  assert_data_error(tsv_config(tsv_folder, missing_rows='nan'), 'text_feat.npy', 'only zeros')
  dataset = data.load_dataset(tsv_config(tsv_folder, setting='given',
                                         missing_rows='nan_or_zero'))
  np.testing.assert_array_equal(np.flatnonzero(~dataset.availability[:, 1]), [4, 9])
  assert dataset.availability[:, 0].all()


def test_item_without_any_modality_refused(tmp_path, tsv_config, write_declared_folder,
                                           assert_data_error):
  declared = write_declared_folder(tmp_path, num_items=40)
  declared[[7, 30]] = False
  np.save(tmp_path / 'availability.npy', declared)
  config = tsv_config(tmp_path, setting='given', modalities=('image', 'audio', 'text'))
  assert_data_error(config, 'availability.npy', '2 items have no modality at all (first: 7, 30)')
  # The row rule and the file together: item 7's last modality is a NaN row.
  declared[30] = True
  declared[7] = [False, False, True]
  np.save(tmp_path / 'availability.npy', declared)
  text = np.load(tmp_path / 'text_feat.npy')
  text[7] = np.nan
  np.save(tmp_path / 'text_feat.npy', text)
  config.data.missing_rows = 'nan'
  assert_data_error(config, 'availability.npy + ', 'text_feat.npy',
                    '1 items have no modality at all (first: 7)')


@pytest.mark.parametrize('array,problem', [
    (np.ones((NUM_ITEMS, 3), bool), 'expected shape (items, modalities) = (20, 2)'),
    (np.ones((NUM_ITEMS - 1, 2), bool), 'found (19, 2)'),
    (np.ones(NUM_ITEMS, bool), 'found (20,)'),
    (np.ones((NUM_ITEMS, 2), np.float32), 'bool or 0/1 integer'),
    (np.full((NUM_ITEMS, 2), 2), 'values other than 0/1 in 20 rows (first: 0)'),
])
def test_bad_availability_file(tsv_folder, array, problem, tsv_config, assert_data_error):
  np.save(tsv_folder / 'availability.npy', array)
  assert_data_error(tsv_config(tsv_folder, setting='given'), 'availability.npy', problem)


def write_availability_table(folder: Path, rows, header='item\ttext\timage'):
  (folder / 'availability.tsv').write_text(
      header + '\n' + ''.join('\t'.join(map(str, row)) + '\n' for row in rows))


def test_availability_table_by_raw_item_id(tmp_path, tsv_config, write_raw_folder, catalogue):
  write_raw_folder(tmp_path, [(u, i, 0) for u in catalogue.RAW_USERS for i in catalogue.RAW_ITEMS])
  # Columns in any order; unlisted items keep every modality.
  raw_items = catalogue.RAW_ITEMS
  write_availability_table(tmp_path, [(raw_items[3], 1, 0), (raw_items[8], 0, 1)])
  config = tsv_config(tmp_path, ids='raw', setting='given', availability_file='availability.tsv')
  expected = np.ones((NUM_ITEMS, 2), bool)  # Columns (image, text) as data.modalities.
  expected[3, 0] = False
  expected[8, 1] = False
  np.testing.assert_array_equal(data.load_dataset(config).availability, expected)


@pytest.mark.parametrize('rows, header, message', [
    ([('tt9999', 1, 0)], 'item\ttext\timage',
     "1 item ids are not items of the dataset (first: 'tt9999')"),
    ([('tt0003', 1, 0), ('tt0003', 0, 1)], 'item\ttext\timage', "item 'tt0003' is listed twice"),
    ([('tt0003', 1, 2)], 'item\ttext\timage', 'line 2: expected an item id and 0/1'),
    ([('tt0003', 1)], 'item\ttext', 'expected a header "item" then the modalities image, text'),
])
def test_bad_availability_table_is_refused(tmp_path, rows, header, message, tsv_config,
                                           write_raw_folder, assert_data_error, catalogue):
  write_raw_folder(tmp_path, [(u, i, 0) for u in catalogue.RAW_USERS for i in catalogue.RAW_ITEMS])
  write_availability_table(tmp_path, rows, header)
  config = tsv_config(tmp_path, ids='raw', setting='given', availability_file='availability.tsv')
  assert_data_error(config, 'availability.tsv', message)


def test_availability_table_ids_may_hold_any_character_but_tab_and_newline(tmp_path):
  path = tmp_path / 'availability.tsv'
  path.write_bytes('item\timage\ttext\r\nx\u2028y\t0\t1\r\np\x1cq\t1\t0\r\n'.encode('utf-8'))
  item_ids = np.array(['p\x1cq', 'z', 'x\u2028y'])
  available = features.read_availability_table(path, item_ids, ('image', 'text'))
  np.testing.assert_array_equal(available, [[True, False], [True, True], [False, True]])
