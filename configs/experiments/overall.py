"""Overall: MILK, ERM and the baselines under FTFT, FTMT and MTMT (the paper's Table 2).

MILK uses the dataset config's hyper-parameters; where its beta is not the
paper's 1000, MILK_beta1000 adds the paper's value. Every baseline runs with
the dataset config's `methods.<name>` section (chosen on validation for
ml100k, see configs/ml100k.py); each variant is compared with MILK, paired by
seed. `--config.experiment.methods="()"` leaves the baselines out. GAR also runs
at its original's cadence (validation every epoch, patience 10) as
GAR_own_cadence: under the shared every-5-epochs check its best epoch, often
the first few, can be missed.
"""

from configs.experiments import base


# The paper's baselines that milk_jax/methods/ holds, in the paper's order.
BASELINES = ('duif', 'dropoutnet', 'mtpr', 'heater', 'clcrec', 'ccfcrec', 'gar', 'gorec', 'micro')


def get_config(dataset: str = 'ml100k'):
  config = base.dataset_config(dataset)
  variants = base.with_paper_beta([('ERM', base.ERM), ('MILK', base.MILK)], config)
  return base.experiment_config(config, 'overall', ('ftft', 'ftmt', 'mtmt'), variants,
                                methods=BASELINES, own_cadence=('gar',), baseline='MILK')
