"""BPR-MF, the warm backbone (spec 3.3; ColdRec's MF defaults)."""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.reg_weight = 1e-4  # Weight of sum ||batch rows||_F / B (ColdRec's l2_reg_loss).
  return config
