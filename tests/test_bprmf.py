"""BPR-MF, the warm backbone: its loss by hand, and new items without a CF row."""

import jax
import jax.numpy as jnp
import numpy as np

from milk_jax import methods
from milk_jax.methods import bprmf
from tests.helpers import tiny_config


def _method(reg_weight=0.5):
  config = tiny_config()
  config.model.embed_dim = 2
  config.methods.bprmf.reg_weight = reg_weight
  return bprmf.make(config, methods.DataSpec(num_users=2, num_items=3, feature_dims=(1, 1),
                                             num_warm_items=2))


def _tables(is_new):
  return methods.Tables(features=(jnp.zeros((3, 1)), jnp.zeros((3, 1))),
                        availability=jnp.ones((3, 2), bool), warm_items=jnp.arange(2),
                        is_new=jnp.asarray(is_new), extras={})


def test_loss_by_hand():
  params = {'user_embedding': jnp.asarray([[1.0, 0.0], [0.5, 2.0]]),
            'item_embedding': jnp.asarray([[1.0, 1.0], [0.0, -1.0], [3.0, 3.0]])}
  batch = {'users': jnp.asarray([0, 1]), 'positives': jnp.asarray([0, 0]),
           'negatives': jnp.asarray([1, 1])}
  loss, metrics = _method(0.5).loss(params, batch, None, _tables([False, False, True]))
  # Scores: user 0: pos 1.0, neg 0.0; user 1: pos 2.5, neg -2.0.
  bpr = (np.log1p(np.exp(-1.0)) + np.log1p(np.exp(-4.5))) / 2
  # Un-squared Frobenius norms of the batch rows, over B = 2.
  users = np.sqrt(1.0 + 0.25 + 4.0)
  positives = np.sqrt(4 * 1.0)
  negatives = np.sqrt(2 * 1.0)
  expected = bpr + 0.5 * (users + positives + negatives) / 2
  np.testing.assert_allclose(metrics['bpr'], bpr, rtol=1e-6)
  np.testing.assert_allclose(loss, expected, rtol=1e-6)


def test_new_items_have_zero_vectors():
  method = _method()
  params = method.init(jax.random.key(0))
  _, items = method.embed(params, _tables([False, True, False]))
  assert np.all(np.asarray(items[1]) == 0.0)
  np.testing.assert_array_equal(items[0], params['item_embedding'][0])
