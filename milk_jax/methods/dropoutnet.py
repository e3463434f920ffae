"""DropoutNet (Volkovs et al., NeurIPS 2017; spec section 5): two towers that mimic a warm model.

The item tower reads [standardised CF item vector ; content], the user tower
the standardised CF user vector; each is blocks of tanh(BN(W h + b)) and a
linear output of width d. The towers regress the raw backbone score P_u . Q_i
(MSE) while, in every step, exactly floor(tau P) of the step's P pairs lose
their item CF input and, independently, floor(tau P) lose their user CF
input, so the item tower learns to rank from content alone: a new item is
scored as g([0 ; content]).

Targets, as the original's per-user lists (top-N items by backbone score plus
as many uniformly random items) in a static shape: each of the B batch rows
draws a user uniformly from the users with training interactions and gives
two pairs, one with an item drawn uniformly from that user's top-N warm
items (the table is built once in `prepare`) and one with a uniform warm
item; all draws come from the step key. The shared sampler's triples only set
B. BatchNorm keeps running statistics (momentum 0.01, eps 1e-3, as the torch
original) in the non-trainable variables' 'batch_stats', blended with the
batch moments that the loss returns by the shared update.
"""

import functools
import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from milk_jax import methods
from milk_jax.methods import DataSpec
from milk_jax.methods import Method
from milk_jax.methods import Tables
from milk_jax.methods import content
from milk_jax.methods import layers

INFO = methods.MethodInfo(
    display_name='DropoutNet',
    backbone='bprmf',
    fields=('methods.dropoutnet.',))


def check_config(config: ml_collections.ConfigDict) -> None:
  section, require = methods.section_checker(config, 'dropoutnet')

  require(0.0 <= section.dropout < 1.0, 'dropout', 'must be in [0, 1)')
  require(len(section.hidden) >= 1 and all(int(h) >= 1 for h in section.hidden), 'hidden',
          'needs at least one positive width')
  require(section.top_n >= 1, 'top_n', 'must be at least 1')
  require(section.clip > 0, 'clip', 'must be positive')
  require(0.0 < section.bn_momentum <= 1.0, 'bn_momentum', 'must be in (0, 1]')
  require(section.bn_eps > 0, 'bn_eps', 'must be positive')
  require(section.optimizer in layers.OPTIMIZERS, 'optimizer',
          f'must be one of {layers.OPTIMIZERS}')


def top_items(cf_users: np.ndarray, cf_items: np.ndarray, warm_items: np.ndarray, n: int,
              chunk: int = 1024) -> np.ndarray:
  """(U, n) int32: each user's n best warm items by backbone score (any order).

  Chunked over users so that U x I_w scores are never held at once.
  """
  warm_vectors = cf_items[warm_items]
  out = np.empty((cf_users.shape[0], n), np.int32)
  for start in range(0, cf_users.shape[0], chunk):
    scores = cf_users[start:start + chunk] @ warm_vectors.T
    best = (np.argpartition(-scores, n - 1, axis=1)[:, :n] if n < scores.shape[1]
            else np.broadcast_to(np.arange(scores.shape[1]), scores.shape))
    out[start:start + chunk] = warm_items[best]
  return out


def draw_pairs(key: jax.Array, batch_size: int, tables: Tables) -> tuple[jax.Array, jax.Array]:
  """The step's 2B (user, item) target pairs.

  Returns:
    users, items: (2B,) int32. Users are uniform over the users with training
    interactions, each appearing twice: the first B items come from the
    users' top-N warm items, the last B are uniform warm items.
  """
  user_key, top_key, random_key = jax.random.split(key, 3)
  train_users = tables.extras['dropoutnet_users']
  top = tables.extras['dropoutnet_top_items']
  users = train_users[jax.random.randint(user_key, (batch_size,), 0, train_users.shape[0])]
  ranks = jax.random.randint(top_key, (batch_size,), 0, top.shape[1])
  warm = tables.warm_items[jax.random.randint(random_key, (batch_size,), 0,
                                              tables.warm_items.shape[0])]
  return jnp.concatenate([users, users]), jnp.concatenate([top[users, ranks], warm])


def dropped_rows(key: jax.Array, num_rows: int, num_dropped: int) -> jax.Array:
  """(num_rows,) bool with exactly num_dropped True at random places (static shape)."""
  return jax.random.permutation(key, num_rows) < num_dropped


def step_draws(key: jax.Array, batch_size: int, dropout: float, tables: Tables):
  """(users, items, drop_user, drop_item), each (2B,): a step's pairs and CF-input dropout.

  drop_user and drop_item are independent, each with exactly floor(dropout 2B) True.
  """
  pair_key, user_drop_key, item_drop_key = jax.random.split(key, 3)
  users, items = draw_pairs(pair_key, batch_size, tables)
  num_dropped = math.floor(dropout * users.shape[0])
  return (users, items, dropped_rows(user_drop_key, users.shape[0], num_dropped),
          dropped_rows(item_drop_key, users.shape[0], num_dropped))


def item_inputs(tables: Tables, items: jax.Array | None, drop_item: jax.Array) -> jax.Array:
  """(n, d + F): [standardised CF vector, zero where dropped ; content] of `items` (all when
  None: read whole, not gathered, so that item tables split by rows stay split)."""
  cf_items = tables.extras['cf_items_std']
  cf = jnp.where(drop_item[:, None], 0.0, cf_items if items is None else cf_items[items])
  return jnp.concatenate([cf, content(tables, items)], axis=-1)


def pair_loss(params, users: jax.Array, items: jax.Array, drop_user: jax.Array,
              drop_item: jax.Array, tables: Tables, eps: float):
  """MSE of the towers' scores (training-mode BN) to the raw backbone scores P_u . Q_i.

  Args:
    users, items, drop_user, drop_item: (P,) pairs and their CF-dropout masks.
  Returns:
    (mse, batch moments shaped like variables['batch_stats']).
  """
  user_in = jnp.where(drop_user[:, None], 0.0, tables.extras['cf_users_std'][users])
  f, user_moments = layers.tower_train(params['user_tower'], user_in, eps)
  g, item_moments = layers.tower_train(params['item_tower'],
                                       item_inputs(tables, items, drop_item), eps)
  targets = jnp.sum(tables.extras['cf_users'][users] * tables.extras['cf_items'][items], -1)
  mse = jnp.mean(jnp.square(jnp.sum(f * g, -1) - targets))
  return mse, {'user_tower': user_moments, 'item_tower': item_moments}


def embed(params, tables: Tables, eps: float) -> tuple[jax.Array, jax.Array]:
  """Inference towers: users (U, d) from CF vectors; items (I, d), new items' CF input 0."""
  stats = params[layers.STATS]
  users = layers.tower_infer(params['user_tower'], stats['user_tower'],
                             tables.extras['cf_users_std'], eps)
  items = layers.tower_infer(params['item_tower'], stats['item_tower'],
                             item_inputs(tables, None, tables.is_new), eps)
  return users, items


def make(config: ml_collections.ConfigDict, spec: DataSpec) -> Method:
  section = config.methods.dropoutnet
  d = int(config.model.embed_dim)
  hidden = tuple(int(h) for h in section.hidden)
  dropout = float(section.dropout)
  top_n = min(int(section.top_n), spec.num_warm_items)
  clip = float(section.clip)
  momentum = float(section.bn_momentum)
  eps = float(section.bn_eps)
  content_dim = sum(spec.feature_dims)
  optimizer = layers.make_optimizer(section.optimizer, float(config.train.learning_rate))

  def prepare(dataset, extras):
    cf_users, cf_items = extras['cf_users'], extras['cf_items']
    return {**extras,
            'cf_users_std': layers.standardize(cf_users, clip),
            'cf_items_std': layers.standardize(cf_items, clip),
            'dropoutnet_top_items': top_items(cf_users, cf_items, dataset.warm_items, top_n),
            'dropoutnet_users': np.unique(dataset.train_pairs[:, 0]).astype(np.int32)}

  def init(key):
    user_key, item_key = jax.random.split(key)
    cf_dim = d  # The backbone is trained at config.model.embed_dim.
    user_tower, user_stats = layers.tower_init(user_key, cf_dim, hidden, d)
    item_tower, item_stats = layers.tower_init(item_key, cf_dim + content_dim, hidden, d)
    return {'user_tower': user_tower, 'item_tower': item_tower,
            layers.STATS: {'user_tower': user_stats, 'item_tower': item_stats}}

  def loss(variables, batch, step_input, tables):
    draws = step_draws(step_input, batch['users'].shape[0], dropout, tables)
    mse, moments = pair_loss(variables, *draws, tables, eps)
    return mse, ({'loss': mse}, moments)

  return Method(init=init, loss=loss, embed=functools.partial(embed, eps=eps),
                optimizer=optimizer, prepare=prepare, non_trainable=(layers.STATS,),
                update_model_state=layers.batch_stats_update(momentum))
