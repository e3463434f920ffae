"""milk_jax/data/ids.py: raw user and item ids mapped to dense indices, and back."""

import numpy as np
import pytest

from milk_jax import data
from milk_jax.data import DataError
from milk_jax.data import ids


def test_raw_string_ids_round_trip(tmp_path, tsv_config, write_raw_folder, catalogue):
  rows = [(user, item, 100 + n) for n, (user, item) in enumerate(
      (u, i) for u in catalogue.RAW_USERS for i in catalogue.RAW_ITEMS[::-1])]
  write_raw_folder(tmp_path, rows)
  dataset = data.load_dataset(tsv_config(tmp_path, ids='raw'))
  # Users are numbered in sorted order of their raw ids; items by their feature row.
  assert dataset.user_ids.tolist() == ['Bob', 'amy', 'user 7', 'zoe']
  assert dataset.item_ids.tolist() == catalogue.RAW_ITEMS
  assert dataset.num_users == 4 and dataset.num_items == catalogue.NUM_ITEMS
  pairs = np.concatenate([dataset.train_pairs, dataset.val_pairs, dataset.test_pairs])
  mapped = {(dataset.user_ids[u], dataset.item_ids[i]) for u, i in pairs.tolist()}
  assert mapped == {(u, i) for u, i, _ in rows} and len(pairs) == len(rows)
  assert (dataset.user_ids[2], dataset.item_ids[5]) == ('user 7', 'tt0038')


def test_dense_ids_are_their_own_raw_ids(tsv_folder, tsv_config, catalogue):
  dataset = data.load_dataset(tsv_config(tsv_folder))
  assert dataset.user_ids.tolist() == ['0', '1', '2', '3']
  assert dataset.item_ids.tolist() == [str(i) for i in range(catalogue.NUM_ITEMS)]


def test_sparse_integer_user_ids_with_raw_ids(tsv_folder, tsv_config, write_tsv, assert_data_error,
                                              catalogue):
  users = [5, 1000000000000, 70, 5]
  write_tsv(tsv_folder / 'interactions.tsv', 'user\titem',
            [(u, i) for u in users for i in range(catalogue.NUM_ITEMS)])
  assert_data_error(tsv_config(tsv_folder), 'user ids are sparse', '--config.data.ids=raw')
  # Without item_ids.txt, raw item ids must be the feature rows 0..rows-1.
  dataset = data.load_dataset(tsv_config(tsv_folder, ids='raw'))
  assert dataset.num_users == 3 and dataset.user_ids.tolist() == ['1000000000000', '5', '70']
  assert len(dataset.train_pairs) + len(dataset.val_pairs) + len(dataset.test_pairs) == 60


def test_id_map_text(tmp_path, tsv_config, write_raw_folder, catalogue):
  write_raw_folder(tmp_path, [(u, i, 0) for u in ('b', 'a') for i in catalogue.RAW_ITEMS])
  dataset = data.load_dataset(tsv_config(tmp_path, ids='raw'))
  assert ids.id_map_text(dataset.user_ids) == 'index\tid\n0\ta\n1\tb\n'
  items = ids.id_map_text(dataset.item_ids).splitlines()
  assert (items[:3] == ['index\tid', '0\ttt0003', '1\ttt0010']
          and len(items) == catalogue.NUM_ITEMS + 1)


# item_ids: of the catalogue's raw item ids, the content of item_ids.txt (None: no file).
@pytest.mark.parametrize('rows,item_ids,message', [
    ([('a', 'tt0003', 1), ('a', 'x-99', 2), ('b', 'x-98', 3)], lambda raw: raw,
     r"interactions\.tsv: 2 rows have an item id that is missing from .*item_ids\.txt "
     r"\(first: 'x-99' on data row 2\)"),
    ([('a', 'tt0003', 1)], lambda raw: raw[:3] + ['tt0010'] + raw[4:],
     r"item_ids\.txt: 1 item ids appear more than once \(first: 'tt0010' on lines 2 and 4\)"),
    ([('a', 'tt0003', 1)], lambda raw: raw[:-1],
     r'item_ids\.txt: 19 item ids but 20 feature rows in .*image_feat\.npy'),
    ([('a', 'tt0003', 1)], lambda raw: raw[:4] + [''] + raw[5:],
     r"item_ids\.txt: line 5: item id '' is empty"),
    ([('a', '3', 1), ('a', 'tt0003', 1)], lambda raw: None,
     r"interactions\.tsv: 1 rows have an item id that is not a feature row 0\.\.19 \(first: "
     r"'tt0003' on data row 2\); with config\.data\.ids=raw add .*item_ids\.txt"),
    ([('a', '3', 1), ('', '4', 1)], lambda raw: None,
     r'interactions\.tsv: empty user id on data row 2'),
    ([('a', '3', 1, 5)], lambda raw: None,
     r'interactions\.tsv: malformed row: data row 1 has 4 columns but the header has 3'),
])
def test_bad_raw_ids(tmp_path, rows, item_ids, message, tsv_config, write_raw_folder, catalogue):
  write_raw_folder(tmp_path, rows, item_ids(catalogue.RAW_ITEMS))
  with pytest.raises(DataError, match=message):
    data.load_dataset(tsv_config(tmp_path, ids='raw'))


def test_raw_ids_may_hold_any_character_but_tab_and_newline(tmp_path, tsv_config, write_raw_folder,
                                                            catalogue):
  items = [f'item\u2028{i}' if i % 2 else f'item\x1c{i}' for i in range(catalogue.NUM_ITEMS)]
  users = ['a\x0bb', 'c\u2028d', 'e\x85f']
  write_raw_folder(tmp_path, [(u, i, 0) for u in users for i in items], item_ids=items)
  (tmp_path / 'availability.tsv').write_text(f'item\timage\ttext\n{items[3]}\t0\t1\n',
                                             encoding='utf-8')
  dataset = data.load_dataset(tsv_config(tmp_path, ids='raw', setting='given',
                                         availability_file='availability.tsv'))
  assert dataset.user_ids.tolist() == sorted(users) and dataset.item_ids.tolist() == items
  assert np.flatnonzero(~dataset.availability[:, 0]).tolist() == [3]
