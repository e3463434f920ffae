"""milk_jax/data/synthetic.py: the generated catalogue."""

import tracemalloc

import numpy as np
import pytest

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


# ------------------------------------------------------------ the candidates sampler


def _factors(num_users, num_items, latent_dim, seed=0):
  rng = np.random.default_rng(seed)
  return (rng.standard_normal((num_users, latent_dim), dtype=np.float32),
          rng.standard_normal((num_items, latent_dim), dtype=np.float32))


@pytest.mark.parametrize('num_items, chunk_entries', [(5000, 1 << 21), (5000, 3000), (60, 1000)])
def test_candidates_draw_each_user_s_poisson_count_of_distinct_items(num_items, chunk_entries):
  # 5000 items: sampled candidates (and, with small chunks, many chunks); 60 items: every
  # user's candidates reach a quarter of the catalogue, so it scores them all.
  users, items = _factors(300, num_items, 8)
  pairs = synthetic.candidate_interactions(np.random.default_rng(3), users, items, 12.0, 0.5,
                                           10.0, chunk_entries)
  counts = np.clip(np.random.default_rng(3).poisson(12.0, 300), 1, num_items)  # Its first draw.
  np.testing.assert_array_equal(np.bincount(pairs[:, 0], minlength=300), counts)
  assert len(np.unique(pairs, axis=0)) == len(pairs)
  assert (np.diff(pairs[:, 0]) >= 0).all() and pairs[:, 1].min() >= 0
  assert pairs[:, 1].max() < num_items and pairs.dtype == np.int64


def test_candidate_sizes_are_the_factor_times_the_count_or_the_whole_catalogue():
  sizes = synthetic.candidate_sizes(np.array([1, 3, 30, 300]), 1000, 2.5)
  np.testing.assert_array_equal(sizes, [3, 8, 75, 1000])  # ceil(2.5 n); 750 * 4 >= 1000.


def test_candidates_are_deterministic_given_the_seed():
  users, items = _factors(200, 3000, 8)
  draw = lambda seed: synthetic.candidate_interactions(np.random.default_rng(seed), users, items,
                                                      10.0, 0.5, 10.0)
  np.testing.assert_array_equal(draw(1), draw(1))
  assert not np.array_equal(draw(1), draw(2))


def test_candidates_covering_the_catalogue_draw_from_the_exact_softmax():
  # One latent dimension, every user u = 1, items z = 0, 1, 2 at temperature 1: logits 0, 1, 2.
  users = np.ones((40000, 1), np.float32)
  items = np.array([[0.0], [1.0], [2.0]], np.float32)
  pairs = synthetic.candidate_interactions(np.random.default_rng(0), users, items, 1e-12, 1.0,
                                           10.0)
  assert len(pairs) == 40000  # Poisson(~0) clipped to one item each.
  freq = np.bincount(pairs[:, 1], minlength=3) / 40000
  np.testing.assert_allclose(freq, np.exp([0, 1, 2]) / np.exp([0, 1, 2]).sum(), atol=0.01)


def _mean_logit(pairs, users, items):
  return float(np.einsum('nl,nl->n', users[pairs[:, 0]], items[pairs[:, 1]]).mean())


def test_candidates_keep_the_planted_preference_sharper_with_more_candidates():
  # Inner products <u, z> / sqrt(L) are N(0, 1) over random items; at temperature 0.5 the
  # exact sampler's items average about 2 (the Gaussian tilted by 1 / 0.5), these lie between.
  users, items = _factors(1000, 10000, 16)
  items_scaled = items / np.sqrt(16)
  means = {factor: _mean_logit(synthetic.candidate_interactions(
      np.random.default_rng(0), users, items, 20.0, 0.5, factor), users, items_scaled)
           for factor in (2.0, 10.0, 50.0)}
  exact = _mean_logit(synthetic.planted_interactions(np.random.default_rng(0), users, items,
                                                     20.0, 0.5), users, items_scaled)
  assert 0.5 < means[2.0] < means[10.0] < means[50.0] < exact, (means, exact)
  assert means[10.0] > 1.2 and exact > 1.8, (means, exact)


def test_candidates_never_build_a_users_by_items_array():
  # 50,000 users x 2,000,000 items would be 400 GB of float32 scores; ~100k interactions.
  users, items = _factors(50_000, 2_000_000, 4)
  tracemalloc.start()
  pairs = synthetic.candidate_interactions(np.random.default_rng(0), users, items, 2.0, 0.5,
                                           10.0)
  _, peak = tracemalloc.get_traced_memory()
  tracemalloc.stop()
  assert 90_000 < len(pairs) < 130_000
  assert peak < 200e6, f'{peak / 1e6:.0f} MB'


def test_generate_refuses_an_unknown_sampler():
  with pytest.raises(ValueError, match="sampler='exact'"):
    synthetic.generate(np.random.default_rng(0), 5, 10, (2, 2), 2, 2.0, 0.1, 0.5, 'exact')


def test_the_sampler_fields_are_checked(data_config, assert_data_error):
  config = data_config()
  config.data.synthetic.sampler = 'exact'
  assert_data_error(config, "config.data.synthetic.sampler='exact'", "'candidates'")
  config = data_config()
  config.data.synthetic.candidate_factor = 0.5
  assert_data_error(config, 'config.data.synthetic.candidate_factor=0.5')


def test_load_dataset_with_the_candidates_sampler(data_config):
  config = data_config()
  config.data.synthetic.sampler = 'candidates'
  dataset = data.load_dataset(config)
  assert dataset.num_users == 60 and dataset.num_items == 50
  assert len(dataset.train_pairs) and len(dataset.val_pairs) and len(dataset.test_pairs)
  pairs = np.concatenate([dataset.train_pairs, dataset.val_pairs, dataset.test_pairs])
  assert len(np.unique(pairs, axis=0)) == len(pairs)


@pytest.mark.slow  # About 20 s: 12 epochs of MILK on 1000 users x 2000 items.
def test_milk_learns_the_candidates_catalogue(make_config, assert_training_beats_untrained,
                                              tmp_path):
  # Its choices are less sharp than the exact sampler's: 12 epochs, not make_config's 6.
  config = make_config(train={'num_epochs': 12})
  syn = config.data.synthetic
  syn.num_users, syn.num_items, syn.sampler = 1000, 2000, 'candidates'  # 150 < 2000 / 4: sampled.
  assert_training_beats_untrained(config, tmp_path)
