"""MTPR: the four-term loss against numpy, the counterfactual path of new items, the optimisers."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from milk_jax import methods
from milk_jax.errors import ConfigError
from milk_jax.methods import mtpr
from milk_jax.training import state as state_lib
from milk_jax.training import step as step_lib

D = 2
PARAMS = {
    'user_embedding': np.array([[0.5, -0.2, 0.3, 0.1], [0.1, 0.3, -0.2, 0.4],
                                [-0.4, 0.2, 0.6, -0.1]]),  # P (U, 2d)
    'item_embedding': np.array([[0.3, 0.1], [-0.2, 0.5], [0.4, -0.3], [0.9, 0.9],
                                [-0.7, 0.8]]),  # Q (I, d)
    'content_projection': np.array([[0.2, -0.1], [0.0, 0.3], [0.1, 0.1], [-0.2, 0.4]]),  # W (F, d)
    'user_transform': np.array([[0.5, 0.1], [-0.3, 0.2], [0.4, -0.6], [0.2, 0.7]]),  # W_u (2d, d)
    'item_transform': np.array([[0.6, -0.2], [0.1, 0.3], [-0.5, 0.4], [0.3, 0.8]]),  # W_i (2d, d)
}


@pytest.fixture
def make_method(make_config, content_catalogue):
  """make_method(**fields) -> (config, MTPR on the content catalogue), `fields` its section's."""
  def build(**fields):
    config = make_config('mtpr', embed_dim=D, **fields)
    return config, mtpr.make(config, content_catalogue.SPEC)
  return build


def _params():
  return jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), PARAMS)


def _numpy_loss(catalogue, reduction, wd1, wd2, wd3):
  """Spec 6.3 written out: concatenations [Q_i ; x_i W] and [0 ; x_i W], then W_i."""
  batch = catalogue.BATCH
  p = PARAMS['user_embedding'][batch['users']] @ PARAMS['user_transform']
  projected = catalogue.CONTENT @ PARAMS['content_projection']

  def normal(items):
    return (np.concatenate([PARAMS['item_embedding'][items], projected[items]], 1)
            @ PARAMS['item_transform'])

  def counterfactual(items):
    return (np.concatenate([np.zeros((len(items), D)), projected[items]], 1)
            @ PARAMS['item_transform'])

  def bpr(pos, neg):
    terms = np.log1p(np.exp(np.sum(p * neg, 1) - np.sum(p * pos, 1)))
    return terms.sum() if reduction == 'sum' else terms.mean()

  i, j = batch['positives'], batch['negatives']
  ranking = (bpr(normal(i), normal(j)) + bpr(counterfactual(i), counterfactual(j))
             + bpr(normal(i), counterfactual(j)) + bpr(counterfactual(i), normal(j)))
  rows = (np.sum(PARAMS['user_embedding'][batch['users']] ** 2)
          + np.sum(PARAMS['item_embedding'][i] ** 2) + np.sum(PARAMS['item_embedding'][j] ** 2))
  decay = (wd1 * rows + wd2 * (np.sum(PARAMS['content_projection'] ** 2)
                               + np.sum(PARAMS['user_transform'] ** 2))
           + wd3 * np.sum(PARAMS['item_transform'] ** 2))
  return ranking + decay, bpr(counterfactual(i), counterfactual(j))


@pytest.mark.parametrize('reduction', ['sum', 'mean'])
def test_loss_matches_numpy(reduction, make_method, content_catalogue):
  wd1, wd2, wd3 = 0.05, 0.01, 0.02
  _, method = make_method(reduction=reduction, embedding_weight_decay=wd1,
                          content_weight_decay=wd2, transform_weight_decay=wd3)
  loss, metrics = method.loss(_params(), content_catalogue.batch(), None,
                              content_catalogue.tables())
  expected, counterfactual = _numpy_loss(content_catalogue, reduction, wd1, wd2, wd3)
  np.testing.assert_allclose(loss, expected, rtol=1e-5)
  np.testing.assert_allclose(metrics['loss'], expected, rtol=1e-5)
  np.testing.assert_allclose(metrics['bpr_counterfactual'], counterfactual, rtol=1e-5)


def test_new_items_use_the_counterfactual_rep_warm_items_the_normal_one(make_method,
                                                                      content_catalogue):
  users, items = make_method()[1].embed(_params(), content_catalogue.tables())
  content = content_catalogue.CONTENT @ PARAMS['content_projection']
  normal = np.concatenate([PARAMS['item_embedding'], content], 1) @ PARAMS['item_transform']
  counterfactual = np.concatenate([np.zeros_like(content), content], 1) @ PARAMS['item_transform']
  np.testing.assert_allclose(users, PARAMS['user_embedding'] @ PARAMS['user_transform'], rtol=1e-5)
  np.testing.assert_allclose(items[:3], normal[:3], rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(items[3:], counterfactual[3:], rtol=1e-5, atol=1e-7)
  # Items 1 (warm) and 4 (new) share their content: only the warm one reads its Q row.
  assert not np.allclose(items[1], items[4])


def test_init_shapes_and_scale(make_method):
  params = make_method(init_std=0.01)[1].init(jax.random.key(0))
  shapes = {k: v.shape for k, v in params.items()}
  assert shapes == {'user_embedding': (3, 2 * D), 'item_embedding': (5, D),
                    'content_projection': (4, D), 'user_transform': (2 * D, D),
                    'item_transform': (2 * D, D)}
  assert max(float(jnp.abs(v).max()) for v in params.values()) < 0.06


@pytest.mark.parametrize('choice, rates', [
    ('adam', {'embedding': 1e-3, 'content': 1e-3, 'transform': 1e-3}),
    ('original', {'embedding': 0.1, 'content': 0.02, 'transform': 0.03})])
def test_optimizer_groups(choice, rates, make_method, content_catalogue):
  """On a first step Adagrad and Adam both move each parameter by its learning rate."""
  config, method = make_method(optimizer=choice, embedding_learning_rate=0.1,
                               content_learning_rate=0.02, transform_learning_rate=0.03)
  state = state_lib.TrainState(step=jnp.zeros((), jnp.int32), params=_params(),
                               opt_state=methods.optimizer(method, config).init(_params()))
  new_state, _ = step_lib.make_update(config, method)(
      state, content_catalogue.batch(), None, content_catalogue.tables())
  for name, group in mtpr._GROUPS.items():
    moved = np.abs(np.asarray(new_state.params[name]) - PARAMS[name]).max()
    np.testing.assert_allclose(moved, rates[group], rtol=1e-3, err_msg=name)
  # Rows never in the batch: item 3 and 4 (the new items) keep their Q rows.
  np.testing.assert_allclose(new_state.params['item_embedding'][3:], PARAMS['item_embedding'][3:],
                             rtol=1e-6)


def test_coldrec_options_score_new_items_normally_from_a_glorot_start(make_method,
                                                                     content_catalogue):
  """new_item_representation='normal': every item q_i, new ones with their own Q row."""
  _, method = make_method(new_item_representation='normal', init='xavier')
  _, items = method.embed(_params(), content_catalogue.tables())
  content = content_catalogue.CONTENT @ PARAMS['content_projection']
  normal = np.concatenate([PARAMS['item_embedding'], content], 1) @ PARAMS['item_transform']
  np.testing.assert_allclose(items, normal, rtol=1e-5, atol=1e-7)
  params = method.init(jax.random.key(0))
  for name, value in params.items():  # Glorot-uniform: within +-sqrt(6 / (rows + cols)).
    bound = np.sqrt(6.0 / sum(value.shape))
    assert float(jnp.abs(value).max()) <= bound and float(jnp.abs(value).max()) > bound / 2, name


@pytest.mark.parametrize('field, value', [('reduction', 'max'), ('optimizer', 'sgd'),
                                          ('init_std', 0.0), ('content_weight_decay', -1.0),
                                          ('embedding_learning_rate', 0.0), ('init', 'zeros'),
                                          ('new_item_representation', 'id')])
def test_bad_values_are_rejected(field, value, make_config):
  with pytest.raises(ConfigError, match=rf'config\.methods\.mtpr\.{field}='):
    mtpr.check_config(make_config('mtpr', embed_dim=D, **{field: value}))

