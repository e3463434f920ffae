"""TikTok with all three modalities and the paper's hyper-parameters (beta 50, lambda 0.5).

Point --config.data.path at a folder in the `mmrec` or `milk` layout with
image_feat.npy, audio_feat.npy and text_feat.npy.
"""

from configs import base


def get_config():
  config = base.get_config()
  config.data.format = 'mmrec'
  config.data.modalities = ('image', 'audio', 'text')
  config.train.beta = 50.0
  config.train.align_weight = 0.5
  return config
