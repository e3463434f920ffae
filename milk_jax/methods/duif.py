"""DUIF (Geng et al., ICCV 2015): free user vectors, items a linear map of their content.

Spec section 4. Items have no id parameters at all: v_i = x_i W for warm and
new items alike, with x_i the concatenation of the M modalities
(`methods.content`), so new items are scored exactly as warm ones are.
The loss is BPR plus the un-squared batch-row regulariser of BPR-MF
(ColdRec's `l2_reg_loss`, spec 4.3), on e_u, v_{i+} and v_{i-}; like
BPR-MF it uses the stable softplus form of BPR, without ColdRec's 1e-5
inside the log.
"""

import jax
import jax.numpy as jnp
import ml_collections

from milk_jax import methods
from milk_jax.errors import ConfigError
from milk_jax.methods import DataSpec
from milk_jax.methods import Method
from milk_jax.methods import Tables
from milk_jax.methods import content
from milk_jax.methods import layers

INFO = methods.MethodInfo(
    display_name='DUIF',
    fields=('methods.duif.',))


def check_config(config: ml_collections.ConfigDict) -> None:
  reg_weight = config.methods.duif.reg_weight
  if reg_weight < 0:
    raise ConfigError(f'config.methods.duif.reg_weight={reg_weight!r}: must be non-negative')


def item_vectors(projection: jax.Array, tables: Tables,
                 items: jax.Array | None = None) -> jax.Array:
  """v_i = x_i W: (n, d) for `items` (all items when None); projection is (F, d)."""
  return content(tables, items) @ projection


def make(config: ml_collections.ConfigDict, spec: DataSpec) -> Method:
  d = int(config.model.embed_dim)
  reg_weight = float(config.methods.duif.reg_weight)
  content_dim = sum(spec.feature_dims)

  def init(key):
    user_key, projection_key = jax.random.split(key)
    return {'user_embedding': layers.xavier_uniform(user_key, (spec.num_users, d)),
            'projection': layers.xavier_uniform(projection_key, (content_dim, d))}

  def loss(params, batch, step_input, tables):
    del step_input
    users = params['user_embedding'][batch['users']]
    # Only the batch's 2B items are projected, in one matmul (spec 4.6).
    items = item_vectors(params['projection'], tables,
                         jnp.concatenate([batch['positives'], batch['negatives']]))
    positives, negatives = jnp.split(items, 2)
    task = layers.bpr(jnp.sum(users * positives, -1), jnp.sum(users * negatives, -1))
    regulariser = layers.batch_l2(users, positives, negatives)
    total = task + reg_weight * regulariser
    return total, {'loss': total, 'bpr': task, 'regulariser': regulariser}

  def embed(params, tables):
    return params['user_embedding'], item_vectors(params['projection'], tables)

  return Method(init=init, loss=loss, embed=embed, log_keys=('bpr', 'regulariser'))
