"""SiBraR (milk_jax/methods/sibrar.py): its loss by hand, modality sampling, inference, serving."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import milk_jax
from milk_jax import checkpoint
from milk_jax import methods
from milk_jax import run as run_lib
from milk_jax.data import dataset as dataset_lib
from milk_jax.errors import ConfigError
from milk_jax.methods import sibrar
from milk_jax.training import state as state_lib
from milk_jax.training import step as step_lib

NUM_USERS, NUM_ITEMS, C, H, DIM = 3, 6, 2, 3, 2
WARM, NEW = np.arange(4), np.array([4, 5])
# User 0 trained on items 0, 1, 2; user 1 on 3; user 2 on 0 and 3.
TRAIN_PAIRS = np.array([[0, 0], [0, 1], [0, 2], [1, 3], [2, 0], [2, 3]], np.int32)
FEATURES = (np.array([[0.6, 0.8], [1.0, 0.0], [0.0, 1.0], [0.8, -0.6], [-0.6, 0.8], [0.0, -1.0]],
                     np.float32),
            np.array([[1.0], [-1.0], [1.0], [0.5], [-1.0], [2.0]], np.float32))
# Item 2 lacks modality b (warm, MTMT-like); new item 5 lacks modality a.
AVAILABLE = np.array([[1, 1], [1, 1], [1, 0], [1, 1], [1, 1], [0, 1]], bool)
EPS = 1e-5


SECTION = {'modality_dim': C, 'hidden': (H,), 'input_dropout': 0.0}


@pytest.fixture
def make_method(make_config, hand_dataset):
  """make_method(**fields) -> (SiBraR, its Tables) on the hand-made data."""
  def build(**fields):
    config = make_config('sibrar', embed_dim=DIM, **{**SECTION, **fields})
    dataset = hand_dataset(FEATURES, TRAIN_PAIRS, NUM_USERS, WARM.size, AVAILABLE)
    method = sibrar.make(config, methods.data_spec(dataset))
    return method, state_lib.tables_on_device(dataset, extras=method.prepare(dataset, {}))
  return build


def hand_params():
  rng = np.random.default_rng(7)
  normal = lambda *shape: rng.normal(0, 0.7, shape).astype(np.float32)
  return {
      'user_embedding': normal(NUM_USERS, DIM),
      'modalities': {'modality_0': {'w': normal(2, C), 'b': normal(C)},
                     'modality_1': {'w': normal(1, C), 'b': normal(C)},
                     'modality_2': {'w': normal(NUM_USERS, C), 'b': normal(C)}},
      'branch': {'block_0': {'w': normal(C, H), 'b': normal(H)},
                 'out': {'w': normal(H, DIM), 'b': normal(DIM)},
                 'bn': {'scale': np.array([1.5, 0.5], np.float32),
                        'offset': np.array([0.1, -0.2], np.float32)}},
      'batch_stats': {'mean': np.array([0.3, -0.1], np.float32),
                      'var': np.array([2.0, 0.5], np.float32)},
  }


def numpy_phi(params):
  """(I, 3, C): ReLU(x W_m + b_m) for a, b, and the training-interaction column."""
  relu = lambda x: np.maximum(x, 0.0)
  mods = params['modalities']
  column = np.zeros((NUM_ITEMS, NUM_USERS), np.float32)
  column[TRAIN_PAIRS[:, 1], TRAIN_PAIRS[:, 0]] = 1.0
  inputs = (FEATURES[0], FEATURES[1], column)
  return np.stack([relu(x @ mods[f'modality_{m}']['w'] + mods[f'modality_{m}']['b'])
                   for m, x in enumerate(inputs)], axis=1)


def numpy_mlp(params, x):
  branch = params['branch']
  h = np.maximum(x @ branch['block_0']['w'] + branch['block_0']['b'], 0.0)
  return h @ branch['out']['w'] + branch['out']['b']


def numpy_loss(params, users, items, picks, reg_weight, temperature):
  """BPR over the row's negatives + w * symmetric InfoNCE, BatchNorm on the batch's rows."""
  rows, width = items.shape
  k = picks.shape[1]
  phi = numpy_phi(params)[items.reshape(-1)]  # (n, 3, C)
  chosen = np.stack([phi[r, picks[r]] for r in range(len(picks))])  # (n, k, C)
  y = numpy_mlp(params, chosen.reshape(-1, C))
  bn = params['branch']['bn']
  y = (y - y.mean(0)) / np.sqrt(y.var(0) + EPS) * bn['scale'] + bn['offset']
  enc = y.reshape(rows, width, k, DIM)
  vectors = enc.mean(axis=2)
  scores = np.einsum('bd,bkd->bk', params['user_embedding'][users], vectors)
  bpr = np.mean(np.log1p(np.exp(scores[:, 1:] - scores[:, :1])))
  if k == 1:
    return bpr
  total = 0.0
  for b in range(rows):
    logits = enc[b, :, 0] @ enc[b, :, 1].T / temperature
    for direction in (logits, logits.T):
      log_softmax = direction - np.log(np.exp(direction).sum(axis=1, keepdims=True))
      total += -np.trace(log_softmax) / (rows * width)
  return bpr + reg_weight * total


def test_loss_matches_a_hand_computation_with_the_pairwise_regulariser(make_method):
  _, tables = make_method()
  params = hand_params()
  users = np.array([0, 1])
  items = np.array([[1, 3, 2], [3, 0, 1]])  # Rows [i+, j_1, j_2].
  # Two drawn modalities per item (0 = a, 1 = b, 2 = interactions), as a sampler could.
  picks = np.array([[2, 0], [1, 2], [0, 2], [2, 1], [0, 1], [1, 0]], np.int32)
  loss, (metrics, moments) = sibrar.objective(
      jax.tree.map(jnp.asarray, params), jnp.asarray(users), jnp.asarray(items),
      jnp.asarray(picks), jax.random.key(0), tables, use_interactions=True, dropout=0.0, eps=EPS,
      reg_weight=0.3, temperature=0.5)
  expected = numpy_loss(params, users, items, picks, 0.3, 0.5)
  np.testing.assert_allclose(float(loss), expected, rtol=1e-5)
  np.testing.assert_allclose(float(metrics['bpr'] + metrics['regulariser']), expected, rtol=1e-5)
  # The running statistics blend in the batch's mean and unbiased variance.
  phi = numpy_phi(params)[items.reshape(-1)]
  y = numpy_mlp(params, np.stack([phi[r, picks[r]] for r in range(6)]).reshape(-1, C))
  np.testing.assert_allclose(moments['mean'], y.mean(0), rtol=1e-5)
  np.testing.assert_allclose(moments['var'], y.var(0, ddof=1), rtol=1e-5)


def test_loss_with_one_modality_has_no_regulariser(make_method):
  method, tables = make_method(regularizer='none', num_negatives=1)
  params = hand_params()
  users, items = np.array([2, 0]), np.array([[3, 1], [0, 3]])
  picks = np.array([[2], [0], [1], [2]], np.int32)
  loss, (metrics, _) = sibrar.objective(
      jax.tree.map(jnp.asarray, params), jnp.asarray(users), jnp.asarray(items),
      jnp.asarray(picks), jax.random.key(0), tables, use_interactions=True, dropout=0.0, eps=EPS,
      reg_weight=0.3, temperature=0.5)
  np.testing.assert_allclose(float(loss), numpy_loss(params, users, items, picks, 0.3, 0.5),
                             rtol=1e-5)
  assert 'regulariser' not in metrics
  # The method's loss draws one modality per item: finite, no regulariser either.
  batch = {'users': jnp.asarray(users, jnp.int32), 'positives': jnp.array([3, 0], jnp.int32),
           'negatives': jnp.array([1, 3], jnp.int32)}
  value, (metrics, _) = jax.jit(method.loss)(jax.tree.map(jnp.asarray, params), batch,
                                             jax.random.key(1), tables)
  assert np.isfinite(float(value)) and set(metrics) == {'loss', 'bpr'}


def test_sampling_picks_only_present_modalities_and_each_of_them(make_method):
  rng = np.random.default_rng(0)
  available = rng.random((500, 4)) < 0.6
  available[0] = [False, True, False, False]  # One present: repeated in both slots.
  available[1] = [True, False, False, True]
  sample = jax.jit(sibrar.sample_modalities, static_argnums=2)
  seen = np.zeros_like(available)
  for seed in range(20):
    picks = np.asarray(sample(jax.random.key(seed), jnp.asarray(available), 2))
    has = available.any(axis=1)
    assert np.take_along_axis(available, picks, axis=1)[has].all()
    two = available.sum(axis=1) >= 2
    assert (picks[two, 0] != picks[two, 1]).all()
    np.testing.assert_array_equal(picks[0], [1, 1])
    np.put_along_axis(seen, picks, True, axis=1)
  np.testing.assert_array_equal(seen[available.any(axis=1)], available[available.any(axis=1)])
  # k = 1 over the method's own tables: an item without interactions never draws them.
  _, tables = make_method()
  available = np.asarray(sibrar.modality_availability(tables, True))
  np.testing.assert_array_equal(available[:, 2], [True, True, True, True, False, False])
  picks = np.asarray(sample(jax.random.key(3), jnp.asarray(np.repeat(available, 200, 0)), 1))
  assert np.take_along_axis(np.repeat(available, 200, 0), picks, axis=1).all()


def test_inference_averages_the_present_modalities_only(make_method):
  method, tables = make_method()
  params = hand_params()
  _, items = jax.jit(method.embed)(jax.tree.map(jnp.asarray, params), tables)
  stats, bn = params['batch_stats'], params['branch']['bn']
  phi = numpy_phi(params)
  out = (numpy_mlp(params, phi.reshape(-1, C)) - stats['mean']) / np.sqrt(stats['var'] + EPS)
  out = (out * bn['scale'] + bn['offset']).reshape(NUM_ITEMS, 3, DIM)
  expected = np.stack([out[0].mean(0), out[1].mean(0), out[2, [0, 2]].mean(0), out[3].mean(0),
                       out[4, :2].mean(0), out[5, 1]])
  np.testing.assert_allclose(np.asarray(items), expected, rtol=1e-5, atol=1e-6)
  # The missing modality's (imputed) row does not matter.
  features = (tables.features[0].at[5].set(50.0), tables.features[1].at[2].set(-7.0))
  _, moved = jax.jit(method.embed)(jax.tree.map(jnp.asarray, params),
                                   tables._replace(features=features))
  np.testing.assert_allclose(np.asarray(moved), np.asarray(items), rtol=1e-6)


@pytest.mark.parametrize('field,value', [('input_dropout', 1.0), ('regularizer', 'all'),
                                         ('temperature', 0.0), ('num_negatives', 0),
                                         ('hidden', (64, 0)), ('bn_momentum', 0.0)])
def test_bad_fields_are_refused(make_config, field, value):
  config = make_config('sibrar', **{field: value})
  with pytest.raises(ConfigError, match=f'config.methods.sibrar.{field}='):
    sibrar.check_config(config)


@pytest.mark.slow  # Trains a tiny run (about 10 s on 2 cores).
def test_a_served_new_item_missing_a_modality_gets_its_present_encoding(make_config, tmp_path):
  config = make_config('sibrar', train={'num_epochs': 4})
  folder = str(tmp_path / 'run')
  results = run_lib.train_and_evaluate(config, folder)
  assert results['val']['ndcg@20'] > results['history'][0]['val']['ndcg@20']
  dataset = dataset_lib.load_dataset(config)
  program = step_lib.EpochProgram(config, dataset, state_lib.make_method(config, dataset), {})
  _, params = checkpoint.restore_best_params(folder, program.fresh_state())
  raw, _ = dataset_lib.read_layout(config.data, int(config.seed))
  # Complete test items: their prepared rows are the raw ones, normalised (no imputation).
  items = dataset.test_items[dataset.availability[dataset.test_items].all(axis=1)][:4]
  features = {name: raw.features[m][items] for m, name in enumerate(dataset.modality_names)}
  available = np.ones((4, 2), bool)
  available[:2, 1] = False  # Two items lack the second modality.
  run = milk_jax.load(folder)
  vectors = run.item_vectors(features, available)
  # By hand from the restored parameters: each modality alone through the branch.
  prepared = tuple(jnp.asarray(f[items]) for f in dataset.features)
  phi = [jax.nn.relu(x @ params['modalities'][f'modality_{m}']['w']
                     + params['modalities'][f'modality_{m}']['b']) for m, x in enumerate(prepared)]
  encoded = [np.asarray(sibrar.branch_infer(params, p, config.methods.sibrar.bn_eps)) for p in phi]
  np.testing.assert_allclose(vectors[:2], encoded[0][:2], rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(vectors[2:], (encoded[0][2:] + encoded[1][2:]) / 2, rtol=1e-5,
                             atol=1e-6)
  # Whatever the missing rows hold.
  features[dataset.modality_names[1]] = features[dataset.modality_names[1]] * 0 + 9.0
  np.testing.assert_allclose(run.item_vectors(features, available)[:2], vectors[:2], atol=1e-6)
