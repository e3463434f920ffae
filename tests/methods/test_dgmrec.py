"""Tests of milk_jax/methods/dgmrec/ against hand-computed values and plain numpy written from
the original's steps (spec section 14).

The catalogue: 3 users, 7 items (0-4 warm, 5-6 new), two modalities of widths 3 and 2;
item 3 misses modality 1 (warm), item 6 misses modality 0 (new).
"""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from milk_jax import data as data_lib
from milk_jax import methods
from milk_jax import run as run_lib
from milk_jax.errors import ConfigError
from milk_jax.methods import dgmrec
from milk_jax.methods import graphs as shared_graphs
from milk_jax.methods.dgmrec import graphs
from milk_jax.methods.dgmrec import losses
from milk_jax.methods.dgmrec import model
from milk_jax.training import state as state_lib
from milk_jax.training import step as step_lib
from tests.methods.graph_catalogue import (AVAILABILITY, BATCH, FEATURES, K, NEW, NUM_ITEMS,
                                             NUM_USERS, TRAIN_PAIRS)

D = 4
SECTION = {'knn_k': K, 'chunk_rows': 4, 'club_hidden': 8, 'club_batch': 5}


@pytest.fixture(scope='module')
def setup(make_config, hand_dataset):
  """setup(**section) -> (config, dataset, method, tables)."""
  def build(**section):
    config = make_config('dgmrec', embed_dim=D, train={'batch_size': 4}, **{**SECTION, **section})
    dataset = hand_dataset(FEATURES, TRAIN_PAIRS, NUM_USERS, 5, AVAILABILITY)
    method = dgmrec.make(config, methods.data_spec(dataset))
    tables = state_lib.tables_on_device(dataset, extras=method.prepare(dataset, {}))
    return config, dataset, method, tables
  return build


# ---- the pure pieces, by hand ----

def test_info_nce_by_hand():
  view1 = jnp.array([[1.0, 0.0], [0.0, 2.0], [3.0, 3.0]])
  view2 = jnp.array([[2.0, 0.0], [1.0, 1.0], [0.0, 1.0]])
  t = 0.5
  c = 1 / np.sqrt(2)
  # Cosines: row 0 (1, c, 0), row 1 (0, c, 1), row 2 (c, 1, c).
  rows = [np.log(np.exp(1 / t) + np.exp(c / t) + 1) - 1 / t,
          np.log(1 + np.exp(c / t) + np.exp(1 / t)) - c / t,
          np.log(2 * np.exp(c / t) + np.exp(1 / t)) - c / t]
  np.testing.assert_allclose(losses.info_nce(view1, view2, t), np.mean(rows), rtol=1e-6)
  # Masked: rows and columns 0 and 2 only.
  masked = [np.log(np.exp(1 / t) + 1) - 1 / t, np.log(np.exp(c / t) + np.exp(c / t)) - c / t]
  np.testing.assert_allclose(losses.info_nce(view1, view2, t, jnp.array([True, False, True])),
                             np.mean(masked), rtol=1e-6)
  assert float(losses.info_nce(view1, view2, t, jnp.zeros(3, bool))) == 0.0


def identity_club(d):
  """CLUB nets with mu(x) = relu(x) - relu(-x) = x and logvar(x) = tanh(0) = 0."""
  eye = np.eye(d, dtype=np.float32)
  mu = {'hidden': {'w': jnp.asarray(np.concatenate([eye, -eye], 1)), 'b': jnp.zeros(2 * d)},
        'out': {'w': jnp.asarray(np.concatenate([eye, -eye], 0)), 'b': jnp.zeros(d)}}
  logvar = {'hidden': {'w': jnp.zeros((d, 2 * d)), 'b': jnp.zeros(2 * d)},
            'out': {'w': jnp.zeros((2 * d, d)), 'b': jnp.zeros(d)}}
  return {'mu': mu, 'logvar': logvar}


def test_club_upper_bound_and_likelihood_by_hand():
  x = jnp.array([[1.0, 2.0], [0.0, -1.0], [3.0, 0.0]])
  y = jnp.array([[1.0, 1.0], [2.0, 0.0], [0.0, 0.0]])
  club = identity_club(2)
  # sum_d (x_i - y_shuffled)^2 - (x_i - y_i)^2 per row: 5 - 1, 1 - 5, 5 - 9; mean / 2.
  np.testing.assert_allclose(losses.club_upper_bound(club, x, y, jnp.array([1, 2, 0])),
                             (4 - 4 - 4) / 3 / 2, rtol=1e-6)
  # -(x - y)^2 summed per row (1, 5, 9), logvar 0, mean over rows.
  np.testing.assert_allclose(losses.club_log_likelihood(club, x, y), -5.0, rtol=1e-6)
  # Its shapes as CLUBSample(d, d, hidden) builds them.
  chex.assert_trees_all_equal_shapes(losses.club_init(jax.random.key(0), 2, 8),
                                     {k: {'hidden': {'w': np.zeros((2, 4)), 'b': np.zeros(4)},
                                          'out': {'w': np.zeros((4, 2)), 'b': np.zeros(2)}}
                                      for k in ('mu', 'logvar')})


def test_perturb_moves_each_row_by_scale_along_its_signs():
  x = jnp.array([[1.0, -2.0, 0.5], [-3.0, 0.0, 4.0]])
  delta = np.asarray(losses.perturb(x, jax.random.key(3), 0.1) - x)
  # Row 0 has no zero: the noise row (non-negative) is a unit vector, scaled by 0.1.
  np.testing.assert_allclose(np.linalg.norm(delta[0]), 0.1, rtol=1e-5)
  assert np.all(np.sign(delta[0]) == np.sign(np.asarray(x[0])))
  assert delta[1, 1] == 0.0 and delta[1, 0] < 0 < delta[1, 2]
  assert np.linalg.norm(delta[1]) <= 0.1 + 1e-6


def np_original_graph(x, isolated_before, isolated_after, k):
  """The original's dense steps: build_sim, isolation, topk scatter, isolation, D^-1/2 S D^-1/2."""
  xn = x / np.linalg.norm(x, axis=1, keepdims=True)
  sim = xn @ xn.T
  for i in np.flatnonzero(isolated_before):
    sim[i, :] = sim[:, i] = 0.0
    sim[i, i] = 1.0
  s = np.zeros_like(sim)
  for i in range(len(x)):
    top = np.argsort(-sim[i], kind='stable')[:k]
    s[i, top] = sim[i, top]
  for i in np.flatnonzero(isolated_after):
    s[i, :] = s[:, i] = 0.0
    s[i, i] = 1.0
  d = s.sum(1) ** -0.5
  return d[:, None] * s * d[None, :]


def dense(indices, weights, n):
  out = np.zeros((n, n))
  for i in range(n):
    for j, w in zip(np.asarray(indices[i]), np.asarray(weights[i])):
      out[i, j] += w
  return out


@pytest.mark.parametrize('before,after', [((), ()), ((5, 6), ()), ((), (3, 6))])
def test_knn_graph_is_the_originals_with_isolation_and_norm(before, after):
  x = FEATURES[0]
  is_before = np.isin(np.arange(NUM_ITEMS), before)
  is_after = np.isin(np.arange(NUM_ITEMS), after)
  idx, sims = graphs.knn_graph(jnp.asarray(x), jnp.asarray(is_before), jnp.asarray(is_after),
                               K, 4)
  got = dense(idx, shared_graphs.sym_normalise(idx, sims), NUM_ITEMS)
  np.testing.assert_allclose(got, np_original_graph(x.copy(), is_before, is_after, K), atol=1e-6)
  for i in list(before) + list(after):  # Isolated: only its self-loop, nobody's neighbour.
    assert got[i, i] == pytest.approx(1.0) and np.count_nonzero(got[i]) == 1
    assert np.count_nonzero(got[:, i]) == 1


def test_knn_graph_normalisation_by_hand():
  # Three items, k = 2: cosines 1 (self), 0.6 between 0 and 1, 0.8 between 1 and 2, 0 for 0-2.
  x = jnp.array([[1.0, 0.0, 0.0], [0.6, 0.8, 0.0], [0.0, 1.0, 0.0]])
  idx, sims = graphs.knn_graph(x, jnp.zeros(3, bool), jnp.zeros(3, bool), 2, 8)
  got = dense(idx, shared_graphs.sym_normalise(idx, sims), 3)
  d = np.array([1.6, 1.8, 1.8])  # Row sums of the directed graph.
  s = np.array([[1, 0.6, 0], [0, 1, 0.8], [0, 0.8, 1]])
  np.testing.assert_allclose(got, s / np.sqrt(d[:, None] * d[None, :]), atol=1e-6)


def test_blend_rows_by_hand():
  old = {'indices': jnp.array([[0, 1, 0, 0], [1, 2, 1, 1]], jnp.int32),
         'weights': jnp.array([[0.5, 0.5, 0.0, 0.0], [0.3, 0.7, 0.0, 0.0]])}
  new_idx = jnp.array([[1, 2], [0, 1]], jnp.int32)
  new_w = jnp.array([[0.4, 0.6], [0.9, 0.1]])
  out = graphs.blend_rows(old, new_idx, new_w, jnp.array([True, False]), 0.8, 1)
  # Row 0: 0.2 * {0: .5, 1: .5} + 0.8 * {1: .4, 2: .6}; row 1 is not blended.
  np.testing.assert_allclose(dense(out['indices'], out['weights'], 3)[0], [0.1, 0.42, 0.48],
                             atol=1e-6)
  np.testing.assert_array_equal(out['indices'][1], old['indices'][1])
  np.testing.assert_array_equal(out['weights'][1], old['weights'][1])
  # Width 2: the lightest entry (column 0) is dropped.
  narrow = {k: v[:, :2] for k, v in old.items()}
  out = graphs.blend_rows(narrow, new_idx, new_w, jnp.array([True, True]), 0.8, 1)
  np.testing.assert_allclose(dense(out['indices'], out['weights'], 3)[0], [0.0, 0.42, 0.48],
                             atol=1e-6)


def test_inter_modal_pairs_and_translator_inputs_match_the_original():
  assert model.inter_modal_pairs(1) == []
  assert model.inter_modal_pairs(2) == [(0, 1)]
  assert model.inter_modal_pairs(3) == [(0, 1), (1, 2), (2, 0)]  # (i, t), (t, a), (a, i).
  g = [jnp.full((1, 1), float(m)) for m in range(3)]
  # Text (1) from [audio, image], image (0) from [text, audio], audio (2) from [image, text].
  assert model.translator_inputs(g, 1).tolist() == [[2.0, 0.0]]
  assert model.translator_inputs(g, 0).tolist() == [[1.0, 2.0]]
  assert model.translator_inputs(g, 2).tolist() == [[0.0, 1.0]]
  assert model.translator_inputs(g[:2], 0).tolist() == [[1.0]]


# ---- the model on the hand catalogue ----

def test_preference_filter_is_the_users_mean_and_zero_without_pairs(setup):
  config, _, method, tables = setup()
  params = method.init(jax.random.key(0))
  hyper = dgmrec.read_hyper(config, methods.data_spec(setup()[1]))
  s = model.structure(tables, NUM_USERS, NUM_ITEMS)
  filters = model.preference_filters(params, s, 2)
  for m in range(2):
    tanh_users = np.tanh(np.asarray(params['user_embedding'])
                         @ np.asarray(params['filters'][model.name(m)]['w']))
    np.testing.assert_allclose(filters[m][0], tanh_users[[0, 2]].mean(0), rtol=1e-5)
    np.testing.assert_allclose(filters[m][3], tanh_users[2], rtol=1e-5)
    assert np.all(np.asarray(filters[m])[NEW] == 0)
  # Hence a new item's own filtered parts are 0 before propagation.
  f = model.forward(params, dgmrec_graphs(tables)['train'], tables, hyper)
  for m in range(2):
    np.testing.assert_array_equal(np.asarray(f['general'][m])[NEW], 0.0)  # Isolated in training.


def dgmrec_graphs(tables):
  prefix = model.FIRST_GRAPHS
  return {kind: {part: tables.extras[f'{prefix}_{kind}_{part}'] for part in ('indices', 'weights')}
          for kind in ('train', 'infer')}


def test_first_graphs_isolate_new_items_in_training_and_missing_ones_for_inference(setup):
  _, _, _, tables = setup()
  built = dgmrec_graphs(tables)
  for m in range(2):
    train = dense(built['train']['indices'][m], built['train']['weights'][m], NUM_ITEMS)
    infer = dense(built['infer']['indices'][m], built['infer']['weights'][m], NUM_ITEMS)
    for i in NEW:  # Training: new items keep only themselves.
      assert np.count_nonzero(train[i]) == 1 and np.count_nonzero(train[:, i]) == 1
    missing = np.flatnonzero(~AVAILABILITY[:, m])
    for i in missing:  # Inference: items missing m keep only themselves there.
      assert np.count_nonzero(infer[i]) == 1 and np.count_nonzero(infer[:, i]) == 1
    present_new = [i for i in NEW if AVAILABILITY[i, m]]
    assert all(np.count_nonzero(infer[i]) > 1 for i in present_new)  # Reads its neighbours.


def test_shapes_and_new_items_vectors_come_from_content_neighbours(setup):
  config, dataset, method, tables = setup()
  variables = method.init(jax.random.key(0))
  users, items = method.embed(variables, tables)
  chex.assert_shape([users, items], [(NUM_USERS, D), (NUM_ITEMS, D)])
  chex.assert_tree_all_finite((users, items))
  # Item 5 has modality 0 and 1: its inference-graph neighbours give it a non-zero vector.
  assert np.linalg.norm(np.asarray(items)[5]) > 0
  value, metrics = method.loss(variables, BATCH, jax.random.key(1), tables)
  assert np.isfinite(float(value)) and set(method.log_keys) <= set(metrics)


def test_epoch_schedule_regenerates_missing_features_and_blends_rows(setup):
  # One step per epoch (batch 8 >= 8 pairs), refresh every epoch.
  config, dataset, method, tables = setup(refresh_every=1, avg_lambda=0.5)
  config.train.batch_size = 8
  method = dgmrec.make(config, methods.data_spec(dataset))
  tables = state_lib.tables_on_device(dataset, extras=method.prepare(dataset, {}))
  program_state = state_lib.train_state(method, method.init(jax.random.key(0)),
                                        methods.optimizer(method, config))
  step = jax.jit(step_lib.make_train_step(config, method))
  batch = {k: jnp.concatenate([v, v]) for k, v in BATCH.items()}
  state, metrics = step(program_state, batch, jax.random.key(0), tables)
  chex.assert_tree_all_finite(metrics)
  before, after = dgmrec_graphs(tables), state.model_state[dgmrec.STATE]['graphs']
  assert bool(state.model_state[dgmrec.STATE]['ready'])
  for m in range(2):
    old_missing = np.flatnonzero(~AVAILABILITY[:, m] & ~np.isin(np.arange(NUM_ITEMS), NEW))
    new_missing = np.flatnonzero(~AVAILABILITY[:, m] & np.isin(np.arange(NUM_ITEMS), NEW))
    for kind, rows in (('train', old_missing), ('infer', new_missing)):
      old = dense(before[kind]['indices'][m], before[kind]['weights'][m], NUM_ITEMS)
      new = dense(after[kind]['indices'][m], after[kind]['weights'][m], NUM_ITEMS)
      others = np.setdiff1d(np.arange(NUM_ITEMS), rows)
      np.testing.assert_array_equal(new[others], old[others])
      for i in rows:  # Half the old row (its self-loop) plus half a rebuilt one.
        assert new[i, i] >= 0.5 * old[i, i] - 1e-6 and np.count_nonzero(new[i]) > 1
  # The regenerated features of missing items were written into the trained offsets.
  offsets = state.params['feature_offsets']
  assert np.any(np.asarray(offsets['modality_1'])[3] != 0)  # Old item 3, missing modality 1.
  assert np.any(np.asarray(offsets['modality_0'])[6] != 0)  # New item 6, missing modality 0.


def test_no_club_state_without_the_sampler_term(setup):
  _, _, method, _ = setup(sampler=0.0)
  assert 'club' not in method.init(jax.random.key(0))[dgmrec.STATE]


@pytest.mark.parametrize('field,value', [('knn_k', 0), ('avg_lambda', 1.5),
                                         ('intra_modal_temp', 0.0), ('club_hidden', 1),
                                         ('lr_decay', 0.0), ('reg', -1.0)])
def test_check_config_names_the_field(make_config, field, value):
  config = make_config('dgmrec', **{field: value})
  with pytest.raises(ConfigError, match=f'config.methods.dgmrec.{field}='):
    dgmrec.check_config(config)


@pytest.mark.slow  # 90-150 s on the 2 shared CPU cores: 20 epochs of the small catalogue.
def test_training_beats_untrained(make_config, tmp_path):
  # Untrained, DGMRec already ranks new items by their content neighbours over the kNN graphs
  # (test NDCG@20 0.22 here), so the shared fixture's bar (double it) is too close to what
  # training reaches (0.45 at lr 1e-2): the bar is a clear absolute gain instead.
  config = make_config('dgmrec', train={'learning_rate': 0.01, 'num_epochs': 20, 'patience': 20})
  dataset = data_lib.load_dataset(config)
  program = step_lib.EpochProgram(config, dataset, state_lib.make_method(config, dataset))
  before = program.evaluate(program.fresh_state().params, 'test')
  results = run_lib.train_and_evaluate(config, str(tmp_path))
  assert results['test']['ndcg@20'] >= before['ndcg@20'] + 0.15, (before, results['test'])
  assert results['best_epoch'] > 0
