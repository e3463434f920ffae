"""DGMRec's loss terms: in-batch InfoNCE, the sampled CLUB bound and its networks' likelihood,
the perturbation, masked MSE (src/models/dgmrec.py, src/utils/mi_estimator.py)."""

import jax
import jax.numpy as jnp

from milk_jax.methods import layers


def info_nce(view1: jax.Array, view2: jax.Array, temperature: float,
             mask: jax.Array | None = None) -> jax.Array:
  """InfoNCE_v2: mean_i -log(e^{c_ii/t} / sum_j e^{c_ij/t}), c the cosine of unit rows.

  With `mask` (n,) bool, only the masked rows and columns take part (the original indexes
  the batch's items with one modality set or another); no masked row gives 0.
  view1, view2: (n, d) -> scalar.
  """
  a, b = layers.unit_rows(view1), layers.unit_rows(view2)
  logits = (a @ b.T) / temperature
  positive = jnp.sum(a * b, axis=-1) / temperature
  if mask is None:
    return jnp.mean(jax.nn.logsumexp(logits, axis=1) - positive)
  per_row = jax.nn.logsumexp(jnp.where(mask[None, :], logits, -jnp.inf), axis=1) - positive
  count = jnp.sum(mask)
  return jnp.sum(jnp.where(mask, per_row, 0.0)) / jnp.maximum(count, 1)


def perturb(x: jax.Array, key: jax.Array, scale: float) -> jax.Array:
  """x + sign(x) * unit_rows(noise) * scale, noise ~ U[0, 1) of x's shape."""
  noise = jax.random.uniform(key, x.shape, x.dtype)
  return x + jnp.sign(x) * layers.unit_rows(noise) * scale


def masked_mse(a: jax.Array, b: jax.Array, mask: jax.Array) -> jax.Array:
  """F.mse_loss over the masked rows: mean of (a - b)^2 over those rows' entries (0 if none).

  a, b: (n, d). mask: (n,) bool.
  """
  squares = jnp.sum(jnp.square(a - b), axis=-1)
  count = jnp.sum(mask) * a.shape[-1]
  return jnp.sum(jnp.where(mask, squares, 0.0)) / jnp.maximum(count, 1)


def club_init(key: jax.Array, dim: int, hidden: int) -> dict:
  """CLUBSample(dim, dim, hidden): two torch-default Linear(dim, hidden/2)-ReLU-Linear nets."""
  keys = jax.random.split(key, 4)
  half = hidden // 2
  return {'mu': {'hidden': layers.torch_linear(keys[0], dim, half),
                 'out': layers.torch_linear(keys[1], half, dim)},
          'logvar': {'hidden': layers.torch_linear(keys[2], dim, half),
                     'out': layers.torch_linear(keys[3], half, dim)}}


def club_moments(club: dict, x: jax.Array) -> tuple[jax.Array, jax.Array]:
  """mu(x), logvar(x) = tanh(...) of q(y | x): (n, d) -> (n, d), (n, d)."""
  def mlp(net, h):
    return layers.dense(net['out'], jax.nn.relu(layers.dense(net['hidden'], h)))
  return mlp(club['mu'], x), jnp.tanh(mlp(club['logvar'], x))


def club_log_likelihood(club: dict, x: jax.Array, y: jax.Array) -> jax.Array:
  """mean_i sum_d (-(mu_i - y_i)^2 / e^{logvar_i} - logvar_i); its negative trains the nets."""
  mu, logvar = club_moments(club, x)
  return jnp.mean(jnp.sum(-jnp.square(mu - y) / jnp.exp(logvar) - logvar, axis=-1))


def club_upper_bound(club: dict, x: jax.Array, y: jax.Array, shuffle: jax.Array) -> jax.Array:
  """Sampled CLUB: mean_i sum_d [(mu_i - y_{shuffle_i})^2 - (mu_i - y_i)^2] / e^{logvar_i} / 2.

  x, y: (n, d); shuffle: (n,) a permutation of the rows (torch.randperm in the original).
  """
  mu, logvar = club_moments(club, x)
  precision = jnp.exp(-logvar)
  positive = -jnp.square(mu - y) * precision
  negative = -jnp.square(mu - y[shuffle]) * precision
  return jnp.mean(jnp.sum(positive, -1) - jnp.sum(negative, -1)) / 2.0
