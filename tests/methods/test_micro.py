"""Tests of milk_jax/methods/micro.py against plain numpy written from spec section 12.

The catalogue: 3 users, 7 items (0-4 warm, 5-6 new), two modalities of
widths 3 and 2; item 3 misses modality 1 (warm), item 6 misses modality 0 (new).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from milk_jax import data as data_lib
from milk_jax import methods
from milk_jax.errors import ConfigError
from milk_jax.methods import micro
from milk_jax.training import state as state_lib
from tests.methods.graph_catalogue import (AVAILABILITY, BATCH, FEATURES, K, NEW, NUM_ITEMS,
                                             NUM_USERS, TRAIN_PAIRS)

D = 3
# Larger than the defaults so that every term shows in the total.
HYPER = dict(lambda_coeff=0.7, loss_ratio=0.5, decay=0.1, temperature=0.5)
SECTION = {'knn_k': K, 'chunk_rows': 4, **HYPER}


@pytest.fixture(scope='module')
def setup(make_config, hand_dataset):
  """setup(**section) -> (method, tables, explicit params): every trained leaf set here,
  offsets included."""
  def build(**section):
    config = make_config('micro', embed_dim=D, train={'batch_size': 4}, **{**SECTION, **section})
    dataset = hand_dataset(FEATURES, TRAIN_PAIRS, NUM_USERS, 5, AVAILABILITY)
    method = micro.make(config, methods.data_spec(dataset))
    tables = state_lib.tables_on_device(dataset, extras=method.prepare(dataset, {}))
    rng = np.random.default_rng(0)
    def value(path, x):
      if micro.GRAPH in jax.tree_util.keystr(path):
        return x
      scale = 0.2 if 'feature_offsets' in jax.tree_util.keystr(path) else 0.8
      return jnp.asarray(rng.uniform(-scale, scale, x.shape), jnp.float32)
    params = jax.tree_util.tree_map_with_path(value, method.init(jax.random.key(0)))
    return method, tables, params
  return build


# ---- numpy, from the equations ----

def np_knn_matrix(z, present, k):
  """Dense normalised kNN graph: row i keeps itself and its k - 1 most similar present items
  (only itself when absent), weights the cosines, then D^-1/2 S D^-1/2 with row sums."""
  zn = z / np.linalg.norm(z, axis=1, keepdims=True)
  sim = zn @ zn.T
  s = np.zeros_like(sim)
  for i in range(len(z)):
    s[i, i] = sim[i, i]
    if not present[i]:
      continue
    others = [j for j in np.argsort(-sim[i], kind='stable') if j != i and present[j]]
    s[i, others[:k - 1]] = sim[i, others[:k - 1]]
  d = s.sum(1) ** -0.5
  return d[:, None] * s * d[None, :]


def np_learned_matrices(params):
  out = []
  for m, x in enumerate(FEATURES):
    name = f'modality_{m}'
    layer = params['projections'][name]
    z = (x + np.asarray(params['feature_offsets'][name])) @ np.asarray(layer['w']) + np.asarray(
        layer['b'])
    out.append(np_knn_matrix(z, AVAILABILITY[:, m], K))
  return out


def np_unit(x):
  return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def np_loss(params, learned, item_layers=1, ui_layers=2):
  """Spec 12.2-12.3 with dense matrices; `learned` = the M learned (I, I) graphs."""
  p = jax.tree.map(np.asarray, params)
  lam, tau = HYPER['lambda_coeff'], HYPER['temperature']
  e = p['item_embedding'].copy()
  e[NEW] = 0.0  # New items' id rows are held at zero.
  views = []
  for m, x in enumerate(FEATURES):
    s = (1 - lam) * learned[m] + lam * np_knn_matrix(x, AVAILABILITY[:, m], K)
    views.append(np.linalg.matrix_power(s, item_layers) @ e)
  q = p['query']
  scores = np.stack([np.tanh(v @ q['hidden']['w'] + q['hidden']['b']) @ q['out']['w'][:, 0]
                     for v in views])  # (M, I)
  weights = np.exp(scores) / np.exp(scores).sum(0)
  h = sum(weights[m][:, None] * views[m] for m in range(2))
  # LightGCN: D^-1 (A + I) over users then items, layer mean.
  a = np.zeros((NUM_USERS + NUM_ITEMS,) * 2)
  a[TRAIN_PAIRS[:, 0], NUM_USERS + TRAIN_PAIRS[:, 1]] = 1
  a[NUM_USERS + TRAIN_PAIRS[:, 1], TRAIN_PAIRS[:, 0]] = 1
  a_hat = a + np.eye(len(a))
  a_hat = a_hat / a_hat.sum(1, keepdims=True)
  ego = np.concatenate([p['user_embedding'], e])
  layers = [ego]
  for _ in range(ui_layers):
    layers.append(a_hat @ layers[-1])
  mean = np.mean(layers, axis=0)
  users, items = mean[:NUM_USERS], mean[NUM_USERS:] + np_unit(h)
  u = users[np.asarray(BATCH['users'])]
  pos, neg = items[np.asarray(BATCH['positives'])], items[np.asarray(BATCH['negatives'])]
  gap = np.sum(u * pos, 1) - np.sum(u * neg, 1)
  bpr = np.mean(-np.log(1 / (1 + np.exp(-gap))))
  decay = HYPER['decay'] * 0.5 * (np.sum(u ** 2) + np.sum(pos ** 2) + np.sum(neg ** 2)) / len(u)
  cl = 0.0
  for v in views:
    a_n, b_n = np_unit(v), np_unit(h)
    refl, between = np.exp(a_n @ a_n.T / tau), np.exp(a_n @ b_n.T / tau)
    # The j = i term of the first sum is e^{1/tau}, or e^0 for a zero view (item 6 in
    # modality 0: a new item isolated there, whose own row is zero).
    self_term = np.where(np.linalg.norm(v, axis=1) > 0, np.exp(1 / tau), 1.0)
    cl += np.mean(-np.log(np.diag(between) / (refl.sum(1) - self_term + between.sum(1))))
  return bpr + decay + HYPER['loss_ratio'] * cl


def dense(indices, weights):
  """(I, k) indices and weights -> the (I, I) matrix they stand for."""
  indices, weights = np.asarray(indices), np.asarray(weights)
  out = np.zeros((len(indices),) * 2)
  np.add.at(out, (np.repeat(np.arange(len(indices)), indices.shape[1]), indices.ravel()),
            weights.ravel())
  return out


# ---- tests ----

@pytest.fixture(scope='module')
def decaying(setup):
  """(method, tables, params, jitted update) with lr_decay 0.5 per epoch, shared (one compile):
  steps per epoch are a table entry, set by each test."""
  method, tables, params = setup(lr_decay=0.5, lr_decay_epochs=1.0)
  return method, tables, params, jax.jit(method.update)


def _with_steps_per_epoch(tables, steps):
  return tables._replace(extras={**tables.extras,
                                 micro.STEPS_PER_EPOCH: jnp.asarray(steps, jnp.int32)})


@pytest.mark.parametrize('item_layers', [1, 2])
def test_loss_equals_numpy(setup, item_layers):
  method, tables, params = setup(item_layers=item_layers)
  value, metrics = jax.jit(method.loss)(params, BATCH, jax.random.key(0), tables)
  expected = np_loss(params, np_learned_matrices(params), item_layers)
  np.testing.assert_allclose(float(value), expected, rtol=2e-5)
  assert float(metrics['loss']) == float(value)
  assert float(metrics['contrastive']) > 0 and float(metrics['decay']) > 0


def test_graph_is_rebuilt_with_gradient_at_each_epoch_start_only(decaying):
  method, tables, params, update = decaying
  tables = _with_steps_per_epoch(tables, 2)
  state = state_lib.train_state(method, params, method.optimizer)
  graphs, losses, param_history = [], [], [state.variables]
  for _ in range(3):
    state, metrics = update(state, BATCH, None, tables)
    graphs.append(state.model_state[micro.GRAPH])
    losses.append(float(metrics['loss']))
    param_history.append(state.variables)
  # Step 0 builds the graph from the initial parameters, step 1 reuses it, step 2 rebuilds.
  for m in range(2):
    first = dense(graphs[0]['indices'][m], graphs[0]['weights'][m])
    np.testing.assert_allclose(first, np_learned_matrices(param_history[0])[m], atol=1e-6)
    np.testing.assert_array_equal(np.asarray(graphs[1]['weights'][m]),
                                  np.asarray(graphs[0]['weights'][m]))
    np.testing.assert_allclose(dense(graphs[2]['indices'][m], graphs[2]['weights'][m]),
                               np_learned_matrices(param_history[2])[m], atol=1e-6)
  stale = np_learned_matrices(param_history[0])
  np.testing.assert_allclose(losses[0], np_loss(param_history[0], stale), rtol=2e-5)
  np.testing.assert_allclose(losses[1], np_loss(param_history[1], stale), rtol=2e-5)
  # The projections get a gradient only through the rebuilt graph: from a fresh Adam state
  # (no momentum), a step inside an epoch leaves them as they are, an epoch's first moves them.
  def projection_step(at):
    state = state_lib.train_state(method, param_history[1], method.optimizer).replace(
        step=jnp.asarray(at, jnp.int32))
    new, _ = update(state, BATCH, None, tables)
    return np.abs(np.asarray(new.params['projections']['modality_0']['w'])
                  - np.asarray(param_history[1]['projections']['modality_0']['w'])).max()
  assert projection_step(1) == 0.0
  assert projection_step(2) > 0.0


def test_missing_items_keep_only_their_self_loop(make_config):
  """Spec 12.7: in modality m's fixed and learned graphs, an item missing m has only itself
  (weight 1 after normalisation) and is no other item's neighbour."""
  config = make_config('micro')
  dataset = data_lib.load_dataset(config)
  availability = dataset.availability
  assert (~availability).any(axis=0).all(), 'the tiny ftmt data misses both modalities'
  method = state_lib.make_method(config, dataset)
  extras = method.prepare(dataset, {})
  tables = state_lib.tables_on_device(dataset, extras=extras)
  params = method.init(jax.random.key(0))
  learned = jax.jit(micro.learned_graphs, static_argnums=(2, 3, 4))(params, tables, 10, 64, True)
  graphs = {'fixed': (extras[micro.FIXED_INDICES], extras[micro.FIXED_WEIGHTS]),
            'learned': (learned['indices'], learned['weights'])}
  for name, (indices, weights) in graphs.items():
    for m in range(availability.shape[1]):
      matrix = dense(indices[m], weights[m])
      missing = np.flatnonzero(~availability[:, m])
      present = np.flatnonzero(availability[:, m])
      sub = matrix[missing][:, missing]
      np.testing.assert_allclose(sub, np.eye(len(missing)), atol=1e-6, err_msg=name)
      assert not matrix[missing][:, present].any(), name
      assert not matrix[present][:, missing].any(), name
      # Present items do have neighbours other than themselves.
      assert (np.count_nonzero(matrix[present], axis=1) > 1).all(), name
  # The original's behaviour: mean-imputed rows find each other first (a clique).
  config.methods.micro.isolate_missing = False
  clique = state_lib.make_method(config, dataset).prepare(dataset, {})[micro.FIXED_INDICES]
  missing = np.flatnonzero(~availability[:, 0])
  first = min(len(missing), clique.shape[-1])
  assert np.isin(clique[0][missing][:, :first], missing).all()


@pytest.mark.parametrize('chunk_rows', [1, 5, 37, 64])
def test_chunked_knn_equals_unchunked_numpy(chunk_rows):
  rng = np.random.default_rng(3)
  z = rng.normal(size=(37, 8)).astype(np.float32)
  present = rng.uniform(size=37) > 0.2
  k = 5
  indices, cosines, valid = jax.jit(micro.knn, static_argnums=(2, 3))(
      jnp.asarray(z), jnp.asarray(present), k, chunk_rows)
  zn = z / np.linalg.norm(z, axis=1, keepdims=True)
  sim = zn @ zn.T
  for i in range(37):
    others = [j for j in np.argsort(-sim[i]) if j != i and present[j]] if present[i] else []
    expected = [i] + others[:k - 1]
    np.testing.assert_array_equal(np.asarray(indices[i])[:len(expected)], expected)
    np.testing.assert_array_equal(np.asarray(valid[i]), np.arange(k) < len(expected))
    np.testing.assert_allclose(np.asarray(cosines[i])[:len(expected)], sim[i, expected],
                               atol=1e-6)
    assert not np.asarray(cosines[i])[len(expected):].any()
    assert (np.asarray(indices[i])[len(expected):] == i).all()  # Empty slots point home.


def test_new_items_read_neither_their_own_row_nor_other_new_rows(setup):
  method, tables, params = setup()
  embed = jax.jit(method.embed)
  _, items = embed(params, tables)
  noise = np.random.default_rng(5).normal(size=(len(NEW), D))
  scrambled = {**params, 'item_embedding': params['item_embedding'].at[NEW].set(noise)}
  np.testing.assert_allclose(np.asarray(embed(scrambled, tables)[1])[NEW],
                             np.asarray(items)[NEW], atol=1e-6)
  # Their vectors are unit (i_g = 0: no edges and a zero own row), and built from warm rows.
  np.testing.assert_allclose(np.linalg.norm(np.asarray(items)[NEW], axis=1), 1.0, atol=1e-6)
  warm = {**params, 'item_embedding': params['item_embedding'].at[:5].multiply(-1.0)}
  assert not np.allclose(np.asarray(embed(warm, tables)[1])[NEW], np.asarray(items)[NEW])


def test_learning_rate_decays_per_epoch(decaying):
  """Epoch 2 of lr_decay 0.5 per epoch: a quarter of epoch 0's step from the same state."""
  method, tables, params, update = decaying
  tables = _with_steps_per_epoch(tables, 1)
  def step(at):
    state = state_lib.train_state(method, params, method.optimizer).replace(
        step=jnp.asarray(at, jnp.int32))
    new, _ = update(state, BATCH, None, tables)
    return np.asarray(new.params['user_embedding']) - np.asarray(params['user_embedding'])
  np.testing.assert_allclose(step(2), 0.25 * step(0), rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize('field,value', [('knn_k', 0), ('lambda_coeff', 1.5), ('item_layers', 0),
                                         ('temperature', 0.0), ('lr_decay', 0.0),
                                         ('chunk_rows', 0), ('decay', -1.0)])
def test_bad_config_is_rejected(make_config, field, value):
  config = make_config('micro', embed_dim=D, train={'batch_size': 4},
                       **{**SECTION, field: value})
  with pytest.raises(ConfigError, match=f'config.methods.micro.{field}='):
    micro.check_config(config)
