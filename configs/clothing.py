"""Amazon Clothing with the paper's hyper-parameters (beta 50, lambda 0.05, alpha 0.1).

Point --config.data.path at a folder in the `mmrec` or `milk` layout.
"""

from configs import base


def get_config():
  config = base.get_config()
  config.data.format = 'mmrec'
  config.data.modalities = ('image', 'text')
  config.model.alpha = 0.1
  config.train.beta = 50.0
  config.train.align_weight = 0.05
  return config
