"""milk_jax/data/synthetic.py: the generated catalogue."""

import numpy as np

from milk_jax import data
from milk_jax.data import synthetic


def test_gumbel_top_k_matches_softmax():
  logits = np.array([0.0, 1.0, 2.0], np.float32)
  rows = np.tile(logits, (40000, 1))
  pairs = synthetic.gumbel_top_k(np.random.default_rng(0), rows, np.ones(40000, int))
  freq = np.bincount(pairs[:, 1], minlength=3) / 40000
  np.testing.assert_allclose(freq, np.exp(logits) / np.exp(logits).sum(), atol=0.01)
  two = synthetic.gumbel_top_k(np.random.default_rng(0), np.tile(logits, (50, 1)),
                               np.full(50, 2))
  assert len(np.unique(two, axis=0)) == 100


def test_synthetic_features_have_no_all_zero_rows():
  # A row is Z_i P_m (+ noise): zero only if a continuous draw is exactly zero.
  features, _ = synthetic.generate(np.random.default_rng(0), 20, 2000, (1, 3), 1, 2.0,
                                   0.0, 1.0)
  for x in features:
    assert x.any(axis=1).all()


def test_synthetic_shapes(data_config):
  dataset = data.load_dataset(data_config())
  assert [x.shape for x in dataset.features] == [(50, 6), (50, 4)]
  assert dataset.num_users == 60 and dataset.source == 'synthetic(seed=0)'
  assert len(np.unique(dataset.train_pairs, axis=0)) == len(dataset.train_pairs)
  assert 'val 5' in dataset.summary()
