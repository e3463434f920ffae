"""milk_jax/data/layouts/mmrec.py: the `mmrec` layout (MMRec's .inter files)."""

import pytest

from milk_jax import data
from milk_jax.data import DataError
from milk_jax.data.layouts import interactions
from milk_jax.data.layouts import mmrec


def test_mmrec_reader_pools_all_rows(tmp_path, write_features, write_tsv, as_set):
  write_features(tmp_path, num_items=5)
  write_tsv(tmp_path / 'baby.inter', 'userID\titemID\trating\ttimestamp\tx_label',
            [(0, 1, 5.0, 11, 0), (1, 2, 4.0, 12, 1), (3, 4, 3.0, 13, 2), (3, 4, 1.0, 14, 0)])
  for name in (None, 'baby'):
    raw = mmrec.read_mmrec(tmp_path, ('image', 'text'), name)
    assert as_set(raw.pairs) == {(0, 1), (1, 2), (3, 4)} and raw.num_users == 4


def test_mmrec_inter_file_errors(tmp_path, data_config, write_features, write_tsv,
                                 assert_data_error):
  write_features(tmp_path, num_items=5)
  config = data_config(format='mmrec', path=str(tmp_path))
  assert_data_error(config, str(tmp_path), '*.inter', 'none')
  write_tsv(tmp_path / 'a.inter', 'user\titemID', [(0, 1)])
  assert_data_error(config, 'a.inter', 'userID')
  write_tsv(tmp_path / 'b.inter', 'userID\titemID', [(0, 1)])
  assert_data_error(config, 'a.inter', 'b.inter')
  config.data.inter_name = 'c'
  assert_data_error(config, str(tmp_path / 'c.inter'))


def test_raw_ids_in_the_mmrec_layout(tmp_path, write_features, write_tsv, as_set):
  write_features(tmp_path, num_items=3)
  (tmp_path / 'item_ids.txt').write_text('B0001\nB0002\nB0003\n')
  write_tsv(tmp_path / 'baby.inter', 'userID\titemID\trating\ttimestamp\tx_label',
            [('A9', 'B0003', 5, 11, 0), ('A1', 'B0001', 4, 12, 1), ('A9', 'B0001', 3, 13, 2)])
  options = interactions.TableOptions(ids='raw')
  raw = mmrec.read_mmrec(tmp_path, ('image', 'text'), None, options)
  assert raw.user_ids.tolist() == ['A1', 'A9'] and raw.num_users == 2
  assert as_set(raw.pairs) == {(1, 2), (0, 0), (1, 0)}


def test_time_split_needs_the_mmrec_timestamp_column(tmp_path, data_config, write_features,
                                                     write_tsv):
  write_features(tmp_path, num_items=5)
  write_tsv(tmp_path / 'a.inter', 'userID\titemID\trating', [(0, 1, 5.0)])
  with pytest.raises(DataError, match=r'a\.inter: config\.data\.split=time needs timestamps'):
    data.load_dataset(data_config(format='mmrec', path=str(tmp_path), split='time'))
