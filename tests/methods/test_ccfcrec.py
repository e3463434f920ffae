"""CCFCRec (milk_jax/methods/ccfcrec.py): loss against numpy, sampler, optimiser, inference."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from milk_jax import methods
from milk_jax.data.errors import DataError
from milk_jax.errors import ConfigError
from milk_jax.methods import ccfcrec
from milk_jax.training import state as state_lib

NUM_USERS, NUM_ITEMS, DIM = 4, 7, 2
WARM, NEW = np.arange(5), np.array([5, 6])
# User 0 trained on 0, 1, 2; user 1 on 3; user 2 on 0, 3, 4; user 3 on 1.
TRAIN_PAIRS = np.array([[0, 0], [0, 1], [0, 2], [1, 3], [2, 0], [2, 3], [2, 4], [3, 1]], np.int32)
FEATURES = (np.array([[0.6, 0.8], [1.0, 0.0], [0.0, 1.0], [0.8, -0.6], [-0.6, 0.8], [0.0, -1.0],
                      [0.6, -0.8]], np.float32),
            np.array([[1.0], [-1.0], [1.0], [1.0], [-1.0], [1.0], [-1.0]], np.float32))


@pytest.fixture
def dataset(hand_dataset):
  return hand_dataset(FEATURES, TRAIN_PAIRS, NUM_USERS, WARM.size)


@pytest.fixture
def make_method(make_config, dataset):
  """make_method(availability=None, **fields) -> (CCFCRec, its Tables) on the hand-made data."""
  def build(availability=None, **fields):
    config = make_config('ccfcrec', embed_dim=DIM, **fields)
    data = dataset if availability is None else dataclasses.replace(dataset,
                                                                    availability=availability)
    method = ccfcrec.make(config, methods.data_spec(data))
    return method, state_lib.tables_on_device(data, extras=method.prepare(data, {}))
  return build


def hand_params():
  return {
      'user_embedding': np.array([[0.5, -1.0], [2.0, 0.3], [-0.7, 0.4], [0.1, 0.9]], np.float32),
      'item_embedding': np.array([[1.0, 0.0], [0.2, 0.9], [-0.5, 0.5], [0.3, -1.2], [-0.4, -0.3],
                                  [9.0, 9.0], [-9.0, 9.0]], np.float32),
      'projections': {'modality_0': np.array([[0.5, -0.3], [0.2, 0.8]], np.float32),
                      'modality_1': np.array([[-0.6, 0.4]], np.float32)},
      'generator': {'first': {'w': np.array([[0.3, -0.5], [0.7, 0.2], [-0.4, 0.6], [0.1, -0.9]],
                                            np.float32),
                              'b': np.array([0.1, -0.2], np.float32)},
                    'second': {'w': np.array([[0.8, -0.3], [0.5, 1.1]], np.float32),
                               'b': np.array([0.05, -0.1], np.float32)}},
  }


def numpy_q(params, items):
  """q_i = W2 LeakyReLU(W1 [x_i1 W_a ; x_i2 W_b] + b1) + b2."""
  slots = [FEATURES[0][items] @ params['projections']['modality_0'],
           FEATURES[1][items] @ params['projections']['modality_1']]
  g = params['generator']
  h = np.concatenate(slots, axis=-1) @ g['first']['w'] + g['first']['b']
  h = np.where(h > 0, h, 0.01 * h)
  return h @ g['second']['w'] + g['second']['b']


def numpy_loss(params, users, items, positives, negatives, self_negatives, negative_users,
               tau, lambda1):
  """Spec 9.3, one row and one term at a time, in float64."""
  p = jax.tree.map(lambda a: np.asarray(a, np.float64), params)
  E, U = p['item_embedding'], p['user_embedding']
  q = numpy_q(p, items)
  cos = lambda a, b: a @ b / (np.linalg.norm(a) * np.linalg.norm(b))
  sigmoid = lambda z: 1 / (1 + np.exp(-z))
  co = own = rank = 0.0
  for b in range(len(users)):
    per_positive = []
    for j, pos in enumerate(positives[b]):
      top = np.exp(cos(q[b], E[pos]) / tau)
      bottom = top + sum(np.exp(cos(q[b], E[n]) / tau) for n in negatives[b, j])
      per_positive.append(-np.log(top / bottom))
    co += np.mean(per_positive)
    top = np.exp(cos(q[b], E[items[b]]) / tau)
    own += -np.log(top / (top + sum(np.exp(cos(q[b], E[s]) / tau) for s in self_negatives[b])))
    e_u, e_k, e_i = U[users[b]], U[negative_users[b]], E[items[b]]
    rank += -np.log(sigmoid(e_i @ e_u - e_i @ e_k)) - np.log(sigmoid(q[b] @ e_u - q[b] @ e_k))
  return lambda1 * (co + own) + (1 - lambda1) * rank, co, own, rank


def explicit_samples():
  """B = 2 rows, P = 2, N = 3, S = 2, written by hand."""
  users, items = np.array([0, 2]), np.array([1, 3])
  return users, items, ccfcrec.Samples(
      positives=np.array([[2, 1], [4, 0]]),
      negatives=np.array([[[3, 4, 3], [4, 4, 3]], [[1, 2, 1], [2, 1, 1]]]),
      self_negatives=np.array([[3, 4], [1, 2]]),
      negative_users=np.array([1, 3]))


@pytest.mark.parametrize('dense', [False, True])
def test_objective_on_explicit_draws_matches_numpy(dense):
  params = hand_params()
  users, items, samples = explicit_samples()
  q = numpy_q(params, items)
  objective = jax.jit(ccfcrec.objective, static_argnums=(5, 6, 7))
  loss, metrics = objective(jax.tree.map(jnp.asarray, params), jnp.asarray(q, jnp.float32),
                            jnp.asarray(users), jnp.asarray(items),
                            jax.tree.map(jnp.asarray, samples), 0.5, 0.6, dense)
  total, co, own, rank = numpy_loss(params, users, items, *samples, tau=0.5, lambda1=0.6)
  np.testing.assert_allclose(float(loss), total, rtol=1e-5)
  np.testing.assert_allclose(float(metrics['co_contrast']), co, rtol=1e-5)
  np.testing.assert_allclose(float(metrics['self_contrast']), own, rtol=1e-5)
  np.testing.assert_allclose(float(metrics['ranking']), rank, rtol=1e-5)


def test_dense_and_gathered_cosines_give_the_same_gradients():
  params = jax.tree.map(jnp.asarray, hand_params())
  users, items, samples = explicit_samples()
  samples = jax.tree.map(jnp.asarray, samples)

  def loss(params, dense):
    q = ccfcrec.generate(params, tuple(jnp.asarray(f)[items] for f in FEATURES),
                         jnp.ones((2, 2), bool))
    return ccfcrec.objective(params, q, jnp.asarray(users), jnp.asarray(items), samples, 0.1,
                             0.6, dense)[0]

  grad = jax.jit(jax.grad(loss), static_argnums=1)
  gathered, dense = grad(params, False), grad(params, True)
  for a, b in zip(jax.tree.leaves(gathered), jax.tree.leaves(dense)):
    np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-4, atol=1e-6)


def test_method_loss_is_the_objective_on_its_own_draws(make_method):
  # The step's loss = numpy's equations on what draw_samples gives for the step key.
  method, tables = make_method(num_positives=2, num_negatives=3, num_self_negatives=2,
                               temperature=0.5, lambda1=0.3)
  params = hand_params()
  batch = {'users': jnp.array([0, 2, 1], jnp.int32), 'positives': jnp.array([1, 3, 3], jnp.int32),
           'negatives': jnp.array([3, 1, 0], jnp.int32)}
  key = jax.random.key(7)
  loss, metrics = jax.jit(method.loss)(jax.tree.map(jnp.asarray, params), batch, key, tables)
  draw = jax.jit(ccfcrec.draw_samples, static_argnums=(4, 5, 6))
  samples = draw(key, batch['users'], batch['positives'], tables.extras, 2, 3, 2)
  expected, *_ = numpy_loss(params, np.asarray(batch['users']), np.asarray(batch['positives']),
                            *jax.tree.map(np.asarray, samples), tau=0.5, lambda1=0.3)
  np.testing.assert_allclose(float(loss), expected, rtol=1e-5)
  assert float(metrics['loss']) == float(loss)


def _draw_many(extras, users, items, num_positives=30, num_negatives=20, num_self=25, seed=0):
  draw = jax.jit(ccfcrec.draw_samples, static_argnums=(4, 5, 6))
  return draw(jax.random.key(seed), jnp.asarray(users, jnp.int32), jnp.asarray(items, jnp.int32),
              jax.tree.map(jnp.asarray, extras), num_positives, num_negatives, num_self)


@pytest.mark.parametrize('pool', ['warm', 'all'])
def test_draws_respect_the_interactions(dataset, pool):
  extras = ccfcrec.sampler_extras(dataset, pool)
  assert 'ccfcrec_allowed_items' in extras
  users, items = TRAIN_PAIRS[:, 0], TRAIN_PAIRS[:, 1]
  samples = jax.tree.map(np.asarray, _draw_many(extras, users, items))
  rows = len(users)
  assert samples.positives.shape == (rows, 30)
  assert samples.negatives.shape == (rows, 30, 20)
  assert samples.self_negatives.shape == (rows, 25)
  assert samples.negative_users.shape == (rows,)
  pool_items = set(WARM if pool == 'warm' else range(NUM_ITEMS))
  for b, (user, item) in enumerate(zip(users, items)):
    own = set(TRAIN_PAIRS[TRAIN_PAIRS[:, 0] == user, 1])
    # Positives: exactly the user's items, each one coming up (30 draws from at most 3).
    assert set(samples.positives[b]) == own
    # Negatives: the pool minus the user's items, and every such item comes up.
    assert set(samples.negatives[b].ravel()) | set(samples.self_negatives[b]) == pool_items - own
    assert set(samples.self_negatives[b]) <= pool_items - own
    raters = set(TRAIN_PAIRS[TRAIN_PAIRS[:, 1] == item, 0])
    assert samples.negative_users[b] not in raters
  # The negative users of item 3 (raters 1, 2) over many rows: users 0 and 3, both.
  many = np.asarray(_draw_many(extras, np.full(rows, 1), np.full(rows, 3)).negative_users)
  assert set(many) == {0, 3}


def test_the_lookup_table_draws_what_the_binary_search_draws(dataset):
  extras = ccfcrec.sampler_extras(dataset, 'warm')
  searched = {k: v for k, v in extras.items() if k != 'ccfcrec_allowed_items'}
  users, items = TRAIN_PAIRS[:, 0], TRAIN_PAIRS[:, 1]
  for seed in range(2):
    looked_up = _draw_many(extras, users, items, seed=seed)
    found = _draw_many(searched, users, items, seed=seed)
    for a, b in zip(looked_up, found):
      np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_an_item_that_every_user_trained_on_has_no_negative_user(dataset):
  pairs = np.concatenate([TRAIN_PAIRS, [[1, 0], [3, 0]]]).astype(np.int32)
  with pytest.raises(DataError, match='every user trained on item 0'):
    ccfcrec.negative_user_tables(dataclasses.replace(dataset, train_pairs=pairs))


def test_the_optimiser_is_torch_adam_with_weight_decay():
  # torch.optim.Adam(weight_decay=wd): g <- g + wd p, then the moments m, v and
  # p -= lr m_hat / (sqrt(v_hat) + eps).
  lr, wd, eps = 1e-2, 0.1, 1e-8
  p = np.array([0.5, -2.0, 3.0])
  grads = [np.array([0.1, 0.0, -0.3]), np.array([-0.2, 0.4, 0.0])]
  optimizer = ccfcrec.make_optimizer(lr, wd)
  params = jnp.asarray(p, jnp.float32)
  state = optimizer.init(params)
  m = v = np.zeros(3)
  for t, g in enumerate(grads, start=1):
    updates, state = optimizer.update(jnp.asarray(g, jnp.float32), state, params)
    params = params + updates
    g = g + wd * p
    m, v = 0.9 * m + 0.1 * g, 0.999 * v + 0.001 * g * g
    p = p - lr * (m / (1 - 0.9 ** t)) / (np.sqrt(v / (1 - 0.999 ** t)) + eps)
  np.testing.assert_allclose(np.asarray(params), p, rtol=1e-5)


def test_new_items_use_the_generator_and_warm_items_their_cf_rows(make_method):
  method, tables = make_method()
  params = hand_params()
  users, items = jax.jit(method.embed)(jax.tree.map(jnp.asarray, params), tables)
  np.testing.assert_allclose(np.asarray(users), params['user_embedding'])
  np.testing.assert_allclose(np.asarray(items)[WARM], params['item_embedding'][WARM])
  np.testing.assert_allclose(np.asarray(items)[NEW], numpy_q(params, NEW), rtol=1e-5, atol=1e-6)


def test_masked_attention_skips_a_missing_modality(make_method):
  availability = np.ones((NUM_ITEMS, 2), bool)
  availability[6, 1] = False  # Item 6 lacks modality b.
  method, tables = make_method(availability, fusion='masked_attention')
  params = jax.tree.map(jnp.asarray, method.init(jax.random.key(0)))
  np.testing.assert_array_equal(np.asarray(params['modality_logits']), [0.0, 0.0])
  embed = jax.jit(method.embed)
  _, items = embed(params, tables)
  # With every modality present and logits 0, the slots are the plain concatenation.
  concat = {k: v for k, v in params.items() if k != 'modality_logits'}
  _, plain = embed(concat, tables)
  np.testing.assert_allclose(np.asarray(items)[5], np.asarray(plain)[5], rtol=1e-6)
  # Item 6: slot b is zero and slot a doubled (weights 2, 0), whatever b's features or logit.
  x = np.asarray(FEATURES[0][6:7] @ np.asarray(params['projections']['modality_0']))
  g = jax.tree.map(np.asarray, params['generator'])
  h = np.concatenate([2 * x, np.zeros_like(x)], axis=1) @ g['first']['w'] + g['first']['b']
  expected = np.where(h > 0, h, 0.01 * h) @ g['second']['w'] + g['second']['b']
  np.testing.assert_allclose(np.asarray(items)[6], expected[0], rtol=1e-5, atol=1e-6)
  params['modality_logits'] = jnp.array([0.0, 5.0])
  scrambled = tables._replace(features=(tables.features[0], -7.0 * tables.features[1]))
  np.testing.assert_allclose(np.asarray(embed(params, scrambled)[1])[6],
                             expected[0], rtol=1e-5, atol=1e-6)


def test_init_follows_the_original():
  init = jax.jit(ccfcrec.init_params, static_argnums=(1, 2, 3, 4, 5, 6))
  params = init(jax.random.key(0), 900, 1200, 1000, (300, 20), 64, 'concat')
  assert abs(float(np.std(params['user_embedding'])) / np.sqrt(2 / (900 + 64)) - 1) < 0.03
  assert abs(float(np.std(params['item_embedding'])) / np.sqrt(2 / (1000 + 64)) - 1) < 0.03
  assert params['projections']['modality_0'].shape == (300, 64)
  assert params['generator']['first']['w'].shape == (128, 64)
  assert np.abs(params['generator']['first']['b']).max() <= 1 / np.sqrt(128)
  assert 'modality_logits' not in params


@pytest.mark.parametrize('field,value', [('lambda1', 1.5), ('temperature', 0.0),
                                         ('num_positives', 0), ('num_negatives', 0),
                                         ('num_self_negatives', 0), ('weight_decay', -0.1),
                                         ('fusion', 'sum')])
def test_bad_fields_are_refused(make_config, field, value):
  config = make_config('ccfcrec', **{field: value})
  with pytest.raises(ConfigError, match=f'config.methods.ccfcrec.{field}='):
    ccfcrec.check_config(config)
