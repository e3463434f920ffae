"""GAR (Chen et al., SIGIR 2022; spec section 10): a generator and a recommender, adversarially.

The generator G maps an item's content x_i (`methods.content`) into the
backbone's CF space; the recommender R scores r(u, e) = t_U(P_u) . t_I(e)
with a user tower over the BPR-MF user vector P_u and an item tower over an
item vector e. Both players are MLPs as in the official TF code:
[BN without scale] -> dense -> (BN -> tanh -> dropout -> dense)*, Glorot-
uniform kernels, zero biases, a kernel regulariser l2_weight * sum w^2 / 2;
R's towers start with the BN, G does not.

Each step is one R half-step then one G half-step on the same mini-batch
(users u, positives i+, negatives j), each player with its own Adam state,
the other one frozen (stop_gradient) and in inference mode (no dropout, BN
with running statistics):

  R:  L_R = mean softplus(-(r(u, Q_i+) - (1 - beta) r(u, G(x_i+)) - beta r(u, Q_j))) + L2_R,
      R in training mode on the 3B rows [real; negative; fake] at once;
  G:  L_G = (1 - alpha) mean softplus(-(r(u, G(x_i+)) - r(u, Q_i+)))
            + alpha mean |G(x_i+) - Q_i+| + L2_G.

At inference every user and item passes through R's towers: users t_U(P_u),
warm items t_I(Q_i), new items t_I(G(x_i)), which reads content only.

The metric 'loss' (what the divergence check and the log's first number
watch) is R's L_R: in this game G's loss rises whenever R wins, which is not
divergence. L_G, its adversarial term and the L1 similarity are logged too.

BatchNorm is TF's: running statistics start at mean 0 and variance 1 and move
by running <- 0.99 running + 0.01 batch (momentum 0.01 here), with the
batch's biased variance (TF's non-fused path), eps 1e-3; they are the
non-trainable variables' 'batch_stats' (the train state's model state,
checkpointed, never seen by the optimiser) and are blended in by each
player's own half-step. The half-steps below work on the variables (both
players' parameters and 'batch_stats' in one dict); `Method.update` splits
them back into params and model state. In the original D step the TF
graph's UPDATE_OPS (collected by the scope regex 'D', which also matches the
reused scopes 'D_1', 'D_2' of the two G-loss passes through R) blend three
sets of moments into R's statistics: those of the [real; negative; fake]
pass, of the (u, fake) pass and of the (u, real) pass, all in training mode.
`all_r_passes_update_stats` (default True) reproduces that, in that order;
False blends only the moments of the loss's pass.

Departures from the original, and why:
- Widths. The original's pre-trained vectors are 200-wide, so G's output, R's
  inputs and its towers are all 200 ([200, 200] layers). The protocol's
  backbone is d = config.model.embed_dim (64): G is `g_hidden` (200) then a
  width-d output, so that G(x) lives where Q does; R's towers keep the
  original's `r_layers` = (200, 200), so the ranking vectors are 200-wide.
- Batches: by default (`sampler='shared'`) the protocol's shared sampler,
  the same for every method: each epoch's training pairs in a random order
  (users in proportion to their degree), one warm negative per pair that is
  never one of the user's items. The original's `bpr_neg_samp` draws a user
  uniformly, then one of its training items, and a warm negative that is
  not rejected; `sampler='original'` does that on device, per step from the
  step key (the shared triples then only set B and the epoch's length).
  It is not the default because the shared contract (a loss that goes down
  on one repeated batch, tests/methods/test_contract.py) assumes the batch is used.
  B is the protocol's 2048 (the original's 1024); early stopping follows
  config.train (the original validates every epoch, patience 10; an experiment's
  `own_cadence` adds a GAR run at that cadence, INFO.original_cadence).
- Only the tanh activation (the original's default for both players).
- The backbone is the library's BPR-MF (the original loads pre-trained
  vectors from a file; which backbone MILK fed GAR is unverified).

`variant='coldrec'` (not the default) is ColdRec's simplification instead:
milk_jax/methods/gar/coldrec.py.
"""

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from milk_jax import methods
from milk_jax.methods import DataSpec
from milk_jax.methods import Method
from milk_jax.methods import Tables
from milk_jax.methods import content
from milk_jax.methods import layers
from milk_jax.methods.gar import coldrec

INFO = methods.MethodInfo(
    display_name='GAR',
    backbone='bprmf',
    fields=('methods.gar.',),
    # The original's validation: cold-validation NDCG@20 every epoch, patience 10.
    original_cadence={'train.eval_every': 1, 'train.patience': 10})
GENERATOR, RECOMMENDER = 'generator', 'recommender'
PLAYERS = (GENERATOR, RECOMMENDER)
STATS = layers.STATS
SAMPLERS = ('original', 'shared')
VARIANTS = ('original', 'coldrec')
# Tables.extras of the original sampler (built by `prepare`).
_USERS, _OFFSETS, _ITEMS = 'gar_train_users', 'gar_user_offsets', 'gar_user_items'


class Hyper(NamedTuple):
  """The hyper-parameters the half-steps read (hashable: a static jit argument)."""
  alpha: float
  beta: float
  g_dropout: float
  r_dropout: float
  l2_weight: float
  bn_momentum: float
  bn_eps: float
  all_r_passes_update_stats: bool
  learning_rate: float


def read_hyper(config: ml_collections.ConfigDict) -> Hyper:
  """config.methods.gar's numbers (and the shared learning rate), as Python scalars."""
  section = config.methods.gar
  return Hyper(alpha=float(section.alpha), beta=float(section.beta),
               g_dropout=float(section.g_dropout), r_dropout=float(section.r_dropout),
               l2_weight=float(section.l2_weight), bn_momentum=float(section.bn_momentum),
               bn_eps=float(section.bn_eps),
               all_r_passes_update_stats=bool(section.all_r_passes_update_stats),
               learning_rate=float(config.train.learning_rate))


def check_config(config: ml_collections.ConfigDict) -> None:
  section, require = methods.section_checker(config, 'gar')

  require(0.0 <= section.alpha <= 1.0, 'alpha', 'must lie in [0, 1]')
  require(0.0 <= section.beta <= 1.0, 'beta', 'must lie in [0, 1]')
  require(all(int(h) >= 1 for h in section.g_hidden), 'g_hidden', 'widths must be positive')
  require(len(section.r_layers) >= 1 and all(int(h) >= 1 for h in section.r_layers),
          'r_layers', 'needs at least one positive width')
  require(0.0 <= section.g_dropout < 1.0, 'g_dropout', 'must be in [0, 1)')
  require(0.0 <= section.r_dropout < 1.0, 'r_dropout', 'must be in [0, 1)')
  require(section.l2_weight >= 0, 'l2_weight', 'must be non-negative')
  require(0.0 < section.bn_momentum <= 1.0, 'bn_momentum', 'must be in (0, 1]')
  require(section.bn_eps > 0, 'bn_eps', 'must be positive')
  require(section.sampler in SAMPLERS, 'sampler', f'must be one of {SAMPLERS}')
  require(section.variant in VARIANTS, 'variant', f'must be one of {VARIANTS}')
  require(section.coldrec_reg >= 0, 'coldrec_reg', 'must be non-negative')
  # The variant's offset tables have the catalogue's rows, not a sharded table's padded ones.
  require(section.variant != 'coldrec' or not config.train.shard_user_table, 'variant',
          "'coldrec' cannot run with train.shard_user_table")


# ------------------------------------------------------------------ the MLPs

def mlp_init(key: jax.Array, in_dim: int, widths: tuple[int, ...],
             input_bn: bool) -> tuple[dict[str, Any], dict[str, Any]]:
  """(params, running stats) of the official `build_mlp`.

  'input_bn' (offset only: TF's scale=False) when `input_bn`, 'dense_0', then
  for l >= 1 'bn_l' (scale, offset) before 'dense_l'. Kernels are Glorot
  uniform, biases zero; running statistics start at mean 0, variance 1.
  """
  keys = jax.random.split(key, len(widths))
  dims = (in_dim,) + tuple(widths)
  params, stats = {}, {}

  def running(width):
    return {'mean': jnp.zeros((width,)), 'var': jnp.ones((width,))}

  if input_bn:
    params['input_bn'] = {'offset': jnp.zeros((in_dim,))}
    stats['input_bn'] = running(in_dim)
  for l, width in enumerate(widths):
    if l:
      params[f'bn_{l}'] = {'scale': jnp.ones((dims[l],)), 'offset': jnp.zeros((dims[l],))}
      stats[f'bn_{l}'] = running(dims[l])
    params[f'dense_{l}'] = {'w': layers.xavier_uniform(keys[l], (dims[l], width)),
                            'b': jnp.zeros((width,))}
  return params, stats


def _dropout(key: jax.Array, x: jax.Array, rate: float) -> jax.Array:
  """TF's dropout: each entry kept with probability 1 - rate and scaled by 1 / (1 - rate)."""
  if rate == 0.0:
    return x
  keep = jax.random.bernoulli(key, 1.0 - rate, x.shape)
  return jnp.where(keep, x / (1.0 - rate), 0.0)


def mlp_apply(params: dict[str, Any], stats: dict[str, Any] | None, x: jax.Array, eps: float,
              key: jax.Array | None = None,
              dropout: float = 0.0) -> tuple[jax.Array, dict[str, Any]]:
  """The MLP on x (n, in) -> ((n, out), moments).

  Training mode when `key` is given: BN normalises with the batch's mean and
  biased variance (returned as `moments`, without gradient, shaped like the
  running stats) and dropout is on. Inference mode (key None): BN uses
  `stats`, no dropout, moments {}.
  """
  train = key is not None
  moments = {}

  def normalise(name, h):
    if train:
      mean, var = jnp.mean(h, axis=0), jnp.var(h, axis=0)
      moments[name] = jax.lax.stop_gradient({'mean': mean, 'var': var})
    else:
      mean, var = stats[name]['mean'], stats[name]['var']
    y = (h - mean) * jax.lax.rsqrt(var + eps)
    return y * params[name].get('scale', 1.0) + params[name]['offset']

  if 'input_bn' in params:
    x = normalise('input_bn', x)
  x = layers.dense(params['dense_0'], x)
  for l in range(1, sum(name.startswith('dense_') for name in params)):
    x = jnp.tanh(normalise(f'bn_{l}', x))
    if train:
      x = _dropout(jax.random.fold_in(key, l), x, dropout)
    x = layers.dense(params[f'dense_{l}'], x)
  return x, moments


def kernel_l2(tree: Any) -> jax.Array:
  """sum over the dense kernels of sum w^2 / 2 (TF's l2_regularizer without its scale)."""
  leaves = jax.tree_util.tree_leaves_with_path(tree)
  return sum(0.5 * jnp.sum(jnp.square(x)) for path, x in leaves
             if getattr(path[-1], 'key', None) == 'w')


def blend(stats: Any, moments_seq: list[Any], momentum: float) -> Any:
  """running <- (1 - m) running + m batch, for each set of moments in turn."""
  for moments in moments_seq:
    stats = layers.blend_running_stats(stats, moments, momentum)
  return stats


# ------------------------------------------------------------ the two players

def generate(params, x: jax.Array, eps: float) -> jax.Array:
  """G(x) in inference mode, (n, F) -> (n, d)."""
  return mlp_apply(params[GENERATOR], params[STATS][GENERATOR], x, eps)[0]


def user_item_lists(train_pairs: np.ndarray, num_users: int) -> dict[str, np.ndarray]:
  """Host side: the original sampler's tables.

  Returns:
    {'gar_train_users': (U_t,) users with training items,
     'gar_user_offsets': (U + 1,) user u's items are gar_user_items[offsets[u]:offsets[u + 1]],
     'gar_user_items': (n,) the training items grouped by user}, all int32.
  """
  users, items = train_pairs[:, 0], train_pairs[:, 1]
  order = np.argsort(users, kind='stable')
  counts = np.bincount(users, minlength=num_users)
  return {_USERS: np.flatnonzero(counts).astype(np.int32),
          _OFFSETS: np.concatenate([[0], np.cumsum(counts)]).astype(np.int32),
          _ITEMS: items[order].astype(np.int32)}


def original_batch(key: jax.Array, batch_size: int, tables: Tables) -> dict[str, jax.Array]:
  """The original's `bpr_neg_samp` rows, (B,) int32 each.

  A user uniform over the users with training items, a positive uniform over
  that user's training items, a negative uniform over the warm items (it may
  be one of the user's items: the original does not reject it).
  """
  user_key, positive_key, negative_key = jax.random.split(key, 3)
  extras = tables.extras
  train_users = extras[_USERS]
  users = train_users[jax.random.randint(user_key, (batch_size,), 0, train_users.shape[0])]
  start = extras[_OFFSETS][users]
  degree = extras[_OFFSETS][users + 1] - start
  positives = extras[_ITEMS][start + jax.random.randint(positive_key, (batch_size,), 0, degree)]
  negatives = tables.warm_items[jax.random.randint(negative_key, (batch_size,), 0,
                                                   tables.warm_items.shape[0])]
  return {'users': users, 'positives': positives, 'negatives': negatives}


def step_inputs(batch, tables: Tables) -> tuple[jax.Array, ...]:
  """(P_u (B, d), Q_i+ (B, d), Q_j (B, d), x_i+ (B, F)) of the mini-batch."""
  cf_items = tables.extras['cf_items']
  return (tables.extras['cf_users'][batch['users']], cf_items[batch['positives']],
          cf_items[batch['negatives']], content(tables, batch['positives']))


def recommender_loss(r_params, fake: jax.Array, users: jax.Array, real: jax.Array,
                     negative: jax.Array, key: jax.Array, hyper: Hyper):
  """L_R with R in training mode; `fake` = G(x_i+) comes in frozen.

  Args:
    users, real, negative, fake: (B, d) P_u, Q_i+, Q_j, G(x_i+).
  Returns:
    (L_R, (metrics, moments of R's towers)).
  """
  user_key, item_key = jax.random.split(key)
  num_rows = users.shape[0]
  # One call on [real; negative; fake] (users tiled to match): R's BN sees all three.
  user_out, user_moments = mlp_apply(r_params['user_tower'], None, jnp.tile(users, (3, 1)),
                                     hyper.bn_eps, user_key, hyper.r_dropout)
  item_out, item_moments = mlp_apply(r_params['item_tower'], None,
                                     jnp.concatenate([real, negative, fake]), hyper.bn_eps,
                                     item_key, hyper.r_dropout)
  scores = jnp.sum(user_out * item_out, axis=-1).reshape(3, num_rows)
  real_s, negative_s, fake_s = scores
  adversarial = jnp.mean(jax.nn.softplus(
      -(real_s - (1.0 - hyper.beta) * fake_s - hyper.beta * negative_s)))
  l2 = hyper.l2_weight * kernel_l2(r_params)
  total = adversarial + l2
  metrics = {'r_loss': total, 'r_adversarial': adversarial}
  return total, (metrics, {'user_tower': user_moments, 'item_tower': item_moments})


def generator_loss(g_params, r_params, r_stats, users: jax.Array, real: jax.Array, x: jax.Array,
                   key: jax.Array, hyper: Hyper):
  """L_G with G in training mode and R frozen in inference mode.

  Args:
    users, real: (B, d) P_u, Q_i+. x: (B, F) the positives' content.
  Returns:
    (L_G, (metrics, G's moments)).
  """
  fake, moments = mlp_apply(g_params, None, x, hyper.bn_eps, key, hyper.g_dropout)
  r_params, r_stats = jax.lax.stop_gradient((r_params, r_stats))
  user_out = mlp_apply(r_params['user_tower'], r_stats['user_tower'], users, hyper.bn_eps)[0]
  item_out = mlp_apply(r_params['item_tower'], r_stats['item_tower'],
                       jnp.concatenate([fake, real]), hyper.bn_eps)[0]
  fake_s, real_s = jnp.sum(jnp.tile(user_out, (2, 1)) * item_out, -1).reshape(2, -1)
  adversarial = jnp.mean(jax.nn.softplus(-(fake_s - real_s)))
  similarity = jnp.mean(jnp.abs(fake - real))
  l2 = hyper.l2_weight * kernel_l2(g_params)
  total = (1.0 - hyper.alpha) * adversarial + hyper.alpha * similarity + l2
  metrics = {'g_loss': total, 'g_adversarial': adversarial, 'similarity': similarity}
  return total, (metrics, moments)


def _g_pass_moments(r_params, fake: jax.Array, users: jax.Array, real: jax.Array,
                    key: jax.Array, hyper: Hyper) -> list[Any]:
  """Moments of the original D step's two G-loss passes through R: (u, fake), then (u, real)."""
  moments = []
  for n, items in enumerate((fake, real)):
    user_key, item_key = jax.random.split(jax.random.fold_in(key, n))
    moments.append({
        'user_tower': mlp_apply(r_params['user_tower'], None, users, hyper.bn_eps, user_key,
                                hyper.r_dropout)[1],
        'item_tower': mlp_apply(r_params['item_tower'], None, items, hyper.bn_eps, item_key,
                                hyper.r_dropout)[1]})
  return moments


def recommender_step(hyper: Hyper, params, opt_state, batch, key: jax.Array, tables: Tables):
  """R's half-step: one Adam step of L_R on R, then R's running statistics.

  `params` are the variables (the players' parameters and STATS); only
  params[RECOMMENDER], params[STATS][RECOMMENDER] and opt_state[RECOMMENDER] change.

  Returns:
    (params, opt_state, metrics).
  """
  users, real, negative, x = step_inputs(batch, tables)
  fake = jax.lax.stop_gradient(generate(params, x, hyper.bn_eps))
  loss_key, stats_key = jax.random.split(key)
  r_params = params[RECOMMENDER]
  grads, (metrics, moments) = jax.grad(recommender_loss, has_aux=True)(
      r_params, fake, users, real, negative, loss_key, hyper)
  updates, r_opt_state = optax.adam(hyper.learning_rate).update(
      grads, opt_state[RECOMMENDER], r_params)
  moments_seq = [moments]
  if hyper.all_r_passes_update_stats:
    # With R's pre-update weights: the TF update ops run before its optimiser.
    moments_seq += _g_pass_moments(r_params, fake, users, real, stats_key, hyper)
  stats = {**params[STATS],
           RECOMMENDER: blend(params[STATS][RECOMMENDER], moments_seq, hyper.bn_momentum)}
  params = {**params, RECOMMENDER: optax.apply_updates(r_params, updates), STATS: stats}
  return params, {**opt_state, RECOMMENDER: r_opt_state}, metrics


def generator_step(hyper: Hyper, params, opt_state, batch, key: jax.Array, tables: Tables):
  """G's half-step: one Adam step of L_G on G, then G's running statistics.

  `params` are the variables (as `recommender_step`'s); only params[GENERATOR],
  params[STATS][GENERATOR] and opt_state[GENERATOR] change.

  Returns:
    (params, opt_state, metrics).
  """
  users, real, _, x = step_inputs(batch, tables)
  g_params = params[GENERATOR]
  grads, (metrics, moments) = jax.grad(generator_loss, has_aux=True)(
      g_params, params[RECOMMENDER], params[STATS][RECOMMENDER], users, real, x, key, hyper)
  updates, g_opt_state = optax.adam(hyper.learning_rate).update(
      grads, opt_state[GENERATOR], g_params)
  stats = {**params[STATS],
           GENERATOR: blend(params[STATS][GENERATOR], [moments], hyper.bn_momentum)}
  params = {**params, GENERATOR: optax.apply_updates(g_params, updates), STATS: stats}
  return params, {**opt_state, GENERATOR: g_opt_state}, metrics


def two_player_adam(learning_rate: float) -> optax.GradientTransformation:
  """Adam per player: state {'generator': adam state, 'recommender': adam state}.

  `update` steps both players on their own states and gives zero updates to
  anything else in the tree. GAR's `Method.update` calls each player's Adam in
  its own half-step instead; this transform is what builds (and checkpoints)
  that state.
  """
  adam = optax.adam(learning_rate)

  def init(params):
    return {player: adam.init(params[player]) for player in PLAYERS}

  def update(grads, state, params=None):
    updates = jax.tree.map(jnp.zeros_like, grads)
    new_state = {}
    for player in PLAYERS:
      updates[player], new_state[player] = adam.update(
          grads[player], state[player], None if params is None else params[player])
    return updates, new_state

  return optax.GradientTransformation(init, update)


def embed(params, tables: Tables, eps: float) -> tuple[jax.Array, jax.Array]:
  """R's towers in inference mode: users t_U(P) (U, w); items t_I(Q or G(x) when new) (I, w)."""
  stats = params[STATS][RECOMMENDER]
  recommender = params[RECOMMENDER]
  users = mlp_apply(recommender['user_tower'], stats['user_tower'],
                    tables.extras['cf_users'], eps)[0]
  item_in = jnp.where(tables.is_new[:, None], generate(params, content(tables), eps),
                      tables.extras['cf_items'])
  items = mlp_apply(recommender['item_tower'], stats['item_tower'], item_in, eps)[0]
  return users, items


def make(config: ml_collections.ConfigDict, spec: DataSpec) -> Method:
  section = config.methods.gar
  if section.variant == 'coldrec':
    return coldrec.make(config, spec)
  d = int(config.model.embed_dim)  # The backbone's width: G's output, R's inputs.
  g_widths = tuple(int(h) for h in section.g_hidden) + (d,)
  r_widths = tuple(int(h) for h in section.r_layers)
  hyper = read_hyper(config)
  content_dim = sum(spec.feature_dims)
  original_sampler = section.sampler == 'original'

  def prepare(dataset, extras):
    # Small (one int32 per training pair): built for both samplers, so that
    # the tables have one structure whichever is chosen.
    return {**extras, **user_item_lists(dataset.train_pairs, dataset.num_users)}

  def step_batch(batch, key, tables):
    """The step's rows: the original sampler's (from `key`) or the shared sampler's."""
    if original_sampler:
      return original_batch(key, batch['users'].shape[0], tables)
    return batch

  def init(key):
    g_key, user_key, item_key = jax.random.split(key, 3)
    generator, g_stats = mlp_init(g_key, content_dim, g_widths, input_bn=False)
    user_tower, user_stats = mlp_init(user_key, d, r_widths, input_bn=True)
    item_tower, item_stats = mlp_init(item_key, d, r_widths, input_bn=True)
    return {GENERATOR: generator,
            RECOMMENDER: {'user_tower': user_tower, 'item_tower': item_tower},
            STATS: {GENERATOR: g_stats,
                    RECOMMENDER: {'user_tower': user_stats, 'item_tower': item_stats}}}

  def update(state, batch, step_input, tables):
    sample_key, r_key, g_key = jax.random.split(step_input, 3)
    batch = step_batch(batch, sample_key, tables)
    variables, opt_state, r_metrics = recommender_step(hyper, state.variables, state.opt_state,
                                                       batch, r_key, tables)
    variables, opt_state, g_metrics = generator_step(hyper, variables, opt_state, batch, g_key,
                                                     tables)
    metrics = {'loss': r_metrics['r_loss'], **r_metrics, **g_metrics}
    params, model_state = methods.split_variables(variables, (STATS,))
    return state.replace(step=state.step + 1, params=params, opt_state=opt_state,
                         model_state=model_state), metrics

  def loss(params, batch, step_input, tables):
    """L_R at `params`, with L_G's metrics beside it, each with its half-step's keys and modes."""
    sample_key, r_key, g_key = jax.random.split(step_input, 3)
    users, real, negative, x = step_inputs(step_batch(batch, sample_key, tables), tables)
    fake = jax.lax.stop_gradient(generate(params, x, hyper.bn_eps))
    r_value, (r_metrics, _) = recommender_loss(params[RECOMMENDER], fake, users, real, negative,
                                               jax.random.split(r_key)[0], hyper)
    g_value, (g_metrics, _) = generator_loss(params[GENERATOR], params[RECOMMENDER],
                                             params[STATS][RECOMMENDER], users, real, x, g_key,
                                             hyper)
    del g_value
    return r_value, {'loss': r_value, **r_metrics, **g_metrics}

  return Method(init=init, loss=loss, embed=functools.partial(embed, eps=hyper.bn_eps),
                optimizer=two_player_adam(hyper.learning_rate), non_trainable=(STATS,),
                update=update, prepare=prepare,
                log_keys=('g_loss', 'g_adversarial', 'similarity'))
