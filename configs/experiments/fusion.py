"""Incomplete items ranked on merit: fusion and calibration (issue 21's study).

ERM and MILK with Eq. 18's mean over all modalities (the missing one imputed)
and with the mean over the modalities an item has (`model.fusion=present`),
each also with its scores calibrated per missing-modality pattern on
validation (`eval.calibration=validation`); MILK also at the paper's beta;
ERM and MILK selected and tested on each split's own candidates
(`eval.candidates=split`), to see what the all-new-items pool rewards;
ERM and MILK trained with modality dropout (`train.modality_dropout`: a
training item drops one modality at random for its imputed fill, as a new
item missing it is embedded); SiBraR, DUIF and CLCRec with and without
calibration. Every variant is
compared with today's ERM, paired by seed, overall, per missing group in one
shared ranking, and within each group.

  .venv/bin/python main.py --config=configs/experiments/fusion.py:ml100k --workdir=runs/fusion_ml100k --mode=experiment

ml100k runs FTMT and MTMT, synthetic_m3 the groups setting (items missing
two), any other dataset FTMT; --config.experiment.only="('MILK_cal',)" runs
some variants (and the baseline) only.
"""

from configs.experiments import base
from configs.experiments import groups

# ml100k also with missing modalities in training; synthetic_m3 (M = 3) with the
# paper's missing groups, 10% complete / 45% missing one / 45% missing two.
SETTINGS = {'ml100k': ('ftmt', 'mtmt'), 'synthetic_m3': ('groups',)}
PRESENT = {'model.fusion': 'present'}
CALIBRATED = {'eval.calibration': 'validation'}
SPLIT = {'eval.candidates': 'split'}
# Training items drop one modality at random (its imputed fill instead); the calibrated
# runs report the plain scores too (test_uncalibrated), so each also answers without it.
DROP = {'train.modality_dropout': 0.5, **CALIBRATED}


def get_config(dataset: str = 'ml100k'):
  config = base.dataset_config(dataset)
  # The most telling comparisons first: a grid stopped early still answers them.
  variants = [
      ('ERM', base.ERM),
      ('ERM_present', {**base.ERM, **PRESENT}),
      ('ERM_present_cal', {**base.ERM, **PRESENT, **CALIBRATED}),
      ('MILK_present', PRESENT),
      ('ERM_cal', {**base.ERM, **CALIBRATED}),
      ('MILK', base.MILK),
      ('MILK_present_cal', {**PRESENT, **CALIBRATED}),
      ('MILK_cal', CALIBRATED),
      ('ERM_drop_cal', {**base.ERM, **DROP}),
      ('ERM_drop25_cal', {**base.ERM, **DROP, 'train.modality_dropout': 0.25}),
      ('MILK_drop_cal', DROP),
      ('ERM_present_drop_cal', {**base.ERM, **PRESENT, **DROP}),
      ('MILK_present_drop_cal', {**PRESENT, **DROP}),
  ]
  if config.train.beta != base.PAPER_BETA:
    variants.append(('MILK_beta1000_present', {'train.beta': base.PAPER_BETA, **PRESENT}))
  variants += [('ERM_split', {**base.ERM, **SPLIT}), ('MILK_split', SPLIT)]
  for name, display in (('sibrar', 'SiBraR'), ('duif', 'DUIF'), ('clcrec', 'CLCRec')):
    variants.append((display, {'method': name}))
    variants.append((f'{display}_cal', {'method': name, **CALIBRATED}))
  config = base.experiment_config(
      config, 'fusion', SETTINGS.get(dataset, ('ftmt',)), variants,
      metrics=base.METRICS + ('test_by_group.*.ndcg@20', 'test_within_group.*.ndcg@20',
                              'val.ndcg@20', 'val_calibrated.ndcg@20',
                              'test_uncalibrated.ndcg@20',
                              'test_within_group_uncalibrated.*.ndcg@20'),
      plots=('bars', 'groups'))
  if 'groups' in config.experiment.settings:  # Figure 3's groups: some items miss two.
    config.data.group_fractions = groups.PAPER_FRACTIONS
  return config
