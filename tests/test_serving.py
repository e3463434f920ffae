"""milk_jax/serving.py: what a run saves reproduces the training catalogue's preprocessing."""

import os

import numpy as np
import pytest

from milk_jax import serving
from milk_jax.data import dataset as dataset_lib
from milk_jax.errors import RunFolderError
from tests.helpers import tiny_config


@pytest.mark.parametrize('imputation', ['mean', 'zero', 'learned'])
def test_saved_preprocessing_prepares_items_as_training_did(imputation, tmp_path):
  config = tiny_config()
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
  got_users, got_items, epoch = serving.read_vectors(str(tmp_path))
  np.testing.assert_array_equal(got_users, users)
  np.testing.assert_array_equal(got_items, items)
  assert epoch == 7


def test_a_damaged_serving_file_is_named(tmp_path):
  with open(os.path.join(tmp_path, serving.SERVING_FILE), 'wb') as f:
    f.write(b'not a zip archive')
  with pytest.raises(RunFolderError, match=r'serving\.npz is damaged'):
    serving.read_serving(str(tmp_path))
