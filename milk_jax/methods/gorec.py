"""GoRec (Bai et al., ACM MM 2023; spec section 11): a conditional VAE that generates CF vectors.

The warm backbone's item vectors e_i (BPR-MF, frozen) are the data; the
content c_i = n([x_i^1; ...; x_i^M]) (the concatenation, L2-normalised as a
whole, as the original) the condition:

  encoder   h = tanh(BN(W_e [c; e])) (no bias), mu = W_mu h + b, log s^2 = W_s h + b;
  prior     mu_c = W_mc c + b, log s_c^2 = W_sc c + b  (content only);
  samples   z = mu + eps * s, z_c = mu_c + eps' * s_c;
  decoder   e^ = L_k(... L_1(tanh(BN(W_d [drop(c); z]))))  (no bias in W_d, L_l plain
            linear d -> d layers, `decoder_layers` of them; dropout on the content only);

  L = mean (e^ - e)^2 + uni_coeff log mean_{j<k} exp(-2 ||n(mu_j) - n(mu_k)||^2)
      + kl_coeff KL,

KL being, by default (`kl_form='softmax'`), ColdRec's well-defined reading of
the original's KLDivLoss(z, z_c): mean over the B x d elements of
p_c (log p_c - log q) with p_c = softmax(z_c), q = softmax(z) per row; or
(`kl_form='gaussian'`) the analytic KL(N(mu, s^2) || N(mu_c, s_c^2)), also
averaged over the B x d elements. Users keep the backbone's vectors.

Inference (the original's, for every item, warm or new): the posterior MEAN
mu of the encoder fed [c_i; m_k(i)], where m_k is the mean backbone vector of
the warm items of item i's content cluster k(i), decoded with c_i (running
BatchNorm statistics, no dropout). No item reads its own CF row there; new
items' zero rows never enter a cluster mean.

Clusters (`prepare`, host numpy, once): k-means (k-means++ start with a fixed
seed, Lloyd iterations) on the content c_i of the warm items
(`cluster_fit='warm'`) or of all items ('all'); every item, new ones
included, is labelled by its nearest centroid. BatchNorm keeps running
statistics (torch's momentum 0.1, eps 1e-5) in the non-trainable variables'
'batch_stats' (never seen by the optimiser), blended with the batch moments
that the loss returns by the shared update.

Departures from the original:
- Batches: the original visits the warm items in shuffled batches of 256,
  each once per epoch. Here the warm items form a stream of passes, each a
  fresh permutation (keyed by the pass number), cut into consecutive batches
  of `item_batch_size`; step s takes batch s of the stream (`batch_positions`,
  on device, a function of the step number only, so resume is exact): every
  warm item once per pass, uniformly, as the original (ColdRec instead trains
  on the sampler's positives, i.e. popularity-weighted). The shared loop's
  triples only set the number of steps per epoch, so one epoch here is about
  n_pairs / 2048 * 256 / I_w passes (~7.8 on MovieLens-100K), not one.
- Clusters: the original reads `cluster_label.npy` (how it was made is
  unverified; it covers new items, so most plausibly it comes from content) and
  averages the CF rows of every item of a cluster; here the labels come from
  k-means on content, and only warm items' rows enter the means (new items
  have no CF row). A cluster without warm items takes the mean of all warm
  items. Items reach their cluster's mean only through `PRIOR`, so no item's
  vector reads its own CF row, warm or new.
- KL: the original's KLDivLoss(z, z_c) on raw samples is ill-defined; the
  default is ColdRec's softmax form, the Gaussian KL an option.
- Content: the library's features arrive L2-normalised per modality
  (`data.normalize`) before the concatenation is normalised again (the original normalises the raw
  concatenation only; spec 11.7 prefers per-modality normalisation).
- Widths: the hidden and latent widths are d (the original's 64, hard-coded).
"""

import functools
import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from milk_jax import methods
from milk_jax.methods import DataSpec
from milk_jax.methods import Method
from milk_jax.methods import Tables
from milk_jax.methods import content
from milk_jax.methods import layers

INFO = methods.MethodInfo(
    display_name='GoRec',
    backbone='bprmf',
    fields=('methods.gorec.',))
KL_FORMS = ('softmax', 'gaussian')
CLUSTER_FITS = ('warm', 'all')
PRIOR = 'gorec_cluster_means'  # extras: (I, d) the mean warm CF vector of each item's cluster.
LABELS = 'gorec_clusters'  # extras: (I,) int32 each item's content cluster.
CENTROIDS = 'gorec_centroids'  # extras: (k, F) the content k-means centroids.
CLUSTER_TABLE = 'gorec_cluster_table'  # extras: (k, d) each cluster's mean warm CF vector.


def check_config(config: ml_collections.ConfigDict) -> None:
  section, require = methods.section_checker(config, 'gorec')

  require(section.uni_coeff >= 0, 'uni_coeff', 'must be non-negative')
  require(section.kl_coeff >= 0, 'kl_coeff', 'must be non-negative')
  require(section.kl_form in KL_FORMS, 'kl_form', f'must be one of {KL_FORMS}')
  require(0.0 <= section.dropout < 1.0, 'dropout', 'must be in [0, 1)')
  require(section.decoder_layers >= 0, 'decoder_layers', 'must be non-negative')
  require(section.item_batch_size >= 2, 'item_batch_size',
          'must be at least 2 (the uniformity term needs pairs)')
  require(section.num_clusters >= 1, 'num_clusters', 'must be at least 1')
  require(section.cluster_fit in CLUSTER_FITS, 'cluster_fit', f'must be one of {CLUSTER_FITS}')
  require(section.kmeans_iters >= 1, 'kmeans_iters', 'must be at least 1')
  require(0.0 < section.bn_momentum <= 1.0, 'bn_momentum', 'must be in (0, 1]')
  require(section.bn_eps > 0, 'bn_eps', 'must be positive')


# ------------------------------------------------------------------ clusters (host)

def _squared_distances(x: np.ndarray, centroids: np.ndarray) -> np.ndarray:
  """(n, k) ||x_i - c_j||^2, clipped at 0."""
  d = (np.sum(x * x, 1)[:, None] - 2.0 * x @ centroids.T + np.sum(centroids * centroids, 1)[None])
  return np.maximum(d, 0.0)


def kmeans(x: np.ndarray, k: int, seed: int, max_iters: int) -> np.ndarray:
  """Centroids (min(k, n), F) of k-means on the rows of x (n, F); deterministic given seed.

  k-means++ start, then Lloyd iterations until no label changes (at most
  max_iters). A centroid left without points moves to the point farthest from
  its own centroid.
  """
  x = np.asarray(x, np.float64)
  n = x.shape[0]
  k = min(k, n)
  rng = np.random.default_rng(seed)
  centroids = np.empty((k, x.shape[1]))
  centroids[0] = x[rng.integers(n)]
  closest = _squared_distances(x, centroids[:1])[:, 0]
  for j in range(1, k):
    total = closest.sum()
    pick = rng.integers(n) if total <= 0 else rng.choice(n, p=closest / total)
    centroids[j] = x[pick]
    closest = np.minimum(closest, _squared_distances(x, centroids[j:j + 1])[:, 0])
  labels = None
  for _ in range(max_iters):
    distances = _squared_distances(x, centroids)
    new_labels = distances.argmin(1)
    if labels is not None and np.array_equal(new_labels, labels):
      break
    labels = new_labels
    counts = np.bincount(labels, minlength=k)
    sums = np.zeros_like(centroids)
    np.add.at(sums, labels, x)
    filled = counts > 0
    centroids[filled] = sums[filled] / counts[filled, None]
    spread = distances[np.arange(n), labels]
    for j in np.flatnonzero(~filled):
      far = int(spread.argmax())
      centroids[j] = x[far]
      spread[far] = 0.0
  return centroids


def joint_content_np(features) -> np.ndarray:
  """(I, F) float64: the modalities concatenated, each row L2-normalised (as `joint_content`)."""
  x = np.concatenate([np.asarray(f, np.float64) for f in features], axis=1)
  return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), layers.NORM_EPS)


def fit_centroids(x: np.ndarray, warm_items: np.ndarray, k: int, fit: str, seed: int,
                  max_iters: int) -> np.ndarray:
  """(k, F) k-means centroids of the content of the `fit` items ('warm' or 'all')."""
  return kmeans(x[warm_items] if fit == 'warm' else x, k, seed, max_iters)


def nearest_centroid(x: np.ndarray, centroids: np.ndarray) -> np.ndarray:
  """(n,) int32 label of each content row: also how items that arrive later get one."""
  return _squared_distances(x, centroids).argmin(1).astype(np.int32)


def content_clusters(x: np.ndarray, warm_items: np.ndarray, k: int, fit: str, seed: int,
                     max_iters: int) -> np.ndarray:
  """(I,) int32: each item's nearest centroid of k-means on the content of `fit` items."""
  return nearest_centroid(x, fit_centroids(x, warm_items, k, fit, seed, max_iters))


def cluster_table(cf_items: np.ndarray, labels: np.ndarray, warm_items: np.ndarray,
                  k: int | None = None) -> np.ndarray:
  """(k, d) float64: the mean backbone vector of the WARM items of each cluster.

  New items' rows (zero, or anything else) never enter a mean. A cluster
  without warm items (possible with cluster_fit='all') gets the mean of all
  warm items.
  """
  cf = np.asarray(cf_items, np.float64)
  k = int(labels.max()) + 1 if k is None else k
  counts = np.bincount(labels[warm_items], minlength=k)
  sums = np.zeros((k, cf.shape[1]))
  np.add.at(sums, labels[warm_items], cf[warm_items])
  return np.where(counts[:, None] > 0, sums / np.maximum(counts, 1)[:, None],
                  cf[warm_items].mean(0))


def cluster_means(cf_items: np.ndarray, labels: np.ndarray, warm_items: np.ndarray) -> np.ndarray:
  """(I, d) float32: for each item, its cluster's row of `cluster_table`."""
  return cluster_table(cf_items, labels, warm_items)[labels].astype(np.float32)


# ------------------------------------------------------------------ model

def joint_content(tables: Tables, items: jax.Array | None = None) -> jax.Array:
  """(n, F) content rows concatenated and L2-normalised as a whole (the original's input)."""
  return layers.normalise(content(tables, items))


def _bn_init(width: int):
  return ({'scale': jnp.ones((width,)), 'offset': jnp.zeros((width,))},
          {'mean': jnp.zeros((width,)), 'var': jnp.ones((width,))})


def init_params(key: jax.Array, content_dim: int, d: int, decoder_layers: int):
  """GoRec's parameters (latent and hidden widths = d, as the original's 64) and BN statistics."""
  keys = jax.random.split(key, 6 + decoder_layers)
  encoder_bn, encoder_stats = _bn_init(d)
  decoder_bn, decoder_stats = _bn_init(d)
  decoder = {'hidden': layers.torch_linear(keys[4], content_dim + d, d, bias=False),
             'bn': decoder_bn}
  for l in range(decoder_layers):
    decoder[f'layer_{l}'] = layers.torch_linear(keys[6 + l], d, d)
  return {'encoder': {'hidden': layers.torch_linear(keys[0], content_dim + d, d, bias=False),
                      'bn': encoder_bn, 'mean': layers.torch_linear(keys[1], d, d),
                      'logvar': layers.torch_linear(keys[2], d, d)},
          'prior': {'mean': layers.torch_linear(keys[3], content_dim, d),
                    'logvar': layers.torch_linear(keys[5], content_dim, d)},
          'decoder': decoder,
          layers.STATS: {'encoder': encoder_stats, 'decoder': decoder_stats}}


def _hidden(block, x: jax.Array, eps: float, stats=None):
  """tanh(BN(x W)): batch statistics (returning them) when stats is None, else the running ones."""
  h = layers.dense(block['hidden'], x)
  if stats is None:
    h, moments = layers.batchnorm_train(block['bn'], h, eps)
  else:
    h, moments = layers.batchnorm_infer(block['bn'], stats, h, eps), None
  return jnp.tanh(h), moments


def posterior(params, c: jax.Array, e: jax.Array, eps: float, stats=None):
  """q(z | e, c): (mu (n, d), log variance (n, d), BN moments or None)."""
  encoder = params['encoder']
  h, moments = _hidden(encoder, jnp.concatenate([c, e], -1), eps, stats)
  return layers.dense(encoder['mean'], h), layers.dense(encoder['logvar'], h), moments


def content_prior(params, c: jax.Array) -> tuple[jax.Array, jax.Array]:
  """p(z | c): (mu_c (n, d), log variance (n, d)) from the content alone."""
  return layers.dense(params['prior']['mean'], c), layers.dense(params['prior']['logvar'], c)


def decode(params, c: jax.Array, z: jax.Array, eps: float, stats=None):
  """e^ (n, d) from [c; z]: tanh(BN(W_d [c; z])) then the plain linear layers; BN moments."""
  decoder = params['decoder']
  h, moments = _hidden(decoder, jnp.concatenate([c, z], -1), eps, stats)
  for l in range(sum(k.startswith('layer_') for k in decoder)):
    h = layers.dense(decoder[f'layer_{l}'], h)
  return h, moments


def uniformity(x: jax.Array) -> jax.Array:
  """log mean_{j<k} exp(-2 ||n(x_j) - n(x_k)||^2) over the rows of x (n, d), n >= 2."""
  unit = layers.normalise(x)
  gram = unit @ unit.T
  norms = jnp.diag(gram)
  squared = jnp.maximum(norms[:, None] + norms[None] - 2.0 * gram, 0.0)
  n = x.shape[0]
  pairs = jnp.triu(jnp.ones((n, n), bool), k=1)
  return jax.nn.logsumexp(-2.0 * squared, b=pairs) - math.log(n * (n - 1) / 2)


def softmax_kl(z: jax.Array, z_c: jax.Array) -> jax.Array:
  """mean over the (n, d) elements of p_c (log p_c - log q), p_c = softmax(z_c), q = softmax(z)."""
  log_p = jax.nn.log_softmax(z_c, axis=-1)
  return jnp.mean(jnp.exp(log_p) * (log_p - jax.nn.log_softmax(z, axis=-1)))


def gaussian_kl(mu, logvar, mu_c, logvar_c) -> jax.Array:
  """mean over the (n, d) elements of KL(N(mu, e^logvar) || N(mu_c, e^logvar_c))."""
  return jnp.mean(0.5 * (logvar_c - logvar
                         + (jnp.exp(logvar) + jnp.square(mu - mu_c)) * jnp.exp(-logvar_c) - 1.0))


def step_draws(key: jax.Array, num_items: int, d: int, content_dim: int, dropout: float):
  """The step's noise: eps, eps' (n, d) standard normal; the content's dropout scale (n, F)
  (0 for a dropped element, 1 / (1 - p) for a kept one, torch's inverted dropout)."""
  noise_key, prior_key, drop_key = jax.random.split(key, 3)
  noise = jax.random.normal(noise_key, (num_items, d))
  noise_c = jax.random.normal(prior_key, (num_items, d))
  keep = jax.random.bernoulli(drop_key, 1.0 - dropout, (num_items, content_dim))
  return noise, noise_c, keep.astype(jnp.float32) / (1.0 - dropout)


def item_loss(params, items: jax.Array, noise: jax.Array, noise_c: jax.Array,
              content_scale: jax.Array, tables: Tables, eps: float, uni_coeff: float,
              kl_coeff: float, kl_form: str):
  """GoRec's loss on a batch of warm items (training-mode BN).

  Args:
    items: (n,) warm item ids; noise, noise_c: (n, d); content_scale: (n, F)
      multiplies the decoder's content (dropout).
  Returns:
    (loss, (metrics, batch moments shaped like variables['batch_stats'])).
  """
  c = joint_content(tables, items)
  e = tables.extras['cf_items'][items]
  mu, logvar, encoder_moments = posterior(params, c, e, eps)
  mu_c, logvar_c = content_prior(params, c)
  z = mu + noise * jnp.exp(0.5 * logvar)
  z_c = mu_c + noise_c * jnp.exp(0.5 * logvar_c)
  e_hat, decoder_moments = decode(params, c * content_scale, z, eps)
  reconstruction = jnp.mean(jnp.square(e_hat - e))
  uni = uniformity(mu)
  kl = softmax_kl(z, z_c) if kl_form == 'softmax' else gaussian_kl(mu, logvar, mu_c, logvar_c)
  total = reconstruction + uni_coeff * uni + kl_coeff * kl
  metrics = {'loss': total, 'reconstruction': reconstruction, 'uniformity': uni, 'kl': kl}
  return total, (metrics, {'encoder': encoder_moments, 'decoder': decoder_moments})


def embed(params, tables: Tables, eps: float) -> tuple[jax.Array, jax.Array]:
  """Users: backbone vectors (U, d). Items (I, d): decode(mu(c_i, cluster mean), c_i), every
  item."""
  stats = params[layers.STATS]
  c = joint_content(tables)
  mu, _, _ = posterior(params, c, tables.extras[PRIOR], eps, stats['encoder'])
  items, _ = decode(params, c, mu, eps, stats['decoder'])
  return tables.extras['cf_users'], items


def batch_positions(pass_key: jax.Array, first_step: jax.Array, num_steps: int,
                    batch_size: int, num_warm: int) -> jax.Array:
  """(num_steps, batch_size) int32 indices into `warm_items` for steps first_step, ...

  The warm items as an endless stream of passes, pass p a permutation keyed
  by fold_in(pass_key, p), cut into consecutive batches: every warm item once
  per pass, as the original's shuffled epochs; a batch may straddle two passes.
  """
  first = jnp.asarray(first_step, jnp.int32) * batch_size
  positions = first + jnp.arange(num_steps * batch_size, dtype=jnp.int32)
  first_pass = first // num_warm
  num_passes = -(-num_steps * batch_size // num_warm) + 1  # Static: enough for any offset.
  passes = first_pass + jnp.arange(num_passes, dtype=jnp.int32)
  perms = jax.vmap(lambda p: jax.random.permutation(jax.random.fold_in(pass_key, p),
                                                    num_warm))(passes)
  picked = perms[positions // num_warm - first_pass, positions % num_warm]
  return picked.reshape(num_steps, batch_size).astype(jnp.int32)


def make(config: ml_collections.ConfigDict, spec: DataSpec) -> Method:
  section = config.methods.gorec
  d = int(config.model.embed_dim)  # The backbone is trained at this width too.
  uni_coeff, kl_coeff = float(section.uni_coeff), float(section.kl_coeff)
  kl_form = str(section.kl_form)
  dropout = float(section.dropout)
  decoder_layers = int(section.decoder_layers)
  item_batch_size = min(int(section.item_batch_size), spec.num_warm_items)
  num_clusters = int(section.num_clusters)
  cluster_fit = str(section.cluster_fit)
  kmeans_seed, kmeans_iters = int(section.kmeans_seed), int(section.kmeans_iters)
  momentum, eps = float(section.bn_momentum), float(section.bn_eps)
  content_dim = sum(spec.feature_dims)
  optimizer = layers.make_optimizer('adam', float(config.train.learning_rate))

  def prepare(dataset, extras):
    warm = np.asarray(dataset.warm_items)
    x = joint_content_np(dataset.features)
    centroids = fit_centroids(x, warm, num_clusters, cluster_fit, kmeans_seed, kmeans_iters)
    labels = nearest_centroid(x, centroids)
    table = cluster_table(extras['cf_items'], labels, warm, len(centroids))
    # The centroids and per-cluster means are kept so that items arriving later get a prior.
    return {**extras, LABELS: labels, PRIOR: table[labels].astype(np.float32),
            CENTROIDS: centroids, CLUSTER_TABLE: table.astype(np.float32)}

  def serve_extras(extras, features, availability):
    del availability  # Imputed rows stand in for missing ones, as in training.
    labels = nearest_centroid(joint_content_np(features), extras[CENTROIDS])
    return {**extras, LABELS: labels, PRIOR: extras[CLUSTER_TABLE][labels]}

  def init(key):
    return init_params(key, content_dim, d, decoder_layers)

  def step_inputs(train_key, first_step, num_steps):
    # The passes' permutations get their own stream, apart from the per-step keys.
    _, pass_key = jax.random.split(train_key)
    return {'key': methods.step_keys(train_key, first_step, num_steps),
            'positions': batch_positions(pass_key, first_step, num_steps, item_batch_size,
                                         spec.num_warm_items)}

  def loss(variables, batch, step_input, tables):
    del batch  # The triples only set the number of steps: GoRec trains on warm items.
    items = tables.warm_items[step_input['positions']]
    draws = step_draws(step_input['key'], item_batch_size, d, content_dim, dropout)
    return item_loss(variables, items, *draws, tables, eps, uni_coeff, kl_coeff, kl_form)

  return Method(init=init, loss=loss, embed=functools.partial(embed, eps=eps),
                step_inputs=step_inputs, optimizer=optimizer, prepare=prepare,
                non_trainable=(layers.STATS,),
                update_model_state=layers.batch_stats_update(momentum),
                log_keys=('reconstruction', 'uniformity', 'kl'), serve_extras=serve_extras)
