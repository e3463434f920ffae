"""Imputation: zero, mean and a learned cross-modal map fill the missing modalities (Table 3).

The learned map (data.imputation=learned) is a ridge regression from each
present modality to each missing one, fit on the warm items.
"""

from configs.experiments import base


def get_config(dataset: str = 'ml100k'):
  config = base.dataset_config(dataset)
  variants = [('ERM', base.ERM),
              ('ERM_learned', {**base.ERM, 'data.imputation': 'learned'}),
              ('MILK_zero', {'data.imputation': 'zero'}),
              ('MILK_mean', {'data.imputation': 'mean'}),
              ('MILK_learned', {'data.imputation': 'learned'})]
  return base.experiment_config(config, 'imputation', ('ftmt', 'mtmt'), variants)
