"""Small configs shared by the tests: synthetic data that trains in seconds."""

from configs import base


def tiny_config(**train_overrides):
  config = base.get_config()
  syn = config.data.synthetic
  syn.num_users = 200
  syn.num_items = 160
  syn.feature_dims = (24, 12)
  syn.latent_dim = 8
  syn.interactions_per_user = 15.0
  config.model.embed_dim = 16
  config.train.batch_size = 256
  config.train.num_epochs = 6
  config.train.eval_every = 2
  config.train.patience = 3
  config.train.beta = 10.0
  config.eval.ks = (10, 20)
  config.eval.user_batch_size = 64
  for key, value in train_overrides.items():
    setattr(config.train, key, value)
  return config


def method_config(method: str, embed_dim: int, **section):
  """tiny_config training `method` at width `embed_dim`, `section` set in config.methods.<method>."""
  config = tiny_config()
  config.method = method
  config.model.embed_dim = embed_dim
  for key, value in section.items():
    config.methods[method][key] = value
  return config
