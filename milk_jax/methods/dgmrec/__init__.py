"""DGMRec (Kim et al., SIGIR 2025; spec section 14), from ptkjw1997/DGMRec @cd8f00d.

"Disentangling and Generating Modalities for Recommendation in Missing Modality
Scenarios". Read from src/models/dgmrec.py, src/utils/mi_estimator.py and
src/common/trainer.py; where the spec's summary and the code differ, the code is followed
(noted with "code:" below).

Model (model.py). Per modality m (M >= 1; the original is written for image/text and, in a
second path, image/text/audio):
  X_m       the raw features, trained (code: nn.Embedding.from_pretrained(freeze=False) is in
            the optimiser, so Adam moves them and the reconstruction pulls them towards the
            decoder; here the data + a trained offset, zero at init);
  g_m       = sigmoid(W_s tanh(W_m X_m)), W_s shared; s_m = sigmoid(W'_m X_m);
  phi_m     = mean_{u in N(i)} tanh(W_f^m e_u), zero for items without training pairs;
            code: the specific part is filtered by the same W_f^m (s_filter_trans and the
            user_*_prefer tables are never read, so they are not created here);
  g~_m, s~_m = (S_m)^L (phi_m * g_m), (S_m)^L (phi_m * s_m) over modality m's kNN graph;
            users get the mean over their training items;
  vectors   user = u_cf + (mean_m g~_u^m + sum_m s~_u^m) / (M + 1), the same for items,
            u_cf, i_cf LightGCN (3 layers, D^-1/2 A D^-1/2, layer mean); score = dot.

Loss (model.objective): BPR + 1e-5 (|u_cf| + |i_cf+| + |i_cf-|)/B + reg sum_m |g~+s~ of the
positives|/B (un-squared norms) + recon sum_m MSE(dec_m(perturb([g~;s~] detached)), X_m)
+ sampler sum_m CLUB(s~_m, g~_m) over all items + inter_modal [InfoNCE(g_a, g_b) over the
batch's distinct items with every modality, + InfoNCE of the users' g~] + intra_modal
[InfoNCE(u_cf, i_cf+) at intra_modal_temp, InfoNCE(sum g~_u, sum g~+) at inter_modal_temp
(code), InfoNCE(s~_u^m, s~+^m) per m] + align_bm [InfoNCE(i_cf+, sum g~+) + InfoNCE(u_cf,
sum g~_u)] + additive [MSE(s_m, gen_m(perturb(phi_m))) on items with m,
MSE(g~_m, trans_m(perturb(other g~))) on items with every modality], the additive terms
only when some item misses a modality (code: `if self.missing_modal`).
perturb(x) = x + sign(x) unit_row(U[0,1)) 0.1. The CLUB networks (mu and tanh-logvar MLPs,
hidden 32) are not trained by this loss: at each epoch's start they take club_steps Adam
(1e-4) steps on -log q(g_m | s_m) of club_batch random items' unfiltered parts (code: the
trainer builds its optimiser before init_mi_estimator). They and their Adam state are model
state (never seen by the main optimiser). With sampler = 0 they are skipped (code).

M modalities. Translators: trans_m reads the other modalities' general parts concatenated in
cyclic order after m (M = 2: image2text / text2image; M = 3: the original's three-modality
translators exactly). Inter-modal pairs: (0, 1) for M = 2, (m, m+1 mod M) for M >= 3, as the
original's item terms; its three-modality path uses only (image, text) for the users' term
and aligns the audio general (not specific) parts in intra_modal: here the users' term takes
every pair and intra_modal the specific parts of every modality. M = 1: no translators or
inter-modal terms, and a missing modality's regenerated general part is zero.

Graphs (graphs.py). Modality m's kNN graph: cosine similarities, top knn_k per row (the item
itself by its cosine 1), normalised D^-1/2 S D^-1/2 with D the row sums of the directed
graph. Two per modality, built from the data's features in `prepare`:
  inference graph  the full graph, then the items missing m cut out (self-loop 1);
  training graph   new items isolated before the top-k; items missing m are NOT isolated
                   (code: in new-item mode the training graph replaces the first one).
Training reads the training graph, `embed` the inference graph, so a new item's vector is
its content neighbours' filtered parts (its own phi is 0).

Schedule (own `update`; epochs from step // steps_per_epoch):
  epoch start  CLUB steps; the missing raw features of old items regenerated on the training
               graph and written into X; every refresh_every epochs, those items' rows of the
               training graph blended: row <- avg_lambda row(kNN of the current X, no
               isolation, normalised) + (1 - avg_lambda) row;
  epoch end    (the original: before each validation) the missing raw features of new items
               regenerated on the inference graph; every refresh_every epochs, with
               infer_adj_update, their inference-graph rows blended the same way;
  every step   one Adam step of the loss at lr * lr_decay^(epoch / lr_decay_epochs).

Departures:
- Graphs are padded row lists of graph_slots * knn_k entries, not sparse/dense I x I
  matrices: a blended row keeps its heaviest entries past that width (exact below it).
  kNN ties (identical mean-imputed rows) break as lax.top_k does, not as torch.topk.
- New items' id rows are zero (the library's contract forbids a new item's own CF row): the
  original's i_cf for a new item is its random, barely trained row / 4.
- The epoch-end work runs every epoch, not only before validation passes (the same when
  train.eval_every = 1); the counter of refreshes counts epochs, as the original's.
- Protocol: the shared sampler (each training pair once per epoch, warm negatives), batch
  size, evaluation and early stopping; the library's features (imputed, L2-normalised per
  modality) instead of raw features with zero/mean imputation. interModalDist is read but
  never used by the original and has no field. The additive MSE of a batch without an
  observed item is 0 (the original: NaN).
- Items that arrive after training are not served (INFO.no_serving_reason).
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
from milk_jax.methods import graphs as shared_graphs
from milk_jax.methods.dgmrec import graphs
from milk_jax.methods.dgmrec import losses
from milk_jax.methods.dgmrec import model

INFO = methods.MethodInfo(
    display_name='DGMRec',
    fields=('methods.dgmrec.',),
    no_serving_reason=('a new item is a node of the modality kNN graphs built over the training '
                       'catalogue, and its vector is its neighbours\' preference-filtered parts; '
                       'placing items that arrive later in those graphs is not implemented'))
STATE = 'dgmrec_state'  # The non-trained variables: refreshed graphs, CLUB nets and their Adam.


def check_config(config: ml_collections.ConfigDict) -> None:
  section, require = methods.section_checker(config, 'dgmrec')
  for field in ('knn_k', 'refresh_every', 'club_hidden', 'club_batch', 'graph_slots',
                'chunk_rows'):
    require(section[field] >= 1, field, 'must be at least 1')
  for field in ('mm_layers', 'ui_layers', 'club_steps'):
    require(section[field] >= 0, field, 'must be non-negative')
  for field in ('inter_modal', 'intra_modal', 'align_bm', 'recon', 'reg', 'id_reg', 'sampler',
                'additive', 'perturb_scale'):
    require(section[field] >= 0, field, 'must be non-negative')
  for field in ('inter_modal_temp', 'intra_modal_temp', 'align_bm_temp', 'club_learning_rate',
                'lr_decay_epochs'):
    require(section[field] > 0, field, 'must be positive')
  require(section.club_hidden >= 2, 'club_hidden', 'must be at least 2 (layers are half as wide)')
  require(0.0 <= section.avg_lambda <= 1.0, 'avg_lambda', 'must lie in [0, 1]')
  require(0.0 < section.lr_decay <= 1.0, 'lr_decay', 'must lie in (0, 1]')


def read_hyper(config: ml_collections.ConfigDict, spec: DataSpec) -> model.Hyper:
  section = config.methods.dgmrec
  k = min(int(section.knn_k), spec.num_items)  # lax.top_k needs k <= I.
  return model.Hyper(
      num_modalities=len(spec.feature_dims), knn_k=k,
      width=min(k * int(section.graph_slots), spec.num_items),
      mm_layers=int(section.mm_layers), ui_layers=int(section.ui_layers),
      inter_modal=float(section.inter_modal), inter_modal_temp=float(section.inter_modal_temp),
      intra_modal=float(section.intra_modal), intra_modal_temp=float(section.intra_modal_temp),
      align_bm=float(section.align_bm), align_bm_temp=float(section.align_bm_temp),
      recon=float(section.recon), reg=float(section.reg), id_reg=float(section.id_reg),
      sampler=float(section.sampler), additive=float(section.additive),
      perturb_scale=float(section.perturb_scale), chunk_rows=int(section.chunk_rows))


def first_graphs(features, availability: np.ndarray, is_new: np.ndarray,
                 hyper: model.Hyper) -> dict[str, dict[str, np.ndarray]]:
  """The training and inference graphs of every modality from the data's features:
  {'train'|'infer': {'indices', 'weights'} (M, I, W)} (module docstring)."""
  build = jax.jit(graphs.knn_graph, static_argnums=(3, 4))
  out = {'train': {'indices': [], 'weights': []}, 'infer': {'indices': [], 'weights': []}}
  nobody = np.zeros(is_new.shape, bool)
  for m, x in enumerate(features):
    x = jnp.asarray(x, jnp.float32)
    for kind, before, after in (('train', is_new, nobody),
                                ('infer', nobody, ~availability[:, m])):
      idx, sims = build(x, jnp.asarray(before), jnp.asarray(after), hyper.knn_k, hyper.chunk_rows)
      idx, weights = graphs.pad_rows(idx, shared_graphs.sym_normalise(idx, sims), hyper.width)
      out[kind]['indices'].append(np.asarray(idx))
      out[kind]['weights'].append(np.asarray(weights))
  return {kind: {k: np.stack(v) for k, v in parts.items()} for kind, parts in out.items()}


def make(config: ml_collections.ConfigDict, spec: DataSpec) -> Method:
  section = config.methods.dgmrec
  hyper = read_hyper(config, spec)
  d = int(config.model.embed_dim)
  count = hyper.num_modalities
  batch_size = int(config.train.batch_size)
  avg_lambda = float(section.avg_lambda)
  refresh_every = int(section.refresh_every)
  infer_adj_update = bool(section.infer_adj_update)
  lr_decay, lr_decay_epochs = float(section.lr_decay), float(section.lr_decay_epochs)
  club_steps, club_batch = int(section.club_steps), int(section.club_batch)
  use_club = hyper.sampler > 0
  optimizer = optax.adam(float(config.train.learning_rate))
  club_optimizer = optax.adam(float(section.club_learning_rate))

  def prepare(dataset, extras):
    is_new = np.ones(dataset.num_items, bool)
    is_new[dataset.warm_items] = False
    pair_users, pair_items = shared_graphs.training_pairs(dataset)
    steps = sampling.steps_per_epoch(len(dataset.train_pairs), batch_size)
    return {**extras, model.PAIR_USERS: pair_users, model.PAIR_ITEMS: pair_items,
            model.STEPS_PER_EPOCH: np.asarray(steps, np.int32),
            model.ANY_MISSING: np.asarray(float(not dataset.availability.all()), np.float32),
            **{f'{model.FIRST_GRAPHS}_{kind}_{part}': array
               for kind, parts in first_graphs(dataset.features, dataset.availability, is_new,
                                               hyper).items()
               for part, array in parts.items()}}

  def init(key):
    params_key, club_key = jax.random.split(key)
    variables = model.init_params(params_key, hyper, spec.num_users, spec.num_items,
                                  spec.feature_dims, d)
    shape = (count, spec.num_items, hyper.width)
    state = {'graphs': {kind: {'indices': jnp.zeros(shape, jnp.int32),
                               'weights': jnp.zeros(shape, jnp.float32)}
                        for kind in ('train', 'infer')},
             # False until the first update copies `prepare`'s graphs in.
             'ready': jnp.asarray(False)}
    if use_club:
      club = {model.name(m): losses.club_init(k, d, int(section.club_hidden))
              for m, k in enumerate(jax.random.split(club_key, count))}
      state['club'] = club
      state['club_opt'] = club_optimizer.init(club)
    return {**variables, STATE: state}

  def current_graphs(state, tables):
    """The refreshed graphs, or `prepare`'s before the first update (or without a state)."""
    first = {kind: {part: tables.extras[f'{model.FIRST_GRAPHS}_{kind}_{part}']
                    for part in ('indices', 'weights')} for kind in ('train', 'infer')}
    if state is None:
      return first
    return jax.tree.map(lambda mine, built: jnp.where(state['ready'], mine, built),
                        state['graphs'], first)

  def split(variables):
    params = {k: v for k, v in variables.items() if k != STATE}
    return params, variables.get(STATE)

  def loss(variables, batch, step_input, tables):
    params, state = split(variables)
    graph = current_graphs(state, tables)['train']
    club = state['club'] if use_club else None
    return model.objective(params, club, graph, batch, step_input, tables, hyper)

  def regenerate(params, graph, tables, key, rows_of):
    """params with the offsets of rows_of(m) (I,) bool set to the regenerated features."""
    outputs = model.generated_features(params, graph, tables, hyper, key)
    offsets = dict(params['feature_offsets'])
    for m, x in enumerate(outputs):
      name = model.name(m)
      target = x - tables.features[m].astype(jnp.float32)
      offsets[name] = jnp.where(rows_of(m)[:, None], target, offsets[name])
    return {**params, 'feature_offsets': offsets}

  def refreshed(params, graph, tables, rows_of):
    """update_adj: rows_of(m)'s rows blended with the kNN graph of the current features."""
    out = {'indices': [], 'weights': []}
    for m, x in enumerate(model.raw_features(params, tables)):
      nobody = jnp.zeros(x.shape[0], bool)
      idx, sims = graphs.knn_graph(x, nobody, nobody, hyper.knn_k, hyper.chunk_rows)
      row = graphs.blend_rows({'indices': graph['indices'][m], 'weights': graph['weights'][m]},
                              idx, shared_graphs.sym_normalise(idx, sims), rows_of(m), avg_lambda,
                              hyper.chunk_rows)
      out['indices'].append(row['indices'])
      out['weights'].append(row['weights'])
    return {k: jnp.stack(v) for k, v in out.items()}

  def club_training(params, state, tables, key):
    """club_steps Adam steps of the CLUB nets on random items' unfiltered parts."""
    general, specific = model.encode(params, model.raw_features(params, tables))
    general, specific = jax.lax.stop_gradient((general, specific))
    num_items = general[0].shape[0]
    club, opt_state = state['club'], state['club_opt']
    def learning_loss(club, rows):
      return -sum(losses.club_log_likelihood(club[model.name(m)], specific[m][rows],
                                             general[m][rows]) for m in range(count))
    for step in range(club_steps):
      rows = jax.random.permutation(jax.random.fold_in(key, step), num_items)
      rows = rows[:min(club_batch, num_items)]
      grads = jax.grad(learning_loss)(club, rows)
      updates, opt_state = club_optimizer.update(grads, opt_state, club)
      club = optax.apply_updates(club, updates)
    return {**state, 'club': club, 'club_opt': opt_state}

  def missing_rows(tables, new_items: bool):
    """rows_of(m): the items (new or old) missing modality m."""
    side = tables.is_new if new_items else ~tables.is_new
    return lambda m: side & ~tables.availability[:, m]

  def epoch_start(params, state, tables, key, refresh):
    if use_club:
      state = club_training(params, state, tables, jax.random.fold_in(key, 0))
    train_graph = state['graphs']['train']
    rows_of = missing_rows(tables, new_items=False)
    params = regenerate(params, train_graph, tables, jax.random.fold_in(key, 1), rows_of)
    train_graph = jax.lax.cond(refresh, lambda: refreshed(params, train_graph, tables, rows_of),
                               lambda: train_graph)
    return params, {**state, 'graphs': {**state['graphs'], 'train': train_graph}}

  def epoch_end(params, state, tables, key, refresh):
    infer_graph = state['graphs']['infer']
    rows_of = missing_rows(tables, new_items=True)
    params = regenerate(params, infer_graph, tables, key, rows_of)
    if infer_adj_update:
      infer_graph = jax.lax.cond(refresh,
                                 lambda: refreshed(params, infer_graph, tables, rows_of),
                                 lambda: infer_graph)
    return params, {**state, 'graphs': {**state['graphs'], 'infer': infer_graph}}

  def update(train_state, batch, step_input, tables):
    params, state = train_state.params, train_state.model_state[STATE]
    state = {**state, 'graphs': current_graphs(state, tables), 'ready': jnp.asarray(True)}
    steps_per_epoch = tables.extras[model.STEPS_PER_EPOCH]
    step = train_state.step
    epoch = step // steps_per_epoch
    refresh = (epoch + 1) % refresh_every == 0  # The original's counter, after its increment.
    start_key, loss_key, end_key = jax.random.split(step_input, 3)

    params, state = jax.lax.cond(
        step % steps_per_epoch == 0,
        lambda p, s: epoch_start(p, s, tables, start_key, refresh), lambda p, s: (p, s),
        params, state)
    club = state['club'] if use_club else None
    grads, metrics = jax.grad(model.objective, has_aux=True)(
        params, club, state['graphs']['train'], batch, loss_key, tables, hyper)
    updates, opt_state = optimizer.update(grads, train_state.opt_state, params)
    scale = lr_decay ** (epoch.astype(jnp.float32) / lr_decay_epochs)
    params = optax.apply_updates(params, jax.tree.map(lambda u: scale * u, updates))
    params, state = jax.lax.cond(
        step % steps_per_epoch == steps_per_epoch - 1,
        lambda p, s: epoch_end(p, s, tables, end_key, refresh), lambda p, s: (p, s),
        params, state)
    return train_state.replace(step=step + 1, params=params, opt_state=opt_state,
                               model_state={**train_state.model_state, STATE: state}), metrics

  def embed(variables, tables):
    params, state = split(variables)
    f = model.forward(params, current_graphs(state, tables)['infer'], tables, hyper)
    return f['users'], f['items']

  return Method(init=init, loss=loss, embed=embed, optimizer=optimizer, prepare=prepare,
                non_trainable=(STATE,), update=update,
                log_keys=('bpr', 'recon', 'club', 'additive'), serve_extras=None)
