import chex
import jax
import jax.numpy as jnp
import numpy as np

from milk_jax.methods.milk import environments
from milk_jax.methods.milk import model


def test_init_shapes():
  params = model.init_params(jax.random.key(0), num_users=7, feature_dims=(5, 3), embed_dim=4)
  chex.assert_shape(params['user_embedding'], (7, 4))
  chex.assert_shape([p['kernel'] for p in params['extractors']], [(5, 4), (3, 4)])
  chex.assert_shape([p['bias'] for p in params['extractors']], [(4,), (4,)])


def test_extractors_are_affine_maps_per_modality():
  extractors = [{'kernel': jnp.array([[1.0, 0.0], [0.0, 2.0]]), 'bias': jnp.array([0.5, 0.0])},
                {'kernel': jnp.array([[1.0, 1.0]]), 'bias': jnp.array([0.0, -1.0])}]
  features = [jnp.array([[1.0, 1.0], [2.0, 0.0]]), jnp.array([[3.0], [0.0]])]
  reps = model.modality_representations(extractors, features)
  np.testing.assert_allclose(reps, [[[1.5, 2.0], [3.0, 2.0]], [[2.5, 0.0], [0.0, -1.0]]])


def test_fuse_and_env_scores_agree():
  key_u, key_r = jax.random.split(jax.random.key(0))
  users = jax.random.normal(key_u, (5, 4))
  reps = jax.random.normal(key_r, (5, 3, 4))
  weights = jnp.array([[1 / 3] * 3, [0.7, 0.2, 0.1], [0.1, 0.7, 0.2], [0.2, 0.1, 0.7]])
  fused = model.fuse(reps, weights)
  chex.assert_shape(fused, (4, 5, 4))
  np.testing.assert_allclose(fused[1, 2], 0.7 * reps[2, 0] + 0.2 * reps[2, 1] + 0.1 * reps[2, 2],
                             rtol=1e-5)
  scores = model.env_scores(users, reps, weights)
  chex.assert_shape(scores, (4, 5))
  np.testing.assert_allclose(scores, jnp.einsum('bd,ebd->eb', users, fused), rtol=1e-5, atol=1e-6)


def test_inference_embedding_is_the_modality_mean():
  params = model.init_params(jax.random.key(1), 3, (6, 2), 4)
  features = [jnp.ones((5, 6)), jnp.arange(10.0).reshape(5, 2)]
  reps = model.modality_representations(params['extractors'], features)
  np.testing.assert_allclose(model.item_embeddings(params, features),
                             (reps[:, 0] + reps[:, 1]) / 2, rtol=1e-6)


def test_present_mean_of_an_item_missing_a_modality_is_its_present_representation():
  reps = jnp.array([[[1.0, 2.0], [3.0, 6.0]],   # complete: (2, 4)
                    [[1.0, 2.0], [3.0, 6.0]],   # misses modality 1: (1, 2)
                    [[1.0, 2.0], [3.0, 6.0]]])  # misses modality 0: (3, 6)
  available = jnp.array([[True, True], [True, False], [False, True]])
  np.testing.assert_array_equal(model.present_mean(reps, available),
                                [[2.0, 4.0], [1.0, 2.0], [3.0, 6.0]])
  # Three modalities, one missing: the mean of the other two; none: zero, not NaN.
  reps3 = jnp.array([[[3.0], [5.0], [100.0]], [[3.0], [5.0], [100.0]]])
  np.testing.assert_array_equal(
      model.present_mean(reps3, jnp.array([[True, True, False], [False, False, False]])),
      [[4.0], [0.0]])


def test_present_mean_of_complete_items_is_the_mean_bit_for_bit():
  reps = jax.random.normal(jax.random.key(4), (50, 3, 8))
  available = jnp.ones((50, 3), bool)
  np.testing.assert_array_equal(model.present_mean(reps, available), reps.mean(axis=-2))
  np.testing.assert_array_equal(model.fused_items(reps, None), reps.mean(axis=-2))


def test_env_scores_under_present_fusion():
  key_u, key_r = jax.random.split(jax.random.key(5))
  users = jax.random.normal(key_u, (6, 4))
  reps = jax.random.normal(key_r, (6, 3, 4))
  weights = jnp.array([[1 / 3] * 3, [0.7, 0.2, 0.1], [0.0, 0.0, 1.0]])
  available = jnp.array([[True] * 3, [True, True, False], [False, True, False],
                         [True] * 3, [True, False, True], [True] * 3])
  mean_scores = model.env_scores(users, reps, weights)
  present = model.env_scores(users, reps, weights, available)
  complete = np.asarray(available.all(axis=1))
  # Complete items: the 'mean' path's floats exactly.
  np.testing.assert_array_equal(np.asarray(present)[:, complete],
                                np.asarray(mean_scores)[:, complete])
  # Item 1 (no modality 2) in environment 1: weights (0.7, 0.2) / 0.9; in the
  # environment on modality 2 only: the uniform mean of modalities 0 and 1.
  per_modality = np.einsum('bd,bmd->bm', users, reps)
  np.testing.assert_allclose(present[1, 1], (0.7 * per_modality[1, 0]
                                             + 0.2 * per_modality[1, 1]) / 0.9, rtol=1e-5)
  np.testing.assert_allclose(present[2, 1], (per_modality[1, 0] + per_modality[1, 1]) / 2,
                             rtol=1e-5)
  # Item 2 has only modality 1: every environment scores it by that modality.
  np.testing.assert_allclose(present[:, 2], [per_modality[2, 1]] * 3, rtol=1e-5)
  # The scores are those of the fused vectors (Eq. 13 with per-item weights).
  fused = jnp.einsum('ebm,bmd->ebd', environments.present_weights(weights, available), reps)
  np.testing.assert_allclose(np.asarray(present)[:, ~complete],
                             np.einsum('bd,ebd->eb', users, fused)[:, ~complete],
                             rtol=1e-5, atol=1e-6)


def test_item_embeddings_under_present_fusion():
  params = model.init_params(jax.random.key(1), 3, (6, 2), 4)
  features = [jnp.ones((5, 6)), jnp.arange(10.0).reshape(5, 2)]
  reps = model.modality_representations(params['extractors'], features)
  available = jnp.array([[True, True], [True, False], [False, True], [True, True],
                         [True, False]])
  got = np.asarray(model.item_embeddings(params, features, available))
  reps = np.asarray(reps)
  np.testing.assert_array_equal(got[[0, 3]],
                                np.asarray(model.item_embeddings(params, features))[[0, 3]])
  np.testing.assert_array_equal(got[[1, 4]], reps[[1, 4], 0])
  np.testing.assert_array_equal(got[2], reps[2, 1])


def test_dropout_mask_drops_one_present_modality_at_the_rate():
  rows = np.array([[1, 1, 1], [1, 0, 1], [1, 0, 0], [0, 0, 0]], bool)
  available = jnp.asarray(np.tile(rows, (3000, 1)))
  always = np.asarray(model.dropout_mask(jax.random.key(0), available, 1.0))
  chex.assert_shape(always, available.shape)
  assert not (always & ~np.asarray(available)).any()  # Only present modalities drop.
  counts = always.reshape(3000, 4, 3).sum(axis=-1)
  np.testing.assert_array_equal(counts, np.tile([1, 1, 0, 0], (3000, 1)))  # 2+ present: one.
  # Uniform among the present ones: 1/3 each of three, 1/2 each of two.
  np.testing.assert_allclose(always.reshape(3000, 4, 3)[:, 0].mean(axis=0), [1 / 3] * 3,
                             atol=0.04)
  np.testing.assert_allclose(always.reshape(3000, 4, 3)[:, 1].mean(axis=0), [0.5, 0, 0.5],
                             atol=0.04)
  assert not np.asarray(model.dropout_mask(jax.random.key(0), available, 0.0)).any()
  sometimes = np.asarray(model.dropout_mask(jax.random.key(1), available, 0.3))
  assert abs(sometimes.reshape(3000, 4, 3)[:, :2].any(axis=-1).mean() - 0.3) < 0.03


def test_with_dropped_replaces_the_dropped_modalities_by_their_fill():
  reps = jnp.arange(12, dtype=jnp.float32).reshape(2, 3, 2)  # (B=2, M=3, d=2)
  fills = -jnp.ones((3, 2)) * jnp.array([[1.0], [2.0], [3.0]])
  dropped = jnp.array([[False, True, False], [False, False, False]])
  out = np.asarray(model.with_dropped(reps, fills, dropped))
  np.testing.assert_array_equal(out, [[[0, 1], [-2, -2], [4, 5]], [[6, 7], [8, 9], [10, 11]]])
