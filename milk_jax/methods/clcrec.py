"""CLCRec (Wei et al., ACM MM 2021): contrastive learning for cold-start items.

Two sampled InfoNCE terms over rows (u, [i+, j_1 .. j_K]) (spec 8):

  R-E  anchor n(e_i+), candidates n(f_i+), n(f_j1) .. n(f_jK), logits cos / tau;
  U-I  anchor e_u (not normalised), candidates c_k = e_k, except that a random
       subset of the B(K+1) candidates is replaced by f_k, logits e_u . c_k / tau;

  L = lambda L_RE + (1 - lambda) L_UI
      + reg_weight (mean_rows ||e_u|| + mean_rows ||e_item||) / 2,

with e the ID embeddings and f_i = W_2 LeakyReLU(W_1 x_i + b_1) + b_2 the
content encoder on x_i = `methods.content` (each modality L2-normalised, then
concatenated, as the original does). Warm items are scored with e_i, new items
with f_i, users with e_u; the score is the inner product.

Departures from the original, for static shapes:
- Negatives: the original draws K warm items WITHOUT replacement outside the
  user's known items. Here j_1 is the shared sampler's negative and j_2 .. j_K
  are drawn on device from the step key, each exactly uniform over the same
  pool (`config.data.negatives`, warm by default) minus the user's training
  items, but independently, i.e. WITH replacement: static shapes. Repeats
  within a row are the only difference (about K^2 / (2 * allowed items), ~7
  pairs of 129 candidates on MovieLens-100K). Plain uniform draws would not
  do: there a draw hits one of the user's own items with probability
  degree(u) / warm items, 12% on average over MovieLens-100K's training rows
  (about 16 of 127 draws per row). Val/test items are new, never in the warm
  pool, so excluding the training items is excluding all known items.
- Softmaxes use logsumexp (the original exponentiates directly).

Speed (the loss and gradients are the same either way, up to float rounding):
- When the catalogue has fewer items than the B(K+1) candidates (a static
  choice; MovieLens-100K: 1682 against 2048 * 129 = 264k), the encoder runs
  on the catalogue, as in the original, and each anchor is scored against
  every item with dense products; the candidates' scores are then picked out
  (`catalogue_objective`). Gathering (B, K+1, d) rows and scattering their
  gradients back costs more on CPU than the (B, I) products. Anchors repeat
  within a batch, so a table with no more rows than B is scored once per row
  of the table. Otherwise the encoder runs on the gathered rows (`objective`).
- When users x pool is small, `prepare` lists each user's allowed negatives
  in a (U, P) table, so that the r-th allowed item is one lookup instead of
  the shared sampler's binary search: the same draws.
"""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from milk_jax.data import device_sampling
from milk_jax import methods
from milk_jax.methods import DataSpec
from milk_jax.methods import Method
from milk_jax.methods import Tables
from milk_jax.methods import content
from milk_jax.methods import layers

INFO = methods.MethodInfo(
    display_name='CLCRec',
    fields=('methods.clcrec.',))
HIDDEN = 256  # Width of the encoder's hidden layer (the original's).
LEAKY_SLOPE = 0.01  # torch's F.leaky_relu default, which the original uses.
# The device sampler's tables travel in Tables.extras under these names.
_EXTRAS_PREFIX = 'clcrec_'


def check_config(config: ml_collections.ConfigDict) -> None:
  section, require = methods.section_checker(config, 'clcrec')

  require(0.0 <= section.lr_lambda <= 1.0, 'lr_lambda', 'must lie in [0, 1]')
  require(section.temperature > 0, 'temperature', 'must be positive')
  require(section.num_negatives >= 1, 'num_negatives', 'must be at least 1')
  require(0.0 <= section.num_sample <= 1.0, 'num_sample', 'must lie in [0, 1]')
  require(section.reg_weight >= 0, 'reg_weight', 'must be non-negative')


def init_params(key: jax.Array, num_users: int, num_items: int, feature_width: int,
                embed_dim: int) -> dict:
  """ID tables and the two-layer content encoder.

  The original keeps users and items in one Xavier-normal (U + I, d) table, so
  both tables here share its std, sqrt(2 / (U + I + d)).
  """
  user_key, item_key, first_key, second_key = jax.random.split(key, 4)
  std = np.sqrt(2.0 / (num_users + num_items + embed_dim))
  return {
      'user_embedding': std * jax.random.normal(user_key, (num_users, embed_dim)),
      'item_embedding': std * jax.random.normal(item_key, (num_items, embed_dim)),
      'encoder': {'first': layers.torch_linear(first_key, feature_width, HIDDEN),
                  'second': layers.torch_linear(second_key, HIDDEN, embed_dim)},
  }


def encode(encoder: dict, features: jax.Array) -> jax.Array:
  """f = W_2 LeakyReLU(W_1 x + b_1) + b_2: (n, F) -> (n, d)."""
  hidden = jax.nn.leaky_relu(layers.dense(encoder['first'], features), LEAKY_SLOPE)
  return layers.dense(encoder['second'], hidden)


def info_nce(logits: jax.Array) -> jax.Array:
  """mean over rows of -log softmax(logits)[:, 0]; logits (B, K + 1), the positive first."""
  return jnp.mean(jax.nn.logsumexp(logits, axis=-1) - logits[:, 0])


def negative_tables(dataset, pool: str) -> dict[str, np.ndarray]:
  """Host side: the shared device sampler's tables for `pool`, as `Tables.extras`.

  Plus `allowed_items`, `device_sampling.complement_table`, when it fits:
  row_items then reads each draw with one lookup instead of a binary search.
  """
  return device_sampling.complement_extras(dataset, pool, _EXTRAS_PREFIX)


def row_items(key: jax.Array, batch, extras, num_negatives: int) -> jax.Array:
  """(B, K + 1) int32 rows [i+, j_1 .. j_K].

  j_1 is the shared sampler's negative; j_2 .. j_K are drawn on device, each
  uniform over the pool minus the user's training items (exact, no
  rejection: `device_sampling.negatives`), independently, so with replacement.
  """
  users = batch['users']
  drawn_users = jnp.broadcast_to(users[:, None], (users.shape[0], num_negatives - 1))
  drawn = device_sampling.complement_draws_from_extras(key, extras, _EXTRAS_PREFIX, drawn_users)
  return jnp.concatenate([batch['positives'][:, None], batch['negatives'][:, None], drawn],
                         axis=1)


def replaced_rows(key: jax.Array, num_rows: int, fraction: float) -> jax.Array:
  """(num_rows,) bool: floor(fraction * num_rows) indices drawn WITH replacement.

  As the original, repeats are allowed, so about 1 - exp(-fraction) of the
  rows end up replaced (0.39 for 0.5).
  """
  picks = jax.random.randint(key, (int(fraction * num_rows),), 0, num_rows)
  return jnp.zeros(num_rows, bool).at[picks].set(True)


def _combine(re_logits: jax.Array, ui_logits: jax.Array, user_norm: jax.Array,
             item_norm: jax.Array, lr_lambda: float, temperature: float,
             reg_weight: float) -> tuple[jax.Array, dict[str, jax.Array]]:
  """The loss from the raw (B, K + 1) R-E and U-I scores and the mean norms."""
  re_loss = info_nce(re_logits / temperature)
  ui_loss = info_nce(ui_logits / temperature)
  # The original repeats each user K + 1 times: the mean over B rows is the same.
  regulariser = 0.5 * (user_norm + item_norm)
  loss = lr_lambda * re_loss + (1.0 - lr_lambda) * ui_loss + reg_weight * regulariser
  return loss, {'loss': loss, 're_loss': re_loss, 'ui_loss': ui_loss,
                'regulariser': regulariser}


def objective(params: dict, users: jax.Array, items: jax.Array, item_content: jax.Array,
              replace: jax.Array, lr_lambda: float, temperature: float,
              reg_weight: float) -> tuple[jax.Array, dict[str, jax.Array]]:
  """CLCRec's loss from explicit rows.

  Args:
    users: (B,) int32. items: (B, K + 1) int32, the positive first.
    item_content: (B, K + 1, d) content vectors f of `items`.
    replace: (B, K + 1) bool: U-I candidates that use f instead of e.
  Returns:
    (loss, metrics).
  """
  user_vectors = params['user_embedding'][users]  # (B, d)
  item_vectors = params['item_embedding'][items]  # (B, K + 1, d)
  # R-E: the positive's ID embedding against every candidate's content, cosines.
  anchors = layers.normalise(item_vectors[:, 0])
  re_logits = jnp.einsum('bd,bkd->bk', anchors, layers.normalise(item_content))
  # U-I: hybrid candidates, raw inner products.
  candidates = jnp.where(replace[..., None], item_content, item_vectors)
  ui_logits = jnp.einsum('bd,bkd->bk', user_vectors, candidates)
  return _combine(re_logits, ui_logits, jnp.linalg.norm(user_vectors, axis=-1).mean(),
                  jnp.linalg.norm(item_vectors, axis=-1).mean(), lr_lambda, temperature,
                  reg_weight)


def _distinct_rows(table: jax.Array, ids: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Rows to score for the anchors table[ids], and the row of each id.

  A table with no more rows than the batch is scored whole (users and
  positives repeat within a batch: fewer products), else the gathered rows.

  Args:
    table: (n, d). ids: (B,) int32.
  Returns:
    (rows (n or B, d), index (B,) int32 with rows[index] = table[ids]).
  """
  if table.shape[0] <= ids.shape[0]:  # Static.
    return table, ids
  return table[ids], jnp.arange(ids.shape[0], dtype=ids.dtype)


def _pick(scores: jax.Array, rows: jax.Array, columns: jax.Array) -> jax.Array:
  """scores[rows[b], columns[b, k]] -> (B, K + 1); every index is in range by construction."""
  return scores.at[rows[:, None], columns].get(mode='promise_in_bounds')


def catalogue_objective(params: dict, users: jax.Array, items: jax.Array,
                        catalogue_content: jax.Array, replace: jax.Array, lr_lambda: float,
                        temperature: float,
                        reg_weight: float) -> tuple[jax.Array, dict[str, jax.Array]]:
  """`objective` from the content of the whole catalogue, as dense products.

  Each anchor is scored against every item and the candidates' scores are
  picked out, so the backward pass scatters B(K + 1) scalars into the score
  matrix rather than B(K + 1) d-vectors into the tables (slow on CPU); this
  pays when I < B(K + 1). Equal to `objective` with item_content =
  catalogue_content[items], up to float rounding.

  Args:
    users: (B,) int32. items: (B, K + 1) int32, the positive first.
    catalogue_content: (I, d) content vectors f of every item.
    replace: (B, K + 1) bool: U-I candidates that use f instead of e.
  Returns:
    (loss, metrics).
  """
  num_items = catalogue_content.shape[0]
  item_table = params['item_embedding']  # (I, d)
  # R-E: cosines of the positives' ID embeddings with every item's content.
  anchor_rows, anchor_index = _distinct_rows(item_table, items[:, 0])
  re_scores = layers.unit_rows(anchor_rows) @ layers.unit_rows(catalogue_content).T
  re_logits = _pick(re_scores, anchor_index, items)
  # U-I: column i of the scores is e_u . e_i, column I + i is e_u . f_i.
  user_rows, user_index = _distinct_rows(params['user_embedding'], users)
  ui_scores = user_rows @ jnp.concatenate([item_table, catalogue_content]).T
  ui_logits = _pick(ui_scores, user_index, items + num_items * replace)
  return _combine(re_logits, ui_logits, layers.row_norms(user_rows)[user_index].mean(),
                  layers.row_norms(item_table)[items].mean(), lr_lambda, temperature, reg_weight)


def make(config: ml_collections.ConfigDict, spec: DataSpec) -> Method:
  section = config.methods.clcrec
  d = int(config.model.embed_dim)
  lr_lambda = float(section.lr_lambda)
  temperature = float(section.temperature)
  num_negatives = int(section.num_negatives)
  num_sample = float(section.num_sample)
  reg_weight = float(section.reg_weight)
  pool = str(config.data.negatives)  # The shared sampler's pool: warm items by default.
  feature_width = int(sum(spec.feature_dims))
  rows_per_step = int(config.train.batch_size) * (num_negatives + 1)
  # Static: encode the catalogue and score densely against it, or encode and
  # score only the gathered rows, whichever is fewer.
  encode_catalogue = spec.num_items <= rows_per_step

  def init(key):
    return init_params(key, spec.num_users, spec.num_items, feature_width, d)

  def loss(params, batch, step_input, tables: Tables):
    negative_key, replace_key = jax.random.split(step_input)
    items = row_items(negative_key, batch, tables.extras, num_negatives)
    replace = replaced_rows(replace_key, items.size, num_sample).reshape(items.shape)
    hyper = (lr_lambda, temperature, reg_weight)
    if encode_catalogue:
      catalogue_content = encode(params['encoder'], content(tables))  # (I, d)
      return catalogue_objective(params, batch['users'], items, catalogue_content, replace,
                                 *hyper)
    flat = encode(params['encoder'], content(tables, items.reshape(-1)))
    return objective(params, batch['users'], items, flat.reshape(items.shape + (d,)), replace,
                     *hyper)

  def embed(params, tables: Tables):
    features = encode(params['encoder'], content(tables))
    items = jnp.where(tables.is_new[:, None], features, params['item_embedding'])
    return params['user_embedding'], items

  def prepare(dataset, extras):
    return {**extras, **negative_tables(dataset, pool)}

  return Method(init=init, loss=loss, embed=embed, prepare=prepare,
                log_keys=('re_loss', 'ui_loss', 'regulariser'))
