"""The step and the epoch of any method: the scanned epoch equals the step-by-step loop."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from milk_jax import data as data_lib
from milk_jax import methods
from milk_jax.data import device_sampling
from milk_jax.methods import layers
from milk_jax.training import state as state_lib
from milk_jax.training import step as step_lib


def _batch(dataset, size, seed=0):
  rng = np.random.default_rng(seed)
  users, positives, negatives = data_lib.epoch_triples(rng, dataset, size)
  return {'users': users[0], 'positives': positives[0], 'negatives': negatives[0]}


@pytest.fixture(scope='module')
def setup(make_config, small_dataset):
  config = make_config()
  dataset = small_dataset
  method = state_lib.make_method(config, dataset)
  state = state_lib.create_train_state(config, method, jax.random.key(0), dataset.num_users)
  return config, dataset, state, state_lib.tables_on_device(dataset)


def _step(config, dataset):
  return step_lib.make_train_step(config, state_lib.make_method(config, dataset))


def _epoch(config, dataset):
  return step_lib.make_train_epoch(config, state_lib.make_method(config, dataset))


def test_train_step_metrics_and_shapes(setup):
  config, dataset, state, item_data = setup
  step = jax.jit(_step(config, dataset))
  new_state, metrics = step(state, _batch(dataset, 64), jax.random.key(1), item_data)
  assert int(new_state.step) == 1
  chex.assert_trees_all_equal_shapes(new_state.params, state.params)
  chex.assert_tree_all_finite(metrics)
  assert set(metrics) == {'loss', 'bpr', 'env_variance', 'alignment', 'regulariser'}
  # The loss is assembled as Eq. 16 says.
  expected = (metrics['bpr'] + config.train.beta * metrics['env_variance']
              + config.train.align_weight * metrics['alignment']
              + config.train.reg_weight * metrics['regulariser'])
  np.testing.assert_allclose(metrics['loss'], expected, rtol=1e-5)


def test_train_step_compiles_once(setup):
  config, dataset, state, item_data = setup
  step = chex.assert_max_traces(_step(config, dataset), n=1)
  step = jax.jit(step)
  for seed in range(3):
    state, _ = step(state, _batch(dataset, 64, seed), jax.random.key(seed), item_data)


def test_erm_has_no_variance_and_no_alignment(setup, make_config):
  config, dataset, state, item_data = setup
  config = make_config()
  config.model.use_invariance = False
  config.model.use_alignment = False
  _, metrics = jax.jit(_step(config, dataset))(
      state, _batch(dataset, 64), jax.random.key(1), item_data)
  assert float(metrics['env_variance']) == 0.0 and float(metrics['alignment']) == 0.0


def test_scanned_epoch_equals_step_by_step_loop(setup):
  config, dataset, state, item_data = setup
  rng = np.random.default_rng(5)
  users, positives, negatives = data_lib.epoch_triples(rng, dataset, 128)
  triples = {'users': users, 'positives': positives, 'negatives': negatives}
  train_key = jax.random.key(9)
  step = jax.jit(_step(config, dataset))
  looped = state
  for s in range(users.shape[0]):
    batch = jax.tree.map(lambda x: x[s], triples)
    looped, _ = step(looped, batch, train_key, item_data)
  copy = jax.tree.map(jnp.copy, state)  # The epoch donates its input state.
  scanned, metrics = _epoch(config, dataset)(copy, triples, train_key, item_data)
  chex.assert_trees_all_close(scanned.params, looped.params, rtol=1e-5, atol=1e-6)
  assert int(scanned.step) == users.shape[0]
  chex.assert_tree_all_finite(metrics)


def test_device_epoch_matches_the_host_epoch_on_the_same_triples(setup):
  # The device program samples its own triples; fed those same triples, the
  # host-path epoch must land on the same parameters.
  config, dataset, state, item_data = setup
  tables = device_sampling.sampler_tables(dataset, 'warm')
  steps = device_sampling.search_steps(dataset)
  sample_key, train_key = jax.random.key(4), jax.random.key(9)
  triples = device_sampling.epoch_triples(sample_key, tables, config.train.batch_size, steps)
  host, _ = _epoch(config, dataset)(jax.tree.map(jnp.copy, state), triples, train_key,
                                    item_data)
  device_epoch = step_lib.make_device_epoch(config, state_lib.make_method(config, dataset), steps)
  fused, _ = device_epoch(jax.tree.map(jnp.copy, state), sample_key, train_key, item_data,
                          tables)
  chex.assert_trees_all_close(fused.params, host.params, rtol=1e-5, atol=1e-6)


def test_bfloat16_features_keep_float32_parameters_and_close_losses(setup):
  config, dataset, state, item_data = setup
  batch = _batch(dataset, 64)
  step = jax.jit(_step(config, dataset))
  _, full = step(state, batch, jax.random.key(1), item_data)
  half_data = state_lib.tables_on_device(dataset, 'bfloat16')
  assert half_data.features[0].dtype == jnp.bfloat16
  new_state, half = step(state, batch, jax.random.key(1), half_data)
  chex.assert_trees_all_equal_dtypes(new_state.params, state.params)
  # bfloat16 keeps 8 bits of mantissa: the loss agrees to about 1%.
  np.testing.assert_allclose(half['loss'], full['loss'], rtol=2e-2)


def test_the_shared_update_steps_the_params_then_the_model_state_the_optimiser_never_sees():
  """Non-trainable BatchNorm statistics: the loss reads them beside the params, the gradient
  step is the params' only, then `update_model_state` blends in the loss's batch moments."""
  tower, stats = layers.tower_init(jax.random.key(0), 3, (4,), 2)
  x = jax.random.normal(jax.random.key(1), (8, 3))

  def loss(variables, batch, step_input, tables):
    assert set(variables) == {'tower', layers.STATS}
    out, moments = layers.tower_train(variables['tower'], x, 1e-3)
    value = jnp.mean(jnp.square(out - 1.0))
    return value, ({'loss': value}, {'tower': moments})

  optimizer = optax.adam(0.1)
  method = methods.Method(init=lambda key: {'tower': tower, layers.STATS: {'tower': stats}},
                          loss=loss, embed=None, optimizer=optimizer,
                          non_trainable=(layers.STATS,),
                          update_model_state=layers.batch_stats_update(0.25))
  state = state_lib.train_state(method, method.init(None), optimizer)
  assert set(state.params) == {'tower'} and set(state.model_state) == {layers.STATS}
  new, metrics = jax.jit(step_lib.make_update(None, method))(state, None, None, None)
  assert int(new.step) == 1 and metrics['loss'].shape == ()
  h = np.asarray(x) @ np.asarray(tower['block_0']['dense']['w'])
  running = new.model_state[layers.STATS]['tower']['block_0']
  np.testing.assert_allclose(running['mean'], 0.25 * h.mean(0), rtol=1e-4, atol=1e-7)
  np.testing.assert_allclose(running['var'], 0.75 + 0.25 * h.var(0, ddof=1), rtol=1e-5)
  assert not np.allclose(new.params['tower']['out']['w'], tower['out']['w'])
  chex.assert_trees_all_equal_structs(new.opt_state, optimizer.init(state.params))
