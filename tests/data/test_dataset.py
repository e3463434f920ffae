"""milk_jax/data/dataset.py: load_dataset end to end, the config checks, the Dataset container."""

import numpy as np
import pytest

from milk_jax import data
from milk_jax.data import DataError


def test_same_seed_same_dataset_other_seed_differs(data_config):
  config = data_config(setting='mtmt')
  first, again = data.load_dataset(config), data.load_dataset(config)
  for name in ('train_pairs', 'val_pairs', 'test_pairs', 'val_items', 'availability'):
    np.testing.assert_array_equal(getattr(first, name), getattr(again, name))
  for a, b in zip(first.features, again.features):
    np.testing.assert_array_equal(a, b)
  config.seed = 1
  other = data.load_dataset(config)
  assert not np.array_equal(first.val_items, other.val_items)
  assert not np.array_equal(first.availability, other.availability)


def test_summary_counts_users_and_items_without_interactions(tmp_path, data_config, write_milk):
  # Users 2 (listed without items) and 3 (test only) never train; items 4, 8
  # and 9 appear in no file.
  write_milk(tmp_path)
  dataset = data.load_dataset(data_config(format='milk', path=str(tmp_path), setting='ftft'))
  assert dataset.inactive_counts() == (2, 3)
  summary = dataset.summary()
  assert 'users without training interactions: 2; items without any interaction: 3' in summary
  assert '\n' not in summary


def test_ml100k_loads(data_config, new_items_of, ml100k):
  config = data_config(format='interactions', path=str(ml100k), modalities=('genre', 'text'))
  dataset = data.load_dataset(config)
  assert (dataset.num_users, dataset.num_items) == (943, 1682)
  assert len(new_items_of(dataset)) == 336
  assert len(dataset.val_items) == len(dataset.test_items) == 168
  assert [x.shape[1] for x in dataset.features] == [19, 384]
  assert len(dataset.train_pairs) + len(dataset.val_pairs) + len(dataset.test_pairs) == 99999


@pytest.mark.parametrize('field,value', [('format', 'csv'), ('setting', 'mtft'),
                                         ('imputation', 'median'), ('negatives', 'new')])
def test_unknown_choices(field, value, data_config, assert_data_error):
  assert_data_error(data_config(**{field: value}), f'config.data.{field}', value)


@pytest.mark.parametrize('field', ['new_item_fraction', 'val_fraction', 'test_missing_rate',
                                   'train_missing_rate'])
def test_fraction_outside_unit_interval(field, data_config, assert_data_error):
  assert_data_error(data_config(**{field: 1.5}), f'config.data.{field}')


@pytest.mark.parametrize('fractions', [(0.5, 0.6), (0.2, 0.3, 0.3, 0.2), (1.2, -0.2)])
def test_bad_group_fractions(fractions, data_config, assert_data_error):
  assert_data_error(data_config(setting='groups', group_fractions=fractions),
                    'config.data.group_fractions')


@pytest.mark.parametrize('modalities', [('image',), ('image', 'image')])
def test_fewer_than_two_modalities(modalities, data_config, assert_data_error):
  config = data_config(modalities=modalities)
  config.data.synthetic.feature_dims = (6,)
  assert_data_error(config, 'config.data.modalities')


def test_synthetic_feature_dims_mismatch(data_config, assert_data_error):
  config = data_config()
  config.data.synthetic.feature_dims = (6, 4, 2)
  assert_data_error(config, 'config.data.synthetic.feature_dims')


def test_path_none_and_missing_folder(tmp_path, data_config, tsv_config, assert_data_error):
  assert_data_error(data_config(format='interactions'), 'config.data.path')
  assert_data_error(tsv_config(tmp_path / 'nowhere'), str(tmp_path / 'nowhere'))


def test_empty_split(tsv_folder, tsv_config, assert_data_error):
  assert_data_error(tsv_config(tsv_folder, new_item_fraction=0.0), str(tsv_folder),
                    'empty split')
  assert_data_error(tsv_config(tsv_folder, val_fraction=0.0), 'empty split', '0 val')


@pytest.mark.parametrize('field,value,message', [
    ('ids', 'raw', r"config\.data\.ids='raw': the 'synthetic' format has no raw ids"),
    ('min_rating', 4.0, r"config\.data\.min_rating=4\.0: the 'synthetic' format has no ratings"),
    ('split', 'time', r"config\.data\.split='time': the 'synthetic' format has no timestamps"),
    ('min_rating', float('nan'), r'config\.data\.min_rating=nan: must be a finite number'),
])
def test_table_options_need_a_table_layout(field, value, message, data_config):
  with pytest.raises(DataError, match=message):
    data.load_dataset(data_config(**{field: value}))


def test_time_split_refused_for_the_milk_layout(tmp_path, data_config, write_milk):
  write_milk(tmp_path)
  with pytest.raises(DataError, match=r"config\.data\.split='time': the 'milk' format has no "
                     r'timestamps \(its split is given by its files\)'):
    data.load_dataset(data_config(format='milk', path=str(tmp_path), split='time'))


@pytest.mark.parametrize('field,value', [('missing_rows', 'zero'), ('availability_file', '')])
def test_bad_declared_missingness_config(field, value, data_config, assert_data_error):
  assert_data_error(data_config(**{field: value}), f'config.data.{field}')
