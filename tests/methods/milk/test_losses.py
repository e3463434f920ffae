import chex
import jax
import jax.numpy as jnp
import numpy as np

from milk_jax.methods.milk import losses


def test_bpr_hand_example():
  pos = jnp.array([[2.0, 0.0], [1.0, 1.0]])
  neg = jnp.array([[0.0, 0.0], [1.0, 3.0]])
  expected = [(np.log1p(np.exp(-2.0)) + np.log(2.0)) / 2,
              (np.log(2.0) + np.log1p(np.exp(2.0))) / 2]
  np.testing.assert_allclose(losses.bpr_per_env(pos, neg), expected, rtol=1e-6)


def test_rex_is_mean_plus_beta_variance():
  env_losses = jnp.array([1.0, 2.0, 4.0])
  # mean 7/3; population variance ((4/3)^2 + (1/3)^2 + (5/3)^2) / 3 = 42/27.
  total, variance = losses.rex_loss(env_losses, beta=10.0)
  np.testing.assert_allclose(variance, 42 / 27, rtol=1e-6)
  np.testing.assert_allclose(total, 7 / 3 + 10 * 42 / 27, rtol=1e-6)
  total_unbiased, variance_unbiased = losses.rex_loss(env_losses, beta=10.0, ddof=1)
  np.testing.assert_allclose(variance_unbiased, 42 / 18, rtol=1e-6)
  np.testing.assert_allclose(total_unbiased, 7 / 3 + 10 * 42 / 18, rtol=1e-6)
  # The authors' code sums the environments' losses: 1 + 2 + 4 = 7.
  total_summed, _ = losses.rex_loss(env_losses, beta=10.0, ddof=1, reduction='sum')
  np.testing.assert_allclose(total_summed, 7 + 10 * 42 / 18, rtol=1e-6)


def test_rex_of_one_environment_is_its_loss():
  total, variance = losses.rex_loss(jnp.array([0.7]), beta=1000.0, ddof=1)
  np.testing.assert_allclose(total, 0.7)
  assert float(variance) == 0.0


def test_alignment_hand_example_and_masking():
  reps = jnp.array([
      [[0.0, 0.0], [1.0, 2.0], [3.0, 0.0]],   # item 0: all present
      [[1.0, 1.0], [1.0, 1.0], [9.0, 9.0]],   # item 1: modality 2 missing
  ])
  availability = jnp.array([[True, True, True], [True, True, False]])
  # item 0 pairs: (0,1) 1+4=5, (0,2) 9, (1,2) 4+4=8 -> 22; item 1 pair (0,1): 0.
  # 4 present pairs, d = 2 -> 22 / 8.
  np.testing.assert_allclose(losses.alignment_loss(reps, availability), 22 / 8, rtol=1e-6)


def test_alignment_ignores_pairs_with_a_missing_modality():
  key = jax.random.key(0)
  reps = jax.random.normal(key, (4, 3, 5))
  availability = jnp.array([[1, 1, 1], [1, 0, 1], [0, 1, 1], [1, 1, 1]], bool)
  baseline = losses.alignment_loss(reps, availability)
  # Changing a missing modality's vector cannot change the loss.
  perturbed = reps.at[1, 1].add(100.0).at[2, 0].add(-50.0)
  np.testing.assert_allclose(losses.alignment_loss(perturbed, availability), baseline, rtol=1e-6)
  # Changing a present one does.
  assert not np.isclose(losses.alignment_loss(reps.at[0, 0].add(1.0), availability), baseline)


def test_alignment_is_zero_without_present_pairs():
  reps = jnp.ones((2, 2, 3)).at[:, 1].set(5.0)
  availability = jnp.array([[True, False], [False, True]])
  assert float(losses.alignment_loss(reps, availability)) == 0.0


def test_first_occurrence_weights_count_each_item_once():
  items = jnp.array([4, 2, 4, 7, 2, 4])
  np.testing.assert_array_equal(losses.first_occurrence_weights(items), [1, 1, 0, 1, 0, 0])


def test_alignment_with_item_weights_counts_duplicates_once():
  reps = jnp.array([[[0.0], [2.0]], [[0.0], [2.0]], [[0.0], [0.0]]])
  availability = jnp.ones((3, 2), bool)
  weights = losses.first_occurrence_weights(jnp.array([5, 5, 6]))
  np.testing.assert_allclose(losses.alignment_loss(reps, availability, weights), 4 / 2)


def test_regularisers():
  u = jnp.array([[1.0, 2.0], [0.0, 1.0]])
  z = jnp.array([[1.0, 0.0], [3.0, 0.0]])
  np.testing.assert_allclose(losses.embedding_l2(u, z), ((5 + 1) + (1 + 9)) / 2)
  params = {'a': jnp.array([1.0, 2.0]), 'b': [jnp.array([[3.0]])]}
  np.testing.assert_allclose(losses.params_l2(params), 14.0)
  chex.assert_shape(losses.embedding_l2(u), ())
