"""A hand-made catalogue for methods' known-answer tests: five items, three modalities.

Widths 2, 1, 1 (F = 4); items 0-2 are warm, 3 and 4 new; item 4 has item 1's
content. Three users; BATCH is four (user, positive, negative) rows.
"""

import jax.numpy as jnp
import numpy as np

from milk_jax.methods import DataSpec
from milk_jax.methods import Tables

FEATURES = (np.array([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0], [0.8, 0.6], [0.6, 0.8]]),
            np.array([[1.0], [-1.0], [1.0], [1.0], [-1.0]]),
            np.array([[1.0], [1.0], [-1.0], [1.0], [1.0]]))
CONTENT = np.concatenate(FEATURES, axis=1)  # (I, F) = (5, 4)
IS_NEW = np.array([False, False, False, True, True])
BATCH = {'users': np.array([0, 1, 2, 0]), 'positives': np.array([0, 1, 2, 2]),
         'negatives': np.array([1, 2, 0, 1])}
SPEC = DataSpec(num_users=3, num_items=5, feature_dims=(2, 1, 1), num_warm_items=3)


def tables() -> Tables:
  return Tables(features=tuple(jnp.asarray(f, jnp.float32) for f in FEATURES),
                availability=jnp.ones((5, 3), bool), warm_items=jnp.arange(3, dtype=jnp.int32),
                is_new=jnp.asarray(IS_NEW), extras={})


def batch() -> dict[str, jnp.ndarray]:
  return {k: jnp.asarray(v, jnp.int32) for k, v in BATCH.items()}
