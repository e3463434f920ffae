"""SiBraR (Ganhoer et al., RecSys 2024): one single-branch network for every modality.

Spec section 13. Each modality m of an item is mapped to a common width c by
its own module phi_m(x) = ReLU(x W_m + b_m); every such encoding then goes
through ONE shared branch g (input dropout, an MLP with ReLU hidden layers, a
linear output of width d, BatchNorm). Besides the content modalities, a warm
item has the "interactions" modality of the original: its column of the
training interaction matrix (binary, one entry per user), which new items
never have. Users are an embedding table.

Training, per item of every row (u, [i+, j_1 .. j_K]): k modalities are
drawn without replacement among those the item HAS, and the item's vector is
the mean of their k branch outputs (k = 1 without a regulariser, k = 2 with
the pairwise one). The loss is BPR over the row's K negatives,
mean softplus(s_j - s_i+), plus, with k = 2, w times a CLIP-style symmetric
InfoNCE between the two sampled modalities' branch outputs of the row's
K + 1 items (logits e^(1)_a . e^(2)_b / T, the diagonal the positives; both
directions, each a mean over rows). At inference an item's vector is the
mean of the branch outputs of the modalities it has, BatchNorm with its
running statistics: new items are embedded from their present content
modalities only, whether in the catalogue or served later.

Departures from the original (Tigxy/SiBraR---Single-Branch-Recommender,
algorithms/sgd_alg.py, SingleBranchNetEntity):
- Per-item availability. The original samples among the configured
  modalities for every item alike and averages all evaluation modalities
  (it drops only the interactions modality, for cold-start items); here both
  the sampling and the inference mean use only the modalities an item has
  (spec 13: the natural per-item rule). An item with fewer present
  modalities than k uses its first drawn one in the other slots; an item
  with none (not produced by our data) falls back to all content modalities,
  imputed.
- Negatives: the original draws the K negatives of a row uniformly from the
  training items (RecBole-style) per row. Here j_1 is the shared sampler's
  negative and j_2 .. j_K are drawn on device, as CLCRec's are
  (`device_sampling.complement_draws`): each uniform over the pool minus the
  user's training items, independently (repeats possible).
- The interactions modality is computed as a sum of the users' rows of W
  over the item's training pairs (segment_sum), which is x W for the binary
  column x without materialising the (I, U) matrix.
- Training protocol: batch, epochs, evaluation cadence and model selection
  are the shared loop's (config.train.*), not the original's batch 256,
  50 epochs and patience 5 on NDCG@10 (configs/methods/sibrar.py records them).
- Modalities are drawn from the step key, not from a NumPy generator.

Speed: when the catalogue has no more items than a step's B (K + 1) rows
(MovieLens-100K: 1682 against 22528), phi_m runs once per step on the
catalogue and the drawn encodings are gathered from it, the same values as
encoding the rows; the interactions modality is a segment_sum over every
training pair in each step either way.
"""

import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from milk_jax import methods
from milk_jax.data import device_sampling
from milk_jax.methods import DataSpec
from milk_jax.methods import Method
from milk_jax.methods import Tables
from milk_jax.methods import layers

INFO = methods.MethodInfo(
    display_name='SiBraR',
    fields=('methods.sibrar.',))
REGULARIZERS = ('none', 'pairwise')  # The original's no_regularization, pairwise_single.
# Tables.extras entries: the negative sampler's tables and the training pairs.
_EXTRAS_PREFIX = 'sibrar_'
_PAIRS = 'sibrar_train_pairs'


def check_config(config: ml_collections.ConfigDict) -> None:
  section, require = methods.section_checker(config, 'sibrar')

  require(section.modality_dim >= 1, 'modality_dim', 'must be at least 1')
  require(all(int(h) >= 1 for h in section.hidden), 'hidden', 'widths must be positive')
  require(0.0 <= section.input_dropout < 1.0, 'input_dropout', 'must be in [0, 1)')
  require(0.0 < section.bn_momentum <= 1.0, 'bn_momentum', 'must be in (0, 1]')
  require(section.bn_eps > 0, 'bn_eps', 'must be positive')
  require(section.num_negatives >= 1, 'num_negatives', 'must be at least 1')
  require(section.regularizer in REGULARIZERS, 'regularizer', f'must be one of {REGULARIZERS}')
  require(section.reg_weight >= 0, 'reg_weight', 'must be non-negative')
  require(section.temperature > 0, 'temperature', 'must be positive')
  require(section.weight_decay >= 0, 'weight_decay', 'must be non-negative')


def _kaiming_linear(key: jax.Array, fan_in: int, fan_out: int) -> dict[str, jax.Array]:
  """The original's init of phi_m: kaiming_uniform (ReLU gain), bias 0."""
  bound = np.sqrt(6.0 / fan_in)
  return {'w': jax.random.uniform(key, (fan_in, fan_out), jnp.float32, -bound, bound),
          'b': jnp.zeros((fan_out,), jnp.float32)}


def init_params(key: jax.Array, num_users: int, input_dims: tuple[int, ...], modality_dim: int,
                hidden: tuple[int, ...], embed_dim: int, batch_norm: bool) -> dict:
  """User table, one phi_m per input modality ('modality_0', ...), the shared branch.

  input_dims: widths of the content modalities, then U for the interactions
  modality when it is used. Users ~ N(0, (0.1 / d)^2), as the original's
  nn.Embedding init.
  """
  keys = jax.random.split(key, 2 + len(input_dims) + len(hidden))
  widths = (modality_dim,) + tuple(hidden)
  branch = {f'block_{l}': layers.torch_linear(keys[2 + len(input_dims) + l], widths[l],
                                              widths[l + 1])
            for l in range(len(hidden))}
  branch['out'] = layers.torch_linear(keys[1], widths[-1], embed_dim)
  params = {
      'user_embedding': (0.1 / embed_dim) * jax.random.normal(keys[0], (num_users, embed_dim)),
      'modalities': {f'modality_{m}': _kaiming_linear(keys[2 + m], dim, modality_dim)
                     for m, dim in enumerate(input_dims)},
      'branch': branch,
  }
  if batch_norm:
    params['branch']['bn'] = {'scale': jnp.ones((embed_dim,)), 'offset': jnp.zeros((embed_dim,))}
    params[layers.STATS] = {'mean': jnp.zeros((embed_dim,)), 'var': jnp.ones((embed_dim,))}
  return params


def interaction_inputs(tables: Tables) -> tuple[jax.Array, jax.Array]:
  """(pairs users, pairs items) of the training interactions, int32 (n,) each."""
  pairs = tables.extras[_PAIRS]
  return pairs[:, 0], pairs[:, 1]


def modality_encodings(params: dict, tables: Tables, use_interactions: bool,
                       items: jax.Array | None = None) -> jax.Array:
  """phi_m of every input modality: (n, M', c) for `items` (all items when None).

  M' = M content modalities, then the interactions modality when used:
  ReLU(sum of W's rows of the item's training users + b).
  """
  encoders = params['modalities']
  out = []
  for m, features in enumerate(tables.features):
    x = (features if items is None else features[items]).astype(jnp.float32)
    out.append(jax.nn.relu(layers.dense(encoders[f'modality_{m}'], x)))
  if use_interactions:
    layer = encoders[f'modality_{len(tables.features)}']
    users, pair_items = interaction_inputs(tables)
    summed = jax.ops.segment_sum(layer['w'][users], pair_items,
                                 num_segments=tables.is_new.shape[0])
    catalogue = jax.nn.relu(summed + layer['b'])
    out.append(catalogue if items is None else catalogue[items])
  return jnp.stack(out, axis=1)


def modality_availability(tables: Tables, use_interactions: bool) -> jax.Array:
  """(I, M') bool: the content availability, then 'has training interactions' (warm items)."""
  if not use_interactions:
    return tables.availability
  _, pair_items = interaction_inputs(tables)
  degree = jax.ops.segment_sum(jnp.ones_like(pair_items), pair_items,
                               num_segments=tables.is_new.shape[0])
  has = (degree > 0) & ~tables.is_new
  return jnp.concatenate([tables.availability, has[:, None]], axis=1)


def sample_modalities(key: jax.Array, available: jax.Array, k: int) -> jax.Array:
  """(n, k) int32: k distinct modalities per row, uniform among the available ones.

  Top-k of iid uniforms over the available entries (absent ones score below
  any present one) is a uniform k-subset in random order. A row with fewer
  than k available modalities repeats its first draw in the other slots.
  """
  scores = jnp.where(available, jax.random.uniform(key, available.shape), -1.0)
  _, picks = jax.lax.top_k(scores, k)
  present = jnp.take_along_axis(available, picks, axis=1)
  return jnp.where(present, picks, picks[:, :1])


def present_weights(available: jax.Array, num_content: int) -> jax.Array:
  """(I, M') float32 weights of the inference mean: 1 / (#present) on present modalities.

  A row with none present averages the (imputed) content modalities.
  """
  count = jnp.sum(available, axis=1, keepdims=True)
  fallback = (jnp.arange(available.shape[1]) < num_content)[None, :]
  return layers.present_mean_weights(jnp.where(count > 0, available, fallback))


def _branch_mlp(branch: dict, x: jax.Array) -> jax.Array:
  """The branch before BatchNorm: ReLU hidden layers and a linear output, (n, c) -> (n, d)."""
  for name in sorted(k for k in branch if k.startswith('block_')):
    x = jax.nn.relu(layers.dense(branch[name], x))
  return layers.dense(branch['out'], x)


def branch_train(params: dict, x: jax.Array, eps: float) -> tuple[jax.Array, dict]:
  """Training pass with the batch's BatchNorm statistics: ((n, d), moments or {})."""
  y = _branch_mlp(params['branch'], x)
  if 'bn' not in params['branch']:
    return y, {}
  return layers.batchnorm_train(params['branch']['bn'], y, eps)


def branch_infer(params: dict, x: jax.Array, eps: float) -> jax.Array:
  """Inference pass with the running statistics, (n, c) -> (n, d)."""
  y = _branch_mlp(params['branch'], x)
  if 'bn' not in params['branch']:
    return y
  return layers.batchnorm_infer(params['branch']['bn'], params[layers.STATS], y, eps)


def input_dropout(key: jax.Array, x: jax.Array, rate: float) -> jax.Array:
  """Inverted dropout (torch's nn.Dropout in training)."""
  if rate == 0.0:
    return x
  keep = jax.random.bernoulli(key, 1.0 - rate, x.shape)
  return jnp.where(keep, x / (1.0 - rate), 0.0)


def symmetric_info_nce(first: jax.Array, second: jax.Array, temperature: float) -> jax.Array:
  """CLIP-style InfoNCE within each row: (B, n, d) twice -> scalar.

  logits[b, a, c] = first[b, a] . second[b, c] / T; the target of a is a, in
  both directions; each direction is a mean over the B n rows, and the two
  are summed (the original's InfoNCE module).
  """
  logits = jnp.einsum('bad,bcd->bac', first, second) / temperature
  diagonal = jnp.diagonal(logits, axis1=1, axis2=2)  # (B, n)
  forward = jnp.mean(jax.nn.logsumexp(logits, axis=2) - diagonal)
  backward = jnp.mean(jax.nn.logsumexp(logits, axis=1) - diagonal)
  return forward + backward


def row_items(key: jax.Array, batch, extras, num_negatives: int) -> jax.Array:
  """(B, K + 1) int32 rows [i+, j_1 .. j_K]: j_1 the shared sampler's, the rest drawn on device."""
  columns = [batch['positives'][:, None], batch['negatives'][:, None]]
  if num_negatives > 1:
    users = batch['users']
    drawn_users = jnp.broadcast_to(users[:, None], (users.shape[0], num_negatives - 1))
    columns.append(device_sampling.complement_draws_from_extras(key, extras, _EXTRAS_PREFIX,
                                                                drawn_users))
  return jnp.concatenate(columns, axis=1)


def objective(params: dict, users: jax.Array, items: jax.Array, picks: jax.Array,
              dropout_key: jax.Array, tables: Tables, *, use_interactions: bool,
              dropout: float, eps: float, reg_weight: float,
              temperature: float) -> tuple[jax.Array, tuple[dict, dict]]:
  """SiBraR's loss from explicit rows and drawn modalities.

  Args:
    users: (B,) int32. items: (B, K + 1) int32, the positive first.
    picks: (B (K + 1), k) int32 modalities of each item (row-major over items).
  Returns:
    (loss, (metrics, BatchNorm moments)).
  """
  rows, width = items.shape
  k = picks.shape[1]
  flat = items.reshape(-1)
  if tables.is_new.shape[0] <= flat.shape[0]:  # Static: fewer items than rows to encode.
    catalogue = modality_encodings(params, tables, use_interactions)  # (I, M', c)
    chosen = catalogue[flat[:, None], picks]  # (B (K+1), k, c)
  else:
    encodings = modality_encodings(params, tables, use_interactions, flat)
    chosen = jnp.take_along_axis(encodings, picks[..., None], axis=1)
  x = input_dropout(dropout_key, chosen.reshape(-1, chosen.shape[-1]), dropout)
  out, moments = branch_train(params, x, eps)
  out = out.reshape(rows, width, k, -1)
  item_vectors = jnp.mean(out, axis=2)
  user_vectors = params['user_embedding'][users]
  scores = jnp.einsum('bd,bkd->bk', user_vectors, item_vectors)
  task = layers.bpr(scores[:, :1], scores[:, 1:])
  metrics = {'bpr': task}
  total = task
  if k == 2:
    regulariser = reg_weight * symmetric_info_nce(out[:, :, 0], out[:, :, 1], temperature)
    total = total + regulariser
    metrics['regulariser'] = regulariser
  metrics['loss'] = total
  return total, (metrics, moments)


def make_optimizer(learning_rate: float, weight_decay: float) -> optax.GradientTransformation:
  """AdamW (the original's; torch's decoupled decay on every trained weight)."""
  return optax.adamw(learning_rate, weight_decay=weight_decay)


def embed(params: dict, tables: Tables, use_interactions: bool,
          eps: float) -> tuple[jax.Array, jax.Array]:
  """Users (U, d); items (I, d): the mean of the branch outputs of their present modalities."""
  encodings = modality_encodings(params, tables, use_interactions)  # (I, M', c)
  num_items, num_inputs, width = encodings.shape
  out = branch_infer(params, encodings.reshape(-1, width), eps).reshape(num_items, num_inputs, -1)
  weights = present_weights(modality_availability(tables, use_interactions),
                            len(tables.features))
  return params['user_embedding'], jnp.einsum('im,imd->id', weights, out)


def make(config: ml_collections.ConfigDict, spec: DataSpec) -> Method:
  section = config.methods.sibrar
  d = int(config.model.embed_dim)
  use_interactions = bool(section.interactions)
  batch_norm = bool(section.batch_norm)
  eps = float(section.bn_eps)
  momentum = float(section.bn_momentum)
  num_negatives = int(section.num_negatives)
  k = 2 if section.regularizer == 'pairwise' else 1
  pool = str(config.data.negatives)
  input_dims = tuple(spec.feature_dims) + ((spec.num_users,) if use_interactions else ())
  hyper = dict(use_interactions=use_interactions, dropout=float(section.input_dropout), eps=eps,
               reg_weight=float(section.reg_weight), temperature=float(section.temperature))
  optimizer = make_optimizer(float(config.train.learning_rate), float(section.weight_decay))

  def init(key):
    return init_params(key, spec.num_users, input_dims, int(section.modality_dim),
                       tuple(int(h) for h in section.hidden), d, batch_norm)

  def loss(variables, batch, step_input, tables):
    negative_key, modality_key, dropout_key = jax.random.split(step_input, 3)
    items = row_items(negative_key, batch, tables.extras, num_negatives)
    available = modality_availability(tables, use_interactions)[items.reshape(-1)]
    picks = sample_modalities(modality_key, available, k)
    value, (metrics, moments) = objective(variables, batch['users'], items, picks, dropout_key,
                                          tables, **hyper)
    # With BatchNorm the batch moments go to the shared update (Method.update_model_state).
    return value, ((metrics, moments) if batch_norm else metrics)

  def prepare(dataset, extras):
    out = {**extras, **device_sampling.complement_extras(dataset, pool, _EXTRAS_PREFIX)}
    if use_interactions:
      out[_PAIRS] = np.asarray(dataset.train_pairs, np.int32)
    return out

  return Method(init=init, loss=loss,
                embed=functools.partial(embed, use_interactions=use_interactions, eps=eps),
                optimizer=optimizer, prepare=prepare,
                non_trainable=(layers.STATS,) if batch_norm else (),
                update_model_state=layers.batch_stats_update(momentum) if batch_norm else None,
                log_keys=('bpr', 'regulariser') if k == 2 else ('bpr',))
