"""milk_jax/data/split.py: the new-item split, random, by first interaction time and by
popularity (DGMRec's)."""

import numpy as np

from milk_jax import data
from milk_jax.data import split


def test_new_item_split_fractions_and_partition():
  rng = np.random.default_rng(0)
  item_split = split.new_item_split(rng, 1682, 0.2, 0.5)
  assert len(item_split.val_items) == 168 and len(item_split.test_items) == 168
  assert len(item_split.warm_items) == 1682 - 336
  everything = np.concatenate(item_split)
  np.testing.assert_array_equal(np.sort(everything), np.arange(1682))
  for items in item_split:
    assert items.dtype == np.int32 and np.all(np.diff(items) > 0)


def test_load_partitions_items_and_interactions(tsv_folder, tsv_config, dense_rows, as_set,
                                                catalogue):
  dataset = data.load_dataset(tsv_config(tsv_folder))
  assert (len(dataset.warm_items), len(dataset.val_items), len(dataset.test_items)) == (16, 2, 2)
  items = np.concatenate([dataset.warm_items, dataset.val_items, dataset.test_items])
  np.testing.assert_array_equal(np.sort(items), np.arange(catalogue.NUM_ITEMS))
  assert np.isin(dataset.train_pairs[:, 1], dataset.warm_items).all()
  assert np.isin(dataset.val_pairs[:, 1], dataset.val_items).all()
  assert np.isin(dataset.test_pairs[:, 1], dataset.test_items).all()
  parts = [as_set(p) for p in (dataset.train_pairs, dataset.val_pairs, dataset.test_pairs)]
  assert sum(len(p) for p in parts) == catalogue.NUM_USERS * catalogue.NUM_ITEMS
  assert set().union(*parts) == {(u, i) for u, i, _ in dense_rows()}
  for pairs in (dataset.train_pairs, dataset.val_pairs, dataset.test_pairs):
    assert pairs.dtype == np.int32 and pairs.shape[1] == 2
  assert dataset.num_users == catalogue.NUM_USERS and dataset.num_items == catalogue.NUM_ITEMS


def test_time_item_split_hand_computed():
  # First interaction times of items 0..9; item 7 was never seen; 2 and 5 tie.
  first_time = np.array([50, 10, 70, 20, 90, 70, 30, np.nan, 80, 60], np.float64)
  item_split = split.time_item_split(first_time, 0.4, 0.5)
  # Oldest to newest: 7 (never seen), 1, 3, 6, 0, 9, 2, 5, 8, 4.
  np.testing.assert_array_equal(item_split.warm_items, [0, 1, 3, 6, 7, 9])
  np.testing.assert_array_equal(item_split.val_items, [2, 5])
  np.testing.assert_array_equal(item_split.test_items, [4, 8])
  for items in item_split:
    assert items.dtype == np.int32


def test_time_split_from_the_first_interaction(tsv_folder, tsv_config, write_tsv, as_set,
                                               catalogue):
  # Item i is first seen at time 1000 - i except items 3 and 11, first seen
  # at 2000 and 3000 by user 3 only; 7 is seen earliest but also latest.
  rows = [(u, i, 1000 - i + u) for u in range(3) for i in range(catalogue.NUM_ITEMS)
          if i not in (3, 11)]
  rows += [(3, 3, 2000), (3, 11, 3000), (3, 7, 9999), (2, 3, 2500)]
  write_tsv(tsv_folder / 'interactions.tsv', 'user\titem\ttimestamp', rows)
  dataset = data.load_dataset(tsv_config(tsv_folder, split='time', new_item_fraction=0.2))
  np.testing.assert_array_equal(dataset.test_items, [3, 11])
  np.testing.assert_array_equal(dataset.val_items, [0, 1])
  assert as_set(dataset.test_pairs) == {(3, 3), (3, 11), (2, 3)}
  assert as_set(dataset.val_pairs) == {(u, i) for u in range(3) for i in (0, 1)}


def test_ml100k_time_split_orders_items_by_first_interaction(data_config, ml100k):
  config = data_config(format='interactions', path=str(ml100k), modalities=('genre', 'text'),
                       split='time')
  dataset = data.load_dataset(config)
  assert len(dataset.val_items) == len(dataset.test_items) == 168
  rows = np.loadtxt(ml100k / 'interactions.tsv', skiprows=1, dtype=np.int64)
  first = np.full(dataset.num_items, np.iinfo(np.int64).max)
  np.minimum.at(first, rows[:, 1], rows[:, 2])
  warm, val, test = (first[items] for items in (
      dataset.warm_items, dataset.val_items, dataset.test_items))
  assert test.min() >= val.max() and val.min() >= warm.max()


def test_popular_items_hand_computed():
  # Interaction counts of items 0..9; 1, 4 and 7 tie at 2: the smaller id is less popular.
  popularity = np.array([5, 2, 9, 0, 2, 7, 1, 2, 8, 3])
  popular = split.popular_items(popularity, 0.7)
  # Least popular first: 3, 6, 1, 4, 7, 9, 0 (floor(0.7 * 10) = 7 unpopular), then 5, 8, 2.
  np.testing.assert_array_equal(np.flatnonzero(popular), [2, 5, 8])
  pairs = np.array([[0, 2], [1, 2], [1, 0], [3, 2]])
  np.testing.assert_array_equal(split.item_popularity(pairs, 4), [1, 0, 3, 0])


def test_popularity_item_split_draws_the_same_share_in_each_group():
  popular = np.arange(100) >= 70  # Items 70..99 are the popular 30%.
  item_split = split.popularity_item_split(np.random.default_rng(0), popular, 0.2, 0.5)
  new = item_split.new_items
  # floor(0.2 * 70) = 14 unpopular and floor(0.2 * 30) = 6 popular new items, half validation.
  assert (np.sum(new < 70), np.sum(new >= 70)) == (14, 6)
  assert len(item_split.val_items) == len(item_split.test_items) == 10
  np.testing.assert_array_equal(np.sort(np.concatenate(item_split)), np.arange(100))
  for items in item_split:
    assert items.dtype == np.int32 and np.all(np.diff(items) > 0)
  again = split.popularity_item_split(np.random.default_rng(0), popular, 0.2, 0.5)
  other = split.popularity_item_split(np.random.default_rng(1), popular, 0.2, 0.5)
  for a, b in zip(item_split, again):
    np.testing.assert_array_equal(a, b)
  assert not np.array_equal(item_split.new_items, other.new_items)


def test_load_popularity_split(tmp_path, tsv_config, data_config, write_features, write_tsv,
                               assert_data_error, write_milk):
  # Item i has 1 + i // 10 users: items 0..69 are the unpopular 70%.
  write_features(tmp_path, num_items=100)
  write_tsv(tmp_path / 'interactions.tsv', 'user\titem',
            [(u, i) for i in range(100) for u in range(1 + i // 10)])
  dataset = data.load_dataset(tsv_config(tmp_path, split='popularity'))
  new = np.union1d(dataset.val_items, dataset.test_items)
  assert (np.sum(new < 70), np.sum(new >= 70)) == (14, 6)
  assert np.isin(dataset.train_pairs[:, 1], dataset.warm_items).all()
  milk_folder = tmp_path / 'milk'
  milk_folder.mkdir()
  write_milk(milk_folder)
  assert_data_error(data_config(format='milk', path=str(milk_folder), split='popularity'),
                    "config.data.split='popularity'", 'given by its files')
  assert_data_error(tsv_config(tmp_path, unpopular_fraction=1.5), 'unpopular_fraction=1.5')
