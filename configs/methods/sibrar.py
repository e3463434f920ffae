"""SiBraR (spec section 13): the original's item single-branch network and its defaults.

From Tigxy/SiBraR---Single-Branch-Recommender (conf/single/algorithms/sbnet_*_conf.yml
and the SingleBranchNetEntityConfig dataclass): item modalities interactions +
content, c = 64, branch input dropout 0.2, hidden [64], ReLU, output 64,
BatchNorm, 10 negatives per row, BPR with mean reduction, AdamW lr 1e-3
(config.train.learning_rate), weight decay 1e-6, users an embedding table.

Not taken over, the shared protocol's instead (config.train.*): the original's
batch 256, 50 epochs, early stopping with patience 5 on validation NDCG@10.

The regulariser is on (k = 2 modalities per item): the item cold-start
configurations the original's sweeps start from (sbnet_*_huge*_conf.yml) use
pairwise_single, and those sweeps search w in [1e-6, 1e-3] (ml1m, onion18) or
[1e-5, 1e-4] (amazonvid2024) and T in [0.001 or 0.01, 0.5]; w = 1e-4 and
T = 0.1 lie inside every range (the dataclass defaults w = 1, T = 1 are never
used by those runs). Without it (regularizer='none') one modality is drawn.
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.modality_dim = 64  # c: width of every phi_m(x) = ReLU(x W_m + b_m), the branch input.
  config.hidden = (64,)  # Widths of the branch's ReLU hidden layers; its output is model.embed_dim.
  config.input_dropout = 0.2  # Dropout on the branch input in training.
  config.batch_norm = True  # BatchNorm on the branch output (running stats at inference).
  config.bn_momentum = 0.1  # Running stats <- (1 - m) running + m batch (torch's default).
  config.bn_eps = 1e-5  # BatchNorm epsilon (torch's default).
  # A warm item's column of the training interactions as one more modality (new items lack it).
  config.interactions = True
  config.num_negatives = 10  # K negatives per row: one from the shared sampler, K - 1 on device.
  # none: one modality per item in training | pairwise: two, plus w * symmetric InfoNCE.
  config.regularizer = 'pairwise'
  config.reg_weight = 1e-4  # w: weight of the InfoNCE between the two modalities' encodings.
  config.temperature = 0.1  # T of that InfoNCE.
  config.weight_decay = 1e-6  # AdamW's decoupled weight decay (lr: config.train.learning_rate).
  return config


# configs/experiments/tune.py: values tried on validation, one field at a time.
SEARCH = {'regularizer': ('none',), 'reg_weight': (1e-5, 1e-3), 'interactions': (False,)}
