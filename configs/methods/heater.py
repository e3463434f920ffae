"""Heater (spec section 7): the official code's settings, at the protocol's d, batch and Adam."""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.num_experts = 5  # K distinct expert MLPs (the official `dim`).
  config.expert_hidden = ()  # Hidden widths of each expert before its width-d output layer.
  config.dropout = 0.5  # p: share of a step's pairs whose CF item vector is replaced by c_i.
  config.num_negatives = 5  # Label-0 warm items per positive (uniform, with replacement).
  config.reg_weight = 1e-4  # Weight of sum ||W||^2 + ||b||^2 over the dense layers.
  config.alpha = 1e-4  # Weight of sum over the step's pairs of ||c_i - V_i||^2.
  config.user_clip = 5.0  # Standardised CF user vectors are clipped to +-user_clip.
  config.item_clip = 1.0  # Standardised CF item vectors are clipped to +-item_clip (tanh's range).
  config.bn_momentum = 0.1  # Running stats <- (1 - m) running + m batch (TF decay 0.9).
  config.bn_eps = 1e-3  # BatchNorm epsilon.
  # adam (the protocol's) | momentum (SGD, momentum 0.9, as the official code); lr: train.*.
  config.optimizer = 'adam'
  return config


# configs/experiments/tune.py: values tried on validation, one field at a time.
SEARCH = {'alpha': (1e-2,), 'dropout': (0.3,)}
