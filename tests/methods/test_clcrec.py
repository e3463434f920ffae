"""CLCRec (milk_jax/methods/clcrec.py): its loss against numpy, its sampling and inference."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from milk_jax import methods
from milk_jax.errors import ConfigError
from milk_jax.methods import clcrec
from milk_jax.training import state as state_lib

NUM_USERS, NUM_ITEMS, DIM = 3, 6, 2
WARM, NEW = np.arange(4), np.array([4, 5])
# User 0 trained on items 0, 1, 2; user 1 on 3; user 2 on 0 and 3.
TRAIN_PAIRS = np.array([[0, 0], [0, 1], [0, 2], [1, 3], [2, 0], [2, 3]], np.int32)
FEATURES = (np.array([[0.6, 0.8], [1.0, 0.0], [0.0, 1.0], [0.8, -0.6], [-0.6, 0.8], [0.0, -1.0]],
                     np.float32),
            np.array([[1.0], [-1.0], [1.0], [1.0], [-1.0], [1.0]], np.float32))


@pytest.fixture
def dataset(hand_dataset):
  return hand_dataset(FEATURES, TRAIN_PAIRS, NUM_USERS, WARM.size)


@pytest.fixture
def make_method(make_config, dataset):
  """make_method(batch_size=2, **fields) -> (CLCRec, its Tables) on the hand-made data."""
  def build(batch_size=2, **fields):
    config = make_config('clcrec', embed_dim=DIM, train={'batch_size': batch_size}, **fields)
    method = clcrec.make(config, methods.data_spec(dataset))
    return method, state_lib.tables_on_device(dataset, extras=method.prepare(dataset, {}))
  return build


def hand_params():
  rng = np.random.default_rng(3)
  return {
      'user_embedding': np.array([[0.5, -1.0], [2.0, 0.3], [-0.7, 0.4]], np.float32),
      'item_embedding': np.array([[1.0, 0.0], [0.2, 0.9], [-0.5, 0.5], [0.3, -1.2],
                                  [9.0, 9.0], [-9.0, 9.0]], np.float32),
      'encoder': {'first': {'w': rng.normal(0, 0.5, (3, 256)).astype(np.float32),
                            'b': rng.normal(0, 0.1, 256).astype(np.float32)},
                  'second': {'w': rng.normal(0, 0.1, (256, DIM)).astype(np.float32),
                             'b': np.array([0.05, -0.02], np.float32)}},
  }


def numpy_content(params, items):
  """f_i = W2 LeakyReLU(W1 x_i + b1) + b2, x_i the concatenated features."""
  x = np.concatenate(FEATURES, axis=1)[items]
  enc = params['encoder']
  h = x @ enc['first']['w'] + enc['first']['b']
  h = np.where(h > 0, h, 0.01 * h)
  return h @ enc['second']['w'] + enc['second']['b']


def numpy_info_nce(logits):
  m = logits.max(axis=1, keepdims=True)
  log_softmax = logits - m - np.log(np.exp(logits - m).sum(axis=1, keepdims=True))
  return -log_softmax[:, 0].mean()


def numpy_loss(params, users, items, replace, lam, tau, reg):
  """Spec 8.3 row by row: items (B, K + 1) with the positive first."""
  e_u = params['user_embedding'][users]
  e_i = params['item_embedding'][items]
  f = numpy_content(params, items)
  unit = lambda x: x / np.linalg.norm(x, axis=-1, keepdims=True)
  re_logits = np.einsum('bd,bkd->bk', unit(e_i[:, 0]), unit(f)) / tau
  candidates = np.where(replace[..., None], f, e_i)
  ui_logits = np.einsum('bd,bkd->bk', e_u, candidates) / tau
  regulariser = 0.5 * (np.linalg.norm(e_u, axis=1).mean()
                       + np.linalg.norm(e_i.reshape(-1, DIM), axis=1).mean())
  return lam * numpy_info_nce(re_logits) + (1 - lam) * numpy_info_nce(ui_logits) + reg * regulariser


def test_loss_with_one_negative_and_no_replacement_matches_numpy(make_method):
  # K = 1: the row is [i+, the sampler's negative]; rho = 0: U-I uses ID embeddings only.
  method, tables = make_method(num_negatives=1, num_sample=0.0, lr_lambda=0.3, temperature=0.5,
                               reg_weight=0.2)
  params = hand_params()
  batch = {'users': jnp.array([0, 2], jnp.int32), 'positives': jnp.array([1, 3], jnp.int32),
           'negatives': jnp.array([3, 1], jnp.int32)}
  loss, metrics = jax.jit(method.loss)(jax.tree.map(jnp.asarray, params), batch,
                                       jax.random.key(0), tables)
  expected = numpy_loss(params, np.array([0, 2]), np.array([[1, 3], [3, 1]]),
                        np.zeros((2, 2), bool), 0.3, 0.5, 0.2)
  np.testing.assert_allclose(float(loss), expected, rtol=1e-5)
  assert float(metrics['loss']) == float(loss)


def test_objective_with_replaced_candidates_matches_numpy():
  params = hand_params()
  users = np.array([1, 0])
  items = np.array([[3, 0, 2], [2, 3, 3]])
  replace = np.array([[True, False, False], [False, False, True]])
  objective = jax.jit(clcrec.objective, static_argnums=(5, 6, 7))
  loss, metrics = objective(
      jax.tree.map(jnp.asarray, params), jnp.asarray(users), jnp.asarray(items),
      jnp.asarray(numpy_content(params, items)), jnp.asarray(replace),
      0.5, 2.0, 0.1)
  np.testing.assert_allclose(float(loss), numpy_loss(params, users, items, replace, 0.5, 2.0, 0.1),
                             rtol=1e-5)
  # The U-I term alone: lambda 0 and no regulariser.
  ui, _ = objective(jax.tree.map(jnp.asarray, params), jnp.asarray(users), jnp.asarray(items),
                    jnp.asarray(numpy_content(params, items)), jnp.asarray(replace), 0.0, 2.0, 0.0)
  np.testing.assert_allclose(float(ui), float(metrics['ui_loss']), rtol=1e-6)


def test_negatives_avoid_the_users_training_items(make_method):
  method, tables = make_method(num_negatives=200)
  batch = {'users': jnp.array([0, 1, 2], jnp.int32), 'positives': jnp.array([2, 3, 0], jnp.int32),
           'negatives': jnp.array([3, 0, 1], jnp.int32)}
  row_items = jax.jit(clcrec.row_items, static_argnums=3)
  items = np.asarray(row_items(jax.random.key(1), batch, tables.extras, 200))
  assert items.shape == (3, 201)
  np.testing.assert_array_equal(items[:, 0], [2, 3, 0])
  np.testing.assert_array_equal(items[:, 1], [3, 0, 1])
  drawn = items[:, 2:]
  # Warm items minus each user's training items, and each allowed item does come up.
  assert set(drawn[0]) == {3}
  assert set(drawn[1]) == {0, 1, 2}
  assert set(drawn[2]) == {1, 2}


def test_replaced_rows_are_floor_rho_n_draws_with_replacement():
  key = jax.random.key(0)
  replaced_rows = jax.jit(clcrec.replaced_rows, static_argnums=(1, 2))
  assert not replaced_rows(key, 1000, 0.0).any()
  # floor(0.5 * 3) = 1 draw: exactly one row.
  assert int(replaced_rows(key, 3, 0.5).sum()) == 1
  # With replacement, about 1 - exp(-rho) of the rows end up replaced.
  for rho in (0.5, 1.0):
    fraction = float(replaced_rows(key, 40_000, rho).mean())
    assert abs(fraction - (1 - np.exp(-rho))) < 0.01, (rho, fraction)


def test_objective_on_the_catalogue_matches_numpy():
  # 2 rows score gathered anchors; 8 rows (more than the 3 users and 6 items) score whole tables.
  params = hand_params()
  objective = jax.jit(clcrec.catalogue_objective, static_argnums=(5, 6, 7))
  rng = np.random.default_rng(5)
  for num_rows in (2, 8):
    users = rng.integers(0, NUM_USERS, num_rows)
    items = rng.integers(0, 4, (num_rows, 3))
    replace = rng.random((num_rows, 3)) < 0.5
    loss, _ = objective(jax.tree.map(jnp.asarray, params), jnp.asarray(users), jnp.asarray(items),
                        jnp.asarray(numpy_content(params, np.arange(NUM_ITEMS))),
                        jnp.asarray(replace), 0.5, 2.0, 0.1)
    np.testing.assert_allclose(float(loss),
                               numpy_loss(params, users, items, replace, 0.5, 2.0, 0.1), rtol=1e-5)


@pytest.mark.parametrize('num_rows', [2, 8])
def test_dense_scores_on_the_catalogue_give_the_gathered_rows_loss_and_gradients(
    make_method, num_rows, monkeypatch):
  # batch_size 1, K 3: B(K + 1) = 4 < 6 items, gathered rows (`objective`); batch_size 8: 32 >= 6,
  # dense scores against the catalogue (`catalogue_objective`). 8 rows exceed the 3 users and
  # 6 items, so the dense path scores whole tables; 2 rows, gathered anchors.
  rng = np.random.default_rng(num_rows)
  users = rng.integers(0, NUM_USERS, num_rows)
  batch = {'users': jnp.asarray(users, jnp.int32),
           'positives': jnp.asarray(TRAIN_PAIRS[rng.integers(0, 6, num_rows), 1], jnp.int32),
           'negatives': jnp.asarray(rng.integers(0, 4, num_rows), jnp.int32)}
  params = jax.tree.map(jnp.asarray, hand_params())
  calls = []
  dense = clcrec.catalogue_objective
  monkeypatch.setattr(clcrec, 'catalogue_objective',
                      lambda *args: calls.append(1) or dense(*args))
  results = []
  for batch_size in (1, 8):
    method, tables = make_method(batch_size=batch_size, num_negatives=3, num_sample=0.5)
    grad = jax.jit(jax.grad(method.loss, has_aux=True))
    results.append(grad(params, batch, jax.random.key(4), tables))
    assert len(calls) == (batch_size == 8)
  (grads, metrics), (dense_grads, dense_metrics) = results
  assert set(metrics) == set(dense_metrics)
  for name in metrics:
    np.testing.assert_allclose(float(dense_metrics[name]), float(metrics[name]), rtol=1e-5)
  for path, a in jax.tree_util.tree_leaves_with_path(grads):
    b = dense_grads
    for key in path:
      b = b[key.key]
    assert np.abs(np.asarray(a)).max() > 0, path
    np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-5, atol=1e-7,
                               err_msg=jax.tree_util.keystr(path))


def test_dense_scores_keep_a_zero_row_outside_the_batch_out_of_the_gradients(make_method):
  # Whole tables are normalised; a zero row must not turn the gradients into NaN.
  method, tables = make_method(batch_size=8, num_negatives=1)
  params = jax.tree.map(jnp.asarray, hand_params())
  params['item_embedding'] = params['item_embedding'].at[5].set(0.0)
  batch = {'users': jnp.array([0, 1, 2, 0, 1, 2, 0, 2], jnp.int32),
           'positives': jnp.array([0, 3, 0, 1, 3, 3, 2, 0], jnp.int32),
           'negatives': jnp.array([3, 0, 1, 3, 1, 2, 3, 2], jnp.int32)}
  grads, _ = jax.jit(jax.grad(method.loss, has_aux=True))(params, batch, jax.random.key(0), tables)
  for leaf in jax.tree.leaves(grads):
    assert np.isfinite(np.asarray(leaf)).all()
  np.testing.assert_array_equal(np.asarray(grads['item_embedding'])[4:], 0.0)


@pytest.mark.parametrize('pool', ['warm', 'all'])
def test_the_lookup_table_draws_what_the_binary_search_draws(dataset, pool):
  extras = clcrec.negative_tables(dataset, pool)
  allowed = extras['clcrec_allowed_items']
  pool_items = WARM if pool == 'warm' else np.arange(NUM_ITEMS)
  for user in range(NUM_USERS):
    trained = TRAIN_PAIRS[TRAIN_PAIRS[:, 0] == user, 1]
    expected = [i for i in pool_items if i not in trained]
    np.testing.assert_array_equal(allowed[user, :len(expected)], expected)
  searched = {k: v for k, v in extras.items() if k != 'clcrec_allowed_items'}
  batch = {'users': jnp.array([0, 1, 2, 2, 0], jnp.int32),
           'positives': jnp.array([2, 3, 0, 3, 1], jnp.int32),
           'negatives': jnp.array([3, 0, 1, 1, 3], jnp.int32)}
  row_items = jax.jit(clcrec.row_items, static_argnums=3)
  for seed in range(3):
    key = jax.random.key(seed)
    np.testing.assert_array_equal(
        np.asarray(row_items(key, batch, jax.tree.map(jnp.asarray, extras), 50)),
        np.asarray(row_items(key, batch, jax.tree.map(jnp.asarray, searched), 50)))


def test_new_items_use_the_encoder_and_warm_items_their_id_rows(make_method):
  method, tables = make_method()
  params = hand_params()
  users, items = jax.jit(method.embed)(jax.tree.map(jnp.asarray, params), tables)
  np.testing.assert_allclose(np.asarray(users), params['user_embedding'])
  np.testing.assert_allclose(np.asarray(items)[WARM], params['item_embedding'][WARM])
  np.testing.assert_allclose(np.asarray(items)[NEW], numpy_content(params, NEW), rtol=1e-5,
                             atol=1e-6)


def test_id_tables_share_the_xavier_normal_std_of_one_joint_table():
  init = jax.jit(clcrec.init_params, static_argnums=(1, 2, 3, 4))
  params = init(jax.random.key(0), 700, 300, 5, 64)
  std = np.sqrt(2.0 / (700 + 300 + 64))
  for name in ('user_embedding', 'item_embedding'):
    assert abs(float(np.std(params[name])) / std - 1) < 0.03, name
  bound = 1 / np.sqrt(5)
  assert np.abs(params['encoder']['first']['w']).max() <= bound
  assert params['encoder']['second']['w'].shape == (256, 64)


@pytest.mark.parametrize('field,value', [('lr_lambda', 1.5), ('temperature', 0.0),
                                         ('num_negatives', 0), ('num_sample', -0.1),
                                         ('reg_weight', -1.0)])
def test_bad_fields_are_refused(make_config, field, value):
  config = make_config('clcrec', **{field: value})
  with pytest.raises(ConfigError, match=f'config.methods.clcrec.{field}='):
    clcrec.check_config(config)
