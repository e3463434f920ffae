"""milk_jax/serving.py: what a run saves reproduces the training catalogue's preprocessing."""

import dataclasses
import os

import numpy as np
import pytest

from milk_jax import serving
from milk_jax.data import dataset as dataset_lib
from milk_jax.data import ids
from milk_jax.errors import RunFolderError


@pytest.mark.parametrize('imputation', ['mean', 'zero', 'learned'])
def test_saved_preprocessing_prepares_items_as_training_did(imputation, tmp_path, make_config):
  config = make_config()
  config.data.setting = 'mtmt'
  config.data.imputation = imputation
  dataset = dataset_lib.load_dataset(config)
  extras = {'cf_items': np.arange(6, dtype=np.float32).reshape(3, 2)}
  serving.write_serving(str(tmp_path), dataset, extras, normalize=True)
  saved = serving.read_serving(str(tmp_path))
  assert saved.preprocessing.modality_names == dataset.modality_names
  assert saved.preprocessing.imputation.method == imputation
  np.testing.assert_array_equal(saved.extras['cf_items'], extras['cf_items'])
  np.testing.assert_array_equal(saved.train_pairs, dataset.train_pairs)
  raw, _ = dataset_lib.read_layout(config.data, int(config.seed))
  items = dataset.test_items
  prepared = saved.preprocessing.apply([f[items] for f in raw.features],
                                       dataset.availability[items])
  for m, features in enumerate(prepared):
    np.testing.assert_allclose(features, dataset.features[m][items], rtol=0, atol=2e-7)
  if imputation == 'mean':  # Bit for bit: the same fill, the same normalisation.
    for m, features in enumerate(prepared):
      np.testing.assert_array_equal(features, dataset.features[m][items])


def test_vectors_round_trip(tmp_path):
  users = np.arange(6, dtype=np.float32).reshape(3, 2)
  items = -np.arange(8, dtype=np.float32).reshape(4, 2)
  serving.write_vectors(str(tmp_path), users, items, epoch=7)
  got_users, got_items, epoch = serving.read_vectors(str(tmp_path), 3, 4)
  np.testing.assert_array_equal(got_users, users)
  np.testing.assert_array_equal(got_items, items)
  assert epoch == 7


def test_a_damaged_serving_file_is_named(tmp_path):
  with open(os.path.join(tmp_path, serving.SERVING_FILE), 'wb') as f:
    f.write(b'not a zip archive')
  with pytest.raises(RunFolderError, match=r'serving\.npz is damaged'):
    serving.read_serving(str(tmp_path))


@pytest.mark.parametrize('change, message', [
    (lambda a: a.pop('feature_dims'), "no 'feature_dims' array"),
    (lambda a: a.update(fill_0=np.zeros((3, 3), np.float32)),
     r"'fill_0' is float32 of shape \(3, 3\), expected shape \(24,\)"),
    (lambda a: a.update(modality_names=np.arange(2)),
     r"'modality_names' is int64 of shape \(2,\), expected 1-D \(str\)"),
    (lambda a: a.update(map_x_1_weights=np.zeros(2)), "unknown array 'map_x_1_weights'"),
    (lambda a: a.update(map_0_1_weights=np.zeros((12, 3))),
     r"'map_0_1_weights' is float64 of shape \(12, 3\), expected shape \(12, 24\)"),
    (lambda a: a.update(warm_items=a['warm_items'] + 1000), "'warm_items' holds indices outside"),
    (lambda a: a.update(train_pairs=a['train_pairs'][:, :1]),
     r"'train_pairs' has shape \(\d+, 1\), expected \(n, 2\)"),
    (lambda a: a.update(num_users=np.asarray([1, 2])), r"'num_users' is int64 of shape \(2,\)"),
    (lambda a: a.update(extra__table=np.asarray(['a'])), "'extra__table' is <U1"),
])
def test_a_crafted_serving_file_is_named(tmp_path, change, message, small_dataset, edit_npz):
  serving.write_serving(str(tmp_path), small_dataset, {}, normalize=True)
  edit_npz(os.path.join(tmp_path, serving.SERVING_FILE), change)
  with pytest.raises(RunFolderError, match=r'serving\.npz: ' + message):
    serving.read_serving(str(tmp_path))


@pytest.mark.parametrize('arrays, message', [
    ({'users': np.zeros((3, 2)), 'items': np.zeros((4, 3)), 'epoch': np.asarray(1)},
     r"'items' is float64 of shape \(4, 3\), expected shape \(4, 2\)"),
    ({'users': np.zeros((2, 2)), 'items': np.zeros((4, 2)), 'epoch': np.asarray(1)},
     r"'users' has shape \(2, 2\), but the run has 3 users"),
    ({'users': np.zeros((3, 2)), 'items': np.zeros((4, 2))}, "no 'epoch' array"),
    ({'users': np.full((3, 2), np.inf), 'items': np.zeros((4, 2)), 'epoch': np.asarray(1)},
     "'users' holds NaN or inf"),
])
def test_crafted_vectors_are_named(tmp_path, arrays, message):
  np.savez(os.path.join(tmp_path, serving.VECTORS_FILE), **arrays)
  with pytest.raises(RunFolderError, match=r'vectors\.npz: ' + message):
    serving.read_vectors(str(tmp_path), 3, 4)


def test_id_maps_round_trip(tmp_path, small_dataset):
  # A raw id may hold any character but a tab or a newline, U+2028 and \x1c too.
  dataset = small_dataset
  user_ids = np.array([f'u\u2028{u}\x1c' for u in range(dataset.num_users)])
  dataset = dataclasses.replace(dataset, user_ids=user_ids)
  serving.write_id_maps(str(tmp_path), dataset)
  assert (tmp_path / 'users.tsv').read_text(encoding='utf-8') == ids.id_map_text(user_ids)
  items = (tmp_path / 'items.tsv').read_text().splitlines()
  assert items[:3] == ['index\tid', '0\t0', '1\t1'] and len(items) == dataset.num_items + 1
  # The run's reader gives the raw ids back in index order.
  np.testing.assert_array_equal(serving.read_id_map(str(tmp_path), 'users.tsv'), user_ids)


def test_a_damaged_id_map_is_named(tmp_path):
  (tmp_path / 'items.tsv').write_text('index\tid\n1\tx\n')
  with pytest.raises(RunFolderError, match=r'items\.tsv: line 2 is not `0<TAB>id`'):
    serving.read_id_map(str(tmp_path), 'items.tsv')
  with pytest.raises(RunFolderError, match=r'users\.tsv is missing'):
    serving.read_id_map(str(tmp_path), 'users.tsv')
