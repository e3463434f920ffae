"""BPR-MF (Rendle et al., 2009), the warm backbone: free user and item vectors.

Trained on warm items only (positives are warm; negatives come from
`data.negatives`, warm by default), as spec 3.3 asks of the library. New
items have no CF row: `embed` gives them zeros, so they are never "trained
as negatives" rows. Its vectors feed DropoutNet and Heater (and later GAR,
GoRec) through `milk_jax/training/backbone.py`. Since it cannot score new items, its
validation metrics are not a selection signal: its best epoch is its last.
Trained alone (`--config.method=bprmf`) it is the warm-only reference: every
new item scores 0, so its metrics are those of one fixed ranking (ties in
item order), the same at every epoch, and its log lines say so. As the
backbone it ranks nothing and reports its training loss only.
"""

import jax
import jax.numpy as jnp
import ml_collections

from milk_jax import methods
from milk_jax.errors import ConfigError
from milk_jax.methods import DataSpec
from milk_jax.methods import Method
from milk_jax.methods import layers

INFO = methods.MethodInfo(
    display_name='BPR-MF',
    fields=('methods.bprmf.',),
    no_serving_reason='a warm backbone has no content path: new items get zero vectors')


def check_config(config: ml_collections.ConfigDict) -> None:
  if config.methods.bprmf.reg_weight < 0:
    raise ConfigError(f'config.methods.bprmf.reg_weight={config.methods.bprmf.reg_weight!r}: '
                      'must be non-negative')


def make(config: ml_collections.ConfigDict, spec: DataSpec) -> Method:
  d = config.model.embed_dim
  reg_weight = float(config.methods.bprmf.reg_weight)

  def init(key):
    user_key, item_key = jax.random.split(key)
    return {'user_embedding': layers.xavier_uniform(user_key, (spec.num_users, d)),
            'item_embedding': layers.xavier_uniform(item_key, (spec.num_items, d))}

  def loss(params, batch, step_input, tables):
    del step_input, tables
    users = params['user_embedding'][batch['users']]
    positives = params['item_embedding'][batch['positives']]
    negatives = params['item_embedding'][batch['negatives']]
    task = layers.bpr(jnp.sum(users * positives, -1), jnp.sum(users * negatives, -1))
    regulariser = layers.batch_l2(users, positives, negatives)
    total = task + reg_weight * regulariser
    return total, {'loss': total, 'bpr': task, 'regulariser': regulariser}

  def embed(params, tables):
    items = jnp.where(tables.is_new[:, None], 0.0, params['item_embedding'])
    return params['user_embedding'], items

  return Method(init=init, loss=loss, embed=embed, log_keys=('bpr', 'regulariser'),
                select_last=True, serve_extras=None)  # It has no vector for a new item.
