"""BPR-MF, the warm backbone: its loss by hand, and new items without a CF row."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from milk_jax.methods import bprmf


@pytest.fixture
def make_method(make_config, content_catalogue):
  """make_method(reg_weight=0.5): BPR-MF at width 2 on the content catalogue's shapes."""
  def build(reg_weight=0.5):
    config = make_config('bprmf', embed_dim=2, reg_weight=reg_weight)
    return bprmf.make(config, content_catalogue.SPEC)
  return build


def test_loss_by_hand(make_method, content_catalogue):
  params = {'user_embedding': jnp.asarray([[1.0, 0.0], [0.5, 2.0]]),
            'item_embedding': jnp.asarray([[1.0, 1.0], [0.0, -1.0], [3.0, 3.0]])}
  batch = {'users': jnp.asarray([0, 1]), 'positives': jnp.asarray([0, 0]),
           'negatives': jnp.asarray([1, 1])}
  loss, metrics = make_method(0.5).loss(params, batch, None, content_catalogue.tables())
  # Scores: user 0: pos 1.0, neg 0.0; user 1: pos 2.5, neg -2.0.
  bpr = (np.log1p(np.exp(-1.0)) + np.log1p(np.exp(-4.5))) / 2
  # Un-squared Frobenius norms of the batch rows, over B = 2.
  users = np.sqrt(1.0 + 0.25 + 4.0)
  positives = np.sqrt(4 * 1.0)
  negatives = np.sqrt(2 * 1.0)
  expected = bpr + 0.5 * (users + positives + negatives) / 2
  np.testing.assert_allclose(metrics['bpr'], bpr, rtol=1e-6)
  np.testing.assert_allclose(loss, expected, rtol=1e-6)


def test_new_items_have_zero_vectors(make_method, content_catalogue):
  method = make_method()
  params = method.init(jax.random.key(0))
  _, items = method.embed(params, content_catalogue.tables())  # Items 3 and 4 are new.
  assert not np.asarray(items[3:]).any()
  np.testing.assert_array_equal(items[:3], params['item_embedding'][:3])
