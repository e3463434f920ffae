"""Heater (Zhu et al., SIGIR 2020; spec section 7), item-cold case.

K distinct expert MLPs map the content x_i into the CF space (tanh after
every layer, output width d); a tanh gate g(x_i) = tanh(W_g x_i + b_g) in
R^K (tanh, not softmax) mixes them: c_i = tanh(sum_k g_k E_k(x_i)).
Randomised training: in every step exactly floor(p P) of the step's P
pairs feed c_i instead of the standardised CF item vector V_i to the item
tower. Towers: u = tanh(BN(W U_u + b)), v = tanh(BN(W v_in + b)), then a
linear output each; the score is f_u . g_i.

Loss (official model.py): mean (score - y)^2 over the pairs, y = 1 for a
training positive and 0 for each of its n_neg negatives (uniform warm items,
with replacement, positives not rejected, drawn on device from the step key)
+ reg * sum ||W||^2 + ||b||^2 over every dense layer + alpha * sum over the
pairs of ||c_i - V_i||^2. New items always take the content path (delta = 1).
BatchNorm keeps running statistics (TF decay 0.9, i.e. momentum 0.1, eps
1e-3) in the non-trainable variables' 'batch_stats', blended with the batch
moments that the loss returns by the shared update.

The epoch's line shows mse, reg_term and similarity_term, the weighted terms
that add up to the loss (their means over the epoch's steps), as the original
prints them (model.py weights both before main_*.py sums them per epoch); the
raw sums are in metrics.jsonl as squared_weights and similarity_sum. On
ml100k similarity_term starts near alpha sum ||V_i||^2 (c_i ~ 0 at init: 40)
and falls (11 at epoch 50), while the squared weights grow under the
protocol's Adam (11 at init, 1.7e4 at epoch 50: a reg_term of 1.7); with the
original's momentum SGD (lr 0.005, about 1024 pairs a step) they grow too,
more slowly (12 at epoch 1, 300 at epoch 20). The original's step is 1024
pairs; here it is P = B (1 + n_neg), 12288 at the protocol's B = 2048, so at
the same alpha the similarity sum weighs 12 times more against the mean MSE.
"""

import functools
import math

import jax
import jax.numpy as jnp
import ml_collections

from milk_jax import methods
from milk_jax.methods import DataSpec
from milk_jax.methods import Method
from milk_jax.methods import Tables
from milk_jax.methods import content
from milk_jax.methods import layers

INFO = methods.MethodInfo(
    display_name='Heater',
    backbone='bprmf',
    fields=('methods.heater.',))


def check_config(config: ml_collections.ConfigDict) -> None:
  section, require = methods.section_checker(config, 'heater')

  require(section.num_experts >= 1, 'num_experts', 'must be at least 1')
  require(all(int(h) >= 1 for h in section.expert_hidden), 'expert_hidden',
          'widths must be positive')
  require(0.0 <= section.dropout < 1.0, 'dropout', 'must be in [0, 1)')
  require(section.num_negatives >= 1, 'num_negatives', 'must be at least 1')
  require(section.reg_weight >= 0, 'reg_weight', 'must be non-negative')
  require(section.alpha >= 0, 'alpha', 'must be non-negative')
  require(section.user_clip > 0, 'user_clip', 'must be positive')
  require(section.item_clip > 0, 'item_clip', 'must be positive')
  require(0.0 < section.bn_momentum <= 1.0, 'bn_momentum', 'must be in (0, 1]')
  require(section.bn_eps > 0, 'bn_eps', 'must be positive')
  require(section.optimizer in layers.OPTIMIZERS, 'optimizer',
          f'must be one of {layers.OPTIMIZERS}')


def experts_init(key: jax.Array, num_experts: int, in_dim: int, hidden: tuple[int, ...],
                 out_dim: int) -> dict[str, dict[str, jax.Array]]:
  """K experts stacked on a leading axis: {'layer_l': {'w': (K, in, out), 'b': (K, out)}}."""
  widths = (in_dim,) + tuple(hidden) + (out_dim,)
  keys = jax.random.split(key, len(widths) - 1)
  return {f'layer_{l}': jax.vmap(lambda k, l=l: layers.dense_init(k, widths[l], widths[l + 1]))(
      jax.random.split(keys[l], num_experts)) for l in range(len(widths) - 1)}


def content_rep(params, x: jax.Array) -> jax.Array:
  """c = tanh(sum_k tanh(W_g x + b_g)_k E_k(x)), (n, F) -> (n, d)."""
  experts = params['experts']
  first = experts['layer_0']
  h = jnp.tanh(jnp.einsum('nf,kfo->kno', x, first['w']) + first['b'][:, None, :])  # (K, n, .).
  for l in range(1, len(experts)):
    layer = experts[f'layer_{l}']
    h = jnp.tanh(jnp.einsum('knf,kfo->kno', h, layer['w']) + layer['b'][:, None, :])
  gate = jnp.tanh(layers.dense(params['gate'], x))  # (n, K).
  return jnp.tanh(jnp.einsum('nk,kno->no', gate, h))


def draw_pairs(key: jax.Array, users: jax.Array, positives: jax.Array, num_negatives: int,
               tables: Tables):
  """(users, items, labels), each (B (1 + n_neg),): the positives, then n_neg warm items each."""
  draws = jax.random.randint(key, (num_negatives, positives.shape[0]), 0,
                             tables.warm_items.shape[0])
  negatives = tables.warm_items[draws].reshape(-1)
  pair_users = jnp.tile(users, num_negatives + 1)
  items = jnp.concatenate([positives, negatives])
  labels = jnp.concatenate([jnp.ones(positives.shape, jnp.float32),
                            jnp.zeros(negatives.shape, jnp.float32)])
  return pair_users, items, labels


def step_draws(key: jax.Array, users: jax.Array, positives: jax.Array, num_negatives: int,
               dropout: float, tables: Tables):
  """(users, items, labels, replaced), each (P,) with P = B (1 + n_neg).

  replaced marks the pairs whose item tower reads c_i (delta = 1): exactly
  floor(dropout P) of them, chosen without replacement.
  """
  pair_key, replace_key = jax.random.split(key)
  users, items, labels = draw_pairs(pair_key, users, positives, num_negatives, tables)
  num_pairs = items.shape[0]
  replaced = jax.random.permutation(replace_key, num_pairs) < math.floor(dropout * num_pairs)
  return users, items, labels, replaced


def pair_loss(params, users: jax.Array, items: jax.Array, labels: jax.Array,
              replaced: jax.Array, tables: Tables, eps: float, reg_weight: float,
              alpha: float, catalogue: bool = False):
  """Heater's loss on explicit pairs (training-mode BN).

  With `catalogue` the experts run once over every item and the pairs' rows
  are gathered afterwards: the same values, cheaper when the catalogue is
  smaller than the step's pairs (MovieLens-100K: 1682 items, 12288 pairs).

  Returns:
    (loss, (metrics, batch moments shaped like variables['batch_stats'])).
  """
  cf_items = tables.extras['cf_items_std'][items]
  if catalogue:
    c = content_rep(params, content(tables))[items]
  else:
    c = content_rep(params, content(tables, items))
  f, user_moments = layers.tower_train(params['user_tower'],
                                       tables.extras['cf_users_std'][users], eps)
  g, item_moments = layers.tower_train(params['item_tower'],
                                       jnp.where(replaced[:, None], c, cf_items), eps)
  mse = jnp.mean(jnp.square(jnp.sum(f * g, -1) - labels))
  squared_weights = layers.squared_weights({k: v for k, v in params.items() if k != layers.STATS})
  similarity_sum = jnp.sum(jnp.square(c - cf_items))
  reg_term, similarity_term = reg_weight * squared_weights, alpha * similarity_sum
  total = mse + reg_term + similarity_term
  # The terms as they enter the loss (they add up to it), as the original logs them; the raw
  # sums grow with the weights and the step's pairs, and go to metrics.jsonl only.
  metrics = {'loss': total, 'mse': mse, 'reg_term': reg_term, 'similarity_term': similarity_term,
             'squared_weights': squared_weights, 'similarity_sum': similarity_sum}
  return total, (metrics, {'user_tower': user_moments, 'item_tower': item_moments})


def embed(params, tables: Tables, eps: float) -> tuple[jax.Array, jax.Array]:
  """Inference towers: users (U, d); items (I, d), new items from c_i (delta = 1), warm from V_i."""
  stats = params[layers.STATS]
  users = layers.tower_infer(params['user_tower'], stats['user_tower'],
                             tables.extras['cf_users_std'], eps)
  item_in = jnp.where(tables.is_new[:, None], content_rep(params, content(tables)),
                      tables.extras['cf_items_std'])
  items = layers.tower_infer(params['item_tower'], stats['item_tower'], item_in, eps)
  return users, items


def make(config: ml_collections.ConfigDict, spec: DataSpec) -> Method:
  section = config.methods.heater
  d = int(config.model.embed_dim)
  num_experts = int(section.num_experts)
  expert_hidden = tuple(int(h) for h in section.expert_hidden)
  dropout = float(section.dropout)
  num_negatives = int(section.num_negatives)
  reg_weight = float(section.reg_weight)
  alpha = float(section.alpha)
  user_clip, item_clip = float(section.user_clip), float(section.item_clip)
  momentum = float(section.bn_momentum)
  eps = float(section.bn_eps)
  content_dim = sum(spec.feature_dims)
  # Static: run the experts over the catalogue when it has fewer rows than a step's pairs.
  catalogue = spec.num_items < int(config.train.batch_size) * (1 + num_negatives)
  optimizer = layers.make_optimizer(section.optimizer, float(config.train.learning_rate))

  def prepare(dataset, extras):
    del dataset
    return {**extras, 'cf_users_std': layers.standardize(extras['cf_users'], user_clip),
            'cf_items_std': layers.standardize(extras['cf_items'], item_clip)}

  def init(key):
    gate_key, expert_key, user_key, item_key = jax.random.split(key, 4)
    # c_i replaces the CF item vector, so the experts' width is the backbone's (d).
    user_tower, user_stats = layers.tower_init(user_key, d, (d,), d)
    item_tower, item_stats = layers.tower_init(item_key, d, (d,), d)
    return {'gate': layers.dense_init(gate_key, content_dim, num_experts),
            'experts': experts_init(expert_key, num_experts, content_dim, expert_hidden, d),
            'user_tower': user_tower, 'item_tower': item_tower,
            layers.STATS: {'user_tower': user_stats, 'item_tower': item_stats}}

  def loss(variables, batch, step_input, tables):
    draws = step_draws(step_input, batch['users'], batch['positives'], num_negatives, dropout,
                       tables)
    return pair_loss(variables, *draws, tables, eps, reg_weight, alpha, catalogue)

  return Method(init=init, loss=loss, embed=functools.partial(embed, eps=eps),
                optimizer=optimizer, prepare=prepare, non_trainable=(layers.STATS,),
                update_model_state=layers.batch_stats_update(momentum),
                log_keys=('mse', 'reg_term', 'similarity_term'))
