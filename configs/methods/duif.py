"""DUIF (spec section 4; ColdRec's defaults, the original's are unpublished)."""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.reg_weight = 1e-4  # Weight of (||e_u||_F + ||v_i+||_F + ||v_i-||_F) / B on batch rows.
  return config


# configs/experiments/tune.py: values tried on validation, one field at a time.
SEARCH = {'reg_weight': (0.0, 1e-3, 1e-2)}
