"""Environments: MILK without e=0, without cyclic shift, without re-sampling (Table 4), FTMT."""

from configs.experiments import base


def get_config(dataset: str = 'ml100k'):
  config = base.dataset_config(dataset)
  variants = [('ERM', base.ERM), ('MILK', base.MILK),
              ('no_uniform_env', {'model.use_uniform_env': False}),
              ('no_cyclic_shift', {'model.cyclic_shift': False}),
              ('no_resampling', {'model.resample_weights': False})]
  return base.experiment_config(config, 'environments', ('ftmt',), variants)
