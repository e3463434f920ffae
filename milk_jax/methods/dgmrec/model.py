"""DGMRec's parameters, forward pass, objective and generation of missing raw features.

Modalities are named 'modality_<m>'. Per modality m: the trained raw features
X_m = data + offset (the original trains its feature tables, nn.Embedding with
freeze=False), a general encoder g_m = sigmoid(W_s tanh(W_m X_m)) with W_s shared, a specific
encoder s_m = sigmoid(W'_m X_m), the preference filter phi_m, a decoder of [g; s], a generator
of s from phi_m and a translator of g from the other modalities.
"""

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from milk_jax.methods import Tables
from milk_jax.methods import graphs as shared_graphs
from milk_jax.methods import layers
from milk_jax.methods.dgmrec import graphs
from milk_jax.methods.dgmrec import losses

# Tables.extras entries made by `prepare` (package __init__).
PAIR_USERS = 'dgmrec_pair_users'  # (n,) int32 training pairs, sorted by user.
PAIR_ITEMS = 'dgmrec_pair_items'  # (n,) int32.
STEPS_PER_EPOCH = 'dgmrec_steps_per_epoch'  # () int32.
ANY_MISSING = 'dgmrec_any_missing'  # () float32: 1 when some item misses a modality.
# Prefix of `prepare`'s graphs: <prefix>_<train|infer>_<indices|weights>, (M, I, W) each.
FIRST_GRAPHS = 'dgmrec_first_graphs'


class Hyper(NamedTuple):
  """The section's numbers, read once by `make`."""
  num_modalities: int
  knn_k: int
  width: int  # Entries per graph row.
  mm_layers: int
  ui_layers: int
  inter_modal: float
  inter_modal_temp: float
  intra_modal: float
  intra_modal_temp: float
  align_bm: float
  align_bm_temp: float
  recon: float
  reg: float
  id_reg: float
  sampler: float
  additive: float
  perturb_scale: float
  chunk_rows: int


def name(m: int) -> str:
  return f'modality_{m}'


def linear(key: jax.Array, fan_in: int, fan_out: int, bias: bool = True) -> dict:
  """nn.Linear then xavier_uniform_ on its weight, as the original initialises every layer."""
  w_key, b_key = jax.random.split(key)
  layer = layers.torch_linear(b_key, fan_in, fan_out, bias)
  return {**layer, 'w': layers.xavier_uniform(w_key, (fan_in, fan_out))}


def mlp(net: dict, x: jax.Array) -> jax.Array:
  """Linear-Tanh-Linear (the generators and translators)."""
  return layers.dense(net['out'], jnp.tanh(layers.dense(net['hidden'], x)))


def translator_inputs(general: list[jax.Array], m: int) -> jax.Array:
  """The other modalities' general parts, concatenated in cyclic order after m.

  M = 2: the other one (image2text, text2image); M = 3: [m+1, m+2], as the original's
  three-modality translators ([audio, image] -> text, [text, audio] -> image, ...).
  """
  count = len(general)
  return jnp.concatenate([general[(m + j) % count] for j in range(1, count)], axis=-1)


def inter_modal_pairs(count: int) -> list[tuple[int, int]]:
  """(m, m+1 mod M) for M >= 3, (0, 1) for M = 2, none for M = 1: the original's pairs."""
  if count < 2:
    return []
  return [(0, 1)] if count == 2 else [(m, (m + 1) % count) for m in range(count)]


def init_params(key: jax.Array, hyper: Hyper, num_users: int, num_items: int,
                feature_dims: tuple[int, ...], d: int) -> dict[str, Any]:
  """The trained variables."""
  count = hyper.num_modalities
  keys = iter(jax.random.split(key, 4 + 9 * count))
  params = {
      'user_embedding': layers.xavier_uniform(next(keys), (num_users, d)),
      'item_embedding': layers.xavier_uniform(next(keys), (num_items, d)),
      'shared_encoder': linear(next(keys), d, d),
      'feature_offsets': {name(m): jnp.zeros((num_items, f), jnp.float32)
                          for m, f in enumerate(feature_dims)},
      'general_encoders': {}, 'specific_encoders': {}, 'filters': {}, 'decoders': {},
      'generators': {}, 'translators': {}}
  for m, f in enumerate(feature_dims):
    params['general_encoders'][name(m)] = linear(next(keys), f, d)
    params['specific_encoders'][name(m)] = linear(next(keys), f, d)
    params['filters'][name(m)] = linear(next(keys), d, d, bias=False)
    params['decoders'][name(m)] = linear(next(keys), 2 * d, f)
    params['generators'][name(m)] = {'hidden': linear(next(keys), d, d),
                                     'out': linear(next(keys), d, d)}
    if count > 1:
      params['translators'][name(m)] = {'hidden': linear(next(keys), (count - 1) * d, d),
                                        'out': linear(next(keys), d, d)}
  if count == 1:
    del params['translators']
  return params


def raw_features(params, tables: Tables) -> list[jax.Array]:
  """X_m = the data's features + the trained offsets, (I, F_m) each."""
  return [f.astype(jnp.float32) + params['feature_offsets'][name(m)]
          for m, f in enumerate(tables.features)]


def encode(params, features: list[jax.Array]) -> tuple[list[jax.Array], list[jax.Array]]:
  """mge: general g_m = sigmoid(W_s tanh(W_m X_m)), specific s_m = sigmoid(W'_m X_m)."""
  general = [jax.nn.sigmoid(layers.dense(params['shared_encoder'], jnp.tanh(
      layers.dense(params['general_encoders'][name(m)], x)))) for m, x in enumerate(features)]
  specific = [jax.nn.sigmoid(layers.dense(params['specific_encoders'][name(m)], x))
              for m, x in enumerate(features)]
  return general, specific


class Structure(NamedTuple):
  """The user-item training graph, as the forward pass reads it."""
  pair_users: jax.Array
  pair_items: jax.Array
  user_degree: jax.Array
  item_degree: jax.Array


def structure(tables: Tables, num_users: int, num_items: int) -> Structure:
  pair_users, pair_items = tables.extras[PAIR_USERS], tables.extras[PAIR_ITEMS]
  return Structure(pair_users, pair_items,
                   *graphs.degrees(pair_users, pair_items, num_users, num_items))


def preference_filters(params, s: Structure, count: int) -> list[jax.Array]:
  """phi_m = mean_{u in N(i)} tanh(W_f^m e_u), (I, d) each; 0 for items without pairs.

  The original's specific parts use the general filter's W_f^m too (its *_s_filter_trans
  layers are never read).
  """
  return [graphs.item_mean_of_users(
      jnp.tanh(layers.dense(params['filters'][name(m)], params['user_embedding'])),
      s.pair_users, s.pair_items, s.item_degree) for m in range(count)]


def spread(graph: dict[str, jax.Array], m: int, x: jax.Array, num_layers: int) -> jax.Array:
  """mm_layers propagations of (I, d) rows over modality m's graph."""
  for _ in range(num_layers):
    x = shared_graphs.propagate(graph['indices'][m], graph['weights'][m], x)
  return x


def forward(params, graph: dict[str, jax.Array], tables: Tables, hyper: Hyper) -> dict:
  """Every representation the objective and `embed` read, on `graph` (training or inference).

  Returns a dict: 'users' (U, d), 'items' (I, d) (the fused vectors), 'u_cf', 'i_cf', 'features',
  'general_raw', 'specific_raw' (mge), 'filters', and per modality lists 'general',
  'specific' (filtered and propagated, items) and 'user_general', 'user_specific'.
  """
  num_users, num_items = params['user_embedding'].shape[0], params['item_embedding'].shape[0]
  s = structure(tables, num_users, num_items)
  count = hyper.num_modalities
  features = raw_features(params, tables)
  general_raw, specific_raw = encode(params, features)
  filters = preference_filters(params, s, count)
  general = [spread(graph, m, filters[m] * general_raw[m], hyper.mm_layers) for m in range(count)]
  specific = [spread(graph, m, filters[m] * specific_raw[m], hyper.mm_layers)
              for m in range(count)]
  to_users = lambda x: graphs.user_mean_of_items(x, s.pair_users, s.pair_items, s.user_degree)
  user_general, user_specific = [to_users(x) for x in general], [to_users(x) for x in specific]
  # New items' id rows are zero: the contract forbids a new item's own CF row.
  ids = jnp.where(tables.is_new[:, None], 0.0, params['item_embedding'])
  u_cf, i_cf = graphs.lightgcn(params['user_embedding'], ids, s.pair_users, s.pair_items,
                               s.user_degree, s.item_degree, hyper.ui_layers)
  def fuse(cf, gen, spec):
    return cf + (sum(gen) / count + sum(spec)) / (count + 1)
  return {'users': fuse(u_cf, user_general, user_specific), 'items': fuse(i_cf, general, specific),
          'u_cf': u_cf, 'i_cf': i_cf, 'features': features, 'general_raw': general_raw,
          'specific_raw': specific_raw, 'filters': filters, 'general': general,
          'specific': specific, 'user_general': user_general, 'user_specific': user_specific}


def objective(params, club: dict | None, graph: dict[str, jax.Array], batch, key: jax.Array,
              tables: Tables, hyper: Hyper) -> tuple[jax.Array, dict[str, jax.Array]]:
  """calculate_loss on the training graph: (total, metrics). `club` (per modality) is read
  without gradient; None when sampler = 0 (the original then skips the term)."""
  f = forward(params, graph, tables, hyper)
  count = hyper.num_modalities
  users, positives, negatives = batch['users'], batch['positives'], batch['negatives']
  keys = jax.random.split(key, 3 * count + 1)

  # The batch's distinct items, as torch.unique(cat(pos, neg)) in the original.
  items = jnp.concatenate([positives, negatives])
  distinct = ~jnp.any(jnp.tril(items[:, None] == items[None, :], -1), axis=1)
  observed = tables.availability[items]  # (2B, M)
  all_observed = distinct & jnp.all(observed, axis=1)

  pairs = inter_modal_pairs(count)
  inter = sum((losses.info_nce(f['general_raw'][a][items], f['general_raw'][b][items],
                               hyper.inter_modal_temp, all_observed)
               + losses.info_nce(f['user_general'][a][users], f['user_general'][b][users],
                                 hyper.inter_modal_temp)) for a, b in pairs) if pairs else 0.0

  additive = 0.0
  for m in range(count):
    generated = mlp(params['generators'][name(m)],
                    losses.perturb(f['filters'][m][items], keys[m], hyper.perturb_scale))
    additive += losses.masked_mse(f['specific_raw'][m][items], generated,
                                  distinct & observed[:, m])
    if count > 1:
      source = translator_inputs([g[items] for g in f['general']], m)
      translated = mlp(params['translators'][name(m)],
                       losses.perturb(source, keys[count + m], hyper.perturb_scale))
      additive += losses.masked_mse(f['general'][m][items], translated, all_observed)
  # The original adds these terms only on data with missing modalities.
  additive = additive * tables.extras[ANY_MISSING]

  sampler = 0.0
  if club is not None:
    club = jax.lax.stop_gradient(club)
    num_items = f['items'].shape[0]
    for m in range(count):
      shuffle = jax.random.permutation(jax.random.fold_in(keys[-1], m), num_items)
      sampler += losses.club_upper_bound(club[name(m)], f['specific'][m], f['general'][m],
                                         shuffle)

  u_cf, i_cf = f['u_cf'][users], f['i_cf'][positives]
  general_users = sum(g[users] for g in f['user_general'])
  general_items = sum(g[positives] for g in f['general'])
  intra = (losses.info_nce(u_cf, i_cf, hyper.intra_modal_temp)
           + losses.info_nce(general_users, general_items, hyper.inter_modal_temp)
           + sum(losses.info_nce(f['user_specific'][m][users], f['specific'][m][positives],
                                 hyper.intra_modal_temp) for m in range(count)))
  align = (losses.info_nce(i_cf, general_items, hyper.align_bm_temp)
           + losses.info_nce(u_cf, general_users, hyper.align_bm_temp))

  u = f['users'][users]
  task = layers.bpr(jnp.sum(u * f['items'][positives], -1), jnp.sum(u * f['items'][negatives], -1))
  reg = (hyper.id_reg * layers.batch_l2(u_cf, i_cf, f['i_cf'][negatives])
         + hyper.reg * sum(layers.batch_l2((f['general'][m] + f['specific'][m])[positives])
                           for m in range(count)))

  recon = 0.0
  for m in range(count):
    parts = jax.lax.stop_gradient(jnp.concatenate([f['general'][m], f['specific'][m]], -1))
    decoded = layers.dense(params['decoders'][name(m)],
                           losses.perturb(parts, keys[2 * count + m], hyper.perturb_scale))
    recon += jnp.mean(jnp.square(decoded - f['features'][m]))

  total = (task + reg + hyper.recon * recon + hyper.sampler * sampler + hyper.inter_modal * inter
           + hyper.intra_modal * intra + hyper.align_bm * align + hyper.additive * additive)
  return total, {'loss': total, 'bpr': task, 'reg': reg, 'recon': recon, 'club': sampler,
                 'inter': inter, 'intra': intra, 'align': align, 'additive': additive}


def generated_features(params, graph: dict[str, jax.Array], tables: Tables, hyper: Hyper,
                       key: jax.Array) -> list[jax.Array]:
  """generate_missing_modal: every item's regenerated raw features, (I, F_m) per modality.

  The general part is translated from the other modalities' unfiltered general parts, the
  specific part generated from the preference filter, both propagated on `graph`, then
  decoded from their perturbed concatenation. With one modality there is nothing to
  translate from: the general part is zero. No gradient.
  """
  params = jax.lax.stop_gradient(params)
  count = hyper.num_modalities
  num_users, num_items = params['user_embedding'].shape[0], params['item_embedding'].shape[0]
  general_raw, _ = encode(params, raw_features(params, tables))
  filters = preference_filters(params, structure(tables, num_users, num_items), count)
  outputs = []
  for m in range(count):
    if count > 1:
      general = mlp(params['translators'][name(m)], translator_inputs(general_raw, m))
    else:
      general = jnp.zeros_like(general_raw[m])
    general = spread(graph, m, general, hyper.mm_layers)
    specific = spread(graph, m, mlp(params['generators'][name(m)], filters[m]), hyper.mm_layers)
    parts = losses.perturb(jnp.concatenate([general, specific], -1),
                           jax.random.fold_in(key, m), hyper.perturb_scale)
    outputs.append(layers.dense(params['decoders'][name(m)], parts))
  return outputs
