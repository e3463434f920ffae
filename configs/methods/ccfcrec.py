"""CCFCRec (spec 9): the official Amazon VG defaults (`myargs.py`), at the protocol's d and Adam lr.

The original trains with Adam lr 1e-4 and d 256; here d is config.model.embed_dim
(64) and lr config.train.learning_rate (1e-3), the protocol's, for every method.
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.lambda1 = 0.6  # Weight of L_co + L_self; (1 - lambda1) weighs the user-side BPR L_r.
  config.temperature = 0.1  # tau of both cosine contrasts.
  config.num_positives = 5  # P co-interacted items per row, drawn from u's items with replacement.
  config.num_negatives = 40  # N negatives per co-interacted item (items u did not train on).
  config.num_self_negatives = 40  # S negatives of the self contrast (the original ties S to N).
  config.weight_decay = 0.1  # torch Adam's weight_decay: L2 gradient on every parameter.
  # concat: x_im W_m concatenated (the original's image path); masked_attention: slots
  # re-weighted by a softmax of learned logits over the item's present modalities. On
  # ml100k (warm items complete, new items missing one modality; seed 0, 40 epochs) concat
  # gave validation NDCG@20 0.167, masked_attention 0.126: its doubled present slot is a
  # scale the generator never sees in training.
  config.fusion = 'concat'
  return config


# configs/experiments/tune.py: values tried on validation, one field at a time (the
# original's ML-20M settings: lambda1 0.5, P 10).
SEARCH = {'lambda1': (0.5,), 'num_positives': (10,)}
