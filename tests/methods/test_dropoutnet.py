"""Tests of milk_jax/methods/dropoutnet.py against plain numpy written from spec section 5."""

import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from milk_jax.errors import ConfigError
from milk_jax.methods import dropoutnet
from milk_jax.training import state as state_lib
from milk_jax.training import step as step_lib

TRAIN_PAIRS = np.array([[0, 0], [0, 2], [2, 1]], np.int32)  # User 1 has no training pair.
SECTION = {'hidden': (3,), 'top_n': 2}  # DropoutNet at width 2, one hidden layer of 3.


@pytest.fixture
def setup(make_config, two_tower):
  """setup(**section) -> (config, method, tables) on the two-tower catalogue."""
  def build(**section):
    config = make_config('dropoutnet', embed_dim=2, **{**SECTION, **section})
    method = dropoutnet.make(config, two_tower.SPEC)
    dataset = types.SimpleNamespace(warm_items=two_tower.WARM, train_pairs=TRAIN_PAIRS)
    return config, method, two_tower.tables(
        method.prepare(dataset, {'cf_users': two_tower.CF_USERS, 'cf_items': two_tower.CF_ITEMS}))
  return build


_draws = jax.jit(dropoutnet.step_draws, static_argnums=(1, 2))
_pair_loss = jax.jit(dropoutnet.pair_loss, static_argnums=6)


def np_item_input(two_tower, items, drop_item):
  v = two_tower.np_standardize(two_tower.CF_ITEMS, 5.0)[items] * (1 - drop_item[:, None])
  return np.concatenate([v, two_tower.FEATURES[0][items], two_tower.FEATURES[1][items]], axis=1)


def np_loss(two_tower, params, users, items, drop_user, drop_item):
  u = two_tower.np_standardize(two_tower.CF_USERS, 5.0)[users] * (1 - drop_user[:, None])
  f = two_tower.np_tower(params['user_tower'], None, u, train=True)
  g = two_tower.np_tower(params['item_tower'], None, np_item_input(two_tower, items, drop_item),
                        train=True)
  targets = np.sum(two_tower.CF_USERS[users] * two_tower.CF_ITEMS[items], 1)  # Raw backbone scores.
  return np.mean((np.sum(f * g, 1) - targets) ** 2)


def test_pair_loss_matches_numpy(setup, two_tower):
  _, method, tables = setup()
  params = two_tower.explicit_params(method, 7)
  users = np.array([0, 2, 1, 0, 2, 2])
  items = np.array([0, 1, 2, 1, 0, 2])
  drop_user = np.array([1, 0, 0, 1, 0, 1])
  drop_item = np.array([0, 1, 1, 0, 0, 1])
  got, moments = _pair_loss(params, jnp.asarray(users), jnp.asarray(items),
                            jnp.asarray(drop_user, bool), jnp.asarray(drop_item, bool), tables,
                            two_tower.EPS)
  np.testing.assert_allclose(got, np_loss(two_tower, params, users, items, drop_user, drop_item),
                             rtol=1e-5)
  h = (np_item_input(two_tower, items, drop_item)
       @ np.asarray(params['item_tower']['block_0']['dense']['w']))
  np.testing.assert_allclose(moments['item_tower']['block_0']['mean'],
                             h.mean(0) + np.asarray(params['item_tower']['block_0']['dense']['b']),
                             rtol=1e-5, atol=1e-6)


def test_step_loss_is_the_pair_loss_of_the_step_draws(setup, two_tower):
  _, method, tables = setup()
  params = two_tower.explicit_params(method, 7)
  batch = {k: jnp.zeros((4,), jnp.int32) for k in ('users', 'positives', 'negatives')}
  key = jax.random.key(3)
  got, (metrics, _) = jax.jit(method.loss)(params, batch, key, tables)
  users, items, drop_user, drop_item = (np.asarray(a) for a in _draws(key, 4, 0.5, tables))
  np.testing.assert_allclose(got, np_loss(two_tower, params, users, items, drop_user, drop_item),
                             rtol=1e-5)
  assert float(metrics['loss']) == float(got)


@pytest.mark.parametrize('tau,batch_size', [(0.5, 7), (0.3, 8), (0.0, 5)])
def test_step_draws_targets_and_exact_dropout_counts(setup, two_tower, tau, batch_size):
  _, _, tables = setup()
  top = np.asarray(tables.extras['dropoutnet_top_items'])
  for seed in range(5):
    users, items, drop_user, drop_item = (np.asarray(a) for a in _draws(
        jax.random.key(seed), batch_size, tau, tables))
    num_pairs = 2 * batch_size
    assert users.shape == items.shape == drop_user.shape == drop_item.shape == (num_pairs,)
    assert drop_user.sum() == drop_item.sum() == int(np.floor(tau * num_pairs))
    assert set(users) <= {0, 2}  # Users with training interactions only.
    np.testing.assert_array_equal(users[:batch_size], users[batch_size:])
    assert all(i in top[u] for u, i in zip(users[:batch_size], items[:batch_size]))
    assert set(items[batch_size:]) <= set(two_tower.WARM)


def test_user_and_item_dropout_are_independent(setup):
  _, _, tables = setup()
  _, _, drop_user, drop_item = _draws(jax.random.key(0), 64, 0.5, tables)
  assert not np.array_equal(drop_user, drop_item)


def test_top_items_are_each_users_best_warm_items():
  rng = np.random.default_rng(0)
  users, items = rng.normal(size=(50, 4)), rng.normal(size=(30, 4))
  warm = np.sort(rng.choice(30, 20, replace=False))
  got = dropoutnet.top_items(users, items, warm, 5, chunk=16)
  scores = users @ items[warm].T
  for u in range(50):
    assert set(got[u]) == set(warm[np.argsort(-scores[u])[:5]])
  everything = dropoutnet.top_items(users, items, warm, 20)
  assert all(set(row) == set(warm) for row in everything)


def test_prepare_standardises_and_lists_training_users(setup, two_tower):
  _, _, tables = setup()
  for name, cf in (('cf_items_std', two_tower.CF_ITEMS), ('cf_users_std', two_tower.CF_USERS)):
    np.testing.assert_allclose(tables.extras[name], two_tower.np_standardize(cf, 5.0), rtol=1e-5,
                               atol=1e-6)
  assert tables.extras['dropoutnet_users'].tolist() == [0, 2]
  np.testing.assert_array_equal(tables.extras['cf_users'], two_tower.CF_USERS)  # The raw ones stay.


def test_embed_gives_new_items_a_zero_cf_input_and_uses_running_stats(setup, two_tower):
  _, method, tables = setup()
  params = two_tower.explicit_params(method, 7)
  users, items = jax.jit(method.embed)(params, tables)
  stats = params['batch_stats']
  is_new = np.isin(np.arange(5), two_tower.NEW).astype(float)
  want_items = two_tower.np_tower(params['item_tower'], stats['item_tower'],
                                  np_item_input(two_tower, np.arange(5), is_new), train=False)
  want_users = two_tower.np_tower(params['user_tower'], stats['user_tower'],
                                  two_tower.np_standardize(two_tower.CF_USERS, 5.0), train=False)
  np.testing.assert_allclose(items, want_items, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(users, want_users, rtol=1e-5, atol=1e-6)


def test_update_blends_the_step_moments_with_torch_momentum(setup, two_tower):
  config, method, tables = setup()
  params = two_tower.explicit_params(method, 7)
  state = state_lib.train_state(method, params, method.optimizer)
  batch = {k: jnp.zeros((4,), jnp.int32) for k in ('users', 'positives', 'negatives')}
  key = jax.random.key(5)
  new, _ = jax.jit(step_lib.make_update(config, method))(state, batch, key, tables)
  draws = _draws(key, 4, config.methods.dropoutnet.dropout, tables)
  _, moments = _pair_loss(params, *draws, tables, two_tower.EPS)
  want = jax.tree.map(lambda r, b: 0.99 * r + 0.01 * b, params['batch_stats'], moments)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6),
               new.model_state['batch_stats'], want)


@pytest.mark.parametrize('field,value', [('dropout', 1.0), ('hidden', ()), ('top_n', 0),
                                         ('bn_momentum', 0.0), ('optimizer', 'sgd')])
def test_check_config_refuses(make_config, field, value):
  config = make_config('dropoutnet', embed_dim=2, **{**SECTION, field: value})
  with pytest.raises(ConfigError, match=f'config.methods.dropoutnet.{field}='):
    dropoutnet.check_config(config)
