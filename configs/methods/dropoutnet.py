"""DropoutNet (spec section 5): the official code's settings at the protocol's d, batch, Adam."""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.hidden = (200,)  # Widths of each tower's tanh(BN(W h + b)) blocks (official CiteULike).
  config.dropout = 0.5  # tau: share of a step's pairs whose item (and, apart, user) CF input is 0.
  config.top_n = 100  # Best warm items per user by backbone score that half the targets come from.
  config.clip = 5.0  # Standardised CF vectors are clipped to +-clip.
  config.bn_momentum = 0.01  # Running stats <- (1 - m) running + m batch (torch's momentum).
  config.bn_eps = 1e-3  # BatchNorm epsilon.
  # adam (the protocol's) | momentum (SGD, momentum 0.9, as the official code); lr: train.*.
  config.optimizer = 'adam'
  return config


# configs/experiments/tune.py: values tried on validation, one field at a time.
SEARCH = {'dropout': (0.3, 0.7)}
