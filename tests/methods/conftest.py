"""What the tests of milk_jax/methods share, requested as fixtures.

`two_tower`: the catalogue of the baselines that read a warm backbone
(DropoutNet, Heater, GAR, GoRec), with numpy references of their towers.
`content_catalogue`: the catalogue of the content-only known-answer tests
(BPR-MF, DUIF, MTPR). Each is a namespace of constants and functions.
`hand_dataset`: a Dataset from hand-made arrays (CCFCRec, CLCRec, MICRO,
SiBraR), whose Tables come from `training.state.tables_on_device` as a run's do.
(`make_config`, the small-config builder, is tests/conftest.py's.)
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from milk_jax.data.dataset import Dataset
from milk_jax.methods import DataSpec
from milk_jax.methods import Tables


class TwoTowerCatalogue:
  """3 users, 5 items (0-2 warm, 3-4 new, whose CF rows are zero), two modalities of
  widths 2 and 3, CF vectors of width d = 2."""

  EPS = 1e-3  # BatchNorm epsilon of DropoutNet and Heater.
  WARM, NEW = np.array([0, 1, 2]), np.array([3, 4])
  FEATURES = (np.array([[0.6, 0.8], [1.0, 0.0], [0.0, 1.0], [0.8, -0.6], [0.5, 0.5]],
                       np.float32),
              np.array([[0.2, 0.3, -0.1], [0.0, 1.0, 0.0], [0.5, -0.5, 0.5], [0.1, 0.1, 0.9],
                        [-0.3, 0.2, 0.4]], np.float32))
  CONTENT = np.concatenate(FEATURES, axis=1)  # (I, F) = (5, 5)
  CF_USERS = np.array([[0.5, -1.0], [1.5, 0.2], [-0.7, 0.9]], np.float32)
  CF_ITEMS = np.array([[1.0, 0.3], [-0.4, 0.8], [0.2, -1.2], [0.0, 0.0], [0.0, 0.0]],
                      np.float32)
  SPEC = DataSpec(num_users=3, num_items=5, feature_dims=(2, 3), num_warm_items=3)

  @classmethod
  def tables(cls, extras) -> Tables:
    """The catalogue's Tables with `extras` (a method's prepared ones) on device."""
    is_new = np.isin(np.arange(5), cls.NEW)
    return Tables(features=tuple(jnp.asarray(f) for f in cls.FEATURES),
                  availability=jnp.ones((5, 2), bool),
                  warm_items=jnp.asarray(cls.WARM, jnp.int32), is_new=jnp.asarray(is_new),
                  extras={k: jnp.asarray(v) for k, v in extras.items()})

  @staticmethod
  def explicit_params(method, seed):
    """Every leaf of the method's parameter tree set to values drawn here (BN scales near 1)."""
    rng = np.random.default_rng(seed)
    def value(path, x):
      name = jax.tree_util.keystr(path)
      if name.endswith("['scale']") or name.endswith("['var']"):
        return jnp.asarray(rng.uniform(0.5, 1.5, x.shape), jnp.float32)
      return jnp.asarray(rng.uniform(-0.8, 0.8, x.shape), jnp.float32)
    return jax.tree_util.tree_map_with_path(value, method.init(jax.random.key(0)))

  @staticmethod
  def np_standardize(x, clip):
    """Column z-scores over the non-zero rows, clipped, tiny values zeroed; zero rows stay 0."""
    nz = np.abs(x).sum(1) > 0
    z = np.zeros_like(x, dtype=np.float64)
    z[nz] = (x[nz] - x[nz].mean(0)) / x[nz].std(0)
    z = np.clip(z, -clip, clip)
    z[np.abs(z) < 1e-5] = 0
    return z

  @classmethod
  def np_tower(cls, p, stats, x, train):
    """tanh(BN(x W + b)) blocks then x W_o + b_o; BN on batch stats (train) or running stats."""
    p = jax.tree.map(np.asarray, p)
    for name in sorted(k for k in p if k.startswith('block_')):
      h = x @ p[name]['dense']['w'] + p[name]['dense']['b']
      if train:
        mean, var = h.mean(0), h.var(0)
      else:
        mean, var = np.asarray(stats[name]['mean']), np.asarray(stats[name]['var'])
      x = np.tanh((h - mean) / np.sqrt(var + cls.EPS) * p[name]['bn']['scale']
                  + p[name]['bn']['offset'])
    return x @ p['out']['w'] + p['out']['b']


class ContentCatalogue:
  """Five items, three modalities of widths 2, 1, 1 (F = 4); items 0-2 are warm, 3 and 4
  new; item 4 has item 1's content. Three users; BATCH is four (user, positive, negative)
  rows."""

  FEATURES = (np.array([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0], [0.8, 0.6], [0.6, 0.8]]),
              np.array([[1.0], [-1.0], [1.0], [1.0], [-1.0]]),
              np.array([[1.0], [1.0], [-1.0], [1.0], [1.0]]))
  CONTENT = np.concatenate(FEATURES, axis=1)  # (I, F) = (5, 4)
  IS_NEW = np.array([False, False, False, True, True])
  BATCH = {'users': np.array([0, 1, 2, 0]), 'positives': np.array([0, 1, 2, 2]),
           'negatives': np.array([1, 2, 0, 1])}
  SPEC = DataSpec(num_users=3, num_items=5, feature_dims=(2, 1, 1), num_warm_items=3)

  @classmethod
  def tables(cls) -> Tables:
    return Tables(features=tuple(jnp.asarray(f, jnp.float32) for f in cls.FEATURES),
                  availability=jnp.ones((5, 3), bool), warm_items=jnp.arange(3, dtype=jnp.int32),
                  is_new=jnp.asarray(cls.IS_NEW), extras={})

  @classmethod
  def batch(cls) -> dict[str, jax.Array]:
    return {k: jnp.asarray(v, jnp.int32) for k, v in cls.BATCH.items()}


@pytest.fixture(scope='session')
def two_tower():
  return TwoTowerCatalogue


@pytest.fixture(scope='session')
def content_catalogue():
  return ContentCatalogue


def _hand_dataset(features, train_pairs, num_users: int, num_warm_items: int,
                  availability=None) -> Dataset:
  """Items 0 .. num_warm_items - 1 warm, then two new ones: the first a validation item (user
  0's), the second a test item (user 1's). availability: (I, M) bool, every modality if None."""
  num_items = features[0].shape[0]
  new = np.arange(num_warm_items, num_items, dtype=np.int32)
  assert new.size == 2, 'a hand-made dataset has two new items'
  if availability is None:
    availability = np.ones((num_items, len(features)), bool)
  return Dataset(modality_names=tuple('abcdefgh'[:len(features)]), features=tuple(features),
                 availability=availability, num_users=num_users, num_items=num_items,
                 train_pairs=train_pairs, val_pairs=np.array([[0, new[0]]], np.int32),
                 test_pairs=np.array([[1, new[1]]], np.int32),
                 warm_items=np.arange(num_warm_items, dtype=np.int32), val_items=new[:1],
                 test_items=new[1:], source='hand-made')


@pytest.fixture(scope='session')
def hand_dataset():
  """hand_dataset(features, train_pairs, num_users, num_warm_items, availability=None)
  -> a Dataset (see _hand_dataset)."""
  return _hand_dataset
