"""A hand-made catalogue and numpy references shared by test_dropoutnet.py and test_heater.py.

3 users, 5 items (0-2 warm, 3-4 new, whose CF rows are zero), two
modalities of widths 2 and 3, CF vectors of width d = 2.
"""

import jax
import jax.numpy as jnp
import numpy as np

from milk_jax.methods import DataSpec
from milk_jax.methods import Tables

EPS = 1e-3  # BatchNorm epsilon of both methods.
WARM, NEW = np.array([0, 1, 2]), np.array([3, 4])
FEATURES = (np.array([[0.6, 0.8], [1.0, 0.0], [0.0, 1.0], [0.8, -0.6], [0.5, 0.5]], np.float32),
            np.array([[0.2, 0.3, -0.1], [0.0, 1.0, 0.0], [0.5, -0.5, 0.5], [0.1, 0.1, 0.9],
                      [-0.3, 0.2, 0.4]], np.float32))
CF_USERS = np.array([[0.5, -1.0], [1.5, 0.2], [-0.7, 0.9]], np.float32)
CF_ITEMS = np.array([[1.0, 0.3], [-0.4, 0.8], [0.2, -1.2], [0.0, 0.0], [0.0, 0.0]], np.float32)
SPEC = DataSpec(num_users=3, num_items=5, feature_dims=(2, 3), num_warm_items=3)


def catalogue_tables(extras) -> Tables:
  """The catalogue's Tables with `extras` (a method's prepared ones) on device."""
  is_new = np.isin(np.arange(5), NEW)
  return Tables(features=tuple(jnp.asarray(f) for f in FEATURES),
                availability=jnp.ones((5, 2), bool), warm_items=jnp.asarray(WARM, jnp.int32),
                is_new=jnp.asarray(is_new), extras={k: jnp.asarray(v) for k, v in extras.items()})


def explicit_params(method, seed):
  """Every leaf of the method's parameter tree set to values drawn here (BN scales near 1)."""
  rng = np.random.default_rng(seed)
  def value(path, x):
    name = jax.tree_util.keystr(path)
    if name.endswith("['scale']") or name.endswith("['var']"):
      return jnp.asarray(rng.uniform(0.5, 1.5, x.shape), jnp.float32)
    return jnp.asarray(rng.uniform(-0.8, 0.8, x.shape), jnp.float32)
  return jax.tree_util.tree_map_with_path(value, method.init(jax.random.key(0)))


def np_standardize(x, clip):
  """Column z-scores over the non-zero rows, clipped, tiny values zeroed; zero rows stay zero."""
  nz = np.abs(x).sum(1) > 0
  z = np.zeros_like(x, dtype=np.float64)
  z[nz] = (x[nz] - x[nz].mean(0)) / x[nz].std(0)
  z = np.clip(z, -clip, clip)
  z[np.abs(z) < 1e-5] = 0
  return z


def np_tower(p, stats, x, train):
  """tanh(BN(x W + b)) blocks then x W_o + b_o; BN on batch stats (train) or running stats."""
  p = jax.tree.map(np.asarray, p)
  for name in sorted(k for k in p if k.startswith('block_')):
    h = x @ p[name]['dense']['w'] + p[name]['dense']['b']
    if train:
      mean, var = h.mean(0), h.var(0)
    else:
      mean, var = np.asarray(stats[name]['mean']), np.asarray(stats[name]['var'])
    x = np.tanh((h - mean) / np.sqrt(var + EPS) * p[name]['bn']['scale'] + p[name]['bn']['offset'])
  return x @ p['out']['w'] + p['out']['b']
