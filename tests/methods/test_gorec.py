"""Tests of milk_jax/methods/gorec.py against plain numpy written from spec section 11."""

import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from milk_jax.errors import ConfigError
from milk_jax.methods import gorec
from milk_jax.training import state as state_lib
from milk_jax.training import step as step_lib

EPS = 1e-5  # GoRec's BatchNorm epsilon (torch's default).
UNI, KL = 0.7, 3.0  # Far from the defaults' ratio so that each term shows in the total.
SECTION = {'uni_coeff': UNI, 'kl_coeff': KL, 'num_clusters': 2}
BATCH = {k: jnp.zeros((4,), jnp.int32) for k in ('users', 'positives', 'negatives')}

_item_loss = jax.jit(gorec.item_loss, static_argnums=(6, 7, 8, 9))
_draws = jax.jit(gorec.step_draws, static_argnums=(1, 2, 3, 4))
_positions = jax.jit(gorec.batch_positions, static_argnums=(2, 3, 4))


def _step_input(method, seed, step):
  """Step `step`'s input as the loop draws it (the epoch's first row)."""
  drawn = jax.jit(method.step_inputs, static_argnums=2)(jax.random.key(seed), jnp.int32(step), 1)
  return jax.tree.map(lambda x: x[0], drawn)


@pytest.fixture
def setup(make_config, two_tower):
  """setup(cf_items=the catalogue's, **section) -> (config, method, tables)."""
  def build(cf_items=two_tower.CF_ITEMS, **section):
    config = make_config('gorec', embed_dim=2, **{**SECTION, **section})
    method = gorec.make(config, two_tower.SPEC)
    dataset = types.SimpleNamespace(features=two_tower.FEATURES, warm_items=two_tower.WARM)
    extras = method.prepare(dataset, {'cf_users': two_tower.CF_USERS, 'cf_items': cf_items})
    return config, method, two_tower.tables(extras)
  return build


def np_content(two_tower, items):
  x = two_tower.CONTENT[items].astype(np.float64)
  return x / np.linalg.norm(x, axis=1, keepdims=True)


def np_block(block, x, stats=None):
  """tanh(BN(x W)), BN on the batch's biased statistics or on running ones."""
  h = x @ np.asarray(block['hidden']['w'])
  mean, var = ((h.mean(0), h.var(0)) if stats is None
               else (np.asarray(stats['mean']), np.asarray(stats['var'])))
  return np.tanh((h - mean) / np.sqrt(var + EPS) * np.asarray(block['bn']['scale'])
                 + np.asarray(block['bn']['offset']))


def np_linear(layer, x):
  return x @ np.asarray(layer['w']) + np.asarray(layer['b'])


def np_decoder(p, c, z, stats=None):
  h = np_block(p['decoder'], np.concatenate([c, z], 1), stats)
  for l in range(2):
    h = np_linear(p['decoder'][f'layer_{l}'], h)
  return h


def np_log_softmax(x):
  x = x - x.max(1, keepdims=True)
  return x - np.log(np.exp(x).sum(1, keepdims=True))


def np_loss(two_tower, p, items, noise, noise_c, scale, kl_form):
  c, e = np_content(two_tower, items), two_tower.CF_ITEMS[items].astype(np.float64)
  h = np_block(p['encoder'], np.concatenate([c, e], 1))
  mu, logvar = np_linear(p['encoder']['mean'], h), np_linear(p['encoder']['logvar'], h)
  mu_c, logvar_c = np_linear(p['prior']['mean'], c), np_linear(p['prior']['logvar'], c)
  z = mu + noise * np.exp(logvar / 2)
  z_c = mu_c + noise_c * np.exp(logvar_c / 2)
  rec = np.mean((np_decoder(p, c * scale, z) - e) ** 2)
  unit = mu / np.linalg.norm(mu, axis=1, keepdims=True)
  n = len(items)
  pair_terms = [np.exp(-2 * np.sum((unit[j] - unit[k]) ** 2))
                for j in range(n) for k in range(j + 1, n)]
  uni = np.log(np.mean(pair_terms))
  if kl_form == 'softmax':
    log_p, log_q = np_log_softmax(z_c), np_log_softmax(z)
    kl = np.mean(np.exp(log_p) * (log_p - log_q))
  else:
    kl = np.mean(0.5 * (logvar_c - logvar + (np.exp(logvar) + (mu - mu_c) ** 2)
                        / np.exp(logvar_c) - 1))
  return rec + UNI * uni + KL * kl, (rec, uni, kl)


@pytest.mark.parametrize('kl_form', gorec.KL_FORMS)
def test_item_loss_matches_numpy(setup, two_tower, kl_form):
  _, method, tables = setup()
  params = two_tower.explicit_params(method, 3)
  rng = np.random.default_rng(0)
  items = np.array([2, 0, 1, 0])
  noise, noise_c = rng.normal(size=(4, 2)), rng.normal(size=(4, 2))
  scale = np.where(rng.random((4, 5)) < 0.3, 0.0, 1 / 0.7)
  got, (metrics, moments) = _item_loss(
      params, jnp.asarray(items), jnp.asarray(noise, jnp.float32),
      jnp.asarray(noise_c, jnp.float32), jnp.asarray(scale, jnp.float32), tables, EPS, UNI, KL,
      kl_form)
  want, (rec, uni, kl) = np_loss(two_tower, params, items, noise, noise_c, scale, kl_form)
  np.testing.assert_allclose(got, want, rtol=1e-5)
  np.testing.assert_allclose([metrics['reconstruction'], metrics['uniformity'], metrics['kl']],
                             [rec, uni, kl], rtol=1e-5, atol=1e-7)
  pre = (np.concatenate([np_content(two_tower, items), two_tower.CF_ITEMS[items]], 1)
         @ np.asarray(params['encoder']['hidden']['w']))
  np.testing.assert_allclose(moments['encoder']['mean'], pre.mean(0), rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(moments['encoder']['var'], pre.var(0, ddof=1), rtol=1e-5, atol=1e-6)


def test_step_loss_is_the_item_loss_of_the_step_draws(setup, two_tower):
  config, method, tables = setup(dropout=0.3)
  params = two_tower.explicit_params(method, 3)
  step_input = _step_input(method, 8, 5)
  got, (metrics, _) = jax.jit(method.loss)(params, BATCH, step_input, tables)
  items = two_tower.WARM[np.asarray(step_input['positions'])]
  # item_batch_size 256 is capped at the 3 warm items.
  assert sorted(items) == sorted(two_tower.WARM)
  noise, noise_c, scale = (np.asarray(a) for a in _draws(step_input['key'], 3, 2, 5, 0.3))
  want, _ = np_loss(two_tower, params, items, noise, noise_c, scale, 'softmax')
  np.testing.assert_allclose(got, want, rtol=1e-5)
  assert float(metrics['loss']) == float(got)


def test_step_draws_shapes_and_inverted_dropout():
  noise, noise_c, scale = (np.asarray(a) for a in _draws(jax.random.key(0), 400, 3, 50, 0.3))
  assert noise.shape == noise_c.shape == (400, 3) and scale.shape == (400, 50)
  assert not np.allclose(noise, noise_c)
  np.testing.assert_allclose(np.unique(scale), [0.0, 1 / 0.7], rtol=1e-6)
  assert abs((scale == 0).mean() - 0.3) < 0.02
  _, _, kept = _draws(jax.random.key(0), 4, 3, 5, 0.0)
  np.testing.assert_array_equal(kept, np.ones((4, 5)))


def test_batch_positions_visit_every_warm_item_once_per_pass_and_resume_exactly():
  key = jax.random.key(1)
  stream = np.asarray(_positions(key, jnp.int32(0), 14, 3, 7))  # 42 = 6 passes of 7.
  assert stream.shape == (14, 3)
  passes = stream.reshape(6, 7)
  for p in passes:
    assert sorted(p) == list(range(7))
  assert len({tuple(p) for p in passes}) > 1  # Each pass is shuffled anew.
  np.testing.assert_array_equal(_positions(key, jnp.int32(5), 4, 3, 7), stream[5:9])
  np.testing.assert_array_equal(_positions(key, jnp.int32(13), 1, 3, 7), stream[13:])


def test_kmeans_finds_separated_blobs_deterministically():
  rng = np.random.default_rng(0)
  centres = np.array([[5.0, 0.0, 0.0], [0.0, 5.0, 0.0], [0.0, 0.0, 5.0]])
  truth = np.repeat(np.arange(3), 20)
  x = centres[truth] + 0.1 * rng.normal(size=(60, 3))
  centroids = gorec.kmeans(x, 3, seed=0, max_iters=50)
  labels = gorec._squared_distances(x, centroids).argmin(1)
  for blob in range(3):  # Each blob is exactly one cluster.
    assert len(set(labels[truth == blob])) == 1
  assert len(set(labels)) == 3
  np.testing.assert_array_equal(centroids, gorec.kmeans(x, 3, seed=0, max_iters=50))
  # k above the number of points, and duplicated points, still give centroids.
  assert gorec.kmeans(x[:2], 5, seed=0, max_iters=5).shape == (2, 3)
  assert gorec.kmeans(np.repeat(x[:2], 3, axis=0), 4, seed=0, max_iters=5).shape == (4, 3)


@pytest.mark.parametrize('fit', gorec.CLUSTER_FITS)
def test_new_items_get_a_cluster_and_means_use_warm_items_only(fit):
  rng = np.random.default_rng(1)
  features = (rng.normal(size=(40, 3)), rng.normal(size=(40, 2)))
  warm = np.sort(rng.choice(40, 25, replace=False))
  x = gorec.joint_content_np(features)
  labels = gorec.content_clusters(x, warm, 4, fit, seed=0, max_iters=50)
  assert labels.shape == (40,) and labels.min() >= 0 and labels.max() < 4
  fit_rows = x[warm] if fit == 'warm' else x
  centroids = gorec.kmeans(fit_rows, 4, 0, 50)
  np.testing.assert_array_equal(labels, ((x[:, None] - centroids[None]) ** 2).sum(-1).argmin(1))
  cf = rng.normal(size=(40, 3))
  cf_poisoned = cf.copy()
  cf_poisoned[np.setdiff1d(np.arange(40), warm)] = 1e6  # New items' rows must not enter.
  means = gorec.cluster_means(cf_poisoned, labels, warm)
  for i in range(40):
    members = warm[labels[warm] == labels[i]]
    want = cf[members].mean(0) if members.size else cf[warm].mean(0)
    np.testing.assert_allclose(means[i], want, rtol=1e-5)


def test_a_cluster_without_warm_items_takes_the_warm_mean():
  labels = np.array([0, 0, 1, 2, 2])
  cf = np.arange(15, dtype=np.float64).reshape(5, 3)
  means = gorec.cluster_means(cf, labels, warm_items=np.array([0, 1, 2]))
  np.testing.assert_allclose(means[3], cf[:3].mean(0))
  np.testing.assert_allclose(means[0], cf[:2].mean(0))


def test_prepare_gives_every_item_its_clusters_warm_mean(setup, two_tower):
  _, _, tables = setup()
  labels = np.asarray(tables.extras[gorec.LABELS])
  prior = np.asarray(tables.extras[gorec.PRIOR])
  assert labels.shape == (5,) and prior.shape == (5, 2)
  for i in range(5):
    members = two_tower.WARM[labels[two_tower.WARM] == labels[i]]
    np.testing.assert_allclose(prior[i], two_tower.CF_ITEMS[members].mean(0), rtol=1e-6)


def test_embed_decodes_the_posterior_mean_of_the_cluster_prior(setup, two_tower):
  _, method, tables = setup()
  params = two_tower.explicit_params(method, 3)
  users, items = jax.jit(method.embed)(params, tables)
  stats = jax.tree.map(np.asarray, params['batch_stats'])
  c = np_content(two_tower, np.arange(5))
  h = np_block(params['encoder'], np.concatenate([c, tables.extras[gorec.PRIOR]], 1),
               stats['encoder'])
  mu = np_linear(params['encoder']['mean'], h)  # The mean: no sampling, no dropout.
  np.testing.assert_allclose(items, np_decoder(params, c, mu, stats['decoder']),
                             rtol=1e-5, atol=1e-6)
  np.testing.assert_array_equal(users, two_tower.CF_USERS)


def test_no_item_reads_its_own_cf_row(setup, two_tower):
  _, method, tables = setup()
  params = two_tower.explicit_params(method, 3)
  _, items = jax.jit(method.embed)(params, tables)
  rng = np.random.default_rng(2)
  # Inference reads the cluster prior only: any cf_items table gives the same vectors.
  scrambled = tables._replace(extras={**tables.extras,
                                      'cf_items': jnp.asarray(rng.normal(size=(5, 2)))})
  np.testing.assert_allclose(jax.jit(method.embed)(params, scrambled)[1], items, atol=1e-6)
  # And new items' rows never reach the prior.
  poisoned = two_tower.CF_ITEMS.copy()
  poisoned[two_tower.NEW] = rng.normal(size=(len(two_tower.NEW), 2))
  _, _, poisoned_tables = setup(cf_items=poisoned)
  np.testing.assert_array_equal(poisoned_tables.extras[gorec.PRIOR], tables.extras[gorec.PRIOR])
  # Whereas the prior does matter.
  moved = tables._replace(extras={**tables.extras, gorec.PRIOR: tables.extras[gorec.PRIOR] + 1.0})
  assert not np.allclose(jax.jit(method.embed)(params, moved)[1], items)


def test_update_blends_the_step_moments_and_the_optimizer_leaves_the_stats_alone(setup, two_tower):
  config, method, tables = setup()
  params = two_tower.explicit_params(method, 3)
  state = state_lib.train_state(method, params, method.optimizer)
  step_input = _step_input(method, 4, 0)
  new, _ = jax.jit(step_lib.make_update(config, method))(state, BATCH, step_input, tables)
  items = tables.warm_items[step_input['positions']]
  draws = _draws(step_input['key'], 3, 2, 5, config.methods.gorec.dropout)
  _, (_, moments) = _item_loss(params, items, *draws, tables, EPS, UNI, KL, 'softmax')
  want = jax.tree.map(lambda r, b: 0.9 * r + 0.1 * b, params['batch_stats'], moments)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6),
               new.model_state['batch_stats'], want)
  assert int(new.step) == 1
  assert not np.allclose(new.params['decoder']['hidden']['w'], params['decoder']['hidden']['w'])


def test_defaults_are_the_official_baby_settings(make_config):
  section = make_config().methods.gorec
  assert (section.uni_coeff, section.kl_coeff, section.dropout, section.decoder_layers,
          section.item_batch_size, section.num_clusters, section.kl_form) == (
              5.0, 10.0, 0.3, 2, 256, 50, 'softmax')


@pytest.mark.parametrize('field,value', [('kl_form', 'normal'), ('dropout', 1.0),
                                         ('item_batch_size', 1), ('cluster_fit', 'new'),
                                         ('num_clusters', 0), ('decoder_layers', -1),
                                         ('bn_momentum', 0.0)])
def test_check_config_refuses(make_config, field, value):
  config = make_config('gorec', embed_dim=2, **{**SECTION, field: value})
  with pytest.raises(ConfigError, match=f'config.methods.gorec.{field}='):
    gorec.check_config(config)
