"""Tests of milk_jax/methods/gar/ against plain numpy written from spec section 10."""

import types

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from milk_jax.errors import ConfigError
from milk_jax.methods import gar
from milk_jax.training import state as state_lib

# Larger than the defaults so that every term shows in the totals.
ALPHA, BETA, L2, MOMENTUM = 0.3, 0.2, 0.01, 0.3
EPS = 1e-3  # GAR's BatchNorm epsilon (TF's default).
BATCH = {'users': jnp.array([0, 2, 1, 0]), 'positives': jnp.array([0, 1, 2, 1]),
         'negatives': jnp.array([2, 0, 1, 2])}
# Training pairs of the catalogue's 3 users (degrees 1, 2, 3) over the warm items 0-2.
TRAIN_PAIRS = np.array([[1, 2], [0, 0], [2, 1], [1, 0], [2, 2], [2, 0]], np.int32)

_r_step = jax.jit(gar.recommender_step, static_argnums=0)
_g_step = jax.jit(gar.generator_step, static_argnums=0)
_original_batch = jax.jit(gar.original_batch, static_argnums=1)
# Dropout off in the player that trains, on in the frozen one (which must not use it).
R_EXACT = {'r_dropout': 0.0, 'g_dropout': 0.5}
G_EXACT = {'r_dropout': 0.5, 'g_dropout': 0.0}


SECTION = {'g_hidden': (3,), 'r_layers': (4, 3), 'alpha': ALPHA, 'beta': BETA, 'l2_weight': L2,
           'bn_momentum': MOMENTUM}


@pytest.fixture
def setup(make_config, two_tower):
  """setup(**section) -> (hyper, method, tables, explicit params) on the two-tower catalogue."""
  def build(**section):
    config = make_config('gar', embed_dim=2, **{**SECTION, **section})
    method = gar.make(config, two_tower.SPEC)
    dataset = types.SimpleNamespace(train_pairs=TRAIN_PAIRS, num_users=3)
    tables = two_tower.tables(method.prepare(
        dataset, {'cf_users': two_tower.CF_USERS, 'cf_items': two_tower.CF_ITEMS}))
    return gar.read_hyper(config), method, tables, two_tower.explicit_params(method, 5)
  return build


def np_mlp(p, stats, x, train):
  """(out, {bn name: (mean, biased var)}): [BN (offset only)] -> dense -> (BN -> tanh -> dense)*.

  BN uses the rows' own statistics when `train`, else `stats`; no dropout.
  """
  p = jax.tree.map(lambda a: np.asarray(a, np.float64), p)
  moments = {}

  def bn(name, h):
    if train:
      mean, var = h.mean(0), h.var(0)
      moments[name] = (mean, var)
    else:
      mean, var = np.asarray(stats[name]['mean']), np.asarray(stats[name]['var'])
    return (h - mean) / np.sqrt(var + EPS) * p[name].get('scale', 1.0) + p[name]['offset']

  if 'input_bn' in p:
    x = bn('input_bn', x)
  x = x @ p['dense_0']['w'] + p['dense_0']['b']
  l = 1
  while f'dense_{l}' in p:
    x = np.tanh(bn(f'bn_{l}', x)) @ p[f'dense_{l}']['w'] + p[f'dense_{l}']['b']
    l += 1
  return x, moments


def np_l2(tree):
  """sum over the kernels of sum w^2 / 2."""
  return sum(0.5 * np.sum(np.asarray(x, np.float64) ** 2)
             for path, x in jax.tree_util.tree_leaves_with_path(tree) if path[-1].key == 'w')


def softplus(z):
  return np.log1p(np.exp(z))


def _inputs(two_tower):
  u, i, j = (np.asarray(BATCH[k]) for k in ('users', 'positives', 'negatives'))
  return (two_tower.CF_USERS[u].astype(np.float64), two_tower.CF_ITEMS[i].astype(np.float64),
          two_tower.CF_ITEMS[j].astype(np.float64), two_tower.CONTENT[i].astype(np.float64))


def np_r_loss(two_tower, params):
  users, real, negative, x = _inputs(two_tower)
  stats = params['batch_stats']
  fake, _ = np_mlp(params['generator'], stats['generator'], x, train=False)
  r = params['recommender']
  user_out, _ = np_mlp(r['user_tower'], None, np.tile(users, (3, 1)), train=True)
  item_out, _ = np_mlp(r['item_tower'], None, np.concatenate([real, negative, fake]), train=True)
  s = np.sum(user_out * item_out, 1).reshape(3, -1)
  return np.mean(softplus(-(s[0] - (1 - BETA) * s[2] - BETA * s[1]))) + L2 * np_l2(r)


def np_g_loss(two_tower, params):
  users, real, _, x = _inputs(two_tower)
  stats = params['batch_stats']['recommender']
  r = params['recommender']
  fake, _ = np_mlp(params['generator'], None, x, train=True)
  user_out, _ = np_mlp(r['user_tower'], stats['user_tower'], users, train=False)
  fake_s = np.sum(user_out * np_mlp(r['item_tower'], stats['item_tower'], fake, False)[0], 1)
  real_s = np.sum(user_out * np_mlp(r['item_tower'], stats['item_tower'], real, False)[0], 1)
  return ((1 - ALPHA) * np.mean(softplus(-(fake_s - real_s)))
          + ALPHA * np.mean(np.abs(fake - real)) + L2 * np_l2(params['generator']))


def test_recommender_loss_matches_numpy_with_the_generator_in_inference_mode(setup, two_tower):
  # G's dropout is on in its config: the R step must still run G without it.
  hyper, method, tables, params = setup(**R_EXACT)
  _, _, metrics = _r_step(hyper, params, method.optimizer.init(params), BATCH,
                          jax.random.key(0), tables)
  np.testing.assert_allclose(metrics['r_loss'], np_r_loss(two_tower, params), rtol=1e-5)


def test_generator_loss_matches_numpy_with_the_recommender_in_inference_mode(setup, two_tower):
  # R's dropout is on in its config: the G step must still run R without it.
  hyper, method, tables, params = setup(**G_EXACT)
  _, _, metrics = _g_step(hyper, params, method.optimizer.init(params), BATCH,
                          jax.random.key(0), tables)
  np.testing.assert_allclose(metrics['g_loss'], np_g_loss(two_tower, params), rtol=1e-5)
  _, real, _, x = _inputs(two_tower)
  fake, _ = np_mlp(params['generator'], None, x, train=True)
  np.testing.assert_allclose(metrics['similarity'], np.mean(np.abs(fake - real)), rtol=1e-5)


def test_method_loss_is_the_recommenders_with_the_generators_beside_it(setup, two_tower):
  _, method, tables, params = setup(r_dropout=0.0, g_dropout=0.0)
  value, metrics = jax.jit(method.loss)(params, BATCH, jax.random.key(3), tables)
  np.testing.assert_allclose(value, np_r_loss(two_tower, params), rtol=1e-5)
  np.testing.assert_allclose(metrics['g_loss'], np_g_loss(two_tower, params), rtol=1e-5)
  assert float(metrics['loss']) == float(value)


def test_dropout_is_tf_inverted_dropout_after_tanh(setup):
  hyper, method, _, params = setup()
  rate, key = 0.4, jax.random.key(7)
  x = np.random.default_rng(0).normal(size=(6, 2))
  tower = params['recommender']['item_tower']
  got, _ = jax.jit(gar.mlp_apply, static_argnums=(3, 5))(tower, None, jnp.asarray(x, jnp.float32),
                                                         EPS, key, rate)
  # The reference: numpy's forward with the layer's mask (drawn from fold_in(key, 1)).
  p = jax.tree.map(lambda a: np.asarray(a, np.float64), tower)
  h = (x - x.mean(0)) / np.sqrt(x.var(0) + EPS) + p['input_bn']['offset']
  h = h @ p['dense_0']['w'] + p['dense_0']['b']
  h = np.tanh((h - h.mean(0)) / np.sqrt(h.var(0) + EPS) * p['bn_1']['scale'] + p['bn_1']['offset'])
  keep = np.asarray(jax.random.bernoulli(jax.random.fold_in(key, 1), 1 - rate, h.shape))
  want = np.where(keep, h / (1 - rate), 0.0) @ p['dense_1']['w'] + p['dense_1']['b']
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
  assert 0 < (~keep).sum() < keep.size


def _warm_state(hyper, method, tables, params):
  """(params, opt_state) one R and one G half-step in: both players' Adam moments non-zero."""
  p, o, _ = _r_step(hyper, params, method.optimizer.init(params), BATCH, jax.random.key(1),
                    tables)
  p, o, _ = _g_step(hyper, p, o, BATCH, jax.random.key(1), tables)
  return p, o


def _assert_all_leaves_differ(a, b):
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    assert not np.array_equal(np.asarray(x), np.asarray(y))


@pytest.mark.parametrize('player,other', [('recommender', 'generator'),
                                          ('generator', 'recommender')])
def test_each_half_step_changes_only_its_own_player(setup, player, other):
  """Parameters, running statistics and Adam state of the other player stay bit-identical."""
  hyper, method, tables, params = setup()
  params, opt_state = _warm_state(hyper, method, tables, params)
  step = _r_step if player == 'recommender' else _g_step
  new_params, new_opt, _ = step(hyper, params, opt_state, BATCH, jax.random.key(2), tables)
  for old, new in ((params, new_params), (params['batch_stats'], new_params['batch_stats']),
                   (opt_state, new_opt)):
    chex.assert_trees_all_equal(new[other], old[other])
    _assert_all_leaves_differ(new[player], old[player])


@pytest.mark.parametrize('sampler', ['shared', 'original'])
def test_update_is_the_recommender_half_step_then_the_generator_half_step(setup, sampler):
  hyper, method, tables, params = setup(sampler=sampler)
  state = state_lib.train_state(method, params, method.optimizer)
  key = jax.random.key(9)
  new, metrics = jax.jit(method.update)(state, BATCH, key, tables)
  sample_key, r_key, g_key = jax.random.split(key, 3)
  # The shared sampler's batch as it comes, or the original's rows drawn from the key.
  batch = BATCH if sampler == 'shared' else _original_batch(sample_key, 4, tables)
  p, o, r_metrics = _r_step(hyper, params, state.opt_state, batch, r_key, tables)
  p, o, g_metrics = _g_step(hyper, p, o, batch, g_key, tables)
  assert int(new.step) == 1
  chex.assert_trees_all_close(new.variables, p, rtol=1e-6)
  chex.assert_trees_all_close(new.opt_state, o, rtol=1e-6)
  np.testing.assert_allclose(metrics['loss'], r_metrics['r_loss'], rtol=1e-6)
  np.testing.assert_allclose(metrics['g_loss'], g_metrics['g_loss'], rtol=1e-6)


def _blend(running, batch_moments):
  for mean, var in batch_moments:
    running = {'mean': (1 - MOMENTUM) * running['mean'] + MOMENTUM * mean,
               'var': (1 - MOMENTUM) * running['var'] + MOMENTUM * var}
  return running


@pytest.mark.parametrize('all_passes', [True, False])
def test_recommender_running_stats_follow_the_original_update_ops(setup, two_tower, all_passes):
  hyper, method, tables, params = setup(**R_EXACT, all_r_passes_update_stats=all_passes)
  new_params, _, _ = _r_step(hyper, params, method.optimizer.init(params), BATCH,
                             jax.random.key(0), tables)
  users, real, negative, x = _inputs(two_tower)
  stats = jax.tree.map(np.asarray, params['batch_stats'])
  fake, _ = np_mlp(params['generator'], stats['generator'], x, train=False)
  r = params['recommender']
  # The loss's pass (users tiled: the same moments), then (u, fake) and (u, real).
  user_passes = [users] * (3 if all_passes else 1)
  item_passes = [np.concatenate([real, negative, fake])] + ([fake, real] if all_passes else [])
  for tower, passes in (('user_tower', user_passes), ('item_tower', item_passes)):
    moments = [np_mlp(r[tower], None, rows, train=True)[1] for rows in passes]
    for name, running in stats['recommender'][tower].items():
      want = _blend(running, [m[name] for m in moments])
      got = new_params['batch_stats']['recommender'][tower][name]
      np.testing.assert_allclose(got['mean'], want['mean'], rtol=1e-5, atol=1e-6)
      np.testing.assert_allclose(got['var'], want['var'], rtol=1e-5, atol=1e-6)


def test_generator_running_stats_blend_the_batch_moments_once(setup, two_tower):
  hyper, method, tables, params = setup(**G_EXACT)
  new_params, _, _ = _g_step(hyper, params, method.optimizer.init(params), BATCH,
                             jax.random.key(0), tables)
  _, moments = np_mlp(params['generator'], None, _inputs(two_tower)[3], train=True)
  for name, running in params['batch_stats']['generator'].items():
    want = _blend(jax.tree.map(np.asarray, running), [moments[name]])
    got = new_params['batch_stats']['generator'][name]
    np.testing.assert_allclose(got['mean'], want['mean'], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got['var'], want['var'], rtol=1e-5, atol=1e-6)


def test_embed_puts_every_item_through_the_item_tower_new_ones_from_content(setup, two_tower):
  _, method, tables, params = setup()
  users, items = jax.jit(method.embed)(params, tables)
  stats = params['batch_stats']
  r, r_stats = params['recommender'], stats['recommender']
  generated, _ = np_mlp(params['generator'], stats['generator'],
                        two_tower.CONTENT.astype(np.float64), train=False)
  item_in = np.where(np.isin(np.arange(5), two_tower.NEW)[:, None], generated, two_tower.CF_ITEMS)
  np.testing.assert_allclose(items, np_mlp(r['item_tower'], r_stats['item_tower'], item_in,
                                           False)[0], rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(users, np_mlp(r['user_tower'], r_stats['user_tower'],
                                           two_tower.CF_USERS, False)[0], rtol=1e-5, atol=1e-6)


def test_new_items_do_not_depend_on_any_cf_row(setup, two_tower):
  _, method, tables, params = setup()
  _, items = jax.jit(method.embed)(params, tables)
  rng = np.random.default_rng(3)
  scrambled = tables._replace(extras={
      'cf_users': jnp.asarray(rng.normal(size=two_tower.CF_USERS.shape), jnp.float32),
      'cf_items': jnp.asarray(rng.normal(size=two_tower.CF_ITEMS.shape), jnp.float32)})
  _, other = jax.jit(method.embed)(params, scrambled)
  np.testing.assert_array_equal(np.asarray(other)[two_tower.NEW], np.asarray(items)[two_tower.NEW])
  assert not np.allclose(np.asarray(other)[:3], np.asarray(items)[:3])


def test_widths_default_to_the_originals_towers_with_g_at_the_backbone_width(make_config,
                                                                             two_tower):
  config = make_config('gar')
  params = jax.eval_shape(gar.make(config, two_tower.SPEC).init, jax.random.key(0))
  d = config.model.embed_dim
  assert params['generator']['dense_0']['w'].shape == (5, 200)
  assert params['generator']['dense_1']['w'].shape == (200, d)
  assert 'input_bn' not in params['generator']
  for tower in ('user_tower', 'item_tower'):
    layers = params['recommender'][tower]
    assert layers['input_bn'].keys() == {'offset'}  # TF's scale=False.
    assert layers['dense_0']['w'].shape == (d, 200) and layers['dense_1']['w'].shape == (200, 200)


def test_optimizer_state_is_one_adam_per_player_and_leaves_running_stats_alone(setup):
  _, method, _, params = setup()
  opt_state = method.optimizer.init(params)
  assert set(opt_state) == {'generator', 'recommender'}
  grads = jax.tree.map(jnp.ones_like, params)
  updates, _ = jax.jit(method.optimizer.update)(grads, opt_state, params)
  chex.assert_trees_all_equal(updates['batch_stats'],
                              jax.tree.map(jnp.zeros_like, params['batch_stats']))
  assert all(np.all(np.asarray(u) != 0) for u in jax.tree.leaves(updates['generator']))


def test_original_sampler_draws_users_uniformly_then_one_of_their_items(setup):
  _, _, tables, _ = setup(sampler='original')
  batch = _original_batch(jax.random.key(0), 30000, tables)
  users, positives, negatives = (np.asarray(batch[k]) for k in ('users', 'positives', 'negatives'))
  # Uniform over users, although their degrees are 1, 2 and 3.
  np.testing.assert_allclose(np.bincount(users, minlength=3) / users.size, 1 / 3, atol=0.015)
  for u in range(3):
    own = TRAIN_PAIRS[TRAIN_PAIRS[:, 0] == u, 1]
    drawn = positives[users == u]
    assert set(drawn) == set(own)
    np.testing.assert_allclose(np.bincount(drawn, minlength=3)[own] / drawn.size, 1 / own.size,
                               atol=0.03)
  np.testing.assert_allclose(np.bincount(negatives, minlength=5) / negatives.size,
                             [1 / 3] * 3 + [0, 0], atol=0.015)
  # Not rejected: user 2 has every warm item, yet gets negatives.
  assert (users == 2).any() and np.isin(negatives[users == 2], [0, 1, 2]).all()


def test_coldrec_variant_loss_and_embed_match_numpy(make_config, two_tower):
  """variant='coldrec': one joint loss over G and the offset backbone vectors, no towers."""
  config = make_config('gar', embed_dim=2, alpha=ALPHA, beta=BETA, variant='coldrec',
                       coldrec_reg=0.1)
  method = gar.make(config, two_tower.SPEC)
  tables = two_tower.tables({'cf_users': two_tower.CF_USERS, 'cf_items': two_tower.CF_ITEMS})
  params = method.init(jax.random.key(0))
  rng = np.random.default_rng(1)
  params = jax.tree.map(lambda a: jnp.asarray(rng.normal(size=a.shape) * 0.3, jnp.float32), params)
  p = jax.tree.map(lambda a: np.asarray(a, np.float64), params)
  user_table = two_tower.CF_USERS + p['user_offset']
  item_table = two_tower.CF_ITEMS + p['item_offset']

  def generate(x):
    g = p['generator']
    return np.tanh(np.tanh(x @ g['dense_0']['w'] + g['dense_0']['b']) @ g['dense_1']['w']
                   + g['dense_1']['b'])

  users = user_table[np.asarray(BATCH['users'])]
  real = item_table[np.asarray(BATCH['positives'])]
  negative = item_table[np.asarray(BATCH['negatives'])]
  fake = generate(two_tower.CONTENT[np.asarray(BATCH['positives'])].astype(np.float64))
  s = {name: np.sum(users * v, 1) for name, v in
       (('real', real), ('negative', negative), ('fake', fake))}

  def bpr(pos, neg):
    return softplus(neg - pos).mean()

  want = ((1 - ALPHA) * bpr(s['fake'], s['real']) + ALPHA * np.mean((real - fake) ** 2)
          + (1 - BETA) * bpr(s['real'], s['fake']) + BETA * bpr(s['real'], s['negative'])
          + 0.1 * sum(np.linalg.norm(v) for v in (users, real, negative, fake)) / 4)
  value, _ = jax.jit(method.loss)(params, BATCH, None, tables)
  np.testing.assert_allclose(value, want, rtol=1e-5)
  got_users, got_items = jax.jit(method.embed)(params, tables)
  np.testing.assert_allclose(got_users, user_table, rtol=1e-5, atol=1e-6)
  is_new = np.isin(np.arange(5), two_tower.NEW)[:, None]
  np.testing.assert_allclose(got_items, np.where(is_new, generate(two_tower.CONTENT), item_table),
                             rtol=1e-5, atol=1e-6)
  # The offsets start at zero: training starts from the backbone's vectors.
  fresh = method.init(jax.random.key(0))
  assert not np.any(fresh['user_offset']) and not np.any(fresh['item_offset'])
  assert fresh['generator']['dense_0']['w'].shape == (5, 4)  # F -> 2d -> d.


@pytest.mark.parametrize('field,value', [('alpha', 1.5), ('beta', -0.1), ('g_dropout', 1.0),
                                         ('r_layers', ()), ('l2_weight', -1.0),
                                         ('bn_momentum', 0.0), ('sampler', 'ours'),
                                         ('variant', 'tf'), ('coldrec_reg', -1.0)])
def test_check_config_refuses(make_config, field, value):
  with pytest.raises(ConfigError, match=f'config.methods.gar.{field}='):
    gar.check_config(make_config('gar', embed_dim=2, **{**SECTION, field: value}))


def test_coldrec_variant_refuses_a_sharded_user_table(make_config):
  config = make_config('gar', embed_dim=2, **{**SECTION, 'variant': 'coldrec'})
  config.train.shard_user_table = True
  with pytest.raises(ConfigError, match="config.methods.gar.variant=.*shard_user_table"):
    gar.check_config(config)
