"""GAR (spec 10): the official GAR.py's settings, at the protocol's d, batch and Adam.

The official layers are [200, 200] for both players with the pre-trained
vectors 200-wide; here G's last width is the backbone's d
(config.model.embed_dim) and R's towers keep [200, 200] (milk_jax/methods/gar/).
"""

import ml_collections

# The two loss weights around the original's 0.05 and 0.1 (configs/experiments/tune.py).
SEARCH = {'alpha': (0.01, 0.2), 'beta': (0.3,)}


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.alpha = 0.05  # Weight of G's L1 similarity; (1 - alpha) weighs G's adversarial term.
  config.beta = 0.1  # R ranks the real positive above beta * negative + (1 - beta) * generated.
  config.g_hidden = (200,)  # G's hidden widths before its width-d output (original [200, 200]).
  config.r_layers = (200, 200)  # Widths of each R tower; the last is the ranking vectors' width.
  config.g_dropout = 0.1  # Dropout rate inside G (training mode only).
  config.r_dropout = 0.5  # Dropout rate inside R's towers (training mode only).
  config.l2_weight = 1e-3  # Kernel regulariser l2_weight * sum w^2 / 2 of each player (TF's).
  config.bn_momentum = 0.01  # Running stats <- (1 - m) running + m batch (TF momentum 0.99).
  config.bn_eps = 1e-3  # BatchNorm epsilon (TF's default).
  # R's D step also blends in the moments of its two G-loss passes through R, as the
  # original's TF update ops do; False: only those of the loss's [real; neg; fake] pass.
  config.all_r_passes_update_stats = True
  # shared: the protocol's triples; original: each step draws its rows as the original's
  # bpr_neg_samp does (users uniform, a random positive each, warm negatives not rejected).
  config.sampler = 'shared'
  # original: the paper's two players with R's towers; coldrec: ColdRec's simplification
  # (no towers, one joint loss over G and the trainable backbone vectors; methods/gar/coldrec.py).
  config.variant = 'original'
  config.coldrec_reg = 1e-4  # variant='coldrec': weight of ColdRec's un-squared batch norms.
  return config
