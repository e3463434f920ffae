"""MTPR (Du et al., ACM MM 2020): normal and counterfactual item representations.

Spec section 6. Users p_u = P_u W_u; an item has a normal representation
q_i = [Q_i ; x_i W] W_i and a counterfactual one q~_i = [0 ; x_i W] W_i,
"as if it had no id". Four BPR terms (normal/normal, counterfactual/
counterfactual and the two mixed pairings) teach both to rank, so new items
are scored with q~_i (no Q row) and warm items with q_i.

Departures from the original code, both because the paper's protocol fixes
one recipe for every method: d is config.model.embed_dim (P has 2d columns)
instead of 32, the batch train.batch_size instead of 512, and one
Adam(train.learning_rate) trains every parameter instead of Adagrad for P, Q
and Adam for the W's (`optimizer='original'` restores those, with their
learning rates).

Two options reproduce ColdRec's variant (spec 15), both off by default:
`init='xavier'` draws every parameter Glorot-uniform instead of
N(0, init_std^2), and `new_item_representation='normal'` scores new items
with the normal representation q_i, whose Q row was trained only as a
negative when negatives come from all items (data.negatives='all'). ColdRec
also trains with `optimizer='original'` at learning rates 0.05, batch 4096.

The BPR terms are sums over the batch, as in the original: with every
parameter near N(0, 0.01^2), means (`reduction='mean'`) let the full-matrix
weight decay (0.01 ||W||^2, ...) outweigh the ranking terms by a factor B,
and on MovieLens-100K the W's then shrink to zero (scores stay at 0).
"""

import jax
import jax.numpy as jnp
import ml_collections
import optax

from milk_jax import methods
from milk_jax.methods import DataSpec
from milk_jax.methods import Method
from milk_jax.methods import Tables
from milk_jax.methods import content
from milk_jax.methods import layers

INFO = methods.MethodInfo(
    display_name='MTPR',
    fields=('methods.mtpr.',))
REDUCTIONS = ('sum', 'mean')
OPTIMIZERS = ('adam', 'original')
INITS = ('normal', 'xavier')
NEW_ITEM_REPRESENTATIONS = ('counterfactual', 'normal')
# The parameter groups of the original's three optimisers (and weight decays).
_GROUPS = {'user_embedding': 'embedding', 'item_embedding': 'embedding',
           'content_projection': 'content', 'user_transform': 'content',
           'item_transform': 'transform'}


def check_config(config: ml_collections.ConfigDict) -> None:
  section, require = methods.section_checker(config, 'mtpr')

  require(section.reduction in REDUCTIONS, 'reduction', f'must be one of {REDUCTIONS}')
  require(section.optimizer in OPTIMIZERS, 'optimizer', f'must be one of {OPTIMIZERS}')
  require(section.init_std > 0, 'init_std', 'must be positive')
  require(section.init in INITS, 'init', f'must be one of {INITS}')
  require(section.new_item_representation in NEW_ITEM_REPRESENTATIONS,
          'new_item_representation', f'must be one of {NEW_ITEM_REPRESENTATIONS}')
  for field in ('embedding_weight_decay', 'content_weight_decay', 'transform_weight_decay'):
    require(section[field] >= 0, field, 'must be non-negative')
  for field in ('embedding_learning_rate', 'content_learning_rate', 'transform_learning_rate'):
    require(section[field] > 0, field, 'must be positive')


def item_representations(params, tables: Tables,
                         items: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
  """(normal q (n, d), counterfactual q~ (n, d)) of `items` (all items when None).

  [Q_i ; x_i W] W_i is split as Q_i W_i[:d] + (x_i W) W_i[d:]: the
  counterfactual representation is the second half alone.
  """
  item_transform = params['item_transform']  # (2d, d)
  d = item_transform.shape[1]
  ids = params['item_embedding'] if items is None else params['item_embedding'][items]
  counterfactual = content(tables, items) @ params['content_projection'] @ item_transform[d:]
  return ids @ item_transform[:d] + counterfactual, counterfactual


def ranking_terms(users: jax.Array, pos: tuple[jax.Array, jax.Array],
                  neg: tuple[jax.Array, jax.Array]) -> jax.Array:
  """(4, B) softplus(s(u, j) - s(u, i)) for the pairings (i, j) of spec 6.3.

  Rows: normal/normal, counterfactual/counterfactual, normal positive with a
  counterfactual negative, counterfactual positive with a normal negative.
  `pos`, `neg` are (normal, counterfactual) pairs of (B, d) arrays.
  """
  def score(items):
    return jnp.sum(users * items, -1)

  pairings = ((pos[0], neg[0]), (pos[1], neg[1]), (pos[0], neg[1]), (pos[1], neg[0]))
  return jnp.stack([jax.nn.softplus(score(j) - score(i)) for i, j in pairings])


def make_optimizer(section: ml_collections.ConfigDict,
                   learning_rate: float) -> optax.GradientTransformation:
  """One Adam (the paper's protocol), or the original's Adagrad(P, Q) + Adam(W, W_u) + Adam(W_i)."""
  if section.optimizer == 'adam':
    return optax.adam(learning_rate)
  # PyTorch's Adagrad: the accumulator starts at 0 and rows never in a batch do not move.
  transforms = {
      'embedding': optax.adagrad(float(section.embedding_learning_rate),
                                 initial_accumulator_value=0.0, eps=1e-10),
      'content': optax.adam(float(section.content_learning_rate)),
      'transform': optax.adam(float(section.transform_learning_rate))}
  return optax.multi_transform(transforms, lambda params: {k: _GROUPS[k] for k in params})


def make(config: ml_collections.ConfigDict, spec: DataSpec) -> Method:
  section = config.methods.mtpr
  d = int(config.model.embed_dim)
  init_std = float(section.init_std)
  xavier = section.init == 'xavier'
  new_items_counterfactual = section.new_item_representation == 'counterfactual'
  reduce = jnp.sum if section.reduction == 'sum' else jnp.mean
  decay = {'embedding': float(section.embedding_weight_decay),
           'content': float(section.content_weight_decay),
           'transform': float(section.transform_weight_decay)}
  shapes = {'user_embedding': (spec.num_users, 2 * d), 'item_embedding': (spec.num_items, d),
            'content_projection': (sum(spec.feature_dims), d),
            'user_transform': (2 * d, d), 'item_transform': (2 * d, d)}

  def init(key):
    keys = jax.random.split(key, len(shapes))
    if xavier:  # ColdRec's: every table and matrix Glorot-uniform over its own two sizes.
      return {name: layers.xavier_uniform(k, shape)
              for k, (name, shape) in zip(keys, shapes.items())}
    return {name: init_std * jax.random.normal(k, shape, jnp.float32)
            for k, (name, shape) in zip(keys, shapes.items())}

  def loss(params, batch, step_input, tables):
    del step_input
    user_rows = params['user_embedding'][batch['users']]
    users = user_rows @ params['user_transform']
    items = jnp.concatenate([batch['positives'], batch['negatives']])
    normal, counterfactual = item_representations(params, tables, items)
    pos_normal, neg_normal = jnp.split(normal, 2)
    pos_counterfactual, neg_counterfactual = jnp.split(counterfactual, 2)
    terms = reduce(ranking_terms(users, (pos_normal, pos_counterfactual),
                                 (neg_normal, neg_counterfactual)), axis=1)
    # Squared norms: the batch's P and Q rows, the whole W matrices (as the original).
    item_rows = params['item_embedding'][items]
    weight_decay = (
        decay['embedding'] * (jnp.sum(user_rows ** 2) + jnp.sum(item_rows ** 2))
        + decay['content'] * (jnp.sum(params['content_projection'] ** 2)
                              + jnp.sum(params['user_transform'] ** 2))
        + decay['transform'] * jnp.sum(params['item_transform'] ** 2))
    ranking = jnp.sum(terms)
    total = ranking + weight_decay
    return total, {'loss': total, 'bpr': ranking, 'bpr_counterfactual': terms[1],
                   'weight_decay': weight_decay}

  def embed(params, tables):
    normal, counterfactual = item_representations(params, tables)
    if not new_items_counterfactual:  # ColdRec's: every item its normal representation.
      return params['user_embedding'] @ params['user_transform'], normal
    # New items take q~, which reads no Q row; warm items their normal representation.
    items = jnp.where(tables.is_new[:, None], counterfactual, normal)
    return params['user_embedding'] @ params['user_transform'], items

  return Method(init=init, loss=loss, embed=embed,
                optimizer=make_optimizer(section, float(config.train.learning_rate)),
                log_keys=('bpr', 'bpr_counterfactual', 'weight_decay'))
