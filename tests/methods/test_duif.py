"""DUIF: the loss against numpy on a hand-made batch, the content-only item path."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from milk_jax.errors import ConfigError
from milk_jax.methods import duif

USERS = np.array([[0.5, -0.2], [0.1, 0.3], [-0.4, 0.2]])  # (U, d) = (3, 2)
PROJECTION = np.array([[0.2, -0.1], [0.0, 0.3], [0.1, 0.1], [-0.2, 0.4]])  # (F, d) = (4, 2)


@pytest.fixture
def make_method(make_config, content_catalogue):
  """make_method(reg_weight=0.1) -> (config, DUIF on the content catalogue)."""
  def build(reg_weight=0.1):
    config = make_config('duif', embed_dim=2, reg_weight=reg_weight)
    return config, duif.make(config, content_catalogue.SPEC)
  return build


def _params():
  return {'user_embedding': jnp.asarray(USERS, jnp.float32),
          'projection': jnp.asarray(PROJECTION, jnp.float32)}


def test_loss_matches_numpy(make_method, content_catalogue):
  reg_weight = 0.1
  _, method = make_method(reg_weight)
  loss, metrics = method.loss(_params(), content_catalogue.batch(), None,
                              content_catalogue.tables())
  batch, content = content_catalogue.BATCH, content_catalogue.CONTENT
  u = USERS[batch['users']]
  vp = content[batch['positives']] @ PROJECTION
  vn = content[batch['negatives']] @ PROJECTION
  gap = np.sum(u * vp, 1) - np.sum(u * vn, 1)
  task = np.mean(-np.log(1.0 / (1.0 + np.exp(-gap))))
  frobenius = [np.sqrt(np.sum(a ** 2)) for a in (u, vp, vn)]
  expected = task + reg_weight * sum(frobenius) / 4
  np.testing.assert_allclose(metrics['bpr'], task, rtol=1e-5)
  np.testing.assert_allclose(loss, expected, rtol=1e-5)
  np.testing.assert_allclose(metrics['loss'], expected, rtol=1e-5)


def test_every_item_warm_or_new_is_its_content_projected(make_method, content_catalogue):
  _, method = make_method()
  users, items = method.embed(_params(), content_catalogue.tables())
  np.testing.assert_allclose(users, USERS, rtol=1e-6)
  np.testing.assert_allclose(items, content_catalogue.CONTENT @ PROJECTION, rtol=1e-5,
                             atol=1e-7)
  # Items 1 (warm) and 4 (new) have the same content, hence the same vector.
  np.testing.assert_array_equal(items[1], items[4])


def test_loss_reads_only_the_batch_items_content(make_method, content_catalogue):
  _, method = make_method()
  tables = content_catalogue.tables()
  batch = content_catalogue.batch()  # Items 0, 1, 2 only.
  changed = tables._replace(features=tuple(f.at[3:].set(7.0) for f in tables.features))
  np.testing.assert_array_equal(method.loss(_params(), batch, None, tables)[0],
                                method.loss(_params(), batch, None, changed)[0])


def test_init_shapes(make_method):
  params = make_method()[1].init(jax.random.key(0))
  assert params['user_embedding'].shape == (3, 2)
  assert params['projection'].shape == (4, 2)


def test_negative_regulariser_is_rejected(make_config):
  with pytest.raises(ConfigError, match=r'config\.methods\.duif\.reg_weight=-1\.0'):
    duif.check_config(make_config('duif', embed_dim=2, reg_weight=-1.0))
