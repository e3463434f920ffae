import chex
import jax
import jax.numpy as jnp
import numpy as np

from milk_jax import model


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
