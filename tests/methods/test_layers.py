"""Tests of milk_jax/methods/layers.py: inits, rows, losses, standardisation, BatchNorm, towers."""

import chex
import jax
import jax.numpy as jnp
import numpy as np

from milk_jax.methods import layers


def test_torch_linear_is_uniform_in_one_over_sqrt_fan_in_and_the_bias_does_not_move_the_weights():
  layer = layers.torch_linear(jax.random.key(0), 16, 300)
  chex.assert_shape([layer['w'], layer['b']], [(16, 300), (300,)])
  w, b = np.asarray(layer['w']), np.asarray(layer['b'])
  assert np.abs(w).max() <= 0.25 and np.abs(b).max() <= 0.25
  assert np.abs(w).max() > 0.24  # Fills the range.
  plain = layers.torch_linear(jax.random.key(0), 16, 300, bias=False)
  assert set(plain) == {'w'}
  np.testing.assert_array_equal(plain['w'], layer['w'])  # Same split with or without a bias.
  x = jnp.ones((2, 16))
  np.testing.assert_allclose(layers.dense(plain, x), x @ plain['w'])
  np.testing.assert_allclose(layers.dense(layer, x), x @ layer['w'] + layer['b'])


def test_xavier_uniform_bound():
  w = np.asarray(layers.xavier_uniform(jax.random.key(0), (100, 50)))
  bound = np.sqrt(6.0 / 150)
  assert np.abs(w).max() <= bound and np.abs(w).max() > 0.95 * bound


def test_unit_rows_and_normalise_agree_but_a_zero_rows_gradient_is_nan_only_in_normalise():
  x = jnp.array([[3.0, 4.0], [0.0, 0.0], [1e-13, 0.0]])
  np.testing.assert_allclose(layers.unit_rows(x), [[0.6, 0.8], [0.0, 0.0], [0.1, 0.0]],
                             rtol=1e-6)
  np.testing.assert_array_equal(layers.unit_rows(x), layers.normalise(x))
  np.testing.assert_array_equal(layers.row_norms(x), jnp.linalg.norm(x, axis=-1))
  batched = jnp.stack([x, 2 * x])  # Any leading axes.
  np.testing.assert_array_equal(layers.unit_rows(batched)[1], layers.unit_rows(2 * x))
  # The zero row's gradient is 1 / 1e-12 through x itself, and 0 (not NaN) through its norm.
  grad = jax.grad(lambda x: jnp.sum(layers.unit_rows(x)))(x)
  np.testing.assert_allclose(grad[1], [1e12, 1e12], rtol=1e-6)
  assert np.isnan(np.asarray(jax.grad(lambda x: jnp.sum(layers.normalise(x)))(x)[1])).all()


def test_bpr_and_batch_l2_by_hand():
  pos, neg = jnp.array([1.0, 2.5]), jnp.array([0.0, -2.0])
  np.testing.assert_allclose(layers.bpr(pos, neg),
                             (np.log1p(np.exp(-1.0)) + np.log1p(np.exp(-4.5))) / 2, rtol=1e-6)
  assert float(layers.bpr(jnp.array([200.0]), jnp.array([-200.0]))) == 0.0  # No overflow.
  rows = (jnp.array([[3.0, 4.0], [0.0, 0.0]]), jnp.array([[1.0, 0.0], [0.0, 0.0]]))
  np.testing.assert_allclose(layers.batch_l2(*rows), (5.0 + 1.0) / 2)


def test_standardize_fits_nonzero_rows_clips_and_keeps_zero_rows():
  x = np.array([[1.0, 10.0], [3.0, 10.0], [0.0, 0.0], [2.0, 10.0], [50.0, 10.0]])
  got = layers.standardize(x, clip=1.5)
  rows = x[[0, 1, 3, 4]]
  # Column 0: mean 14, population std of (1, 3, 2, 50); column 1 is constant: scale 1.
  mean0, std0 = 14.0, np.sqrt(np.mean((rows[:, 0] - 14.0) ** 2))
  want = np.zeros_like(x)
  want[[0, 1, 3, 4], 0] = (rows[:, 0] - mean0) / std0
  want = np.clip(want, -1.5, 1.5)
  np.testing.assert_allclose(got, want, rtol=1e-6)
  assert got[2].tolist() == [0.0, 0.0]  # The zero row (a new item) stays zero.
  assert (got[:, 1] == 0.0).all()  # 10 - 10 = 0 in a constant column.
  assert got.dtype == np.float32


def test_standardize_sets_tiny_values_to_zero():
  x = np.array([[1.0], [-1.0], [1.0 + 2e-5], [-1.0 - 2e-5], [1e-6]])
  got = layers.standardize(x, clip=5.0)
  assert got[4, 0] == 0.0  # (1e-6 - mean) / std is below 1e-5 in magnitude.


def test_batchnorm_train_and_infer_against_numpy():
  x = np.array([[1.0, -2.0], [3.0, 0.5], [-1.0, 4.0]], np.float32)
  bn = {'scale': jnp.array([2.0, 0.5]), 'offset': jnp.array([0.1, -0.3])}
  y, moments = layers.batchnorm_train(bn, jnp.asarray(x), eps=1e-3)
  mean, var = x.mean(0), x.var(0)
  np.testing.assert_allclose(y, (x - mean) / np.sqrt(var + 1e-3) * [2.0, 0.5] + [0.1, -0.3],
                             rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(moments['mean'], mean, rtol=1e-6)
  np.testing.assert_allclose(moments['var'], x.var(0, ddof=1), rtol=1e-5)  # Unbiased (torch).
  stats = {'mean': jnp.array([0.5, 1.0]), 'var': jnp.array([4.0, 0.25])}
  got = layers.batchnorm_infer(bn, stats, jnp.asarray(x), eps=1e-3)
  np.testing.assert_allclose(got, (x - [0.5, 1.0]) / np.sqrt(np.array([4.0, 0.25]) + 1e-3)
                             * [2.0, 0.5] + [0.1, -0.3], rtol=1e-5, atol=1e-6)


def test_tower_init_shapes_and_initialisation():
  params, stats = layers.tower_init(jax.random.key(0), 300, (200, 100), 64)
  chex.assert_shape(params['block_0']['dense']['w'], (300, 200))
  chex.assert_shape(params['block_1']['dense']['w'], (200, 100))
  chex.assert_shape(params['out']['w'], (100, 64))
  w = np.asarray(params['block_0']['dense']['w'])
  assert np.abs(w).max() <= 0.02 + 1e-7 and 0.007 < w.std() < 0.01  # Truncated N(0, 0.01^2).
  assert not np.asarray(params['out']['b']).any()
  assert np.asarray(stats['block_1']['var']).tolist() == [1.0] * 100


def test_squared_weights_counts_dense_layers_only():
  params = {'a': {'w': jnp.full((2, 2), 2.0), 'b': jnp.ones(2)},
            'bn': {'scale': jnp.full(3, 5.0), 'offset': jnp.ones(3)}}
  assert float(layers.squared_weights(params)) == 4 * 4.0 + 2 * 1.0


def test_batch_stats_update_blends_the_moments_into_the_running_statistics_only():
  _, stats = layers.tower_init(jax.random.key(0), 3, (4,), 2)
  model_state = {layers.STATS: {'tower': stats}, 'other': jnp.arange(3.0)}
  moments = {'tower': {'block_0': {'mean': jnp.full(4, 2.0), 'var': jnp.full(4, 3.0)}}}
  new = layers.batch_stats_update(0.25)(model_state, moments)
  running = new[layers.STATS]['tower']['block_0']
  np.testing.assert_allclose(running['mean'], 0.25 * 2.0)  # From mean 0.
  np.testing.assert_allclose(running['var'], 0.75 + 0.25 * 3.0)  # From variance 1.
  np.testing.assert_array_equal(new['other'], model_state['other'])
