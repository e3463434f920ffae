"""MICRO (Zhang et al., IEEE TKDE 2022/2023; spec section 12), LightGCN variant.

Per modality m, an item-item kNN graph (cosine, k neighbours, the item
itself included, weights = similarities, normalised D^-1/2 S D^-1/2 with
D the row sums of the directed kNN matrix, as the official sparse code):

  fixed    S_m^0 from the raw features X^(m) (built once, in `prepare`);
  learned  S_m = (1 - lambda) norm(kNN(cos(T_m X^(m)))) + lambda S_m^0,
           T_m linear with bias and X^(m) a trainable copy of the features
           (stored as an offset from the data, zero at init).

Views H_m = S_m^L E (E the item-id table), attention fusion
w_m = softmax_m(w2' tanh(W1 H_m + b1)), h = sum_m w_m H_m; LightGCN (layer
mean) over the training graph with D^-1 (A + I) gives u_g, i_g; the item
vector is i_g + h / ||h||, the user vector u_g, the score their dot product.

Loss: BPR on the propagated vectors + decay (||u||^2 + ||i+||^2 + ||i-||^2) / (2B)
+ loss_ratio sum_m mean_i l_i^m, with the GRACE-style term over ALL items

  l_i^m = -log e^{c(H_mi, h_i)/tau}
                / (sum_{j != i} e^{c(H_mi, H_mj)/tau} + sum_j e^{c(H_mi, h_j)/tau}),

c the cosine (the official code subtracts the j = i term of the first sum).

The learned graph is rebuilt at the first step of every epoch, with
gradient (the only gradient T_m and X^(m) ever get), and reused, detached,
for the rest of the epoch: `update` does this with lax.cond on
step % steps_per_epoch (steps per epoch come from `prepare`). In between,
T_m and X^(m) get zero gradients and Adam moves them by its moments alone,
as torch 1.x's Adam did with the original's zeroed gradients. The epoch's
graph is the non-trainable variables' 'graph' (indices and normalised
weights, (M, I, k); the train state's model state, never seen by the
optimiser), so it is checkpointed and a resumed run repeats an uninterrupted
one. `embed` rebuilds it from the current parameters, as the official
evaluation does.
`Method.loss` is the loss of an epoch's first step (graph rebuilt).

Departures from the original:
- Missing modalities (spec 12.7, `isolate_missing`, default on): an item
  missing modality m keeps only its self-loop in m's fixed and learned
  graphs and is nobody's neighbour there, instead of joining a clique of
  identical imputed rows.
- New items' id rows are held at zero (E's rows are masked, so they get no
  gradient): a new item's vector is then h / ||h|| (its LightGCN output is
  its own, zero, row), built only from warm neighbours' id rows over the
  content graphs. In the original the row is a random init, moved only as a
  sampled negative (the shared sampler draws warm negatives by default) and
  as a neighbour; the contract of this library forbids a new item's own CF
  row. Warm items then get nothing from new neighbours either. New items
  still read WARM id rows (INFO.new_items_read_warm_rows), which the shared
  contract test, scrambling every item-id row, does not allow for.
- The kNN slot of the item itself is forced (ties at cosine 1, e.g. equal
  genre vectors, could otherwise push it out of torch.topk's k), with cosine
  1 even for a zero row (the original: NaN); a row whose degree is not
  positive gets D^-1/2 = 0 (the original: NaN when negative).
- Sampler: the shared one (each training pair once per epoch in shuffled
  batches, ceil(n/B) steps, warm negatives), not B distinct random users.
- Inputs: the library's features (imputed, L2-normalised per modality).

Memory: the kNN search and the contrastive term work on row blocks of the
I x I similarity matrix (chunk_rows rows), so the dense matrix never
exists; with several blocks the contrastive blocks are recomputed in the
backward pass. Peak memory grows as chunk_rows * I. For I = 50,000 items and
64-dim inputs at chunk_rows 1024, one kNN search needs 0.22 GB of
temporaries by XLA's memory analysis of the compiled search (the
(1024, 50000) float32 block is 0.20 GB of it), and running it on CPU grew
the process's peak RSS by 0.26 GB (25 s on the shared 2-core CPU); the value
and gradient of one modality's contrastive term need 1.08 GB of temporaries
(analysis only). `scripts/micro_memory.py` measures both.
"""


import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from milk_jax import methods
from milk_jax.data import sampling
from milk_jax.methods import DataSpec
from milk_jax.methods import Method
from milk_jax.methods import Tables
from milk_jax.methods import graphs
from milk_jax.methods import layers

INFO = methods.MethodInfo(
    display_name='MICRO',
    fields=('methods.micro.',),
    # api.Run refuses to serve items that arrive after training, with this reason.
    no_serving_reason=('a new item is a node of the kNN graphs built over the training '
                       'catalogue; placing items that arrive later in those graphs is not '
                       'implemented'),
    # New items' vectors aggregate WARM items' id rows over the content kNN graphs (by
    # design); they never read their own id row or another new item's.
    new_items_read_warm_rows=True)
GRAPH = 'graph'  # The variables' entry holding the epoch's learned graphs (not trained).
# Tables.extras entries made by `prepare`.
FIXED_INDICES = 'micro_fixed_indices'  # (M, I, k) int32.
FIXED_WEIGHTS = 'micro_fixed_weights'  # (M, I, k) float32, normalised.
PAIR_USERS = 'micro_pair_users'  # (n,) int32 training pairs, sorted by user.
PAIR_ITEMS = 'micro_pair_items'  # (n,) int32.
STEPS_PER_EPOCH = 'micro_steps_per_epoch'  # () int32.


def check_config(config: ml_collections.ConfigDict) -> None:
  section, require = methods.section_checker(config, 'micro')

  require(section.knn_k >= 1, 'knn_k', 'must be at least 1')
  require(0.0 <= section.lambda_coeff <= 1.0, 'lambda_coeff', 'must lie in [0, 1]')
  require(section.item_layers >= 1, 'item_layers', 'must be at least 1')
  require(section.ui_layers >= 0, 'ui_layers', 'must be non-negative')
  require(section.loss_ratio >= 0, 'loss_ratio', 'must be non-negative')
  require(section.temperature > 0, 'temperature', 'must be positive')
  require(section.decay >= 0, 'decay', 'must be non-negative')
  require(0.0 < section.lr_decay <= 1.0, 'lr_decay', 'must lie in (0, 1]')
  require(section.lr_decay_epochs > 0, 'lr_decay_epochs', 'must be positive')
  require(section.chunk_rows >= 1, 'chunk_rows', 'must be at least 1')


def knn(z: jax.Array, present: jax.Array, k: int,
        chunk_rows: int) -> tuple[jax.Array, jax.Array, jax.Array]:
  """Cosine kNN of every row, the row itself in slot 0, in row blocks (no gradient).

  The item's own cosine is taken as 1 (what it is for any non-zero row), so
  that a zero row (zero-imputed, say) still keeps its self-loop. A row not
  `present` keeps only itself; a column not present is nobody's neighbour.
  Slots left empty (absent rows, or fewer than k present items) point at the
  row itself with cosine 0 and valid False.

  Args:
    z: (I, F) float32. present: (I,) bool.
    k: neighbours per row, at most I.
  Returns:
    indices (I, k) int32, cosines (I, k) float32 (0 where not valid), valid (I, k) bool.
  """
  num_items = z.shape[0]
  zn = layers.unit_rows(jax.lax.stop_gradient(z.astype(jnp.float32)))
  columns = jnp.arange(num_items, dtype=jnp.int32)

  def block(rows):
    a = zn[rows]  # (C, F)
    sims = a @ zn.T  # (C, I): the only matrix of size chunk_rows x I.
    allowed = present[rows][:, None] & present[None, :]
    is_self = rows[:, None] == columns[None, :]
    # +inf forces the item itself into its k (cosine ties at 1 could push it out).
    keyed = jnp.where(is_self, jnp.inf, jnp.where(allowed, sims, -jnp.inf))
    top, indices = jax.lax.top_k(keyed, k)
    valid = top > -jnp.inf
    cosines = jnp.where(valid, top, 0.0).at[:, 0].set(1.0)
    return jnp.where(valid, indices, rows[:, None]), cosines, valid

  blocks = graphs.row_blocks(num_items, chunk_rows)
  outputs = jax.lax.map(block, blocks)
  return tuple(x.reshape((-1, k))[:num_items] for x in outputs)


def fixed_graphs(features, availability: np.ndarray, k: int, chunk_rows: int,
                 isolate: bool) -> tuple[np.ndarray, np.ndarray]:
  """S_m^0 of every modality from the raw features: (M, I, k) indices and normalised weights."""
  indices, weights = [], []
  for m, x in enumerate(features):
    present = availability[:, m] if isolate else np.ones(x.shape[0], bool)
    idx, cosines, _ = jax.jit(knn, static_argnums=(2, 3))(
        jnp.asarray(x, jnp.float32), jnp.asarray(present), k, chunk_rows)
    indices.append(np.asarray(idx))
    weights.append(np.asarray(graphs.sym_normalise(idx, cosines)))
  return np.stack(indices), np.stack(weights)


def modality_inputs(params, tables: Tables) -> list[jax.Array]:
  """T_m X^(m) per modality, X^(m) = the data's features + the trained offset: (I, d) each."""
  outputs = []
  for m, x in enumerate(tables.features):
    name = f'modality_{m}'
    trained = x.astype(jnp.float32) + params['feature_offsets'][name]
    outputs.append(layers.dense(params['projections'][name], trained))
  return outputs


def learned_graphs(params, tables: Tables, k: int, chunk_rows: int,
                   isolate: bool) -> dict[str, jax.Array]:
  """norm(kNN(cos(T_m X^(m)))) per modality, differentiable in the weights.

  The neighbours are chosen without gradient; their cosines are recomputed
  from the projections, so the gradient is that of the official top-k values.

  Returns:
    {'indices': (M, I, k) int32, 'weights': (M, I, k) float32}.
  """
  indices, weights = [], []
  for m, z in enumerate(modality_inputs(params, tables)):
    present = (tables.availability[:, m] if isolate
               else jnp.ones(z.shape[0], bool))
    idx, _, valid = knn(z, present, k, chunk_rows)
    zn = layers.unit_rows(z)
    cosines = jnp.where(valid, jnp.einsum('id,ikd->ik', zn, zn[idx]), 0.0)
    cosines = cosines.at[:, 0].set(1.0)  # The self-loop, as in `knn` (its gradient is 0).
    indices.append(idx)
    weights.append(graphs.sym_normalise(idx, cosines))
  return {'indices': jnp.stack(indices), 'weights': jnp.stack(weights)}


def lightgcn(users: jax.Array, items: jax.Array, pair_users: jax.Array, pair_items: jax.Array,
             num_layers: int) -> tuple[jax.Array, jax.Array]:
  """Layer mean of LightGCN with D^-1 (A + I) over the user-item training graph.

  A node's next vector is (its own + the sum of its neighbours') / (degree + 1):
  an item without training pairs keeps its own vector at every layer.

  Args:
    users: (U, d). items: (I, d). pair_users, pair_items: (n,) int32, sorted by user.
  Returns:
    (u_g (U, d), i_g (I, d)).
  """
  num_users, num_items = users.shape[0], items.shape[0]
  ones = jnp.ones(pair_users.shape, jnp.float32)
  user_scale = 1.0 / (jax.ops.segment_sum(ones, pair_users, num_users,
                                          indices_are_sorted=True) + 1.0)
  item_scale = 1.0 / (jax.ops.segment_sum(ones, pair_items, num_items) + 1.0)
  user_sum, item_sum = users, items
  for _ in range(num_layers):
    users, items = (
        (users + jax.ops.segment_sum(items[pair_items], pair_users, num_users,
                                     indices_are_sorted=True)) * user_scale[:, None],
        (items + jax.ops.segment_sum(users[pair_users], pair_items, num_items))
        * item_scale[:, None])
    user_sum, item_sum = user_sum + users, item_sum + items
  return user_sum / (num_layers + 1), item_sum / (num_layers + 1)


def forward(params, graph: dict[str, jax.Array], tables: Tables, lambda_coeff: float,
            item_layers: int, ui_layers: int):
  """MICRO's vectors given the learned graphs.

  Returns:
    users (U, d), items (I, d) = i_g + h/||h||, views (M, I, d) = H_m, fused h (I, d).
  """
  # New items' id rows are zero: they reach no vector, and get no gradient.
  ids = jnp.where(tables.is_new[:, None], 0.0, params['item_embedding'])
  fixed_indices, fixed_weights = tables.extras[FIXED_INDICES], tables.extras[FIXED_WEIGHTS]
  views = []
  for m in range(fixed_indices.shape[0]):
    h = ids
    for _ in range(item_layers):
      h = ((1.0 - lambda_coeff) * graphs.propagate(graph['indices'][m], graph['weights'][m], h)
           + lambda_coeff * graphs.propagate(fixed_indices[m], fixed_weights[m], h))
    views.append(h)
  views = jnp.stack(views)  # (M, I, d)
  query = params['query']
  scores = layers.dense(query['out'], jnp.tanh(layers.dense(query['hidden'], views)))
  attention = jax.nn.softmax(scores, axis=0)  # (M, I, 1): over modalities, per item.
  fused = jnp.sum(attention * views, axis=0)
  users, items = lightgcn(params['user_embedding'], ids, tables.extras[PAIR_USERS],
                          tables.extras[PAIR_ITEMS], ui_layers)
  return users, items + layers.unit_rows(fused), views, fused


def contrastive(views: jax.Array, fused: jax.Array, temperature: float,
                chunk_rows: int) -> jax.Array:
  """mean_i l_i for one modality (module docstring), over all items, in row blocks.

  With several blocks, each block's (C, I) scores are recomputed in the
  backward pass, so memory stays O(chunk_rows * I). views, fused: (I, d) -> scalar.
  """
  num_items = views.shape[0]
  a_all, b_all = layers.unit_rows(views), layers.unit_rows(fused)
  columns = jnp.arange(num_items, dtype=jnp.int32)
  blocks = graphs.row_blocks(num_items, chunk_rows)

  def block(rows):
    a = a_all[rows]  # (C, d)
    within = jnp.where(rows[:, None] == columns[None, :], -jnp.inf, a @ a_all.T) / temperature
    between = (a @ b_all.T) / temperature
    positive = jnp.sum(a * b_all[rows], axis=-1) / temperature
    return jax.nn.logsumexp(jnp.concatenate([within, between], axis=1), axis=1) - positive

  if blocks.shape[0] > 1:  # Static: one block holds nothing worth recomputing.
    block = jax.checkpoint(block)
  losses = jax.lax.map(block, blocks).reshape(-1)[:num_items]
  return jnp.mean(losses)


def objective(params, graph: dict[str, jax.Array], batch, tables: Tables, hyper: dict):
  """(loss, metrics) of one step given the learned graphs (spec 12.3)."""
  users, items, views, fused = forward(params, graph, tables, hyper['lambda_coeff'],
                                       hyper['item_layers'], hyper['ui_layers'])
  u = users[batch['users']]
  positives, negatives = items[batch['positives']], items[batch['negatives']]
  task = layers.bpr(jnp.sum(u * positives, -1), jnp.sum(u * negatives, -1))
  decay = hyper['decay'] * 0.5 * (jnp.sum(u * u) + jnp.sum(positives * positives)
                                  + jnp.sum(negatives * negatives)) / u.shape[0]
  cl = sum(contrastive(views[m], fused, hyper['temperature'], hyper['chunk_rows'])
           for m in range(views.shape[0]))
  total = task + decay + hyper['loss_ratio'] * cl
  return total, {'loss': total, 'bpr': task, 'decay': decay, 'contrastive': cl}


def make(config: ml_collections.ConfigDict, spec: DataSpec) -> Method:
  section = config.methods.micro
  d = int(config.model.embed_dim)
  k = min(int(section.knn_k), spec.num_items)  # lax.top_k needs k <= I.
  isolate = bool(section.isolate_missing)
  chunk_rows = int(section.chunk_rows)
  lr_decay = float(section.lr_decay)
  lr_decay_epochs = float(section.lr_decay_epochs)
  batch_size = int(config.train.batch_size)
  num_modalities = len(spec.feature_dims)
  hyper = {'lambda_coeff': float(section.lambda_coeff), 'item_layers': int(section.item_layers),
           'ui_layers': int(section.ui_layers), 'loss_ratio': float(section.loss_ratio),
           'temperature': float(section.temperature), 'decay': float(section.decay),
           'chunk_rows': chunk_rows}
  optimizer = optax.adam(float(config.train.learning_rate))

  def prepare(dataset, extras):
    fixed_indices, fixed_weights = fixed_graphs(dataset.features, dataset.availability, k,
                                                chunk_rows, isolate)
    pair_users, pair_items = graphs.training_pairs(dataset)
    steps = sampling.steps_per_epoch(len(dataset.train_pairs), batch_size)  # The samplers' epoch.
    return {**extras, FIXED_INDICES: fixed_indices, FIXED_WEIGHTS: fixed_weights,
            PAIR_USERS: pair_users, PAIR_ITEMS: pair_items,
            STEPS_PER_EPOCH: np.asarray(steps, np.int32)}

  def init(key):
    keys = jax.random.split(key, 4 + num_modalities)
    names = [f'modality_{m}' for m in range(num_modalities)]
    return {
        'user_embedding': layers.xavier_uniform(keys[0], (spec.num_users, d)),
        'item_embedding': layers.xavier_uniform(keys[1], (spec.num_items, d)),
        'feature_offsets': {n: jnp.zeros((spec.num_items, f), jnp.float32)
                            for n, f in zip(names, spec.feature_dims)},
        'projections': {n: layers.torch_linear(keys[4 + m], f, d)
                        for m, (n, f) in enumerate(zip(names, spec.feature_dims))},
        'query': {'hidden': layers.torch_linear(keys[2], d, d),
                  'out': layers.torch_linear(keys[3], d, 1, bias=False)},
        # Rebuilt at every epoch's first step before it is read.
        GRAPH: {'indices': jnp.zeros((num_modalities, spec.num_items, k), jnp.int32),
                'weights': jnp.zeros((num_modalities, spec.num_items, k), jnp.float32)},
    }

  def trained_part(params):
    return {name: value for name, value in params.items() if name != GRAPH}

  def rebuilt_objective(trained, batch, tables):
    graph = learned_graphs(trained, tables, k, chunk_rows, isolate)
    value, metrics = objective(trained, graph, batch, tables, hyper)
    return value, (metrics, jax.lax.stop_gradient(graph))

  def loss(params, batch, step_input, tables):
    del step_input
    value, (metrics, _) = rebuilt_objective(trained_part(params), batch, tables)
    return value, metrics

  def update(state, batch, step_input, tables):
    del step_input  # Nothing random beyond the shared sampler's batch.
    params, epoch_graph = state.params, state.model_state[GRAPH]
    steps_per_epoch = tables.extras[STEPS_PER_EPOCH]

    def with_new_graph(trained):
      grads, (metrics, graph) = jax.grad(rebuilt_objective, has_aux=True)(trained, batch, tables)
      return grads, metrics, graph

    def with_epoch_graph(trained):
      grads, metrics = jax.grad(objective, has_aux=True)(trained, epoch_graph, batch, tables,
                                                         hyper)
      return grads, metrics, epoch_graph

    grads, metrics, graph = jax.lax.cond(state.step % steps_per_epoch == 0, with_new_graph,
                                         with_epoch_graph, params)
    updates, opt_state = optimizer.update(grads, state.opt_state, params)
    # The original's LambdaLR, epoch e at lr * lr_decay^(e / lr_decay_epochs): Adam's step
    # is proportional to its learning rate.
    epoch = (state.step // steps_per_epoch).astype(jnp.float32)
    scale = lr_decay ** (epoch / lr_decay_epochs)
    trained = optax.apply_updates(params, jax.tree.map(lambda u: scale * u, updates))
    return state.replace(step=state.step + 1, params=trained, opt_state=opt_state,
                         model_state={**state.model_state, GRAPH: graph}), metrics

  def embed(params, tables):
    graph = learned_graphs(params, tables, k, chunk_rows, isolate)
    users, items, _, _ = forward(params, graph, tables, hyper['lambda_coeff'],
                                 hyper['item_layers'], hyper['ui_layers'])
    return users, items

  return Method(init=init, loss=loss, embed=embed, optimizer=optimizer, prepare=prepare,
                non_trainable=(GRAPH,), update=update, log_keys=('bpr', 'decay', 'contrastive'),
                serve_extras=None)
