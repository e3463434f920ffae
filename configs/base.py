"""Shared defaults for every milk-jax run; other configs start from these.

Each field carries a one-line comment. Override any field from the command
line, e.g. `--config.train.beta=50` or `--config.data.setting=mtmt`.
"""

import ml_collections
from ml_collections import config_dict

from configs import methods


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.seed = 0  # Seeds the split, the missing masks, the init and every draw.
  config.method = 'milk'  # milk_jax/methods/<name>.py: milk | bprmf | duif | ... (docs/methods.md).

  # ---------------------------------------------------------------- data
  data = config.data = ml_collections.ConfigDict()
  data.format = 'synthetic'  # synthetic | interactions | mmrec | milk.
  data.path = config_dict.placeholder(str)  # Dataset folder (not synthetic).
  data.modalities = ('image', 'text')  # Read from `<name>_feat.npy`; M >= 2.
  data.interactions_file = 'interactions.tsv'  # `interactions` format: user, item[, timestamp].
  data.inter_name = config_dict.placeholder(str)  # `mmrec` format: `<name>.inter`; None = the only *.inter.
  data.ids = 'dense'  # dense (0-based ints, feature row = item id) | raw (any strings).
  data.item_ids_file = 'item_ids.txt'  # ids=raw: line i = raw id of feature row i.
  data.min_rating = config_dict.placeholder(float)  # Positives: rating >= this; None = every row.
  # random | time (the newest items by first interaction are new) | popularity (DGMRec's).
  data.split = 'random'
  data.new_item_fraction = 0.2  # Items that lose all training interactions.
  data.val_fraction = 0.5  # Share of the new items used for validation; rest test.
  # given | ftft | ftmt | mtmt | groups | stratified (DGMRec's), on top of the declared mask.
  data.setting = 'ftmt'
  data.availability_file = 'availability.npy'  # Declared mask, read if present: .npy or .tsv by id.
  data.missing_rows = 'error'  # error | nan | nan_or_zero: rows that mark a missing modality.
  data.authors_missing_files = True  # milk, ftmt/mtmt: mask from *_feat_missing_*.npy if present.
  data.test_missing_rate = 0.5  # ftmt/mtmt: new items that miss one modality.
  data.train_missing_rate = 0.3  # mtmt: warm items that miss one modality.
  data.group_fractions = (0.1, 0.45, 0.45)  # groups: new items missing 0, 1, 2... modalities.
  # split=popularity, setting=stratified: the least interacted share of items, the unpopular
  # group (DGMRec: 70%).
  data.unpopular_fraction = 0.7
  # stratified: the share of each new/warm x popularity group that lacks some modality.
  data.stratified_missing_rate = 2 / 3
  data.imputation = 'mean'  # mean | zero | learned (ridge maps); fitted on warm items only.
  data.imputation_ridge = 1.0  # learned: L2 penalty of each cross-modal ridge map.
  data.normalize = True  # L2-normalise each feature row after imputation.
  data.negatives = 'warm'  # warm | all: pool of sampled negatives ('all' = authors').

  syn = data.synthetic = ml_collections.ConfigDict()
  syn.num_users = 600  # Users in the synthetic catalogue.
  syn.num_items = 500  # Items in the synthetic catalogue.
  syn.feature_dims = (64, 32)  # One feature width per modality.
  syn.latent_dim = 16  # Width of the planted item/user factors.
  syn.interactions_per_user = 20.0  # Mean interactions per user (Poisson, at least 1).
  syn.noise = 0.5  # Std of the noise added to each modality's projection.
  syn.temperature = 0.5  # Lower = users follow their factors more sharply.
  syn.sampler = 'softmax'  # softmax (exact, users x items work) | candidates (linear in interactions).
  syn.candidate_factor = 10.0  # candidates: items scored per interaction; more = closer to softmax.

  # --------------------------------------------------------------- model
  model = config.model = ml_collections.ConfigDict()
  model.embed_dim = 64  # d: width of user embeddings and extractor outputs.
  model.user_init_std = 0.1  # User embeddings start N(0, std^2).
  model.fusion = 'mean'  # Item vector: mean (Eq. 18, missing modality imputed) | present (its own only).
  model.use_alignment = True  # CMAM: masked pairwise alignment (Eq. 6).
  model.use_invariance = True  # CEIM + REx over environments; False = ERM on the mean-fused item.
  model.use_uniform_env = True  # Include environment 0 with equal weights.
  model.cyclic_shift = True  # Rows 2..M are cyclic shifts of row 1; False = M independent draws.
  model.resample_weights = True  # Re-draw the Dirichlet weights every step; False = draw once.
  model.alpha = 0.1  # Symmetric Dirichlet concentration for the environment weights.

  # --------------------------------------------------------------- train
  train = config.train = ml_collections.ConfigDict()
  train.beta = 1000.0  # REx variance weight (Eq. 14).
  train.align_weight = 0.05  # lambda: weight of the alignment loss (Eq. 16).
  train.reg_weight = 1e-4  # Weight of the L2 regulariser.
  train.reg_target = 'embeddings'  # embeddings (batch user/item vectors, as the authors) | params.
  train.variance_ddof = 0  # 0: population variance over environments; 1: unbiased (authors').
  train.task_loss = 'mean'  # mean of the environments' BPR losses (paper) | sum (authors' code).
  # MILK/ERM: probability that a training item with 2+ modalities drops one (its imputed
  # fill instead), so that training sees items as a new item missing one is seen. 0 = off.
  train.modality_dropout = 0.0
  train.learning_rate = 1e-3  # Adam step size.
  train.batch_size = 2048  # Triples (user, positive, negative) per step.
  train.num_epochs = 1000  # Upper bound on epochs; early stopping usually ends sooner.
  train.eval_every = 10  # Evaluate on validation every this many epochs.
  train.patience = 3  # Stop after this many evaluations without improvement.
  train.select_metric = 'ndcg@20'  # Validation metric that picks the best epoch.
  train.resume = True  # Continue from the latest checkpoint in the workdir.
  train.checkpoint_every = 0  # Save the latest state every N epochs; 0 = at evaluation epochs.
  train.divergence_factor = 10.0  # Stop when the loss exceeds this x the first epoch's; 0 = never.
  train.divergence_epochs = 3  # ... for this many epochs in a row (a non-finite loss stops at once).
  train.sampler = 'host'  # host (numpy) | device (shuffle and negatives inside the jitted epoch).
  train.feature_dtype = 'float32'  # float32 | bfloat16: item features on device; params stay float32.
  train.data_parallel = False  # Split each batch over all devices (jax.sharding mesh 'data').
  train.shard_user_table = False  # With data_parallel: split the user table by rows too.
  train.shard_item_features = False  # With data_parallel: split item features and per-item tables by rows.

  # ------------------------------------------------------------- methods
  # Each baseline's hyper-parameters, from configs/methods/<name>.py; MILK's are
  # the model.* and train.* fields above (the method's module says which).
  config.methods = methods.all_sections()

  # ------------------------------------------------------------ backbone
  # The warm BPR-MF run whose vectors DropoutNet, Heater, ... read (milk_jax/training/backbone.py).
  bb = config.backbone = ml_collections.ConfigDict()
  bb.run_dir = config_dict.placeholder(str)  # Its run folder; None = <workdir>/backbone.
  bb.num_epochs = 100  # Epochs of BPR-MF (no early stopping: it cannot score new items).
  bb.learning_rate = 1e-3  # Adam step size.
  bb.batch_size = 2048  # Triples per step.

  # ---------------------------------------------------------------- eval
  ev = config.eval = ml_collections.ConfigDict()
  ev.ks = (10, 20, 50)  # Cut-offs for Recall/NDCG/Precision/HR.
  ev.candidates = 'all_new'  # all_new (val + test items, as the authors) | split.
  ev.user_batch_size = 1024  # Users ranked per device call.
  ev.calibration = 'none'  # none | validation: per-pattern score map fitted on validation scores.
  ev.calibration_shrinkage = 50.0  # n0: a pattern's map is weighted n / (n + n0), n its items.

  # ----------------------------------------------------------- recommend
  # Serving a trained run (--mode=recommend / export); never changes what a run computes.
  rec = config.recommend = ml_collections.ConfigDict()
  # Not 'items': ConfigDict.items() would hide the field from --config overrides.
  rec.new_items = config_dict.placeholder(str)  # Folder: <modality>_feat.npy, item_ids.txt.
  rec.k = 20  # Items per user.
  rec.users = config_dict.placeholder(str)  # File of raw user ids, one per line; None = all.
  rec.include_warm = False  # Also rank warm items (minus each user's training items).
  rec.output = config_dict.placeholder(str)  # TSV path; None = <workdir>/recommendations.tsv.
  rec.item_chunk = 32768  # Items scored per device call (bounds memory).
  rec.user_chunk = 2048  # Users scored per device call (bounds memory).

  ex = config.export = ml_collections.ConfigDict()
  ex.new_items = config_dict.placeholder(str)  # New items to embed too; None = the catalogue only.
  ex.output = config_dict.placeholder(str)  # Folder; None = <workdir>/export.

  # ----------------------------------------------------------- benchmark
  bench = config.benchmark = ml_collections.ConfigDict()
  bench.warmup_steps = 5  # Untimed steps after compilation.
  bench.num_steps = 50  # Timed train steps (each waits for the device).
  bench.num_epochs = 3  # Timed whole epochs, sampling included.
  bench.reference = True  # Also time a step that projects every item per environment (authors').
  bench.both_samplers = True  # Time epochs with the host and the device sampler; False: train.sampler's.
  bench.sweep = False  # Time steps over sweep_batch_sizes and sweep_num_items; writes CSV and PNG.
  bench.sweep_batch_sizes = (256, 512, 1024, 2048, 4096, 8192)  # Batch sizes of the sweep.
  bench.sweep_num_items = (1000, 3000, 7050, 20000, 50000)  # Synthetic catalogue sizes of the sweep.
  bench.sweep_steps = 10  # Timed steps per sweep point.

  return config
