"""The hand-sized catalogue of the item-graph methods' tests (MICRO, DGMRec).

3 users, 7 items (5 and 6 new), two modalities of widths 3 and 2; item 3 misses
the second, item 6 the first; kNN graphs keep K neighbours.
"""

import jax.numpy as jnp
import numpy as np

NUM_USERS, NUM_ITEMS, K = 3, 7, 3
NEW = np.array([5, 6])
FEATURES = (np.random.default_rng(1).normal(size=(NUM_ITEMS, 3)).astype(np.float32),
            np.random.default_rng(2).normal(size=(NUM_ITEMS, 2)).astype(np.float32))
AVAILABILITY = np.ones((NUM_ITEMS, 2), bool)
AVAILABILITY[3, 1] = False
AVAILABILITY[6, 0] = False
TRAIN_PAIRS = np.array([[0, 0], [0, 1], [0, 4], [1, 1], [1, 2], [2, 0], [2, 3], [2, 4]], np.int32)
BATCH = {'users': jnp.array([0, 1, 2, 2], jnp.int32),
         'positives': jnp.array([1, 2, 3, 0], jnp.int32),
         'negatives': jnp.array([3, 4, 1, 2], jnp.int32)}
