"""GoRec (spec section 11): the official code's settings (baby's loss weights), protocol's d and Adam."""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.uni_coeff = 5.0  # Weight of the uniformity of the normalised posterior means (baby).
  config.kl_coeff = 10.0  # Weight of the KL term between the posterior and the content prior (baby).
  # softmax: KL(softmax(z_c) || softmax(z)) of the samples (ColdRec's well-defined form) |
  # gaussian: analytic KL(q(z|e,c) || p(z|c)); either averaged over the B x d elements.
  config.kl_form = 'softmax'
  config.dropout = 0.3  # Dropout on the decoder's content input during training.
  config.decoder_layers = 2  # Plain linear d -> d layers after the decoder's tanh(BN(W h)) block.
  config.item_batch_size = 256  # Warm items per step (capped at the warm count); uniformity is O(B^2).
  config.num_clusters = 50  # k of the k-means on content whose CF means are the inference prior.
  config.cluster_fit = 'warm'  # Items the centroids are fitted on: warm | all; every item is assigned.
  config.kmeans_seed = 0  # Seeds the k-means++ initialisation (the clusters are fixed per dataset).
  config.kmeans_iters = 100  # Upper bound on Lloyd iterations (it stops when no label changes).
  config.bn_momentum = 0.1  # Running stats <- (1 - m) running + m batch (torch's default).
  config.bn_eps = 1e-5  # BatchNorm epsilon (torch's default).
  return config


# configs/experiments/tune.py: values tried on validation, one field at a time (the official
# README's clothing and sports weights).
SEARCH = {'uni_coeff': (1.0, 15.0), 'kl_coeff': (5000.0,)}
