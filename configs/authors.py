"""Every choice of the authors' MILK code (HaoyueBai98/MILK), for reproducing its numbers.

Point it at a folder in the authors' layout (train.txt, val.txt, test.txt,
cold_item_index.npy, image_feat.npy, text_feat.npy and their
*_missing_test / *_missing_all variants):

  .venv/bin/python main.py --config=configs/authors.py --config.data.path=DIR --workdir=runs/authors

`scripts/make_authors_layout.py` writes such a folder from any dataset
config. Where the authors' code departs from the paper (spec: "Behaviour of
the authors' PyTorch code"), this preset follows the code:
- two modalities, image and text, in the `milk` layout, whose split is given;
- negatives drawn from all items, new ones included;
- the task loss is the SUM of the environments' BPR losses and the REx
  penalty uses the unbiased variance;
- the regulariser is the batch mean of the squared norms of the user and
  item embeddings;
- evaluation every 10 epochs from epoch 0, model selection on validation
  NDCG@10, stop after 3 evaluations without improvement, at most 1000
  epochs; all new items ranked for both splits, K = 10..50;
- their defaults: penalty 50, alignment 0.05, alpha 0.1, Adam 1e-3,
  batch 2048, d = 64, user embeddings N(0, 0.1^2).
"""

from configs import base


def get_config():
  config = base.get_config()
  config.data.format = 'milk'
  config.data.modalities = ('image', 'text')
  config.data.negatives = 'all'
  config.data.normalize = True
  config.model.embed_dim = 64
  config.model.user_init_std = 0.1
  config.model.alpha = 0.1
  config.train.beta = 50.0
  config.train.align_weight = 0.05
  config.train.reg_weight = 1e-4
  config.train.reg_target = 'embeddings'
  config.train.variance_ddof = 1
  config.train.task_loss = 'sum'
  config.train.learning_rate = 1e-3
  config.train.batch_size = 2048
  config.train.num_epochs = 1000
  config.train.eval_every = 10
  config.train.patience = 3
  config.train.select_metric = 'ndcg@10'
  config.eval.ks = (10, 20, 30, 40, 50)
  config.eval.candidates = 'all_new'
  return config
