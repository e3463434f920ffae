"""The built-in default: a small synthetic catalogue that trains in about a minute on 2 CPU cores."""

from configs import base


def get_config():
  config = base.get_config()
  config.train.batch_size = 1024
  config.train.num_epochs = 60
  config.train.eval_every = 5
  config.train.beta = 10.0
  config.train.align_weight = 0.05
  return config
