"""TikTok micro-videos with image and audio features (../shared/data/tiktok-mm).

The paper's TikTok hyper-parameters (beta = 50, lambda = 0.5); the text
modality is not available in this copy, so M = 2.

The baselines' fields below were chosen on validation NDCG@20 (FTMT, seeds
0-2, each method's SEARCH one field at a time), for the methods whose search
fits on a 2-core CPU (DUIF, DropoutNet, GoRec, MTPR) by
  .venv/bin/python main.py --mode=experiment --config=configs/experiments/tune.py:tiktok_mm,duif,dropoutnet,gorec,mtpr --workdir=W
  .venv/bin/python scripts/choose_hparams.py W/summary.csv
The others keep their originals' defaults (docs/results/table2_tiktok_mm.md).
"""

from configs import base
from configs import paths


def get_config():
  config = base.get_config()
  config.data.format = 'interactions'
  config.data.path = paths.shared_dataset('tiktok-mm')
  config.data.modalities = ('image', 'audio')
  config.train.beta = 50.0
  config.train.align_weight = 0.5
  # About 28 steps per epoch: learning is slow and validation can dip below the
  # untrained model early on, so give early stopping 100 epochs of patience.
  config.train.eval_every = 10
  config.train.patience = 10
  # Chosen on validation (see above); DropoutNet keeps its defaults.
  config.methods.duif.reg_weight = 0.01
  config.methods.gorec.uni_coeff = 15.0
  config.methods.gorec.kl_coeff = 5000.0
  config.methods.mtpr.content_weight_decay = 0.1
  config.methods.mtpr.transform_weight_decay = 0.001
  return config
