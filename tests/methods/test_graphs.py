"""Tests for milk_jax.methods.graphs: padded row lists and the training pairs, by hand."""

import types

import jax.numpy as jnp
import numpy as np

from milk_jax.methods import graphs


def test_row_blocks_cover_every_row_with_equal_blocks():
  blocks = np.asarray(graphs.row_blocks(5, 2))
  # ceil(5/2) = 3 blocks of ceil(5/3) = 2 rows; the last row repeats as padding.
  np.testing.assert_array_equal(blocks, [[0, 1], [2, 3], [4, 4]])
  np.testing.assert_array_equal(np.asarray(graphs.row_blocks(4, 8)), [[0, 1, 2, 3]])


def test_sym_normalise_by_hand():
  # Row 0: itself 1 and row 1 with 1 (degree 2); row 1: itself 2 (degree 2); row 2: nothing.
  indices = jnp.asarray([[0, 1], [1, 1], [2, 2]], jnp.int32)
  weights = jnp.asarray([[1.0, 1.0], [2.0, 0.0], [0.0, 0.0]])
  got = np.asarray(graphs.sym_normalise(indices, weights))
  # w_ij / sqrt(d_i d_j): 1/2, 1/2; 2/2, 0; a row of degree 0 stays 0.
  np.testing.assert_allclose(got, [[0.5, 0.5], [1.0, 0.0], [0.0, 0.0]], rtol=1e-6)


def test_propagate_is_the_weighted_sum_of_neighbour_rows():
  indices = jnp.asarray([[0, 2], [1, 1]], jnp.int32)
  weights = jnp.asarray([[0.5, 2.0], [1.0, 0.0]])
  x = jnp.asarray([[1.0, 0.0], [0.0, 3.0], [2.0, 2.0]])
  np.testing.assert_allclose(np.asarray(graphs.propagate(indices, weights, x)),
                             [[0.5 + 4.0, 4.0], [0.0, 3.0]])


def test_training_pairs_sorted_by_user_then_item():
  dataset = types.SimpleNamespace(train_pairs=np.array([[2, 1], [0, 5], [2, 0], [0, 3]]))
  users, items = graphs.training_pairs(dataset)
  np.testing.assert_array_equal(users, [0, 0, 2, 2])
  np.testing.assert_array_equal(items, [3, 5, 0, 1])
  assert users.dtype == items.dtype == np.int32
