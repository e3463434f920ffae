"""MovieLens-100K with genre and title-text modalities (../shared/data/ml100k-mm).

Hyper-parameters were chosen on the validation split only (see README).
"""

from configs import base
from configs import paths


def get_config():
  config = base.get_config()
  config.data.format = 'interactions'
  config.data.path = paths.shared_dataset('ml100k-mm')
  config.data.modalities = ('genre', 'text')
  config.train.eval_every = 5
  config.train.patience = 5
  config.train.num_epochs = 300
  return config
