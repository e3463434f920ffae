"""The numeric helpers that methods share: inits, dense layers, unit rows, BPR, BatchNorm, towers.

Pure functions on plain pytrees, one home for arithmetic that more than one
method uses, so that a fix or a check lands once:
  inits     Glorot-uniform tables and kernels, torch's nn.Linear default,
            the two-tower originals' dense layers (truncated normal, std 0.01);
  rows      a dense layer's forward pass, row norms and unit rows, the weights
            of a mean over present modalities;
  losses    BPR and ColdRec's batch L2;
  CF input  the standardisation of a warm backbone's vectors (host side);
  BatchNorm and towers of tanh(BN(W h + b)) blocks (DropoutNet, Heater, and
            the BatchNorm of GoRec and SiBraR), whose running statistics are
            the variables' 'batch_stats' entry, non-trainable (the train
            state's model state, never seen by the optimiser): the loss
            returns the batch moments and the shared update blends them in
            after the gradient step (`batch_stats_update`).
A helper is shared only where the arithmetic is identical (same operations in
the same order, same epsilon, same PRNG draws); a method whose original differs
keeps its own (CCFCRec's biases, SiBraR's kaiming init, GAR's MLP).
"""

from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

STATS = 'batch_stats'  # The variables' entry that holds BatchNorm running statistics.
OPTIMIZERS = ('adam', 'momentum')  # What `make_optimizer` builds.
NORM_EPS = 1e-12  # torch's F.normalize: a row's norm is floored here.


# ------------------------------------------------------------------ inits

def xavier_uniform(key: jax.Array, shape: tuple[int, int]) -> jax.Array:
  """Glorot-uniform init of a (fan_in, fan_out) matrix or an (n, d) embedding table."""
  bound = np.sqrt(6.0 / (shape[0] + shape[1]))
  return jax.random.uniform(key, shape, jnp.float32, -bound, bound)


def torch_linear(key: jax.Array, fan_in: int, fan_out: int,
                 bias: bool = True) -> dict[str, jax.Array]:
  """torch.nn.Linear's default init: {'w': (fan_in, fan_out), 'b': (fan_out,)} uniform in
  +-1/sqrt(fan_in); the key is split in two (weight, bias) with or without a bias."""
  bound = 1.0 / np.sqrt(fan_in)
  w_key, b_key = jax.random.split(key)
  layer = {'w': jax.random.uniform(w_key, (fan_in, fan_out), jnp.float32, -bound, bound)}
  if bias:
    layer['b'] = jax.random.uniform(b_key, (fan_out,), jnp.float32, -bound, bound)
  return layer


def dense_init(key: jax.Array, fan_in: int, fan_out: int,
               std: float = 0.01) -> dict[str, jax.Array]:
  """{'w': (fan_in, fan_out) truncated normal (+-2 std), 'b': (fan_out,) zeros}."""
  w = std * jax.random.truncated_normal(key, -2.0, 2.0, (fan_in, fan_out), jnp.float32)
  return {'w': w, 'b': jnp.zeros((fan_out,), jnp.float32)}


# ------------------------------------------------------------------ rows

def dense(layer: dict[str, jax.Array], x: jax.Array) -> jax.Array:
  """x W + b, (n, fan_in) -> (n, fan_out); x W for a layer without 'b'."""
  return x @ layer['w'] + layer['b'] if 'b' in layer else x @ layer['w']


def row_norms(x: jax.Array) -> jax.Array:
  """(..., d) -> (...) Euclidean norms; a zero row gets norm 0 and gradient 0, not NaN.

  The value and, elsewhere, the gradient are those of jnp.linalg.norm: where
  whole tables are normalised, most rows outside the batch, a NaN (0 * inf)
  from a zero row would leak into the update.
  """
  squares = jnp.sum(x * x, axis=-1)
  positive = squares > 0
  return jnp.where(positive, jnp.sqrt(jnp.where(positive, squares, 1.0)), 0.0)


def unit_rows(x: jax.Array) -> jax.Array:
  """Rows over max(||row||, 1e-12) (torch's F.normalize); a zero row stays 0, and the gradient
  through its norm is 0, not NaN."""
  return x / jnp.maximum(row_norms(x)[..., None], NORM_EPS)


def normalise(x: jax.Array) -> jax.Array:
  """torch's F.normalize as the originals write it: rows over max(jnp.linalg.norm, 1e-12).

  The same values as `unit_rows`, but a zero row's gradient is NaN: only for
  rows that cannot be zero where the gradient flows.
  """
  return x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), NORM_EPS)


def present_mean_weights(available: jax.Array, dtype=jnp.float32) -> jax.Array:
  """(..., M) weights of the mean over each row's present modalities: 1 / #present on
  them, 0 elsewhere; a row with none present is all zeros.

  `available` is (..., M) bool (or 0/1). MILK's environment weights fall back to these
  (environments.present_weights) and SiBraR's inference mean is these.
  """
  mask = available.astype(dtype)
  return mask / jnp.maximum(mask.sum(axis=-1, keepdims=True), 1.0)


# ------------------------------------------------------------------ losses

def bpr(pos_scores: jax.Array, neg_scores: jax.Array) -> jax.Array:
  """mean softplus(s- - s+) = mean -log sigmoid(s+ - s-), stable for any gap."""
  return jnp.mean(jax.nn.softplus(neg_scores - pos_scores))


def batch_l2(*rows: jax.Array) -> jax.Array:
  """sum_k ||rows_k||_F / B: ColdRec's l2_reg_loss (un-squared norms over the batch rows)."""
  return sum(jnp.linalg.norm(r) for r in rows) / rows[0].shape[0]


# ------------------------------------------------------------------ CF input, BatchNorm, towers

def standardize(x: np.ndarray, clip: float) -> np.ndarray:
  """Column z-scores fitted on the non-zero rows, clipped to +-clip, |z| < 1e-5 set to 0.

  Zero rows (items without a CF vector) stay zero. A constant column keeps
  scale 1, as sklearn's StandardScaler does.

  Args:
    x: (n, d) CF vectors.
  Returns:
    (n, d) float32.
  """
  x = np.asarray(x, np.float64)
  nonzero = x.any(axis=1)
  out = np.zeros_like(x)
  if nonzero.any():
    rows = x[nonzero]
    std = rows.std(axis=0)
    out[nonzero] = (rows - rows.mean(axis=0)) / np.where(std > 0, std, 1.0)
  out = np.clip(out, -clip, clip)
  out[np.abs(out) < 1e-5] = 0.0
  return out.astype(np.float32)


def squared_weights(layers: Any) -> jax.Array:
  """sum of ||w||^2 + ||b||^2 over every dense layer in `layers` (Heater's regulariser)."""
  leaves = jax.tree_util.tree_leaves_with_path(layers)
  return sum(jnp.sum(jnp.square(x)) for path, x in leaves
             if getattr(path[-1], 'key', None) in ('w', 'b'))


def batchnorm_train(bn: dict[str, jax.Array], x: jax.Array,
                    eps: float) -> tuple[jax.Array, dict[str, jax.Array]]:
  """BatchNorm with the batch's statistics: (y, {'mean', 'var'} to blend into the running ones).

  x is (n, width); y normalises with the biased variance, the returned
  variance is the unbiased one (torch's running-variance rule), both without
  gradient since they only feed the running averages.
  """
  mean = jnp.mean(x, axis=0)
  var = jnp.var(x, axis=0)
  y = (x - mean) * jax.lax.rsqrt(var + eps) * bn['scale'] + bn['offset']
  n = x.shape[0]
  moments = {'mean': mean, 'var': var * (n / max(n - 1, 1))}
  return y, jax.lax.stop_gradient(moments)


def batchnorm_infer(bn: dict[str, jax.Array], stats: dict[str, jax.Array], x: jax.Array,
                    eps: float) -> jax.Array:
  """BatchNorm with the running statistics (inference)."""
  return (x - stats['mean']) * jax.lax.rsqrt(stats['var'] + eps) * bn['scale'] + bn['offset']


def blend_running_stats(stats: Any, moments: Any, momentum: float) -> Any:
  """running <- (1 - momentum) running + momentum batch, leaf by leaf.

  momentum is torch's (DropoutNet 0.01); TF's decay 0.9 (Heater) is momentum 0.1.
  """
  return jax.tree.map(lambda r, b: (1.0 - momentum) * r + momentum * b, stats, moments)


def tower_init(key: jax.Array, in_dim: int, hidden: tuple[int, ...],
               out_dim: int) -> tuple[dict[str, Any], dict[str, Any]]:
  """(params, running stats) of len(hidden) tanh(BN(W h + b)) blocks and a linear output.

  Blocks are 'block_0', 'block_1', ... (dicts, not lists: checkpoints keep the
  names); BN starts at scale 1, offset 0, running mean 0 and variance 1.
  """
  keys = jax.random.split(key, len(hidden) + 1)
  widths = (in_dim,) + tuple(hidden)
  params, stats = {}, {}
  for l, width in enumerate(hidden):
    params[f'block_{l}'] = {'dense': dense_init(keys[l], widths[l], width),
                            'bn': {'scale': jnp.ones((width,)), 'offset': jnp.zeros((width,))}}
    stats[f'block_{l}'] = {'mean': jnp.zeros((width,)), 'var': jnp.ones((width,))}
  params['out'] = dense_init(keys[-1], widths[-1], out_dim)
  return params, stats


def tower_train(params: dict[str, Any], x: jax.Array,
                eps: float) -> tuple[jax.Array, dict[str, Any]]:
  """Training pass, (n, in) -> ((n, out), batch moments per block)."""
  moments = {}
  for name in sorted(k for k in params if k.startswith('block_')):
    block = params[name]
    x, moments[name] = batchnorm_train(block['bn'], dense(block['dense'], x), eps)
    x = jnp.tanh(x)
  return dense(params['out'], x), moments


def tower_infer(params: dict[str, Any], stats: dict[str, Any], x: jax.Array,
                eps: float) -> jax.Array:
  """Inference pass with the running statistics, (n, in) -> (n, out)."""
  for name in sorted(k for k in params if k.startswith('block_')):
    block = params[name]
    x = jnp.tanh(batchnorm_infer(block['bn'], stats[name], dense(block['dense'], x), eps))
  return dense(params['out'], x)


def make_optimizer(kind: str, learning_rate: float) -> optax.GradientTransformation:
  """Adam (the protocol's) or SGD with momentum 0.9 (the originals')."""
  return (optax.adam(learning_rate) if kind == 'adam'
          else optax.sgd(learning_rate, momentum=0.9))


def batch_stats_update(momentum: float) -> Callable[[dict[str, Any], Any], dict[str, Any]]:
  """A `Method.update_model_state`: model_state['batch_stats'] blended with the step's batch
  moments (the loss's measured part, shaped like the statistics) at `momentum`."""
  def update(model_state: dict[str, Any], moments: Any) -> dict[str, Any]:
    return {**model_state, STATS: blend_running_stats(model_state[STATS], moments, momentum)}
  return update
