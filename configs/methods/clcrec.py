"""CLCRec (spec 8): defaults from the original README's MovieLens command.

That command sets lambda 0.5, tau 2.0, K 128, reg 0.1 and rho 0.5 (lr 1e-3, as
config.train.learning_rate). The original main.py's own defaults are lambda 1,
tau 1, K 512; its Amazon command uses lambda 0.9, K 512, reg 0.001.
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.lr_lambda = 0.5  # lambda: weight of the R-E term; (1 - lambda) weighs the U-I term.
  config.temperature = 2.0  # tau of both InfoNCE softmaxes.
  config.num_negatives = 128  # K negatives per row: j_1 the sampler's, K - 1 drawn on device.
  config.num_sample = 0.5  # rho: floor(rho * B(K+1)) U-I candidates (with replacement) use f.
  config.reg_weight = 0.1  # Weight of (mean ||e_u|| + mean ||e_item||) / 2, un-squared norms.
  return config


# configs/experiments/tune.py: values tried on validation, one field at a time.
SEARCH = {'lr_lambda': (0.9,), 'temperature': (1.0,)}
