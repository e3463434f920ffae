"""Synthetic data with three modalities (M = 3), for the paper's missing-group study.

Like the default catalogue, larger so that each missing group of the test
items holds enough items: 1500 users, 1500 items, 64-d, 32-d and 16-d features.
"""

from configs import default


def get_config():
  config = default.get_config()
  config.data.modalities = ('image', 'text', 'audio')
  syn = config.data.synthetic
  syn.num_users = 1500
  syn.num_items = 1500
  syn.feature_dims = (64, 32, 16)
  return config
