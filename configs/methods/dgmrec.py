"""DGMRec (spec section 14): the original's defaults, ptkjw1997/DGMRec @cd8f00d.

From src/configs/model/DGMRec.yaml (the model defaults; configs/best/DGMRec_<dataset>.json
override some per dataset: baby uses mm_layers 2, additive 0.1, avg_lambda 0.4,
intra_modal_temp 0.2, align_bm_temp 0.4, infer_adj_update off) and the fixed numbers of
src/models/dgmrec.py and src/utils/mi_estimator.py (3 LightGCN layers, the 1e-5 id-row
regulariser, perturbation 0.1, CLUB hidden 64 trained 5 steps per epoch on 2048 items with
Adam 1e-4, refresh every 5 epochs). The shared protocol's instead (config.train.*, config.model):
d (model.embed_dim), batch size (the original's 4096), Adam's learning rate (1e-3 in both),
early stopping and the validation metric.
"""

import ml_collections

# The original's per-dataset choices (configs/best/DGMRec_baby.json) that move it most, one
# at a time (configs/experiments/tune.py); searched at its own cadence, eval every epoch.
SEARCH = {'mm_layers': (2,), 'additive': (0.1,), 'avg_lambda': (0.4,)}


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.knn_k = 10  # Neighbours per item in each modality's item-item kNN graph (self included).
  config.mm_layers = 1  # Propagations of the filtered general/specific parts over those graphs.
  config.ui_layers = 3  # LightGCN layers over the user-item graph (fixed at 3 in the original).
  config.inter_modal = 0.01  # Weight of InfoNCE between modalities' general parts (items, users).
  config.inter_modal_temp = 0.4  # Its temperature (also the general user-item InfoNCE's).
  config.intra_modal = 0.01  # Weight of the user-item InfoNCE terms (CF, general, specific).
  config.intra_modal_temp = 0.1  # Temperature of the CF and specific user-item InfoNCE terms.
  config.align_bm = 0.01  # Weight of InfoNCE between CF vectors and summed general parts.
  config.align_bm_temp = 0.2  # Its temperature.
  config.recon = 0.1  # Weight of the decoders' MSE to the (trained) raw features.
  config.reg = 0.1  # Weight of sum_m ||general_m + specific_m|| of the positives / B.
  config.id_reg = 1e-5  # Weight of the CF vectors' (||u|| + ||i+|| + ||i-||) / B.
  config.sampler = 0.01  # Weight of the CLUB upper bound between specific and general parts.
  config.additive = 1.0  # Weight of the generators' and translators' MSE on observed items.
  config.avg_lambda = 0.8  # Refreshed graph row = avg_lambda new + (1 - avg_lambda) old.
  config.infer_adj_update = True  # Also refresh the inference graph's rows of new items.
  config.refresh_every = 5  # Epochs between graph-row refreshes.
  config.perturb_scale = 0.1  # perturb(x) = x + sign(x) * unit_row(U[0,1) noise) * scale.
  config.club_hidden = 64  # CLUB networks' hidden size (their layers are half as wide).
  config.club_steps = 5  # CLUB training steps at each epoch's start.
  config.club_batch = 2048  # Items drawn for each CLUB training step.
  config.club_learning_rate = 1e-4  # The CLUB networks' own Adam.
  config.lr_decay = 0.96  # Learning rate lr * lr_decay^(epoch / lr_decay_epochs); 1 = constant.
  config.lr_decay_epochs = 50.0  # See lr_decay (the original's learning_rate_scheduler).
  # A graph row holds graph_slots * knn_k entries: refreshed rows blend in new neighbours, and
  # past that width the lightest entries are dropped (exact while a row has fewer).
  config.graph_slots = 4
  config.chunk_rows = 1024  # Rows of the similarity matrix per block in kNN searches.
  return config

