"""Tests of milk_jax/methods/heater.py against plain numpy written from spec section 7."""

import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from milk_jax.errors import ConfigError
from milk_jax.methods import heater
from milk_jax.training import state as state_lib
from milk_jax.training import step as step_lib

REG, ALPHA = 0.01, 0.1  # Larger than the defaults so that every term shows in the total.
SECTION = {'num_experts': 3, 'reg_weight': REG, 'alpha': ALPHA}

_draws = jax.jit(heater.step_draws, static_argnums=(3, 4))
_pair_loss = jax.jit(heater.pair_loss, static_argnums=(6, 7, 8, 9))


@pytest.fixture
def setup(make_config, two_tower):
  """setup(**section) -> (config, method, tables) on the two-tower catalogue."""
  def build(**section):
    config = make_config('heater', embed_dim=2, **{**SECTION, **section})
    method = heater.make(config, two_tower.SPEC)
    return config, method, two_tower.tables(
        method.prepare(None, {'cf_users': two_tower.CF_USERS, 'cf_items': two_tower.CF_ITEMS}))
  return build


def np_content_rep(two_tower, params, items):
  """c = tanh(sum_k tanh(x W_g + b_g)_k E_k(x)), each expert tanh after every layer."""
  x = np.concatenate([two_tower.FEATURES[0][items], two_tower.FEATURES[1][items]], axis=1)
  experts = jax.tree.map(np.asarray, params['experts'])
  num_experts = params['gate']['w'].shape[1]
  outputs = []
  for k in range(num_experts):
    h = x
    for l in range(len(experts)):
      h = np.tanh(h @ experts[f'layer_{l}']['w'][k] + experts[f'layer_{l}']['b'][k])
    outputs.append(h)
  gate = np.tanh(x @ np.asarray(params['gate']['w']) + np.asarray(params['gate']['b']))
  return np.tanh(sum(gate[:, k:k + 1] * outputs[k] for k in range(num_experts)))


def np_loss(two_tower, params, users, items, labels, replaced):
  standardize = two_tower.np_standardize
  v = standardize(two_tower.CF_ITEMS, 1.0)[items]  # Items clipped to +-1, users to +-5.
  c = np_content_rep(two_tower, params, items)
  f = two_tower.np_tower(params['user_tower'], None, standardize(two_tower.CF_USERS, 5.0)[users],
                         train=True)
  g = two_tower.np_tower(params['item_tower'], None, np.where(replaced[:, None], c, v), train=True)
  mse = np.mean((np.sum(f * g, 1) - labels) ** 2)
  dense = [params['gate']] + list(params['experts'].values()) + [
      params[t][layer]['dense'] if layer != 'out' else params[t]['out']
      for t in ('user_tower', 'item_tower') for layer in ('block_0', 'out')]
  reg = sum(np.sum(np.asarray(layer['w']) ** 2) + np.sum(np.asarray(layer['b']) ** 2)
            for layer in dense)
  similarity = np.sum((c - v) ** 2)
  return mse + REG * reg + ALPHA * similarity


@pytest.mark.parametrize('catalogue', [False, True])
@pytest.mark.parametrize('expert_hidden', [(), (4,)])
def test_pair_loss_matches_numpy(setup, two_tower, expert_hidden, catalogue):
  _, method, tables = setup(expert_hidden=expert_hidden)
  params = two_tower.explicit_params(method, 11)
  users = np.array([0, 2, 1, 0, 2, 1, 0])
  items = np.array([0, 1, 2, 1, 0, 2, 2])
  labels = np.array([1, 1, 0, 0, 0, 1, 0], np.float32)
  replaced = np.array([1, 0, 0, 1, 0, 1, 0], bool)
  got, (metrics, _) = _pair_loss(params, jnp.asarray(users), jnp.asarray(items),
                                 jnp.asarray(labels), jnp.asarray(replaced), tables, two_tower.EPS,
                                 REG, ALPHA, catalogue)
  np.testing.assert_allclose(got, np_loss(two_tower, params, users, items, labels, replaced),
                             rtol=1e-5)
  assert float(metrics['loss']) == float(got)


def test_logged_parts_are_the_weighted_terms_that_add_up_to_the_loss(setup, two_tower):
  _, method, _ = setup()
  # Hand-made: every dense weight and bias 0.5 except the gate's (0: g = 0, so c_i = tanh(0) = 0).
  params = jax.tree_util.tree_map_with_path(
      lambda path, x: (jnp.zeros_like(x) if jax.tree_util.keystr(path).startswith("['gate']")
                       else jnp.full_like(x, 0.5)), two_tower.explicit_params(method, 11))
  v = np.array([[1, 0], [0, -1], [1, 1], [0, 0], [0, 0]], np.float32)
  tables = two_tower.tables({'cf_users_std': two_tower.CF_USERS, 'cf_items_std': v})
  items = jnp.array([0, 1, 2, 2])
  _, (metrics, _) = _pair_loss(params, jnp.array([0, 1, 2, 0]), items,
                               jnp.array([1.0, 0.0, 1.0, 0.0]),
                               jnp.array([True, False, True, False]), tables, two_tower.EPS, REG,
                               ALPHA, False)
  # Experts (3 x (5 x 2 + 2)) and two towers (2 x 2 + 2, twice each): 60 entries of 0.25.
  assert float(metrics['squared_weights']) == 15.0
  np.testing.assert_allclose(metrics['reg_term'], REG * 15.0, rtol=1e-6)
  # sum ||0 - V_i||^2 over the pairs' items 0, 1, 2, 2: 1 + 1 + 2 + 2.
  assert float(metrics['similarity_sum']) == 6.0
  np.testing.assert_allclose(metrics['similarity_term'], ALPHA * 6.0, rtol=1e-6)
  np.testing.assert_allclose(metrics['loss'], metrics['mse'] + REG * 15.0 + ALPHA * 6.0, rtol=1e-6)
  assert method.log_keys == ('mse', 'reg_term', 'similarity_term')  # The epoch line's parts.


@pytest.mark.slow  # Gradients of both paths at several catalogue sizes.
def test_experts_over_the_catalogue_give_the_gathered_rows_gradients(setup, two_tower):
  _, method, tables = setup(expert_hidden=(4,))
  params = two_tower.explicit_params(method, 11)
  pairs = (jnp.array([0, 2, 1, 0]), jnp.array([0, 1, 2, 1]), jnp.array([1.0, 0.0, 1.0, 0.0]),
           jnp.array([True, False, True, False]))
  def loss(p, catalogue):
    return heater.pair_loss(p, *pairs, tables, two_tower.EPS, REG, ALPHA, catalogue)[0]
  grads = [jax.grad(loss)(params, c) for c in (False, True)]
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7), *grads)


def test_step_loss_is_the_pair_loss_of_the_step_draws(setup, two_tower):
  _, method, tables = setup()
  params = two_tower.explicit_params(method, 11)
  batch = {'users': jnp.array([0, 2, 1, 2]), 'positives': jnp.array([0, 1, 2, 2]),
           'negatives': jnp.zeros((4,), jnp.int32)}
  key = jax.random.key(4)
  got, _ = jax.jit(method.loss)(params, batch, key, tables)
  draws = (np.asarray(a) for a in _draws(key, batch['users'], batch['positives'], 5, 0.5, tables))
  np.testing.assert_allclose(got, np_loss(two_tower, params, *draws), rtol=1e-5)


@pytest.mark.parametrize('p,num_negatives', [(0.5, 5), (0.3, 2)])
def test_step_draws_labels_negatives_and_exact_replacement_count(setup, two_tower, p,
                                                                 num_negatives):
  _, _, tables = setup()
  users, positives = jnp.array([0, 2, 1, 2, 0, 1, 2, 0]), jnp.array([0, 1, 2, 2, 1, 0, 0, 2])
  pair_users, items, labels, replaced = (np.asarray(a) for a in _draws(
      jax.random.key(1), users, positives, num_negatives, p, tables))
  num_pairs = 8 * (1 + num_negatives)
  assert items.shape == labels.shape == replaced.shape == (num_pairs,)
  assert replaced.sum() == int(np.floor(p * num_pairs))
  np.testing.assert_array_equal(labels, [1.0] * 8 + [0.0] * (8 * num_negatives))
  np.testing.assert_array_equal(items[:8], positives)
  np.testing.assert_array_equal(pair_users, np.tile(users, 1 + num_negatives))
  assert set(items[8:]) <= set(two_tower.WARM)
  # Negatives are not rejected: with 3 warm items some row draws its own positive.
  negatives = items[8:].reshape(num_negatives, 8)
  assert (negatives == np.asarray(positives)[None]).any()


def test_embed_new_items_take_the_content_path(setup, two_tower):
  _, method, tables = setup()
  params = two_tower.explicit_params(method, 11)
  users, items = jax.jit(method.embed)(params, tables)
  stats = params['batch_stats']
  c = np_content_rep(two_tower, params, np.arange(5))
  v_in = np.where(np.isin(np.arange(5), two_tower.NEW)[:, None], c,
                  two_tower.np_standardize(two_tower.CF_ITEMS, 1.0))
  want_items = two_tower.np_tower(params['item_tower'], stats['item_tower'], v_in, train=False)
  want_users = two_tower.np_tower(params['user_tower'], stats['user_tower'],
                                  two_tower.np_standardize(two_tower.CF_USERS, 5.0), train=False)
  np.testing.assert_allclose(items, want_items, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(users, want_users, rtol=1e-5, atol=1e-6)


def test_experts_are_distinct(setup):
  _, method, _ = setup()
  w = np.asarray(method.init(jax.random.key(0))['experts']['layer_0']['w'])
  assert w.shape == (3, 5, 2)
  assert all(not np.allclose(w[0], w[k]) for k in (1, 2))


def test_update_blends_the_step_moments_with_decay_0_9(setup, two_tower):
  config, method, tables = setup()
  params = two_tower.explicit_params(method, 11)
  state = state_lib.train_state(method, params, method.optimizer)
  batch = {'users': jnp.array([0, 2, 1, 2]), 'positives': jnp.array([0, 1, 2, 2]),
           'negatives': jnp.zeros((4,), jnp.int32)}
  key = jax.random.key(6)
  new, metrics = jax.jit(step_lib.make_update(config, method))(state, batch, key, tables)
  assert set(metrics) == {'loss', 'mse', 'reg_term', 'similarity_term', 'squared_weights',
                          'similarity_sum'}
  draws = _draws(key, batch['users'], batch['positives'], 5, 0.5, tables)
  _, (_, moments) = _pair_loss(params, *draws, tables, two_tower.EPS, REG, ALPHA)
  want = jax.tree.map(lambda r, b: 0.9 * r + 0.1 * b, params['batch_stats'], moments)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6),
               new.model_state['batch_stats'], want)


def test_prepare_clips_items_to_one_and_users_to_five(make_config, two_tower):
  method = heater.make(make_config('heater', embed_dim=2, **SECTION), two_tower.SPEC)
  extras = method.prepare(types.SimpleNamespace(),
                          {'cf_users': two_tower.CF_USERS * 40, 'cf_items': two_tower.CF_ITEMS})
  standardize = two_tower.np_standardize
  np.testing.assert_allclose(extras['cf_items_std'], standardize(two_tower.CF_ITEMS, 1.0),
                             atol=1e-6)
  np.testing.assert_allclose(extras['cf_users_std'], standardize(two_tower.CF_USERS, 5.0),
                             atol=1e-6)
  assert np.abs(extras['cf_items_std']).max() <= 1.0


@pytest.mark.parametrize('field,value', [('num_experts', 0), ('dropout', 1.0), ('alpha', -1.0),
                                         ('num_negatives', 0), ('optimizer', 'sgd')])
def test_check_config_refuses(make_config, field, value):
  with pytest.raises(ConfigError, match=f'config.methods.heater.{field}='):
    heater.check_config(make_config('heater', embed_dim=2, **{**SECTION, field: value}))
