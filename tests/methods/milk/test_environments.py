import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from milk_jax.methods.milk import environments


def test_cyclic_shifts_hand_example():
  shifted = environments.cyclic_shifts(jnp.array([0.5, 0.3, 0.2]))
  np.testing.assert_allclose(shifted, [[0.5, 0.3, 0.2], [0.2, 0.5, 0.3], [0.3, 0.2, 0.5]])


@pytest.mark.parametrize('num_modalities', [2, 3, 5])
@pytest.mark.parametrize('alpha', [0.01, 1.0, 100.0])
def test_env_weights_structure(num_modalities, alpha):
  weights = environments.env_weights(jax.random.key(3), num_modalities, alpha)
  chex.assert_shape(weights, (num_modalities + 1, num_modalities))
  chex.assert_tree_all_finite(weights)
  assert np.all(weights >= 0)
  np.testing.assert_allclose(weights.sum(axis=1), 1.0, atol=1e-5)
  np.testing.assert_allclose(weights[0], 1.0 / num_modalities)
  for k in range(1, num_modalities):
    np.testing.assert_allclose(weights[1 + k], np.roll(weights[1], k))


def test_two_modalities_match_the_authors_environments():
  weights = environments.env_weights(jax.random.key(0), 2, 1.0)
  l1, l2 = np.asarray(weights[1])
  np.testing.assert_allclose(weights, [[0.5, 0.5], [l1, l2], [l2, l1]], atol=1e-7)


def test_each_modality_leads_one_environment():
  weights = np.asarray(environments.env_weights(jax.random.key(1), 4, 0.01))
  leaders = weights[1:].argmax(axis=1)
  assert sorted(leaders) == [0, 1, 2, 3]


def test_small_alpha_gives_a_dominant_modality_large_alpha_near_uniform():
  keys = jax.random.split(jax.random.key(2), 200)
  draw = jax.vmap(lambda k, a: environments.env_weights(k, 3, a), in_axes=(0, None))
  assert float(draw(keys, 0.01)[:, 1].max(axis=1).mean()) > 0.95
  np.testing.assert_allclose(draw(keys, 100.0)[:, 1], 1 / 3, atol=0.1)


def test_weights_change_with_the_key_and_repeat_with_the_same_key():
  a = environments.env_weights(jax.random.key(0), 3, 1.0)
  b = environments.env_weights(jax.random.key(0), 3, 1.0)
  c = environments.env_weights(jax.random.key(1), 3, 1.0)
  chex.assert_trees_all_close(a, b)
  assert not np.allclose(a, c)


def test_ablation_options():
  no_uniform = environments.env_weights(jax.random.key(0), 3, 1.0, include_uniform=False)
  chex.assert_shape(no_uniform, (3, 3))
  np.testing.assert_allclose(no_uniform[1], np.roll(no_uniform[0], 1))
  independent = environments.env_weights(jax.random.key(0), 3, 1.0, cyclic=False)
  chex.assert_shape(independent, (4, 3))
  np.testing.assert_allclose(independent.sum(axis=1), 1.0, atol=1e-5)
  assert not np.allclose(independent[2], np.roll(independent[1], 1))
  np.testing.assert_allclose(environments.uniform_weights(4), [[0.25] * 4])


def test_present_weights_renormalise_over_present_modalities_hand_example():
  weights = jnp.array([[1 / 3, 1 / 3, 1 / 3], [0.5, 0.3, 0.2], [0.2, 0.5, 0.3]])
  available = jnp.array([[True, True, False], [False, True, True]])
  got = environments.present_weights(weights, available)
  chex.assert_shape(got, (3, 2, 3))
  np.testing.assert_allclose(got[:, 0], [[0.5, 0.5, 0], [0.625, 0.375, 0], [2 / 7, 5 / 7, 0]],
                             rtol=1e-6)
  np.testing.assert_allclose(got[:, 1], [[0, 0.5, 0.5], [0, 0.6, 0.4], [0, 0.625, 0.375]],
                             rtol=1e-6)


def test_present_weights_fall_back_to_the_uniform_present_mean():
  # An environment on the missing modality only: uniform over the present ones.
  weights = jnp.array([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0]])
  available = jnp.array([[True, True, False], [False, False, False]])
  got = environments.present_weights(weights, available)
  chex.assert_tree_all_finite(got)
  np.testing.assert_array_equal(got[0], [[0.5, 0.5, 0.0], [0.0, 0.0, 0.0]])
  np.testing.assert_array_equal(got[1], [[1.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
