"""The warm backbone: pre-trained CF vectors for the methods that read them.

A method whose `INFO.backbone` is 'bprmf' (DropoutNet, Heater, ...) gets the best
user and item vectors of a BPR-MF run as `tables.extras['cf_users']` (U, d)
and `['cf_items']` (I, d), new items' rows zero. That run is trained once per
(dataset, split, setting, seed) in `config.backbone.run_dir` (default
`<workdir>/backbone`; the experiment runner shares one per setting and seed)
and reused afterwards. Its config is the method run's data, seed and eval
sections with `config.backbone`'s training fields; a folder holding a
backbone of other settings is refused like any run folder, never retrained.

It ranks nothing (it has no vector for a new item, so its validation and
test rankings would be the same at every epoch): its log lines, prefixed
`backbone:`, give the training loss, and its results.json the kept (last)
epoch, that loss and times; no metrics.
"""

import contextlib
import copy
import logging
import os

import ml_collections
import numpy as np

from milk_jax import data as data_lib
from milk_jax import methods
from milk_jax import runfolder
from milk_jax.errors import ConfigError
from milk_jax.errors import RunFolderError

log = logging.getLogger('milk_jax')


def backbone_config(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """The training config of `config`'s backbone run."""
  backbone = copy.deepcopy(config)
  settings = config.backbone
  with backbone.unlocked():
    backbone.method = methods.backbone_of(config)
    backbone.train.learning_rate = settings.learning_rate
    backbone.train.batch_size = settings.batch_size
    backbone.train.num_epochs = settings.num_epochs
    backbone.train.eval_every = settings.num_epochs  # Its metrics select nothing: evaluate once.
    backbone.train.checkpoint_every = 0
    backbone.train.patience = 1  # Never used (its best epoch is its last): not a reason to differ.
    backbone.backbone.run_dir = None
  return backbone


def backbone_dir(config: ml_collections.ConfigDict, workdir: str) -> str:
  return config.backbone.run_dir or os.path.join(workdir, 'backbone')


def check_backbone_folder(config: ml_collections.ConfigDict, workdir: str) -> None:
  """ConfigError when the backbone folder holds a run of other settings (reads no data)."""
  if methods.backbone_of(config) is None:
    return
  folder = backbone_dir(config, workdir)
  saved = runfolder.saved_config(folder)
  differing = [] if saved is None else runfolder.changed_fields(saved, backbone_config(config))
  if differing:
    # Say what chose the folder: the field, or the workdir it defaults into.
    fix = ('point config.backbone.run_dir at another folder (or leave it unset for '
           '<workdir>/backbone)' if config.backbone.run_dir else 'use a fresh --workdir')
    raise ConfigError(f'{os.path.join(folder, runfolder.CONFIG_FILE)} holds a backbone run with a '
                      f'different config (fields: {", ".join(differing)}); {fix}.')


@contextlib.contextmanager
def _prefixed_log(prefix: str):
  """Every milk_jax log line inside the block starts with `prefix` (the backbone's own run)."""
  def add_prefix(record: logging.LogRecord) -> bool:
    record.msg = f'{prefix}{record.msg}'
    return True
  log.addFilter(add_prefix)
  try:
    yield
  finally:
    log.removeFilter(add_prefix)


def cf_vectors(config: ml_collections.ConfigDict, workdir: str, dataset: data_lib.Dataset,
               train_if_missing: bool = True) -> dict[str, np.ndarray]:
  """{'cf_users', 'cf_items'} of the backbone, trained first when it is not yet; {} if none.

  With `train_if_missing` False (evaluating a trained run) a missing or
  unfinished backbone is a RunFolderError naming its folder.
  """
  from milk_jax import train  # train imports this module's caller; the backbone is a run too.

  if methods.backbone_of(config) is None:
    return {}
  check_backbone_folder(config, workdir)
  bconfig = backbone_config(config)
  folder = backbone_dir(config, workdir)
  saved = runfolder.saved_config(folder)
  finished = (os.path.exists(os.path.join(folder, 'results.json')) and saved is not None
              and saved['train']['num_epochs'] == bconfig.train.num_epochs)
  if finished:
    log.info('backbone: reusing the %s run in %s', bconfig.method, folder)
  elif not train_if_missing:
    raise RunFolderError(f'{folder} holds no finished {bconfig.method} backbone for this run '
                         '(config.backbone.run_dir): train the run first')
  else:
    log.info('backbone: training %s in %s (%d epochs)', bconfig.method, folder,
             bconfig.train.num_epochs)
    with _prefixed_log('backbone: '):
      train.train_and_evaluate(bconfig, folder, held_out=False)
  program = train.EpochProgram(bconfig, dataset, train.make_method(bconfig, dataset))
  _, params = train.restore_best_params(folder, program.fresh_state())
  users, items = (np.asarray(v, np.float32) for v in program.vectors(params))
  return {'cf_users': users[:dataset.num_users], 'cf_items': items}
