"""MICRO (spec section 12): the official code's defaults (utility/parser.py), at the protocol's d,
batch and Adam learning rate (config.model.embed_dim, config.train.*)."""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.knn_k = 10  # Neighbours per item in every item-item graph, the item itself included.
  config.lambda_coeff = 0.9  # S_m = (1 - lambda) learned + lambda fixed (raw-feature) graph.
  config.item_layers = 1  # L: propagations of the item-id table over each S_m (H_m = S_m^L E).
  config.ui_layers = 2  # LightGCN layers over the user-item training graph (weight_size [64,64]).
  config.loss_ratio = 0.03  # Weight of the contrastive term (summed over modalities).
  config.temperature = 0.5  # tau of the contrastive term.
  config.decay = 1e-5  # Weight of (||u||^2 + ||i+||^2 + ||i-||^2) / (2B), propagated vectors.
  config.lr_decay = 0.96  # Learning rate lr * lr_decay^(epoch / lr_decay_epochs); 1 = constant.
  config.lr_decay_epochs = 50.0  # See lr_decay (the original's LambdaLR).
  # Spec 12.7: an item missing modality m keeps only its self-loop in m's graphs and is
  # nobody's neighbour there; False = the original (imputed rows join the kNN search).
  config.isolate_missing = True
  config.chunk_rows = 1024  # Rows of the similarity matrix per block (kNN and contrastive term).
  return config


# configs/experiments/tune.py: values tried on validation, one field at a time.
SEARCH = {'loss_ratio': (0.1,), 'lambda_coeff': (0.7,)}
