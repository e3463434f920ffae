"""DGMRec beside MILK, SiBraR and the strongest baselines (issue 24's study).

DGMRec (Kim et al., SIGIR 2025) claims to beat MILK and SiBraR when items miss
modalities. This grid runs it beside ERM, MILK, MILK in the configuration
docs/results/incomplete_items.md recommends when many new items are incomplete
(present fusion, modality dropout 0.5, calibration), SiBraR, and the baselines
strongest in Table 2 (DUIF, CLCRec), every variant compared with ERM, paired by
seed, overall, per missing group in one shared ranking and within each group:

  .venv/bin/python main.py --mode=experiment --config=configs/experiments/dgmrec.py:ml100k \
      --workdir=runs/dgmrec_ml100k

`dgmrec.py:ml100k` runs FTMT and MTMT; `dgmrec.py:ml100k,popularity` runs DGMRec's own
protocol instead: its popularity split and its stratified masks (docs/data.md,
"DGMRec's protocol"). Any other dataset runs FTMT.

DGMRec is validated every epoch (its original does; patience 10 evaluations instead of
its 30, for cost), since its validation peaks within the first few epochs; its
fields are the ones chosen on validation by configs/experiments/tune.py (see
configs/ml100k.py). Calibration never changes training, and a calibrated run
also reports its plain scores, so DGMRec_cal and CLCRec_cal give the plain rows too.
"""

from configs.experiments import base
from milk_jax.errors import ConfigFileError

SETTINGS = {'ml100k': ('ftmt', 'mtmt')}
CALIBRATED = {'eval.calibration': 'validation'}
# docs/results/incomplete_items.md, "What a user should pick", for many incomplete items.
RECOMMENDED = {'model.fusion': 'present', 'train.modality_dropout': 0.5, **CALIBRATED}
EVERY_EPOCH = {'train.eval_every': 1, 'train.patience': 10}


def get_config(arg: str = 'ml100k'):
  dataset, *protocol = arg.split(',')
  if protocol not in ([], ['popularity']):
    raise ConfigFileError(f'{arg!r}: after the dataset only ",popularity" is known')
  config = base.dataset_config(dataset)
  settings = SETTINGS.get(dataset, ('ftmt',))
  if protocol:
    config.data.split = 'popularity'
    settings = ('stratified',)
  variants = [
      ('ERM', base.ERM),
      ('MILK', base.MILK),
      ('MILK_present_drop_cal', RECOMMENDED),
      ('DGMRec_cal', {'method': 'dgmrec', **EVERY_EPOCH, **CALIBRATED}),
      ('DUIF', {'method': 'duif'}),
      ('CLCRec_cal', {'method': 'clcrec', **CALIBRATED}),
      ('SiBraR', {'method': 'sibrar'}),
  ]
  return base.experiment_config(
      config, 'dgmrec', settings, variants,
      metrics=base.METRICS + ('test_by_group.*.ndcg@20', 'test_within_group.*.ndcg@20',
                              'val.ndcg@20', 'val_calibrated.ndcg@20',
                              'test_uncalibrated.ndcg@20',
                              'test_within_group_uncalibrated.*.ndcg@20'),
      plots=('bars', 'groups'))
