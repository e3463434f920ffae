"""milk_jax/data/missing.py: the settings' availability masks, imputation, normalisation."""

from pathlib import Path

import numpy as np
import pytest

from milk_jax import data
from milk_jax.data import missing


def test_ftft_everything_present(data_config):
  dataset = data.load_dataset(data_config(setting='ftft'))
  assert dataset.availability.all() and not dataset.num_missing.any()


def test_ftmt_counts(data_config, new_items_of):
  dataset = data.load_dataset(data_config(setting='ftmt', test_missing_rate=0.5))
  new = new_items_of(dataset)
  assert len(new) == 10
  assert dataset.availability[dataset.warm_items].all()
  np.testing.assert_array_equal(np.bincount(dataset.num_missing[new], minlength=2), [5, 5])


def test_mtmt_counts_and_same_new_mask_as_ftmt(data_config, new_items_of):
  mtmt = data.load_dataset(data_config(setting='mtmt', train_missing_rate=0.3))
  ftmt = data.load_dataset(data_config(setting='ftmt'))
  warm_missing = mtmt.num_missing[mtmt.warm_items]
  assert warm_missing.max() == 1 and warm_missing.sum() == 12  # round(0.3 * 40).
  new = new_items_of(mtmt)
  assert mtmt.num_missing[new].sum() == 5
  np.testing.assert_array_equal(mtmt.availability[new], ftmt.availability[new])


def test_groups_counts(tmp_path, tsv_config, write_features, write_tsv, new_items_of):
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


def test_load_normalizes_huge_features_like_unscaled(tsv_folder, tsv_config, catalogue):
  unscaled = data.load_dataset(tsv_config(tsv_folder))
  for name in catalogue.DIMS:
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
def test_load_imputes_missing_rows(tsv_folder, imputation, tsv_config, write_features, catalogue):
  raw = write_features(tsv_folder)  # Same seed as the fixture: the clean features.
  config = tsv_config(tsv_folder, setting='mtmt', test_missing_rate=1.0,
                      train_missing_rate=1.0, imputation=imputation, normalize=False)
  dataset = data.load_dataset(config)
  warm = np.zeros(catalogue.NUM_ITEMS, bool)
  warm[dataset.warm_items] = True
  for m, name in enumerate(dataset.modality_names):
    present = dataset.availability[:, m]
    assert not present.all()
    np.testing.assert_array_equal(dataset.features[m][present], raw[name][present])
    # The mean of the warm items' present rows only: new items never shape the fill.
    fill = (raw[name][present & warm].mean(axis=0, dtype=np.float64) if imputation == 'mean'
            else 0.0)
    np.testing.assert_allclose(dataset.features[m][~present],
                               np.broadcast_to(fill, (int((~present).sum()), catalogue.DIMS[name])),
                               rtol=1e-6)
  config.data.normalize = True
  normalized = data.load_dataset(config)
  for m, x in enumerate(normalized.features):
    assert x.dtype == np.float32
    # Zero-filled rows have no direction and stay zero; every other row has unit norm.
    expected = 1.0 if imputation == 'mean' else normalized.availability[:, m]
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), expected, rtol=1e-5)


def test_load_learns_the_cross_modal_maps_on_warm_items_only(tsv_folder, tsv_config,
                                                             write_features):
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


def write_hand_milk(folder: Path, write_milk) -> dict[str, np.ndarray]:
  """The milk layout of `write_milk` (warm 0-4 and 9, cold 5-8) with hand-made features."""
  write_milk(folder)
  items = np.arange(10, dtype=np.float32)
  features = {'image': np.stack([items, 2 * items + 1], 1), 'text': (items + 1)[:, None]}
  for name, x in features.items():
    np.save(folder / f'{name}_feat.npy', x)
  return features


def test_given_setting_loads_the_declared_mask_and_imputes_from_warm_items(tmp_path, data_config,
                                                                           write_milk):
  features = write_hand_milk(tmp_path, write_milk)
  declared = np.ones((10, 2), bool)
  declared[[1, 5, 9], 0] = False  # image: warm 1 and 9, val item 5.
  declared[[3, 7], 1] = False  # text: warm 3, test item 7.
  np.save(tmp_path / 'availability.npy', declared.astype(np.int8))
  config = data_config(format='milk', path=str(tmp_path), setting='given', normalize=False)
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


@pytest.mark.parametrize('setting,fields', [
    ('ftmt', {'test_missing_rate': 1.0}),
    ('mtmt', {'test_missing_rate': 1.0, 'train_missing_rate': 1.0}),
    ('groups', {'group_fractions': (0.0, 0.0, 1.0)}),
])
def test_simulation_on_top_of_the_declared_mask(tmp_path, setting, fields, tsv_config,
                                                write_declared_folder, new_items_of):
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


def pattern_counts(available: np.ndarray, patterns: np.ndarray) -> list[int]:
  """How many rows of `available` equal each distinct row of `patterns`, in their order."""
  _, first = np.unique(patterns, axis=0, return_index=True)
  return [int((available == patterns[i]).all(axis=1).sum()) for i in np.sort(first)]


def test_stratified_patterns_and_chunks():
  # M = 2: image missing, text missing, then two chunks missing both (the original's quarters).
  np.testing.assert_array_equal(missing.stratified_patterns(2),
                                [[False, True], [True, False], [False, False], [False, False]])
  # M = 3: the 6 partial sets by size, then 3 all-missing chunks (2^3 - 2 + 3 = 9).
  patterns = missing.stratified_patterns(3)
  assert patterns.shape == (9, 3)
  np.testing.assert_array_equal((~patterns).sum(axis=1), [1, 1, 1, 2, 2, 2, 3, 3, 3])
  assert len(np.unique(patterns[:6], axis=0)) == 6
  np.testing.assert_array_equal(missing.chunk_bounds(10, 4), [0, 2, 5, 7, 10])
  # 241 missing items in 9 chunks: 26, 27, 27, 27, 26, 27 partial and 81 all-missing, the
  # counts of the original's shipped TikTok mask for its popular new items.
  np.testing.assert_array_equal(np.diff(missing.chunk_bounds(241, 9)),
                                [26, 27, 27, 27, 26, 27, 27, 27, 27])


@pytest.mark.parametrize('num_modalities,expected', [
    # Stratum 0 (90 rows) and 1 (45 rows): floor(2/3 n) = 60 and 30 rows miss something, cut
    # at int(i * 60 / K) and int(i * 30 / K). Counts: complete, then the chunks' patterns.
    (2, [[30, 15, 15, 30], [15, 7, 8, 15]]),  # K = 4: image only, text only, both missing.
    (3, [[30, 6, 7, 7, 6, 7, 7, 20], [15, 3, 3, 4, 3, 3, 4, 10]]),  # K = 9.
])
def test_stratified_mask_counts_per_stratum(num_modalities, expected):
  strata = np.repeat([1, 0, 1, 0], [20, 90, 25, 0])  # Strata need not be contiguous.
  mask = missing.stratified_mask(np.random.default_rng(0), strata, 2 / 3, num_modalities)
  patterns = np.concatenate([np.ones((1, num_modalities), bool),
                             missing.stratified_patterns(num_modalities)])
  counts = [pattern_counts(mask[strata == label], patterns) for label in (0, 1)]
  assert counts == expected
  np.testing.assert_array_equal(
      mask, missing.stratified_mask(np.random.default_rng(0), strata, 2 / 3, num_modalities))
  assert not np.array_equal(
      mask, missing.stratified_mask(np.random.default_rng(1), strata, 2 / 3, num_modalities))


def write_popularity_folder(folder: Path, write_features, write_tsv, modalities) -> None:
  """100 items, item i with 1 + i // 10 users: items 0..69 are the unpopular 70%."""
  write_features(folder, num_items=100, dims={name: 2 for name in modalities})
  write_tsv(folder / 'interactions.tsv', 'user\titem',
            [(u, i) for i in range(100) for u in range(1 + i // 10)])


def test_stratified_setting_counts_and_mean_fill(tmp_path, tsv_config, write_features, write_tsv,
                                             new_items_of):
  write_popularity_folder(tmp_path, write_features, write_tsv, ('image', 'text'))
  config = tsv_config(tmp_path, setting='stratified', split='popularity', normalize=False)
  dataset = data.load_dataset(config)
  new = new_items_of(dataset)
  patterns = np.array([[True, True], [False, True], [True, False], [False, False]])
  counts = {}
  for name, items in (('new', new), ('warm', dataset.warm_items)):
    for group, in_group in (('unpopular', items < 70), ('popular', items >= 70)):
      counts[name, group] = pattern_counts(dataset.availability[items[in_group]], patterns)
  # Complete / image only / text only / both missing. New: 14 unpopular items, floor(2/3 * 14)
  # = 9 miss something, cut at int(i * 9 / 4) = 2, 4, 6 -> 2, 2, 5; 6 popular: 4 -> 1, 1, 2.
  # Warm: 56 -> 37 at 9, 18, 27 -> 9, 9, 19; 24 -> 16 -> 4, 4, 8.
  assert counts == {('new', 'unpopular'): [5, 2, 2, 5], ('new', 'popular'): [2, 1, 1, 2],
                    ('warm', 'unpopular'): [19, 9, 9, 19], ('warm', 'popular'): [8, 4, 4, 8]}
  # DGMRec's imputation 1: the mean over the warm (old) items that have the modality.
  raw = np.load(tmp_path / 'image_feat.npy')
  has_image = dataset.warm_items[dataset.availability[dataset.warm_items, 0]]
  lacks_image = ~dataset.availability[:, 0]
  np.testing.assert_allclose(dataset.features[0][lacks_image],
                             np.tile(raw[has_image].mean(axis=0), (lacks_image.sum(), 1)),
                             rtol=1e-6)
  again = data.load_dataset(config)
  np.testing.assert_array_equal(again.availability, dataset.availability)
  config.seed = 1
  assert not np.array_equal(data.load_dataset(config).availability, dataset.availability)


def test_stratified_setting_three_modalities_on_top_of_the_declared_mask(
    tmp_path, tsv_config, write_features, write_tsv, new_items_of):
  modalities = ('image', 'audio', 'text')
  write_popularity_folder(tmp_path, write_features, write_tsv, modalities)
  config = tsv_config(tmp_path, setting='stratified', split='popularity', modalities=modalities,
                      stratified_missing_rate=0.6)
  drawn = data.load_dataset(config).availability
  # Warm unpopular: 56 items, floor(0.6 * 56) = 33 miss something: 3 or 4 per partial set
  # (int(i * 33 / 9) = 3, 7, 11, 14, 18, 22) and 33 - 22 = 11 miss every modality.
  dataset = data.load_dataset(config)
  warm_unpopular = dataset.availability[dataset.warm_items[dataset.warm_items < 70]]
  missing_count = 3 - warm_unpopular.sum(axis=1)
  np.testing.assert_array_equal(np.bincount(missing_count, minlength=4), [23, 11, 11, 11])
  declared = np.random.default_rng(0).random((100, 3)) < 0.7
  declared[~declared.any(axis=1), 0] = True
  np.save(tmp_path / 'availability.npy', declared)
  # The same draws, ANDed with what the dataset declares.
  np.testing.assert_array_equal(data.load_dataset(config).availability, drawn & declared)


def test_stratified_missing_rate_is_checked(data_config, assert_data_error):
  assert_data_error(data_config(setting='stratified', stratified_missing_rate=-0.1),
                    'config.data.stratified_missing_rate=-0.1', '[0, 1]')
