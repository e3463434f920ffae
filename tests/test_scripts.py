"""Scripts that feed studies: scripts/make_authors_layout.py round-trips through the milk layout."""

import copy
import os
import subprocess
import sys

import numpy as np
import pytest

from configs import authors
from configs import ml100k
from milk_jax import data

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ML100K = os.path.join(os.path.dirname(REPO), 'shared', 'data', 'ml100k-mm')


@pytest.mark.skipif(not os.path.isdir(ML100K), reason='../shared/data/ml100k-mm is absent')
@pytest.mark.parametrize('setting', ['ftmt', 'mtmt'])
def test_authors_layout_gives_back_the_split_and_masks(tmp_path, setting):
  out = tmp_path / 'authors'
  done = subprocess.run([sys.executable, 'scripts/make_authors_layout.py',
                         '--config=configs/ml100k.py', f'--out={out}', '--seed=1'],
                        cwd=REPO, env={**os.environ, 'JAX_PLATFORMS': 'cpu'},
                        capture_output=True, text=True, timeout=300)
  assert done.returncode == 0, done.stderr[-3000:]
  source = ml100k.get_config()
  source.seed, source.data.setting = 1, setting
  expected = data.load_dataset(source)
  config = authors.get_config()
  config.seed, config.data.setting, config.data.path = 1, setting, str(out)
  loaded = data.load_dataset(config)  # The mask comes from the _missing_test/_all files.
  for field in ('warm_items', 'val_items', 'test_items', 'train_pairs', 'availability'):
    np.testing.assert_array_equal(getattr(loaded, field), getattr(expected, field), field)
  # The mask really comes from the files: ignoring them at missing rates of 0 gives no gaps.
  assert not loaded.availability.all()
  no_files = copy.deepcopy(config)
  no_files.data.authors_missing_files = False
  no_files.data.test_missing_rate = no_files.data.train_missing_rate = 0.0
  assert data.load_dataset(no_files).availability.all()
