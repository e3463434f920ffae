"""DropoutNet (spec section 5): the official code's settings, at the protocol's d, batch and Adam."""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.hidden = (200,)  # Widths of the tanh(BN(W h + b)) blocks of each tower (official CiteULike).
  config.dropout = 0.5  # tau: share of a step's pairs whose item (and, apart, user) CF input is 0.
  config.top_n = 100  # Best warm items per user by backbone score that half the targets come from.
  config.clip = 5.0  # Standardised CF vectors are clipped to +-clip.
  config.bn_momentum = 0.01  # Running stats <- (1 - m) running + m batch (torch's momentum).
  config.bn_eps = 1e-3  # BatchNorm epsilon.
  config.optimizer = 'adam'  # adam (protocol) | momentum (SGD, 0.9, the official code's); lr = train.learning_rate.
  return config
