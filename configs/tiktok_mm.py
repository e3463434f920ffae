"""TikTok micro-videos with image and audio features (../shared/data/tiktok-mm).

The paper's TikTok hyper-parameters (beta = 50, lambda = 0.5); the text
modality is not available in this copy, so M = 2.
"""

from configs import base
from configs import paths


def get_config():
  config = base.get_config()
  config.data.format = 'interactions'
  config.data.path = paths.shared_dataset('tiktok-mm')
  config.data.modalities = ('image', 'audio')
  config.train.beta = 50.0
  config.train.align_weight = 0.5
  # About 28 steps per epoch: learning is slow and validation can dip below the
  # untrained model early on, so give early stopping 100 epochs of patience.
  config.train.eval_every = 10
  config.train.patience = 10
  return config
