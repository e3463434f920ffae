"""Ablation: MILK without CMAM, without CEIM, without both (= ERM) (Figure 4),
the drop of each from FTFT to FTMT (Figure 5), and each per missing group of
FTMT's new items (groups.png in one shared ranking, groups_within.png each group
ranking its own items; FTFT has the complete group only)."""

from configs.experiments import base


def get_config(dataset: str = 'ml100k'):
  config = base.dataset_config(dataset)
  variants = [('ERM', base.ERM), ('no_CMAM', base.NO_CMAM), ('no_CEIM', base.NO_CEIM),
              ('MILK', base.MILK)]
  return base.experiment_config(config, 'ablation', ('ftft', 'ftmt'), variants,
                                metrics=base.METRICS + ('test_by_group.*.ndcg@20',
                                                        'test_within_group.*.ndcg@20'),
                                plots=('bars', 'drop', 'groups'))
