"""Missing groups: test items 10% complete, the rest missing one or more modalities,
metrics per group and the relative gain of MILK over ERM per group (Figure 3).

With M = 3 modalities (the default, configs/synthetic_m3.py) the groups are
10% complete / 45% missing one / 45% missing two, as in the paper; with
M = 2 (ml100k, baby_synthetic) they are 10% complete / 90% missing one.

Beside MILK and ERM it runs the two strongest baselines of ml100k's Table 2
under FTMT (docs/results/table2_ml100k.md): DUIF and CLCRec, at the dataset config's
hyper-parameters. `--config.experiment.methods="()"` leaves them out.
"""

from configs.experiments import base

PAPER_FRACTIONS = (0.1, 0.45, 0.45)
STRONGEST_BASELINES = ('duif', 'clcrec')


def get_config(dataset: str = 'synthetic_m3'):
  config = base.dataset_config(dataset)
  variants = base.with_paper_beta([('ERM', base.ERM), ('MILK', base.MILK)], config)
  config = base.experiment_config(
      config, 'groups', ('groups',), variants,
      metrics=('test.recall@20', 'test.ndcg@20', 'test_by_group.*.recall@20',
               'test_by_group.*.ndcg@20', 'test_within_group.*.ndcg@20'),
      methods=STRONGEST_BASELINES, plots=('groups',))
  num_modalities = len(config.data.modalities)
  if num_modalities >= 3:
    config.data.group_fractions = PAPER_FRACTIONS
  else:
    config.data.group_fractions = (0.1, 0.9)
  return config
