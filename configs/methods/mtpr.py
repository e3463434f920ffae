"""MTPR (spec section 6; the official code's loss weights)."""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.reduction = 'sum'  # The four BPR terms over the batch: 'sum' (original) or 'mean'.
  config.init = 'normal'  # 'normal': N(0, init_std^2) (original); 'xavier': Glorot-uniform (ColdRec).
  config.init_std = 0.01  # init='normal': every parameter starts N(0, init_std^2).
  # New items' scores: 'counterfactual' q~ (original, no Q row) or 'normal' q (ColdRec's,
  # with a Q row trained only as a negative when data.negatives='all').
  config.new_item_representation = 'counterfactual'
  config.embedding_weight_decay = 0.0  # wd1 on ||P_u||^2 + ||Q_i||^2 + ||Q_j||^2 (batch rows).
  config.content_weight_decay = 0.01  # wd2 on ||W||^2 + ||W_u||^2 (whole matrices).
  config.transform_weight_decay = 0.01  # wd3 on ||W_i||^2.
  config.optimizer = 'adam'  # 'adam': one Adam(train.learning_rate); 'original': the three below.
  config.embedding_learning_rate = 0.01  # 'original' only: Adagrad on P and Q.
  config.content_learning_rate = 0.01  # 'original' only: Adam on W and W_u.
  config.transform_learning_rate = 0.01  # 'original' only: Adam on W_i.
  return config


# configs/experiments/tune.py: values tried on validation, one field at a time.
SEARCH = {'content_weight_decay': (1e-3, 0.1), 'transform_weight_decay': (1e-3, 0.1)}
