"""milk_jax/data/sampling.py: negatives, an epoch's triples and its number of steps."""

import dataclasses

import numpy as np
import pytest

from milk_jax import data
from milk_jax.data import sampling


def test_negatives_avoid_positives_and_stay_warm(data_config, as_set, new_items_of):
  dataset = data.load_dataset(data_config())
  rng = np.random.default_rng(0)
  users = np.repeat(np.arange(dataset.num_users), 50).reshape(30, -1)
  negatives = data.sample_negatives(rng, dataset, users)
  assert negatives.shape == users.shape and negatives.dtype == np.int32
  assert np.isin(negatives, dataset.warm_items).all()
  assert not (as_set(np.stack([users.ravel(), negatives.ravel()], 1))
              & as_set(dataset.train_pairs))
  everywhere = data.sample_negatives(rng, dataset, users, pool='all')
  assert np.isin(everywhere, new_items_of(dataset)).any()


def test_negatives_for_user_with_all_but_one_warm_item(tsv_folder, tsv_config):
  dataset = data.load_dataset(tsv_config(tsv_folder))
  # Every user trained on every warm item; give user 0 back one free item.
  free = dataset.warm_items[3]
  keep = ~((dataset.train_pairs[:, 0] == 0) & (dataset.train_pairs[:, 1] == free))
  dataset = dataclasses.replace(dataset, train_pairs=dataset.train_pairs[keep])
  negatives = data.sample_negatives(np.random.default_rng(0), dataset, np.zeros(100, int))
  assert (negatives == free).all()
  with pytest.raises(data.DataError, match='every item'):
    data.sample_negatives(np.random.default_rng(0), dataset, np.array([1]))


def test_unknown_negative_pool(data_config):
  dataset = data.load_dataset(data_config())
  with pytest.raises(data.DataError, match='negatives'):
    data.sample_negatives(np.random.default_rng(0), dataset, np.array([0]), pool='new')


@pytest.mark.parametrize('batch_size', [7, 64, 5000])
def test_epoch_triples(batch_size, data_config, as_set):
  dataset = data.load_dataset(data_config())
  n = len(dataset.train_pairs)
  users, positives, negatives = data.epoch_triples(np.random.default_rng(0), dataset, batch_size)
  steps = -(-n // batch_size)
  for array in (users, positives, negatives):
    assert array.shape == (steps, batch_size) and array.dtype == np.int32
  seen = as_set(np.stack([users.ravel(), positives.ravel()], 1))
  assert seen == as_set(dataset.train_pairs)
  # Each pair once, plus the fill-up of the last batch.
  assert np.unique(np.stack([users.ravel(), positives.ravel()], 1), axis=0).shape[0] == n
  assert not (as_set(np.stack([users.ravel(), negatives.ravel()], 1))
              & as_set(dataset.train_pairs))


@pytest.mark.parametrize('num_pairs,batch_size,steps', [
    (1, 1, 1), (7, 7, 1), (8, 7, 2), (3, 5000, 1), (10000, 64, 157), (2**40 + 1, 2**20, 2**20 + 1)])
def test_steps_per_epoch(num_pairs, batch_size, steps):
  assert sampling.steps_per_epoch(num_pairs, batch_size) == steps
  assert isinstance(sampling.steps_per_epoch(np.int64(num_pairs), batch_size), int)
