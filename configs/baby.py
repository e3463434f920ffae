"""Amazon Baby with the paper's hyper-parameters (beta 1000, lambda 0.05, alpha 0.01).

Point --config.data.path at a folder in the `mmrec` layout (baby.inter,
image_feat.npy, text_feat.npy) or set --config.data.format=milk for the
authors' layout.
"""

from configs import base


def get_config():
  config = base.get_config()
  config.data.format = 'mmrec'
  config.data.modalities = ('image', 'text')
  config.model.alpha = 0.01
  config.train.beta = 1000.0
  config.train.align_weight = 0.05
  return config
