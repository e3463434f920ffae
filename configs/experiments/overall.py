"""Overall: MILK vs ERM under FTFT, FTMT and MTMT (the paper's Table 2 layout).

MILK uses the dataset config's hyper-parameters; where its beta is not the
paper's 1000, MILK_beta1000 adds the paper's value.
"""

from configs.experiments import base


def get_config(dataset: str = 'ml100k'):
  config = base.dataset_config(dataset)
  variants = base.with_paper_beta([('ERM', base.ERM), ('MILK', base.MILK)], config)
  return base.experiment_config(config, 'overall', ('ftft', 'ftmt', 'mtmt'), variants)
