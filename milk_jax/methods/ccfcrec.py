"""CCFCRec (Zhou et al., WWW 2023; spec 9): contrastive collaborative filtering for new items.

A content generator gives every item a "content CF" vector

  q_i = W_g2 LeakyReLU(W_g1 [x_i1 W_1 ; ... ; x_iM W_M] + b_g1) + b_g2,

one bias-free linear projection W_m (dim_m, d) per modality, concatenated
(spec 9.7; the original projects its image feature this way; an imputed
modality is a constant slot), hidden width d (the original's equals d).
It is trained jointly with free CF tables E_u, E_i on each training pair
(u, i) of the batch, with c(a, b) = cos(a, b) / tau:

  L_co   = sum_rows (1/P) sum_p -log softmax(c(q_i, e_p), c(q_i, e_n_p1) .. c(q_i, e_n_pN))[0]
  L_self = sum_rows -log softmax(c(q_i, e_i), c(q_i, e_s1) .. c(q_i, e_sS))[0]
  L_r    = sum_rows -log s(e_i.e_u - e_i.e_k) - log s(q_i.e_u - q_i.e_k)
  L      = lambda1 (L_co + L_self) + (1 - lambda1) L_r,

p_1 .. p_P drawn with replacement from u's training items (i itself may come
up), n and s items u did not train on, k a user who did not train on i.
Batch SUMS, as the original. Every parameter is L2-decayed inside Adam (torch
Adam's weight_decay: g + wd * theta enters the moments), here
optax.chain(add_decayed_weights(wd), adam(lr)): the same update, on every row
of the tables too, in the batch or not (torch's gradients of indexed
parameters are dense, so its decay reaches every row as well). Inference:
users e_u, warm items e_i, new items q_i.

Sampling, drawn on device from the step key with static shapes:
- positives: uniform rank in u's training items (a CSR table from `prepare`);
- the P N + S negative items: exactly uniform over the negative pool
  (`config.data.negatives`, warm by default: the original's training items)
  minus u's training items, with replacement as the original, by the shared
  device sampler's rank-to-item map (no rejection, no approximation), or one
  lookup in a (U, pool) table of allowed items when that fits (CLCRec's);
- the negative user: exactly uniform over all users minus those who trained
  on i, by the same rank-to-id map over a per-item table of users.

Departures from the original:
- No categorical-attribute attention: the data are M dense modalities. With
  `fusion='masked_attention'` the concatenation's slot m is M alpha_im x_im W_m,
  alpha_i = softmax over i's present modalities of learned logits z (M,),
  the original attention's way of skipping absent inputs (a missing slot is
  zero, the present ones re-weighted; z = 0 at init equals plain concat).
- The negative user is drawn afresh every step; the original reads one
  pre-computed per training pair for the whole run.
- S is its own field; the original ties S to N (one draw of N (P + 1) items).
- E_i has a row for every item, Xavier-normal with the std of the original's
  warm-only (I_w, d) table; new items' rows never score (and are negatives
  only with config.data.negatives='all'), so weight decay just shrinks them.
- Pre-trained CF initialisation (the original's `pretrain`, off by default,
  as in ColdRec) is not offered: it reads no backbone, and `init` sees no extras.
- Cosines floor each norm at 1e-12 (the original divides by the raw norms).
- The learning rate is the protocol's config.train.learning_rate (Adam 1e-3;
  the original uses 1e-4).

Speed: the P (N + 1) + S + 1 cosines per row are, for a catalogue of at
most 64 times that many items, picked from one dense (B, I) product of unit
q's and unit E rows (gradients scatter scalars, not d-vectors: 12x faster
on MovieLens-100K); otherwise the rows are gathered. Both give the same loss
up to float rounding.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from milk_jax import methods
from milk_jax.data import device_sampling
from milk_jax.data.errors import DataError
from milk_jax.methods import DataSpec
from milk_jax.methods import Method
from milk_jax.methods import Tables
from milk_jax.methods import layers

INFO = methods.MethodInfo(
    display_name='CCFCRec',
    fields=('methods.ccfcrec.',))
FUSIONS = ('concat', 'masked_attention')
LEAKY_SLOPE = 0.01  # torch nn.LeakyReLU's default, which the original uses.
_PREFIX = 'ccfcrec_'
# Score candidates from a dense (B, I) product when I <= this many candidates per row
# (P (N + 1) + S + 1). Measured on CPU, B 2048, d 64, 246 candidates: the dense
# gradient costs 0.11 s at 1682 items and 1.08 s at 15000, the gathered one 1.3 s.
_DENSE_SCORES_PER_CANDIDATE = 64


def check_config(config: ml_collections.ConfigDict) -> None:
  section, require = methods.section_checker(config, 'ccfcrec')

  require(0.0 <= section.lambda1 <= 1.0, 'lambda1', 'must lie in [0, 1]')
  require(section.temperature > 0, 'temperature', 'must be positive')
  require(section.num_positives >= 1, 'num_positives', 'must be at least 1')
  require(section.num_negatives >= 1, 'num_negatives', 'must be at least 1')
  require(section.num_self_negatives >= 1, 'num_self_negatives', 'must be at least 1')
  require(section.weight_decay >= 0, 'weight_decay', 'must be non-negative')
  require(section.fusion in FUSIONS, 'fusion', f'must be one of {FUSIONS}')


class Samples(NamedTuple):
  """One step's draws for B rows (u, i)."""
  positives: jax.Array  # (B, P) int32: items u trained on, with replacement.
  negatives: jax.Array  # (B, P, N) int32: pool items u did not train on.
  self_negatives: jax.Array  # (B, S) int32: pool items u did not train on.
  negative_users: jax.Array  # (B,) int32: users who did not train on i.


# --- Host side: the sampler's tables ---------------------------------------------------------


def negative_user_tables(dataset) -> dict[str, np.ndarray]:
  """The rank-to-id tables of "all users minus those who trained on item i".

  Laid out as `device_sampling.SamplerTables` with items as rows and users
  as the pool: per item, its sorted users s_0 < ... occupy [offsets[i],
  offsets[i+1]), shifted to s_j - j.

  Raises DataError when every user trained on some item (no negative user).
  """
  num_users, num_items = dataset.num_users, dataset.num_items
  pairs = dataset.train_pairs.astype(np.int64)
  keys = np.sort(pairs[:, 1] * num_users + pairs[:, 0])
  items = keys // num_users
  users = keys - items * num_users
  counts = np.bincount(items, minlength=num_items)
  full = np.flatnonzero(counts >= num_users)
  if full.size:
    raise DataError(f'{dataset.source}: every user trained on item {full[0]}; CCFCRec has no '
                    'negative user for it')
  offsets = np.concatenate([[0], np.cumsum(counts)])
  rank_in_item = np.arange(len(keys)) - offsets[items]
  return {f'{_PREFIX}all_users': np.arange(num_users, dtype=np.int32),
          f'{_PREFIX}item_offsets': offsets.astype(np.int32),
          f'{_PREFIX}item_shifted': (users - rank_in_item).astype(np.int32)}


def sampler_extras(dataset, pool: str) -> dict[str, np.ndarray]:
  """Host side, once per run: every table `draw_samples` reads, as `Tables.extras`.

  user_items / user_offsets: u's training items are user_items[offsets[u]:
  offsets[u+1]] (CSR, no padding); pool_items / shifted_positions: the shared
  device sampler's tables for the negative pool; allowed_items: the (U, pool)
  lookup table of `device_sampling.complement_table`, when it fits (all four
  from `device_sampling.complement_extras`); and `negative_user_tables`.
  """
  # train_keys are sorted by user, then item: the CSR order of user_offsets.
  user_items = (dataset.train_keys % dataset.num_items).astype(np.int32)
  return {f'{_PREFIX}user_items': user_items,
          **device_sampling.complement_extras(dataset, pool, _PREFIX),
          **negative_user_tables(dataset)}


# --- Device side: the draws ------------------------------------------------------------------


def draw_samples(key: jax.Array, users: jax.Array, items: jax.Array, extras,
                 num_positives: int, num_negatives: int, num_self_negatives: int) -> Samples:
  """The step's draws for rows (users, items), each (B,) int32 training pairs."""
  positive_key, negative_key, user_key = jax.random.split(key, 3)
  x = lambda name: extras[_PREFIX + name]
  num_rows = users.shape[0]
  offsets = x('user_offsets')
  history = offsets[users + 1] - offsets[users]  # >= 1: (u, i) is a training pair.
  # Positives: a uniform rank in u's training items.
  ranks = jax.random.randint(positive_key, (num_rows, num_positives), 0, history[:, None])
  positives = x('user_items')[offsets[users][:, None] + ranks]
  # Negatives: P N for the co-occurrence contrast, then S for the self contrast.
  shape = (num_rows, num_positives * num_negatives + num_self_negatives)
  drawn = device_sampling.complement_draws_from_extras(
      negative_key, extras, _PREFIX, jnp.broadcast_to(users[:, None], shape))
  split = num_positives * num_negatives
  # The negative user: all users minus i's, the same rank-to-id map with items as rows.
  user_tables = device_sampling.SamplerTables(
      train_pairs=None, pool_items=x('all_users'), user_offsets=x('item_offsets'),
      shifted_positions=x('item_shifted'))
  negative_users = device_sampling.complement_draws(user_key, user_tables, items)
  return Samples(positives=positives,
                 negatives=drawn[:, :split].reshape(num_rows, num_positives, num_negatives),
                 self_negatives=drawn[:, split:], negative_users=negative_users)


# --- Parameters and the content generator ----------------------------------------------------


def _xavier_normal(key: jax.Array, shape: tuple[int, int]) -> jax.Array:
  return np.sqrt(2.0 / (shape[0] + shape[1])) * jax.random.normal(key, shape, jnp.float32)


def init_params(key: jax.Array, num_users: int, num_items: int, num_warm_items: int,
                feature_dims: tuple[int, ...], embed_dim: int, fusion: str) -> dict:
  """CF tables, projections and generator, initialised as the original.

  Xavier-normal tables and weights (E_i with the std of the original's
  (I_w, d) table); the generator's biases as torch nn.Linear's default,
  uniform in +-1/sqrt(fan_in).
  """
  d, m = embed_dim, len(feature_dims)
  keys = jax.random.split(key, 6 + m)
  bias = lambda k, fan_in, n: jax.random.uniform(k, (n,), jnp.float32, -1, 1) / np.sqrt(fan_in)
  item_std = np.sqrt(2.0 / (max(num_warm_items, 1) + d))
  params = {
      'user_embedding': _xavier_normal(keys[0], (num_users, d)),
      'item_embedding': item_std * jax.random.normal(keys[1], (num_items, d), jnp.float32),
      'projections': {f'modality_{j}': _xavier_normal(keys[6 + j], (dim, d))
                      for j, dim in enumerate(feature_dims)},
      'generator': {
          'first': {'w': _xavier_normal(keys[2], (m * d, d)), 'b': bias(keys[3], m * d, d)},
          'second': {'w': _xavier_normal(keys[4], (d, d)), 'b': bias(keys[5], d, d)}},
  }
  if fusion == 'masked_attention':
    params['modality_logits'] = jnp.zeros((m,), jnp.float32)
  return params


def generate(params: dict, features: tuple[jax.Array, ...], availability: jax.Array) -> jax.Array:
  """q = W_g2 LeakyReLU(W_g1 [slot_1 ; ... ; slot_M] + b_g1) + b_g2: (n, d).

  Args:
    features: M arrays (n, dim_m). availability: (n, M) bool, read only by
      'masked_attention' (params has 'modality_logits').
  """
  slots = [f.astype(jnp.float32) @ params['projections'][f'modality_{j}']
           for j, f in enumerate(features)]
  if 'modality_logits' in params:
    # The original attention's mask: absent inputs get logit -1e6.
    logits = jnp.where(availability, params['modality_logits'], -1e6)
    weights = len(slots) * jax.nn.softmax(logits, axis=-1)  # (n, M); 1 each when all present.
    slots = [weights[:, j:j + 1] * s for j, s in enumerate(slots)]
  generator = params['generator']
  hidden = jax.nn.leaky_relu(layers.dense(generator['first'], jnp.concatenate(slots, axis=-1)),
                             LEAKY_SLOPE)
  return layers.dense(generator['second'], hidden)


# --- The loss ------------------------------------------------------------------------------


def cosines(anchors: jax.Array, table: jax.Array, candidates: jax.Array,
            dense: bool) -> jax.Array:
  """cos(anchors[b], table[candidates[b, k]]) -> (B, K).

  dense: pick from the (B, I) cosines of every anchor with every row (cheaper
  gradients for a small table); else gather the (B, K, d) rows.
  """
  unit_anchors = layers.unit_rows(anchors)
  if dense:
    scores = unit_anchors @ layers.unit_rows(table).T
    rows = jnp.arange(anchors.shape[0])[:, None]
    return scores.at[rows, candidates].get(mode='promise_in_bounds')
  return jnp.einsum('bd,bkd->bk', unit_anchors, layers.unit_rows(table[candidates]))


def _nce(logits: jax.Array) -> jax.Array:
  """-log softmax(logits)[..., 0], the positive first."""
  return jax.nn.logsumexp(logits, axis=-1) - logits[..., 0]


def objective(params: dict, q: jax.Array, users: jax.Array, items: jax.Array, samples: Samples,
              temperature: float, lambda1: float,
              dense: bool = False) -> tuple[jax.Array, dict[str, jax.Array]]:
  """CCFCRec's loss (spec 9.3) from explicit draws.

  Args:
    q: (B, d) generated vectors of `items`. users, items: (B,) int32.
  Returns:
    (loss, metrics), all batch sums.
  """
  num_rows, num_positives, num_negatives = samples.negatives.shape
  table = params['item_embedding']
  # One cosine per candidate: [i, s_1 .. s_S, p_1 .. p_P, n_11 .. n_PN].
  candidates = jnp.concatenate([items[:, None], samples.self_negatives, samples.positives,
                                samples.negatives.reshape(num_rows, -1)], axis=1)
  logits = cosines(q, table, candidates, dense) / temperature
  num_self = 1 + samples.self_negatives.shape[1]
  self_contrast = jnp.sum(_nce(logits[:, :num_self]))
  positive_logits = logits[:, num_self:num_self + num_positives]  # (B, P)
  negative_logits = logits[:, num_self + num_positives:].reshape(num_rows, num_positives,
                                                                 num_negatives)
  co_rows = _nce(jnp.concatenate([positive_logits[..., None], negative_logits], axis=-1))
  co_contrast = jnp.sum(jnp.mean(co_rows, axis=1))
  # User-side BPR: u above the negative user k, for e_i and for q_i.
  e_u = params['user_embedding'][users]
  e_k = params['user_embedding'][samples.negative_users]
  e_i = table[items]
  ranking = (jnp.sum(jax.nn.softplus(jnp.sum(e_i * (e_k - e_u), -1)))
             + jnp.sum(jax.nn.softplus(jnp.sum(q * (e_k - e_u), -1))))
  total = lambda1 * (co_contrast + self_contrast) + (1.0 - lambda1) * ranking
  return total, {'loss': total, 'co_contrast': co_contrast, 'self_contrast': self_contrast,
                 'ranking': ranking}


def make_optimizer(learning_rate: float, weight_decay: float) -> optax.GradientTransformation:
  """torch.optim.Adam(lr, weight_decay): g + wd theta feeds Adam's moments, on every parameter."""
  return optax.chain(optax.add_decayed_weights(weight_decay), optax.adam(learning_rate))


def make(config: ml_collections.ConfigDict, spec: DataSpec) -> Method:
  section = config.methods.ccfcrec
  d = int(config.model.embed_dim)
  lambda1 = float(section.lambda1)
  temperature = float(section.temperature)
  num_positives = int(section.num_positives)
  num_negatives = int(section.num_negatives)
  num_self_negatives = int(section.num_self_negatives)
  fusion = str(section.fusion)
  pool = str(config.data.negatives)
  feature_dims = tuple(int(f) for f in spec.feature_dims)
  per_row = num_positives * (num_negatives + 1) + num_self_negatives + 1
  dense = spec.num_items <= _DENSE_SCORES_PER_CANDIDATE * per_row  # Static.

  def init(key):
    return init_params(key, spec.num_users, spec.num_items, spec.num_warm_items, feature_dims,
                       d, fusion)

  def loss(params, batch, step_input, tables: Tables):
    users, items = batch['users'], batch['positives']
    samples = draw_samples(step_input, users, items, tables.extras, num_positives,
                           num_negatives, num_self_negatives)
    q = generate(params, tuple(f[items] for f in tables.features), tables.availability[items])
    return objective(params, q, users, items, samples, temperature, lambda1, dense)

  def embed(params, tables: Tables):
    q = generate(params, tables.features, tables.availability)
    items = jnp.where(tables.is_new[:, None], q, params['item_embedding'])
    return params['user_embedding'], items

  def prepare(dataset, extras):
    return {**extras, **sampler_extras(dataset, pool)}

  return Method(init=init, loss=loss, embed=embed, prepare=prepare,
                optimizer=make_optimizer(float(config.train.learning_rate),
                                         float(section.weight_decay)),
                log_keys=('co_contrast', 'self_contrast', 'ranking'))
