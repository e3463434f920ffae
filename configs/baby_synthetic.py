"""Synthetic data of the Amazon Baby shape, with the paper's Baby hyper-parameters.

19445 users, 7050 items, 4096-d image and 384-d text features, about 160k
interactions: the shape the speed figures are measured on.
"""

from configs import base


def get_config():
  config = base.get_config()
  syn = config.data.synthetic
  syn.num_users = 19445
  syn.num_items = 7050
  syn.feature_dims = (4096, 384)
  syn.latent_dim = 32
  syn.interactions_per_user = 8.2
  config.model.alpha = 0.01
  config.train.beta = 1000.0
  config.train.align_weight = 0.05
  return config
