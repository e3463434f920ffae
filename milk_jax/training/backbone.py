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

This module says which run the backbone is, where it lives and reads its
vectors from its finished folder; `run.cf_vectors` trains it when it is not
yet (a backbone run is a run like any other: `run.train_and_evaluate`).
"""

import contextlib
import copy
import logging
import os
from typing import Iterator

import ml_collections
import numpy as np

from milk_jax import checkpoint
from milk_jax import data as data_lib
from milk_jax import methods
from milk_jax import runfolder
from milk_jax.errors import ConfigError
from milk_jax.training.state import make_method
from milk_jax.training.step import EpochProgram

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


def is_finished(config: ml_collections.ConfigDict, workdir: str) -> bool:
  """True when the backbone folder holds a finished run of the backbone config's length."""
  bconfig = backbone_config(config)
  folder = backbone_dir(config, workdir)
  saved = runfolder.saved_config(folder)
  return (os.path.exists(os.path.join(folder, 'results.json')) and saved is not None
          and saved['train']['num_epochs'] == bconfig.train.num_epochs)


@contextlib.contextmanager
def prefixed_log(prefix: str) -> Iterator[None]:
  """Every milk_jax log line inside the block starts with `prefix` (the backbone's own run)."""
  def add_prefix(record: logging.LogRecord) -> bool:
    record.msg = f'{prefix}{record.msg}'
    return True
  log.addFilter(add_prefix)
  try:
    yield
  finally:
    log.removeFilter(add_prefix)


def read_vectors(config: ml_collections.ConfigDict, workdir: str,
                 dataset: data_lib.Dataset) -> dict[str, np.ndarray]:
  """{'cf_users' (U, d), 'cf_items' (I, d)}: the best vectors of the finished backbone run.

  Reads only (checkpoint.restore_best_params); a missing or damaged
  checkpoint is a RunFolderError.
  """
  bconfig = backbone_config(config)
  program = EpochProgram(bconfig, dataset, make_method(bconfig, dataset))
  _, params = checkpoint.restore_best_params(backbone_dir(config, workdir), program.fresh_state())
  users, items = (np.asarray(v, np.float32) for v in program.vectors(params))
  return {'cf_users': users[:dataset.num_users], 'cf_items': items}
