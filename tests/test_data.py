"""Tests for milk_jax.data: readers, split, missing modalities, sampling."""

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from configs import base
from milk_jax import data
from milk_jax.data import DataError
from milk_jax.data import missing
from milk_jax.data import split
from milk_jax.data import synthetic
from milk_jax.errors import RunFolderError

ML100K = Path(__file__).resolve().parents[1].parent / 'shared' / 'data' / 'ml100k-mm'

# A tiny catalogue: every user has every item, so any split has val and test pairs.
NUM_USERS, NUM_ITEMS = 4, 20
DIMS = {'image': 3, 'text': 2}


def small_config(**data_fields):
  config = base.get_config()
  syn = config.data.synthetic
  syn.num_users, syn.num_items, syn.feature_dims, syn.latent_dim = 60, 50, (6, 4), 4
  syn.interactions_per_user = 8
  for name, value in data_fields.items():
    config.data[name] = value
  return config


def write_features(folder: Path, num_items: int = NUM_ITEMS, dims=None, seed: int = 0):
  rng = np.random.default_rng(seed)
  features = {}
  for name, dim in (dims or DIMS).items():
    features[name] = rng.standard_normal((num_items, dim)).astype(np.float32)
    np.save(folder / f'{name}_feat.npy', features[name])
  return features


def write_tsv(path: Path, header: str, rows) -> None:
  lines = [header] + ['\t'.join(str(v) for v in row) for row in rows]
  path.write_text('\n'.join(lines) + '\n')


def dense_rows(num_users: int = NUM_USERS, num_items: int = NUM_ITEMS):
  return [(u, i, 1000 + u) for u in range(num_users) for i in range(num_items)]


@pytest.fixture
def tsv_folder(tmp_path):
  write_features(tmp_path)
  write_tsv(tmp_path / 'interactions.tsv', 'user\titem\ttimestamp', dense_rows())
  return tmp_path


def tsv_config(folder: Path, **data_fields):
  return small_config(format='interactions', path=str(folder), **data_fields)


def as_set(pairs: np.ndarray) -> set[tuple[int, int]]:
  return {tuple(p) for p in pairs.tolist()}


# ----------------------------------------------------------------- split


def test_new_item_split_fractions_and_partition():
  rng = np.random.default_rng(0)
  item_split = split.new_item_split(rng, 1682, 0.2, 0.5)
  assert len(item_split.val_items) == 168 and len(item_split.test_items) == 168
  assert len(item_split.warm_items) == 1682 - 336
  everything = np.concatenate(item_split)
  np.testing.assert_array_equal(np.sort(everything), np.arange(1682))
  for items in item_split:
    assert items.dtype == np.int32 and np.all(np.diff(items) > 0)


def test_load_partitions_items_and_interactions(tsv_folder):
  dataset = data.load_dataset(tsv_config(tsv_folder))
  assert (len(dataset.warm_items), len(dataset.val_items), len(dataset.test_items)) == (16, 2, 2)
  items = np.concatenate([dataset.warm_items, dataset.val_items, dataset.test_items])
  np.testing.assert_array_equal(np.sort(items), np.arange(NUM_ITEMS))
  assert np.isin(dataset.train_pairs[:, 1], dataset.warm_items).all()
  assert np.isin(dataset.val_pairs[:, 1], dataset.val_items).all()
  assert np.isin(dataset.test_pairs[:, 1], dataset.test_items).all()
  parts = [as_set(p) for p in (dataset.train_pairs, dataset.val_pairs, dataset.test_pairs)]
  assert sum(len(p) for p in parts) == NUM_USERS * NUM_ITEMS
  assert set().union(*parts) == {(u, i) for u, i, _ in dense_rows()}
  for pairs in (dataset.train_pairs, dataset.val_pairs, dataset.test_pairs):
    assert pairs.dtype == np.int32 and pairs.shape[1] == 2
  assert dataset.num_users == NUM_USERS and dataset.num_items == NUM_ITEMS


def test_same_seed_same_dataset_other_seed_differs():
  config = small_config(setting='mtmt')
  first, again = data.load_dataset(config), data.load_dataset(config)
  for name in ('train_pairs', 'val_pairs', 'test_pairs', 'val_items', 'availability'):
    np.testing.assert_array_equal(getattr(first, name), getattr(again, name))
  for a, b in zip(first.features, again.features):
    np.testing.assert_array_equal(a, b)
  config.seed = 1
  other = data.load_dataset(config)
  assert not np.array_equal(first.val_items, other.val_items)
  assert not np.array_equal(first.availability, other.availability)


# ------------------------------------------------------ missing modalities


def new_items_of(dataset):
  return np.union1d(dataset.val_items, dataset.test_items)


def test_ftft_everything_present():
  dataset = data.load_dataset(small_config(setting='ftft'))
  assert dataset.availability.all() and not dataset.num_missing.any()


def test_ftmt_counts():
  dataset = data.load_dataset(small_config(setting='ftmt', test_missing_rate=0.5))
  new = new_items_of(dataset)
  assert len(new) == 10
  assert dataset.availability[dataset.warm_items].all()
  np.testing.assert_array_equal(np.bincount(dataset.num_missing[new], minlength=2), [5, 5])


def test_mtmt_counts_and_same_new_mask_as_ftmt():
  mtmt = data.load_dataset(small_config(setting='mtmt', train_missing_rate=0.3))
  ftmt = data.load_dataset(small_config(setting='ftmt'))
  warm_missing = mtmt.num_missing[mtmt.warm_items]
  assert warm_missing.max() == 1 and warm_missing.sum() == 12  # round(0.3 * 40).
  new = new_items_of(mtmt)
  assert mtmt.num_missing[new].sum() == 5
  np.testing.assert_array_equal(mtmt.availability[new], ftmt.availability[new])


def test_groups_counts(tmp_path):
  write_features(tmp_path, num_items=100, dims={'image': 3, 'audio': 2, 'text': 2})
  write_tsv(tmp_path / 'interactions.tsv', 'user\titem', [(u, i) for u in range(3)
                                                          for i in range(100)])
  config = tsv_config(tmp_path, setting='groups', modalities=('image', 'audio', 'text'),
                      group_fractions=(0.1, 0.45, 0.45))
  dataset = data.load_dataset(config)
  new = new_items_of(dataset)
  np.testing.assert_array_equal(np.bincount(dataset.num_missing[new], minlength=3), [2, 9, 9])
  assert dataset.availability[dataset.warm_items].all()
  # Which modalities go missing is uniform: over many rows each is missing about equally.
  mask = missing.random_subset_mask(np.random.default_rng(0), np.full(30000, 2), 3)
  np.testing.assert_allclose((~mask).mean(axis=0), 2 / 3, atol=0.01)
  assert ((~mask).sum(axis=1) == 2).all()


def test_mean_imputation_hand_computed():
  image = np.array([[1., 2.], [3., 4.], [100., 100.]], np.float32)
  text = np.array([[1.], [50.], [9.]], np.float32)
  available = np.array([[True, True], [True, False], [False, True]])
  filled_image, filled_text = missing.impute((image, text), available, 'mean')
  np.testing.assert_allclose(filled_image, [[1, 2], [3, 4], [2, 3]])
  np.testing.assert_allclose(filled_text, [[1], [5], [9]])
  assert image[2, 0] == 100  # Inputs untouched.
  zero_image, zero_text = missing.impute((image, text), available, 'zero')
  np.testing.assert_allclose(zero_image[2], [0, 0])
  np.testing.assert_allclose(zero_text[1], [0])
  normalized = missing.l2_normalize(np.array([[3., 4.], [0., 0.]], np.float32))
  np.testing.assert_allclose(normalized, [[0.6, 0.8], [0, 0]])


def test_l2_normalize_exact_for_huge_and_tiny_rows():
  rows = np.array([[3., 4.], [-1., 2.], [5., 0.]], np.float32)
  unit = missing.l2_normalize(rows)
  np.testing.assert_allclose(unit[0], [0.6, 0.8], rtol=1e-6)
  for scale in (1e30, 1e-31):  # Squares overflow / underflow float32 at these scales.
    np.testing.assert_allclose(missing.l2_normalize(rows * np.float32(scale)), unit, rtol=1e-6)
  np.testing.assert_allclose(missing.l2_normalize(np.array([[3e30, 4e30]], np.float32)),
                             [[0.6, 0.8]], rtol=1e-6)


def test_load_normalizes_huge_features_like_unscaled(tsv_folder):
  unscaled = data.load_dataset(tsv_config(tsv_folder))
  for name in DIMS:
    np.save(tsv_folder / f'{name}_feat.npy', np.load(tsv_folder / f'{name}_feat.npy') * 1e30)
  scaled = data.load_dataset(tsv_config(tsv_folder))
  for a, b in zip(unscaled.features, scaled.features):
    np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6)


def test_learned_imputation_hand_computed():
  # Warm rows 0-2 have y = 2x + 1. Centred x = (-1, 0, 1), y = (-2, 0, 2): with
  # ridge 2 the slope x -> y is 4 / (2 + 2) = 1 and y -> x is 4 / (8 + 2) = 0.4.
  x = np.array([[0.], [1.], [2.], [3.], [50.]], np.float32)
  y = np.array([[1.], [3.], [5.], [50.], [7.]], np.float32)
  available = np.array([[1, 1], [1, 1], [1, 1], [1, 0], [0, 1]], bool)
  warm = np.array([0, 1, 2])
  filled_x, filled_y = missing.impute((x, y), available, 'learned', fit_rows=warm, ridge=2.0)
  np.testing.assert_allclose(filled_y[3], [3 + (3 - 1) * 1.0])  # 5, not the mean 3.
  np.testing.assert_allclose(filled_x[4], [1 + (7 - 3) * 0.4])  # 2.6.
  np.testing.assert_array_equal(filled_x[:4], x[:4])
  np.testing.assert_array_equal(filled_y[[0, 1, 2, 4]], y[[0, 1, 2, 4]])
  # A vanishing ridge recovers the exact line: 2 * 3 + 1 = 7.
  _, exact_y = missing.impute((x, y), available, 'learned', fit_rows=warm, ridge=1e-9)
  np.testing.assert_allclose(exact_y[3], [7.0], rtol=1e-6)


def test_learned_imputation_averages_the_present_modalities():
  # Three 1-d modalities on warm rows 0-3: b = a and c = -a exactly; row 4 misses b
  # and predicts it from a (gives 4) and from c (-c = 6): the mean is 5.
  a = np.array([[0.], [1.], [2.], [3.], [4.]], np.float32)
  b = np.array([[0.], [1.], [2.], [3.], [99.]], np.float32)
  c = np.array([[0.], [-1.], [-2.], [-3.], [-6.]], np.float32)
  available = np.array([[1, 1, 1]] * 4 + [[1, 0, 1]], bool)
  _, filled_b, _ = missing.impute((a, b, c), available, 'learned',
                                  fit_rows=np.arange(4), ridge=1e-9)
  np.testing.assert_allclose(filled_b[4], [5.0], rtol=1e-6)


@pytest.mark.parametrize('imputation', ['mean', 'zero'])
def test_load_imputes_missing_rows(tsv_folder, imputation):
  raw = write_features(tsv_folder)  # Same seed as the fixture: the clean features.
  config = tsv_config(tsv_folder, setting='mtmt', test_missing_rate=1.0,
                      train_missing_rate=1.0, imputation=imputation, normalize=False)
  dataset = data.load_dataset(config)
  warm = np.zeros(NUM_ITEMS, bool)
  warm[dataset.warm_items] = True
  for m, name in enumerate(dataset.modality_names):
    present = dataset.availability[:, m]
    assert not present.all()
    np.testing.assert_array_equal(dataset.features[m][present], raw[name][present])
    # The mean of the warm items' present rows only: new items never shape the fill.
    fill = (raw[name][present & warm].mean(axis=0, dtype=np.float64) if imputation == 'mean'
            else 0.0)
    np.testing.assert_allclose(dataset.features[m][~present],
                               np.broadcast_to(fill, (int((~present).sum()), DIMS[name])),
                               rtol=1e-6)
  config.data.normalize = True
  normalized = data.load_dataset(config)
  for m, x in enumerate(normalized.features):
    assert x.dtype == np.float32
    # Zero-filled rows have no direction and stay zero; every other row has unit norm.
    expected = 1.0 if imputation == 'mean' else normalized.availability[:, m]
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), expected, rtol=1e-5)


def test_load_learns_the_cross_modal_maps_on_warm_items_only(tsv_folder):
  raw = write_features(tsv_folder)
  config = tsv_config(tsv_folder, setting='ftmt', test_missing_rate=1.0,
                      imputation='learned', normalize=False)
  config.data.imputation_ridge = 0.5
  dataset = data.load_dataset(config)
  (image, text), warm = (raw['image'], raw['text']), dataset.warm_items
  for target, source in ((image, text), (text, image)):
    m = 0 if target is image else 1
    weights, bias = missing.ridge_map(source[warm], target[warm], 0.5)
    rows = ~dataset.availability[:, m]
    assert rows.any()
    np.testing.assert_allclose(dataset.features[m][rows], source[rows] @ weights + bias,
                               rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------- sampling


def test_negatives_avoid_positives_and_stay_warm():
  dataset = data.load_dataset(small_config())
  rng = np.random.default_rng(0)
  users = np.repeat(np.arange(dataset.num_users), 50).reshape(30, -1)
  negatives = data.sample_negatives(rng, dataset, users)
  assert negatives.shape == users.shape and negatives.dtype == np.int32
  assert np.isin(negatives, dataset.warm_items).all()
  assert not (as_set(np.stack([users.ravel(), negatives.ravel()], 1))
              & as_set(dataset.train_pairs))
  everywhere = data.sample_negatives(rng, dataset, users, pool='all')
  assert np.isin(everywhere, new_items_of(dataset)).any()


def test_negatives_for_user_with_all_but_one_warm_item(tsv_folder):
  dataset = data.load_dataset(tsv_config(tsv_folder))
  # Every user trained on every warm item; give user 0 back one free item.
  free = dataset.warm_items[3]
  keep = ~((dataset.train_pairs[:, 0] == 0) & (dataset.train_pairs[:, 1] == free))
  dataset = dataclasses.replace(dataset, train_pairs=dataset.train_pairs[keep])
  negatives = data.sample_negatives(np.random.default_rng(0), dataset, np.zeros(100, int))
  assert (negatives == free).all()
  with pytest.raises(data.DataError, match='every item'):
    data.sample_negatives(np.random.default_rng(0), dataset, np.array([1]))


def test_unknown_negative_pool():
  dataset = data.load_dataset(small_config())
  with pytest.raises(data.DataError, match='negatives'):
    data.sample_negatives(np.random.default_rng(0), dataset, np.array([0]), pool='new')


@pytest.mark.parametrize('batch_size', [7, 64, 5000])
def test_epoch_triples(batch_size):
  dataset = data.load_dataset(small_config())
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


# --------------------------------------------------------------- synthetic


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


def test_synthetic_shapes():
  dataset = data.load_dataset(small_config())
  assert [x.shape for x in dataset.features] == [(50, 6), (50, 4)]
  assert dataset.num_users == 60 and dataset.source == 'synthetic(seed=0)'
  assert len(np.unique(dataset.train_pairs, axis=0)) == len(dataset.train_pairs)
  assert 'val 5' in dataset.summary()


# ----------------------------------------------------------------- readers


def test_interactions_reader_expected_pairs(tmp_path):
  write_features(tmp_path, num_items=5)
  write_tsv(tmp_path / 'log.tsv', 'user\titem', [(0, 1), (2, 4), (0, 1), (1, 0)])
  raw = data.readers.read_interactions(tmp_path, ('image', 'text'), 'log.tsv')
  assert as_set(raw.pairs) == {(0, 1), (2, 4), (1, 0)} and len(raw.pairs) == 3
  assert raw.num_users == 3 and raw.features[0].shape == (5, 3)


def test_mmrec_reader_pools_all_rows(tmp_path):
  write_features(tmp_path, num_items=5)
  write_tsv(tmp_path / 'baby.inter', 'userID\titemID\trating\ttimestamp\tx_label',
            [(0, 1, 5.0, 11, 0), (1, 2, 4.0, 12, 1), (3, 4, 3.0, 13, 2), (3, 4, 1.0, 14, 0)])
  for name in (None, 'baby'):
    raw = data.readers.read_mmrec(tmp_path, ('image', 'text'), name)
    assert as_set(raw.pairs) == {(0, 1), (1, 2), (3, 4)} and raw.num_users == 4


def write_milk(folder: Path, train='0 0 1 2\n1 3\n2\n', val='0 5\n1 6\n',
               test='1 7\n3 7\n', cold=(5, 6, 7, 8)):
  write_features(folder, num_items=10)
  (folder / 'train.txt').write_text(train)
  (folder / 'val.txt').write_text(val)
  (folder / 'test.txt').write_text(test)
  np.save(folder / 'cold_item_index.npy', np.array(cold, np.int64))


def test_milk_layout_given_split(tmp_path):
  write_milk(tmp_path)
  dataset = data.load_dataset(small_config(format='milk', path=str(tmp_path), setting='ftft'))
  assert as_set(dataset.train_pairs) == {(0, 0), (0, 1), (0, 2), (1, 3)}
  assert as_set(dataset.val_pairs) == {(0, 5), (1, 6)}
  assert as_set(dataset.test_pairs) == {(1, 7), (3, 7)}
  np.testing.assert_array_equal(dataset.warm_items, [0, 1, 2, 3, 4, 9])
  np.testing.assert_array_equal(dataset.val_items, [5, 6])
  np.testing.assert_array_equal(dataset.test_items, [7, 8])  # 8: cold, in neither file.
  assert dataset.num_users == 4 and dataset.num_items == 10


def test_summary_counts_users_and_items_without_interactions(tmp_path):
  # Users 2 (listed without items) and 3 (test only) never train; items 4, 8
  # and 9 appear in no file.
  write_milk(tmp_path)
  dataset = data.load_dataset(small_config(format='milk', path=str(tmp_path), setting='ftft'))
  assert dataset.inactive_counts() == (2, 3)
  summary = dataset.summary()
  assert 'users without training interactions: 2; items without any interaction: 3' in summary
  assert '\n' not in summary


def test_ml100k_loads():
  if not ML100K.is_dir():
    pytest.skip(f'{ML100K} is absent')
  config = small_config(format='interactions', path=str(ML100K), modalities=('genre', 'text'))
  dataset = data.load_dataset(config)
  assert (dataset.num_users, dataset.num_items) == (943, 1682)
  assert len(new_items_of(dataset)) == 336
  assert len(dataset.val_items) == len(dataset.test_items) == 168
  assert [x.shape[1] for x in dataset.features] == [19, 384]
  assert len(dataset.train_pairs) + len(dataset.val_pairs) + len(dataset.test_pairs) == 99999


# -------------------------------------------------------------- bad inputs


def assert_data_error(config, *fragments):
  with pytest.raises(data.DataError) as info:
    data.load_dataset(config)
  for fragment in fragments:
    assert fragment in str(info.value), (fragment, str(info.value))


@pytest.mark.parametrize('field,value', [('format', 'csv'), ('setting', 'mtft'),
                                         ('imputation', 'median'), ('negatives', 'new')])
def test_unknown_choices(field, value):
  assert_data_error(small_config(**{field: value}), f'config.data.{field}', value)


@pytest.mark.parametrize('field', ['new_item_fraction', 'val_fraction', 'test_missing_rate',
                                   'train_missing_rate'])
def test_fraction_outside_unit_interval(field):
  assert_data_error(small_config(**{field: 1.5}), f'config.data.{field}')


@pytest.mark.parametrize('fractions', [(0.5, 0.6), (0.2, 0.3, 0.3, 0.2), (1.2, -0.2)])
def test_bad_group_fractions(fractions):
  assert_data_error(small_config(setting='groups', group_fractions=fractions),
                    'config.data.group_fractions')


@pytest.mark.parametrize('modalities', [('image',), ('image', 'image')])
def test_fewer_than_two_modalities(modalities):
  config = small_config(modalities=modalities)
  config.data.synthetic.feature_dims = (6,)
  assert_data_error(config, 'config.data.modalities')


def test_synthetic_feature_dims_mismatch():
  config = small_config()
  config.data.synthetic.feature_dims = (6, 4, 2)
  assert_data_error(config, 'config.data.synthetic.feature_dims')


def test_path_none_and_missing_folder(tmp_path):
  assert_data_error(small_config(format='interactions'), 'config.data.path')
  assert_data_error(tsv_config(tmp_path / 'nowhere'), str(tmp_path / 'nowhere'))


def test_missing_files(tsv_folder):
  (tsv_folder / 'text_feat.npy').unlink()
  assert_data_error(tsv_config(tsv_folder), str(tsv_folder / 'text_feat.npy'))
  assert_data_error(tsv_config(tsv_folder, interactions_file='other.tsv'),
                    str(tsv_folder / 'other.tsv'))


@pytest.mark.parametrize('array,problem', [
    (np.zeros((NUM_ITEMS, 2, 2), np.float32), '2-D'),
    (np.zeros(NUM_ITEMS, np.float32), '2-D'),
    (np.array([['a', 'b']] * NUM_ITEMS), 'numeric'),
    (np.array([[object()]] * NUM_ITEMS, dtype=object), 'numeric'),
    (np.zeros((NUM_ITEMS - 1, 2), np.float32), 'rows'),
])
def test_bad_feature_file(tsv_folder, array, problem):
  np.save(tsv_folder / 'text_feat.npy', array, allow_pickle=True)
  assert_data_error(tsv_config(tsv_folder), 'text_feat.npy', problem)


def test_nan_in_features(tsv_folder):
  image = np.load(tsv_folder / 'image_feat.npy')
  image[[3, 7, 7], [0, 1, 2]] = [np.nan, np.inf, np.nan]
  np.save(tsv_folder / 'image_feat.npy', image)
  assert_data_error(tsv_config(tsv_folder), 'image_feat.npy', 'NaN/inf in 2 rows (first: 3)')


def test_float32_overflow_refused(tsv_folder):
  image = np.load(tsv_folder / 'image_feat.npy').astype(np.float64)
  image[6, 1] = 1e200
  np.save(tsv_folder / 'image_feat.npy', image)
  with pytest.raises(DataError, match=r'image_feat\.npy: values overflow float32 \(largest '
                     r'\|value\| 1e\+200 > 3\.4e\+38\) in 1 rows \(first: 6\)'):
    data.load_dataset(tsv_config(tsv_folder))


def test_float32_underflow_refused(tsv_folder):
  image = np.load(tsv_folder / 'image_feat.npy').astype(np.float64)
  image[2] = 1e-60
  np.save(tsv_folder / 'image_feat.npy', image)
  with pytest.raises(DataError, match=r'image_feat\.npy: values underflow float32 .* in 1 rows '
                     r'\(first: 2\)'):
    data.load_dataset(tsv_config(tsv_folder))


def test_all_zero_feature_row_refused(tsv_folder):
  text = np.load(tsv_folder / 'text_feat.npy')
  text[[9, 4]] = 0.0
  np.save(tsv_folder / 'text_feat.npy', text)
  with pytest.raises(DataError, match=r'text_feat\.npy: only zeros in 2 rows \(first: 4\); '
                     r'an all-zero row is not a valid feature vector'):
    data.load_dataset(tsv_config(tsv_folder))


def test_zero_width_feature_file_refused(tsv_folder):
  np.save(tsv_folder / 'text_feat.npy', np.zeros((NUM_ITEMS, 0), np.float32))
  with pytest.raises(DataError, match=r'text_feat\.npy: has no feature columns \(shape '
                     r'\(20, 0\)\)'):
    data.load_dataset(tsv_config(tsv_folder))


def test_corrupt_npy_header_refused(tsv_folder):
  path = tsv_folder / 'text_feat.npy'
  path.write_bytes(path.read_bytes().replace(b"'shape'", b"'sha(e'"))
  with pytest.raises(DataError, match=r'text_feat\.npy: cannot be read as a numeric \.npy'):
    data.load_dataset(tsv_config(tsv_folder))


@pytest.mark.parametrize('user,message', [
    ('1000000000000', r'interactions\.tsv: user ids are sparse: max id 1000000000000 but 5 '
     r'distinct ids, leaving 999999999996 of 1000000000001 user rows unused; ids must be '
     r'dense and 0-based'),
    ('1e20', r'interactions\.tsv: user id 1e\+20 on data row 81 is out of range; ids must be '
     r'dense, 0-based and fit int32'),
])
def test_huge_user_id_refused(tsv_folder, user, message):
  write_tsv(tsv_folder / 'interactions.tsv', 'user\titem', [r[:2] for r in dense_rows()]
            + [(user, 0)])
  with pytest.raises(DataError, match=message):
    data.load_dataset(tsv_config(tsv_folder))


def test_huge_user_id_refused_in_milk_layout(tmp_path):
  write_milk(tmp_path, test='1 7\n1000000000000 7\n')
  with pytest.raises(DataError, match=r'test\.txt: user ids are sparse: max id 1000000000000 '
                     r'but 4 distinct ids'):
    data.load_dataset(small_config(format='milk', path=str(tmp_path)))


def test_user_id_gaps_within_the_margin_load(tsv_folder):
  rows = [(u * 300, i) for u in range(NUM_USERS) for i in range(NUM_ITEMS)]  # 897 unused rows.
  write_tsv(tsv_folder / 'interactions.tsv', 'user\titem', rows)
  dataset = data.load_dataset(tsv_config(tsv_folder))
  assert dataset.num_users == 901 and dataset.inactive_counts()[0] == 901 - NUM_USERS


@pytest.mark.parametrize('name,content', [
    ('interactions.tsv', 'utilisateur\tfilm\u00e9\n0\t1\n'),
    ('interactions.tsv', 'user\titem\n0\t1\n# caf\u00e9\n'),
    ('train.txt', '0 0 1 2\n# caf\u00e9\n'),
])
def test_latin1_text_refused(tmp_path, name, content):
  if name == 'train.txt':
    write_milk(tmp_path)
    config = small_config(format='milk', path=str(tmp_path))
  else:
    write_features(tmp_path)
    config = tsv_config(tmp_path)
  (tmp_path / name).write_bytes(content.encode('latin-1'))
  with pytest.raises(DataError, match=rf'{name}: not UTF-8 text \(invalid continuation byte'):
    data.load_dataset(config)


def test_utf8_bom_is_accepted(tsv_folder):
  path = tsv_folder / 'interactions.tsv'
  path.write_bytes(b'\xef\xbb\xbf' + path.read_bytes())
  assert data.load_dataset(tsv_config(tsv_folder)).num_users == NUM_USERS


@pytest.mark.parametrize('text,problem', [
    ('user\titem\n0\t1\n1\t2\t3\t4\n', 'malformed'),
    ('user\titem\n0\t1.5\n', 'non-integer'),
    ('user\titem\n0\tabc\n', 'malformed'),
    ('user\titem\n0\t1\n-1\t2\n', 'negative'),
    ('user\titem\n0\t1\n1\t25\n', 'item id 25 >= 20'),
    ('0\t1\n1\t2\n', 'header'),
    ('user\titem\n', 'no interaction rows'),
    ('user\titem\tts\tx\n0\t1\t2\t3\n', 'columns'),
])
def test_bad_interactions_file(tsv_folder, text, problem):
  (tsv_folder / 'interactions.tsv').write_text(text)
  assert_data_error(tsv_config(tsv_folder), 'interactions.tsv', problem)


def test_empty_split(tsv_folder):
  assert_data_error(tsv_config(tsv_folder, new_item_fraction=0.0), str(tsv_folder),
                    'empty split')
  assert_data_error(tsv_config(tsv_folder, val_fraction=0.0), 'empty split', '0 val')


def test_mmrec_inter_file_errors(tmp_path):
  write_features(tmp_path, num_items=5)
  config = small_config(format='mmrec', path=str(tmp_path))
  assert_data_error(config, str(tmp_path), '*.inter', 'none')
  write_tsv(tmp_path / 'a.inter', 'user\titemID', [(0, 1)])
  assert_data_error(config, 'a.inter', 'userID')
  write_tsv(tmp_path / 'b.inter', 'userID\titemID', [(0, 1)])
  assert_data_error(config, 'a.inter', 'b.inter')
  config.data.inter_name = 'c'
  assert_data_error(config, str(tmp_path / 'c.inter'))


@pytest.mark.parametrize('files,problem', [
    ({'val': '0 2\n'}, 'val.txt'),
    ({'train': '0 0 5\n'}, 'train.txt'),
    ({'test': '1 6\n'}, 'share'),
    ({'cold': (5, 6, 12)}, 'cold_item_index.npy'),
    ({'train': '0 x\n'}, 'train.txt'),
])
def test_bad_milk_layout(tmp_path, files, problem):
  write_milk(tmp_path, **files)
  assert_data_error(small_config(format='milk', path=str(tmp_path)), problem)


# ------------------------------------------------ raw ids, ratings, time split

RAW_ITEMS = [f'tt{7 * i + 3:04d}' for i in range(NUM_ITEMS)]  # Feature row i is RAW_ITEMS[i].
RAW_USERS = ['zoe', 'amy', 'user 7', 'Bob']


def write_raw_folder(folder: Path, rows, item_ids=RAW_ITEMS, header='user\titem\ttimestamp'):
  write_features(folder, num_items=len(RAW_ITEMS))
  write_tsv(folder / 'interactions.tsv', header, rows)
  if item_ids is not None:
    (folder / 'item_ids.txt').write_text(''.join(f'{i}\n' for i in item_ids))


def test_raw_string_ids_round_trip(tmp_path):
  rows = [(user, item, 100 + n) for n, (user, item) in enumerate(
      (u, i) for u in RAW_USERS for i in RAW_ITEMS[::-1])]
  write_raw_folder(tmp_path, rows)
  dataset = data.load_dataset(tsv_config(tmp_path, ids='raw'))
  # Users are numbered in sorted order of their raw ids; items by their feature row.
  assert dataset.user_ids.tolist() == ['Bob', 'amy', 'user 7', 'zoe']
  assert dataset.item_ids.tolist() == RAW_ITEMS
  assert dataset.num_users == 4 and dataset.num_items == NUM_ITEMS
  pairs = np.concatenate([dataset.train_pairs, dataset.val_pairs, dataset.test_pairs])
  mapped = {(dataset.user_ids[u], dataset.item_ids[i]) for u, i in pairs.tolist()}
  assert mapped == {(u, i) for u, i, _ in rows} and len(pairs) == len(rows)
  assert (dataset.user_ids[2], dataset.item_ids[5]) == ('user 7', 'tt0038')


def test_raw_ids_in_the_mmrec_layout(tmp_path):
  write_features(tmp_path, num_items=3)
  (tmp_path / 'item_ids.txt').write_text('B0001\nB0002\nB0003\n')
  write_tsv(tmp_path / 'baby.inter', 'userID\titemID\trating\ttimestamp\tx_label',
            [('A9', 'B0003', 5, 11, 0), ('A1', 'B0001', 4, 12, 1), ('A9', 'B0001', 3, 13, 2)])
  options = data.readers.TableOptions(ids='raw')
  raw = data.readers.read_mmrec(tmp_path, ('image', 'text'), None, options)
  assert raw.user_ids.tolist() == ['A1', 'A9'] and raw.num_users == 2
  assert as_set(raw.pairs) == {(1, 2), (0, 0), (1, 0)}


def test_dense_ids_are_their_own_raw_ids(tsv_folder):
  dataset = data.load_dataset(tsv_config(tsv_folder))
  assert dataset.user_ids.tolist() == ['0', '1', '2', '3']
  assert dataset.item_ids.tolist() == [str(i) for i in range(NUM_ITEMS)]


def test_sparse_integer_user_ids_with_raw_ids(tsv_folder):
  users = [5, 1000000000000, 70, 5]
  write_tsv(tsv_folder / 'interactions.tsv', 'user\titem',
            [(u, i) for u in users for i in range(NUM_ITEMS)])
  assert_data_error(tsv_config(tsv_folder), 'user ids are sparse', '--config.data.ids=raw')
  # Without item_ids.txt, raw item ids must be the feature rows 0..rows-1.
  dataset = data.load_dataset(tsv_config(tsv_folder, ids='raw'))
  assert dataset.num_users == 3 and dataset.user_ids.tolist() == ['1000000000000', '5', '70']
  assert len(dataset.train_pairs) + len(dataset.val_pairs) + len(dataset.test_pairs) == 60


def test_write_id_maps(tmp_path):
  write_raw_folder(tmp_path, [(u, i, 0) for u in ('b', 'a') for i in RAW_ITEMS])
  dataset = data.load_dataset(tsv_config(tmp_path, ids='raw'))
  data.ids.write_id_maps(str(tmp_path), dataset)
  assert (tmp_path / 'users.tsv').read_text() == 'index\tid\n0\ta\n1\tb\n'
  items = (tmp_path / 'items.tsv').read_text().splitlines()
  assert items[:3] == ['index\tid', '0\ttt0003', '1\ttt0010'] and len(items) == NUM_ITEMS + 1
  # The run's reader gives the raw ids back in index order.
  assert data.ids.read_id_map(str(tmp_path), 'users.tsv').tolist() == ['a', 'b']


def test_a_damaged_id_map_is_named(tmp_path):
  (tmp_path / 'items.tsv').write_text('index\tid\n1\tx\n')
  with pytest.raises(RunFolderError, match=r'items\.tsv: line 2 is not `0<TAB>id`'):
    data.ids.read_id_map(str(tmp_path), 'items.tsv')
  with pytest.raises(RunFolderError, match=r'users\.tsv is missing'):
    data.ids.read_id_map(str(tmp_path), 'users.tsv')


@pytest.mark.parametrize('rows,item_ids,message', [
    ([('a', 'tt0003', 1), ('a', 'x-99', 2), ('b', 'x-98', 3)], RAW_ITEMS,
     r"interactions\.tsv: 2 rows have an item id that is missing from .*item_ids\.txt "
     r"\(first: 'x-99' on data row 2\)"),
    ([('a', 'tt0003', 1)], RAW_ITEMS[:3] + ['tt0010'] + RAW_ITEMS[4:],
     r"item_ids\.txt: 1 item ids appear more than once \(first: 'tt0010' on lines 2 and 4\)"),
    ([('a', 'tt0003', 1)], RAW_ITEMS[:-1],
     r'item_ids\.txt: 19 item ids but 20 feature rows in .*image_feat\.npy'),
    ([('a', 'tt0003', 1)], RAW_ITEMS[:4] + [''] + RAW_ITEMS[5:],
     r"item_ids\.txt: line 5: item id '' is empty"),
    ([('a', '3', 1), ('a', 'tt0003', 1)], None,
     r"interactions\.tsv: 1 rows have an item id that is not a feature row 0\.\.19 \(first: "
     r"'tt0003' on data row 2\); with config\.data\.ids=raw add .*item_ids\.txt"),
    ([('a', '3', 1), ('', '4', 1)], None, r'interactions\.tsv: empty user id on data row 2'),
    ([('a', '3', 1, 5)], None, r'interactions\.tsv: malformed row: data row 1 has 4 columns '
     r'but the header has 3'),
])
def test_bad_raw_ids(tmp_path, rows, item_ids, message):
  write_raw_folder(tmp_path, rows, item_ids)
  with pytest.raises(DataError, match=message):
    data.load_dataset(tsv_config(tmp_path, ids='raw'))


@pytest.mark.parametrize('field,value,message', [
    ('ids', 'raw', r"config\.data\.ids='raw': the 'synthetic' format has no raw ids"),
    ('min_rating', 4.0, r"config\.data\.min_rating=4\.0: the 'synthetic' format has no ratings"),
    ('split', 'time', r"config\.data\.split='time': the 'synthetic' format has no timestamps"),
    ('min_rating', float('nan'), r'config\.data\.min_rating=nan: must be a finite number'),
])
def test_table_options_need_a_table_layout(field, value, message):
  with pytest.raises(DataError, match=message):
    data.load_dataset(small_config(**{field: value}))


def test_time_split_refused_for_the_milk_layout(tmp_path):
  write_milk(tmp_path)
  with pytest.raises(DataError, match=r"config\.data\.split='time': the 'milk' format has no "
                     r'timestamps \(its split is given by its files\)'):
    data.load_dataset(small_config(format='milk', path=str(tmp_path), split='time'))


def test_min_rating_keeps_the_well_rated_rows(tmp_path):
  write_features(tmp_path, num_items=5)
  rows = [(0, 1, 5.0, 10), (0, 2, 3.5, 11), (1, 2, 4.0, 12), (2, 4, 1.0, 13), (1, 3, 4.5, 14)]
  write_tsv(tmp_path / 'interactions.tsv', 'user\titem\trating\ttimestamp', rows)
  read = data.readers.read_interactions
  for ids in ('dense', 'raw'):
    options = data.readers.TableOptions(ids=ids, min_rating=4.0)
    raw = read(tmp_path, ('image', 'text'), 'interactions.tsv', options)
    assert as_set(raw.pairs) == {(0, 1), (1, 2), (1, 3)}, ids
  # Dense ids keep the id space of the file; raw ids number only the users kept.
  assert read(tmp_path, ('image', 'text'), 'interactions.tsv', options).num_users == 2
  options = data.readers.TableOptions(min_rating=4.0)
  assert read(tmp_path, ('image', 'text'), 'interactions.tsv', options).num_users == 3
  write_tsv(tmp_path / 'b.inter', 'userID\titemID\trating', [r[:3] for r in rows])
  raw = data.readers.read_mmrec(tmp_path, ('image', 'text'), 'b', options)
  assert as_set(raw.pairs) == {(0, 1), (1, 2), (1, 3)}


@pytest.mark.parametrize('header,rows,fields,message', [
    ('user\titem\ttimestamp', [(0, 1, 5)], {'min_rating': 4.0},
     r"interactions\.tsv: config\.data\.min_rating=4\.0 needs a column named 'rating', found "
     r"columns \['user', 'item', 'timestamp'\]"),
    ('user\titem\trating', [(0, 1, 3.0), (1, 2, 2.0)], {'min_rating': 4.0},
     r'interactions\.tsv: no row has a rating >= config\.data\.min_rating=4\.0 \(ratings lie '
     r'in \[2, 3\]\)'),
    ('user\titem\trating', [(0, 1, 3.0), (1, 2, 'nan')], {'min_rating': 1.0},
     r'interactions\.tsv: rating nan on data row 2 is not finite'),
    ('user\titem\trating', [(0, 1, 3.0), (1, 2, 'good')], {'min_rating': 1.0, 'ids': 'raw'},
     r"interactions\.tsv: rating 'good' on data row 2 is not a number"),
    ('user\titem', [(0, 1), (1, 2)], {'split': 'time'},
     r"interactions\.tsv: config\.data\.split=time needs timestamps, found columns \['user', "
     r"'item'\] without one"),
    ('user\titem\trating', [(0, 1, 3.0)], {'split': 'time'},
     r'interactions\.tsv: config\.data\.split=time needs timestamps'),
    ('user\titem\tdate\trating', [(0, 1, 5, 3.0)], {},
     r'interactions\.tsv: expected columns user, item\[, timestamp\]\[, rating\]'),
])
def test_bad_ratings_and_timestamps(tmp_path, header, rows, fields, message):
  write_features(tmp_path)
  write_tsv(tmp_path / 'interactions.tsv', header, rows)
  with pytest.raises(DataError, match=message):
    data.load_dataset(tsv_config(tmp_path, **fields))


def test_time_split_needs_the_mmrec_timestamp_column(tmp_path):
  write_features(tmp_path, num_items=5)
  write_tsv(tmp_path / 'a.inter', 'userID\titemID\trating', [(0, 1, 5.0)])
  with pytest.raises(DataError, match=r'a\.inter: config\.data\.split=time needs timestamps'):
    data.load_dataset(small_config(format='mmrec', path=str(tmp_path), split='time'))


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


def test_time_split_from_the_first_interaction(tsv_folder):
  # Item i is first seen at time 1000 - i except items 3 and 11, first seen
  # at 2000 and 3000 by user 3 only; 7 is seen earliest but also latest.
  rows = [(u, i, 1000 - i + u) for u in range(3) for i in range(NUM_ITEMS) if i not in (3, 11)]
  rows += [(3, 3, 2000), (3, 11, 3000), (3, 7, 9999), (2, 3, 2500)]
  write_tsv(tsv_folder / 'interactions.tsv', 'user\titem\ttimestamp', rows)
  dataset = data.load_dataset(tsv_config(tsv_folder, split='time', new_item_fraction=0.2))
  np.testing.assert_array_equal(dataset.test_items, [3, 11])
  np.testing.assert_array_equal(dataset.val_items, [0, 1])
  assert as_set(dataset.test_pairs) == {(3, 3), (3, 11), (2, 3)}
  assert as_set(dataset.val_pairs) == {(u, i) for u in range(3) for i in (0, 1)}


def test_ml100k_time_split_orders_items_by_first_interaction():
  if not ML100K.is_dir():
    pytest.skip(f'{ML100K} is absent')
  config = small_config(format='interactions', path=str(ML100K), modalities=('genre', 'text'),
                        split='time')
  dataset = data.load_dataset(config)
  assert len(dataset.val_items) == len(dataset.test_items) == 168
  rows = np.loadtxt(ML100K / 'interactions.tsv', skiprows=1, dtype=np.int64)
  first = np.full(dataset.num_items, np.iinfo(np.int64).max)
  np.minimum.at(first, rows[:, 1], rows[:, 2])
  warm, val, test = (first[items] for items in (
      dataset.warm_items, dataset.val_items, dataset.test_items))
  assert test.min() >= val.max() and val.min() >= warm.max()


# ---------------------------------------------------- declared missingness


def write_hand_milk(folder: Path) -> dict[str, np.ndarray]:
  """The milk layout of `write_milk` (warm 0-4 and 9, cold 5-8) with hand-made features."""
  write_milk(folder)
  items = np.arange(10, dtype=np.float32)
  features = {'image': np.stack([items, 2 * items + 1], 1), 'text': (items + 1)[:, None]}
  for name, x in features.items():
    np.save(folder / f'{name}_feat.npy', x)
  return features


def test_given_setting_loads_the_declared_mask_and_imputes_from_warm_items(tmp_path):
  features = write_hand_milk(tmp_path)
  declared = np.ones((10, 2), bool)
  declared[[1, 5, 9], 0] = False  # image: warm 1 and 9, val item 5.
  declared[[3, 7], 1] = False  # text: warm 3, test item 7.
  np.save(tmp_path / 'availability.npy', declared.astype(np.int8))
  config = small_config(format='milk', path=str(tmp_path), setting='given', normalize=False)
  dataset = data.load_dataset(config)
  np.testing.assert_array_equal(dataset.availability, declared)
  # Warm items with an image: 0, 2, 3, 4 -> mean (0 + 2 + 3 + 4) / 4 = 2.25 and
  # (1 + 5 + 7 + 9) / 4 = 5.5. With text: 0, 1, 2, 4, 9 -> (1 + 2 + 3 + 5 + 10) / 5 = 4.2.
  image, text = dataset.features
  np.testing.assert_allclose(image[[1, 5, 9]], [[2.25, 5.5]] * 3)
  np.testing.assert_allclose(text[[3, 7]], [[4.2]] * 2, rtol=1e-6)
  np.testing.assert_array_equal(image[declared[:, 0]], features['image'][declared[:, 0]])
  np.testing.assert_array_equal(text[declared[:, 1]], features['text'][declared[:, 1]])
  assert dataset.missing_report() == {
      'warm': {'image': 2, 'text': 1, 'none_missing': 3},
      'val': {'image': 1, 'text': 0, 'none_missing': 1},
      'test': {'image': 0, 'text': 1, 'none_missing': 1}}
  assert 'items missing image/text/none: warm 2/1/3, val 1/0/1, test 0/1/1' in dataset.summary()
  # A bool file reads the same; ftft is the declared mask too.
  np.save(tmp_path / 'availability.npy', declared)
  config.data.setting = 'ftft'
  np.testing.assert_array_equal(data.load_dataset(config).availability, declared)


def test_missing_rows_nan_marks_missing_and_refuses_partly_nan_rows(tsv_folder):
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


def test_missing_rows_nan_or_zero_reads_all_zero_rows_as_missing(tsv_folder):
  text = np.load(tsv_folder / 'text_feat.npy')
  text[4], text[9] = 0.0, np.nan
  np.save(tsv_folder / 'text_feat.npy', text)
  assert_data_error(tsv_config(tsv_folder, missing_rows='nan'), 'text_feat.npy', 'only zeros')
  dataset = data.load_dataset(tsv_config(tsv_folder, setting='given',
                                         missing_rows='nan_or_zero'))
  np.testing.assert_array_equal(np.flatnonzero(~dataset.availability[:, 1]), [4, 9])
  assert dataset.availability[:, 0].all()


def test_random_subset_mask_draws_among_present_modalities_only():
  declared = np.tile([True, False, True], (30000, 1))
  mask = missing.random_subset_mask(np.random.default_rng(0), np.ones(30000, int), 3, declared)
  assert not mask[:, 1].any() and (mask.sum(axis=1) == 1).all()
  np.testing.assert_allclose((~mask[:, [0, 2]]).mean(axis=0), 0.5, atol=0.01)
  # All present: exactly the draws without a declared mask.
  everything = np.ones((50, 3), bool)
  counts = np.arange(50) % 3
  np.testing.assert_array_equal(
      missing.random_subset_mask(np.random.default_rng(1), counts, 3, everything),
      missing.random_subset_mask(np.random.default_rng(1), counts, 3))


def write_declared_folder(folder: Path, num_items: int = 200, seed: int = 0) -> np.ndarray:
  """Three modalities, every user has every item, a random declared mask; returns the mask."""
  write_features(folder, num_items=num_items, dims={'image': 3, 'audio': 2, 'text': 2})
  write_tsv(folder / 'interactions.tsv', 'user\titem', [(u, i) for u in range(3)
                                                         for i in range(num_items)])
  rng = np.random.default_rng(seed)
  declared = rng.random((num_items, 3)) < 0.6
  declared[~declared.any(axis=1), 0] = True
  np.save(folder / 'availability.npy', declared)
  return declared


@pytest.mark.parametrize('setting,fields', [
    ('ftmt', {'test_missing_rate': 1.0}),
    ('mtmt', {'test_missing_rate': 1.0, 'train_missing_rate': 1.0}),
    ('groups', {'group_fractions': (0.0, 0.0, 1.0)}),
])
def test_simulation_on_top_of_the_declared_mask(tmp_path, setting, fields):
  declared = write_declared_folder(tmp_path)
  config = tsv_config(tmp_path, setting=setting, modalities=('image', 'audio', 'text'), **fields)
  dataset = data.load_dataset(config)
  available = dataset.availability
  assert not (available & ~declared).any()  # Nothing declared missing comes back.
  assert available.any(axis=1).all()  # Nobody loses its last modality.
  lost = declared.sum(axis=1) - available.sum(axis=1)
  wanted = 2 if setting == 'groups' else 1
  simulated = new_items_of(dataset)
  if setting == 'mtmt':
    simulated = np.arange(len(declared))
  else:
    assert not lost[dataset.warm_items].any()
  can_lose = declared[simulated].sum(axis=1) > wanted
  # Rates of 1: every item that can lose `wanted` modalities does; the others are skipped.
  np.testing.assert_array_equal(lost[simulated], np.where(can_lose, wanted, 0))
  assert can_lose.any() and not can_lose.all()


def test_item_without_any_modality_refused(tmp_path):
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
def test_bad_availability_file(tsv_folder, array, problem):
  np.save(tsv_folder / 'availability.npy', array)
  assert_data_error(tsv_config(tsv_folder, setting='given'), 'availability.npy', problem)


@pytest.mark.parametrize('field,value', [('missing_rows', 'zero'), ('availability_file', '')])
def test_bad_declared_missingness_config(field, value):
  assert_data_error(small_config(**{field: value}), f'config.data.{field}')


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
def test_authors_missing_files_give_the_mask(tmp_path, setting):
  write_milk(tmp_path)
  write_authors_files(tmp_path)
  config = small_config(format='milk', path=str(tmp_path), setting=setting,
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
def test_inconsistent_authors_files_refused(tmp_path, change, problem):
  write_milk(tmp_path)
  write_authors_files(tmp_path, **change)
  assert_data_error(small_config(format='milk', path=str(tmp_path), setting='ftmt'), problem)


def test_authors_files_of_the_wrong_shape_or_warm_index_refused(tmp_path):
  write_milk(tmp_path)
  write_authors_files(tmp_path, warm_missing=(1,))
  config = small_config(format='milk', path=str(tmp_path), setting='mtmt')
  assert_data_error(config, 'warm_missing_item_index.npy: disagrees with', 'omits 1 items they '
                    'mark (first: 3)')
  config.data.setting = 'ftmt'  # The warm index describes _missing_all only.
  np.testing.assert_array_equal(data.load_dataset(config).availability, authors_mask('ftmt'))
  np.save(tmp_path / 'text_feat_missing_test.npy', np.zeros((9, 2), np.float32))
  assert_data_error(config, 'text_feat_missing_test.npy: shape (9, 2) differs from',
                    'text_feat.npy: (10, 2)')


# ------------------------------------------ declared missingness keyed by raw item ids


def write_availability_table(folder: Path, rows, header='item\ttext\timage'):
  (folder / 'availability.tsv').write_text(
      header + '\n' + ''.join('\t'.join(map(str, row)) + '\n' for row in rows))


def test_availability_table_by_raw_item_id(tmp_path):
  write_raw_folder(tmp_path, [(u, i, 0) for u in RAW_USERS for i in RAW_ITEMS])
  # Columns in any order; unlisted items keep every modality.
  write_availability_table(tmp_path, [(RAW_ITEMS[3], 1, 0), (RAW_ITEMS[8], 0, 1)])
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
def test_bad_availability_table_is_refused(tmp_path, rows, header, message):
  write_raw_folder(tmp_path, [(u, i, 0) for u in RAW_USERS for i in RAW_ITEMS])
  write_availability_table(tmp_path, rows, header)
  config = tsv_config(tmp_path, ids='raw', setting='given', availability_file='availability.tsv')
  assert_data_error(config, 'availability.tsv', message)
