"""`methods.gar.variant='coldrec'` (not the default): ColdRec's simplification of GAR
(spec 15, docs/results/coldrec.md): no recommender towers, scores are plain
dot products of the backbone's vectors, which are trained (as offsets added
to the BPR-MF vectors, so that Adam moves them exactly as it would the
tables), G = tanh(W2 tanh(W1 x + b1) + b2) with widths 2d then d (torch's
Linear init), and one Adam step per batch on one joint loss over G and the
tables:

  (1 - alpha) bpr(u, G(x_i+) > Q_i+) + alpha mse(Q_i+, G(x_i+))
  + (1 - beta) bpr(u, Q_i+ > G(x_i+)) + beta bpr(u, Q_i+ > Q_j)
  + coldrec_reg (||P_u|| + ||Q_i+|| + ||Q_j|| + ||G(x_i+)||) / B   (un-squared norms).

New items score with G(x_i), the others with their trained vectors.
"""

from typing import Any

import jax
import jax.numpy as jnp
import ml_collections

from milk_jax.methods import DataSpec
from milk_jax.methods import Method
from milk_jax.methods import Tables
from milk_jax.methods import content
from milk_jax.methods import layers

GENERATOR = 'generator'  # The same entry name as the original GAR's generator.
# The trainable offsets to the backbone's user and item vectors.
USER_OFFSET, ITEM_OFFSET = 'user_offset', 'item_offset'


def coldrec_generator_init(key: jax.Array, content_dim: int, d: int) -> dict[str, Any]:
  """ColdRec's G: Linear(F, 2d) -> tanh -> Linear(2d, d) -> tanh, torch's default init."""
  first, second = jax.random.split(key)
  return {'dense_0': layers.torch_linear(first, content_dim, 2 * d),
          'dense_1': layers.torch_linear(second, 2 * d, d)}


def coldrec_generate(generator: dict[str, Any], x: jax.Array) -> jax.Array:
  """(n, F) -> (n, d): ColdRec's G, which has no dropout and no BatchNorm."""
  hidden = jnp.tanh(layers.dense(generator['dense_0'], x))
  return jnp.tanh(layers.dense(generator['dense_1'], hidden))


def coldrec_vectors(params, tables: Tables) -> tuple[jax.Array, jax.Array]:
  """(users (U, d), items (I, d)): the backbone's vectors plus their trained offsets."""
  return (tables.extras['cf_users'] + params[USER_OFFSET],
          tables.extras['cf_items'] + params[ITEM_OFFSET])


def coldrec_loss(params, batch, tables: Tables, alpha: float, beta: float,
                 reg: float) -> tuple[jax.Array, dict[str, jax.Array]]:
  """ColdRec's joint loss (module docstring), over G and the offsets at once."""
  user_table, item_table = coldrec_vectors(params, tables)
  users = user_table[batch['users']]
  real = item_table[batch['positives']]
  negative = item_table[batch['negatives']]
  fake = coldrec_generate(params[GENERATOR], content(tables, batch['positives']))

  def scores(items):
    return jnp.sum(users * items, axis=-1)

  real_s, negative_s, fake_s = scores(real), scores(negative), scores(fake)
  similarity = jnp.mean(jnp.square(real - fake))
  g_term = (1.0 - alpha) * layers.bpr(fake_s, real_s) + alpha * similarity
  r_term = (1.0 - beta) * layers.bpr(real_s, fake_s) + beta * layers.bpr(real_s, negative_s)
  l2 = reg * layers.batch_l2(users, real, negative, fake)
  total = g_term + r_term + l2
  return total, {'loss': total, 'g_loss': g_term, 'r_loss': r_term, 'similarity': similarity}


def make(config: ml_collections.ConfigDict, spec: DataSpec) -> Method:
  """The coldrec variant: one joint loss, one Adam(train.learning_rate), no towers."""
  section = config.methods.gar
  d = int(config.model.embed_dim)
  alpha, beta, reg = float(section.alpha), float(section.beta), float(section.coldrec_reg)
  content_dim = sum(spec.feature_dims)

  def init(key):
    return {GENERATOR: coldrec_generator_init(key, content_dim, d),
            USER_OFFSET: jnp.zeros((spec.num_users, d), jnp.float32),
            ITEM_OFFSET: jnp.zeros((spec.num_items, d), jnp.float32)}

  def loss(params, batch, step_input, tables):
    del step_input
    return coldrec_loss(params, batch, tables, alpha, beta, reg)

  def embed(params, tables):
    users, items = coldrec_vectors(params, tables)
    generated = coldrec_generate(params[GENERATOR], content(tables))
    return users, jnp.where(tables.is_new[:, None], generated, items)

  return Method(init=init, loss=loss, embed=embed,
                log_keys=('g_loss', 'r_loss', 'similarity'))
