"""Sensitivity: alpha, beta and lambda swept one at a time around the dataset's MILK (Figure 6), FTMT."""

from configs.experiments import base

ALPHAS = (0.01, 0.1, 1.0, 10.0, 100.0)
BETAS = (0.0, 1.0, 10.0, 100.0, 1000.0)
LAMBDAS = (0.0, 0.05, 0.5, 2.0)


def get_config(dataset: str = 'ml100k'):
  config = base.dataset_config(dataset)
  variants = [('ERM', base.ERM)]
  variants += [(f'alpha={a:g}', {'model.alpha': a}) for a in ALPHAS]
  variants += [(f'beta={b:g}', {'train.beta': b}) for b in BETAS]
  variants += [(f'lambda={w:g}', {'train.align_weight': w}) for w in LAMBDAS]
  return base.experiment_config(config, 'sensitivity', ('ftmt',), variants,
                                metrics=('test.recall@20', 'test.ndcg@20', 'val.ndcg@20'),
                                plots=('sweep',))
