"""A run: the one orchestrator of backbone, training and the run folder's files.

`train_and_evaluate(config, workdir)` is the one entry point: it loads and
checks the data, takes the run folder's lock and checks that the folder is
this run's, gets the warm backbone's vectors when the method reads them
(training the backbone first, a run of its own in its own folder), trains
with early stopping on validation, resumes from the latest checkpoint, and
writes `config.json`, the id maps `users.tsv` and `items.tsv`,
`metrics.jsonl`, the serving files, `vectors.npz`, `results.json` and
`curves.png` into the workdir. `evaluate_checkpoint` evaluates a trained
run's best checkpoint. What is trained is `config.method`'s `Method`
(milk_jax/methods/); nothing here is method-specific.
"""

import contextlib
import json
import logging
import os
from typing import Any, Callable, Mapping

import ml_collections
import numpy as np

from milk_jax import calibration as calibration_lib
from milk_jax import checkpoint
from milk_jax import data as data_lib
from milk_jax import evaluate
from milk_jax import methods
from milk_jax import plots
from milk_jax import runfolder
from milk_jax import serving
from milk_jax.config import check_config
from milk_jax.errors import ConfigError
from milk_jax.errors import RunFolderError
from milk_jax.training import backbone
from milk_jax.training import loop as loop_lib
from milk_jax.training import state as state_lib
from milk_jax.training import step as step_lib

log = logging.getLogger('milk_jax')


def _workdir_lock(workdir: str):
  """The run folder's lock; other processes of a multi-host run share process 0's folder."""
  return (runfolder.lock(workdir) if runfolder.is_primary_process()
          else contextlib.nullcontext())


def _write_json(path: str, payload: Any) -> None:
  if runfolder.is_primary_process():
    runfolder.write_json(path, payload)


def cf_vectors(config: ml_collections.ConfigDict, workdir: str, dataset: data_lib.Dataset,
               train_if_missing: bool = True) -> dict[str, np.ndarray]:
  """{'cf_users', 'cf_items'} of the backbone, trained first when it is not yet; {} if none.

  The backbone run (training/backbone.py) is a `train_and_evaluate` of its
  own config in its own folder, under that folder's lock; the callers have
  checked that folder's config (`backbone.check_backbone_folder`). With
  `train_if_missing` False (evaluating a trained run) a missing or
  unfinished backbone is a RunFolderError naming its folder.
  """
  if methods.backbone_of(config) is None:
    return {}
  bconfig = backbone.backbone_config(config)
  folder = backbone.backbone_dir(config, workdir)
  if backbone.is_finished(config, workdir):
    log.info('backbone: reusing the %s run in %s', bconfig.method, folder)
  elif not train_if_missing:
    raise RunFolderError(f'{folder} holds no finished {bconfig.method} backbone for this run '
                         '(config.backbone.run_dir): train the run first')
  else:
    log.info('backbone: training %s in %s (%d epochs)', bconfig.method, folder,
             bconfig.train.num_epochs)
    with backbone.prefixed_log('backbone: '):
      train_and_evaluate(bconfig, folder, held_out=False)
  return backbone.read_vectors(config, workdir, dataset)


def _program(config: ml_collections.ConfigDict, dataset: data_lib.Dataset, workdir: str,
             train_backbone: bool = True) -> step_lib.EpochProgram:
  """The method's epoch program, with its backbone's vectors when it reads them."""
  extras = cf_vectors(config, workdir, dataset, train_backbone)
  return step_lib.EpochProgram(config, dataset, state_lib.make_method(config, dataset), extras)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, *,
                       epoch_callback: Callable[[int, dict[str, float]], None] | None = None,
                       held_out: bool = True) -> dict[str, Any]:
  """Train config.method with early stopping and write the results contract to `workdir`.

  Args:
    config: a config from `configs/`.
    workdir: where config.json, users.tsv, items.tsv, metrics.jsonl, checkpoints/ and
      results.json go.
    epoch_callback: called as f(epoch, train_metrics) after every epoch.
    held_out: False for a warm backbone (milk_jax/training/backbone.py), which has no
      vector for a new item: nothing is ranked, its last epoch is kept, and results.json
      holds no validation or test metrics.
  Returns:
    The dict written to results.json.
  Raises:
    UserError subclasses (milk_jax.errors) for bad config or data, a workdir
    of another run or in use, damaged files, divergence and Ctrl-C.
  """
  check_config(config)
  dataset = data_lib.load_dataset(config)  # Raises DataError before anything is written.
  log.info('data: %s', dataset.summary())
  backbone.check_backbone_folder(config, workdir)  # Reads only: refused before any write.
  with _workdir_lock(workdir):
    saved = runfolder.saved_config(workdir)
    runfolder.check_same_run(workdir, saved, config)  # Before a backbone is trained for it.
    program = _program(config, dataset, workdir)  # Trains the backbone in its own folder.
    training = loop_lib.Training(config, workdir, dataset, program, held_out)
    try:
      if training.checkpoints.epochs(checkpoint.LATEST) and not config.train.resume:
        raise ConfigError(
            f'{workdir} already holds checkpoints and config.train.resume=False: pass '
            '--config.train.resume=True to continue that run, or use a fresh --workdir.')
      start_epoch = training.resume(None if saved is None else saved['train']['num_epochs'])
      _write_json(os.path.join(workdir, runfolder.CONFIG_FILE), json.loads(config.to_json()))
      if runfolder.is_primary_process():
        serving.write_run_files(workdir, dataset, program.extras, config)
      stopped_early = training.run(start_epoch, epoch_callback)
    except BaseException:
      training.checkpoints.close(quietly=True)  # Saves in flight complete; the error wins.
      raise
    training.checkpoints.close()
    best_vectors = program.vectors(training.best_params)  # Evaluated, then saved for serving.
    calibration = (calibration_lib.fit_validation(config.eval, *best_vectors, dataset,
                                                  training.loop.best_epoch)
                   if held_out else None)
    results = training.results(stopped_early, best_vectors, calibration)
    _write_vectors(workdir, program, best_vectors, results['best_epoch'], calibration)
    results_path = os.path.join(workdir, 'results.json')
    _write_json(results_path, results)
    _write_curves(workdir, config, training.history, results['best_epoch'])
  log.info('results: %s (%s)', results_path, results_summary(results, config.train.select_metric))
  return results


def results_summary(results: Mapping[str, Any], select: str) -> str:
  """'best epoch 40, val ndcg@20 0.1234, test ndcg@20 0.1111' (the splits a run has)."""
  parts = [f"best epoch {results['best_epoch']}"]
  for split in ('val', 'test'):
    value = (results.get(split) or {}).get(select)
    if value is not None:
      parts.append(f'{split} {select} {value:.4f}')
  return ', '.join(parts)


def _write_curves(workdir: str, config: ml_collections.ConfigDict,
                  records: list[dict[str, Any]], best_epoch: int) -> None:
  """curves.png: loss and validation metrics per epoch. Drawing never fails a run: a warning."""
  if not runfolder.is_primary_process():
    return
  path = os.path.join(workdir, 'curves.png')
  try:
    plots.training_curves(path, records, loop_lib.shown_keys(config), best_epoch,
                          plots.curves_title(workdir, config.method))
  except Exception as error:  # pylint: disable=broad-except
    log.warning('could not draw %s (%s: %s); the results are written', path,
                type(error).__name__, error)
    return
  log.info('training curves: %s', path)


def _write_vectors(workdir: str, program: step_lib.EpochProgram, vectors, epoch: int,
                   calibration: calibration_lib.Calibration | None = None) -> None:
  """vectors.npz: the (users, items) the evaluation ranks with, for export and recommend;
  calibration.json: their score maps per modality pattern, when the run fits them."""
  if runfolder.is_primary_process():
    users, items = (np.asarray(v, np.float32) for v in vectors)
    serving.write_vectors(workdir, users[:program.dataset.num_users], items, epoch)
    if calibration is not None:
      calibration_lib.write(workdir, calibration)


def evaluate_checkpoint(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Restore the best checkpoint of `workdir`, evaluate it, write eval.json."""
  check_config(config)
  dataset = data_lib.load_dataset(config)
  if not os.path.isdir(os.path.join(workdir, 'checkpoints')):
    raise RunFolderError(f'no checkpoints under {workdir}: train first.')
  backbone.check_backbone_folder(config, workdir)
  with _workdir_lock(workdir):
    runfolder.check_same_run(workdir, runfolder.saved_config(workdir), config)
    program = _program(config, dataset, workdir, train_backbone=False)
    epoch, params = checkpoint.restore_best_params(workdir, program.fresh_state())
    users, items = program.vectors(params)
    if runfolder.is_primary_process():  # Brings a run trained before serving files up to date.
      serving.write_run_files(workdir, dataset, program.extras, config)
    calibration = calibration_lib.fit_validation(config.eval, users, items, dataset, epoch)
    _write_vectors(workdir, program, (users, items), epoch, calibration)
    item_maps = None if calibration is None else calibration.item_maps(dataset.availability)
    results = {'epoch': int(epoch),
               'val': evaluate.evaluate_split(config.eval, users, items, dataset, 'val'),
               **({} if calibration is None else {'val_calibrated': evaluate.evaluate_split(
                   config.eval, users, items, dataset, 'val', item_maps=item_maps)}),
               **evaluate.held_out_metrics(config.eval, users, items, dataset, item_maps)}
    if calibration is not None:
      results['calibration'] = calibration.report()
    path = os.path.join(workdir, 'eval.json')
    _write_json(path, results)
  log.info('best checkpoint (epoch %d): test %s; wrote %s', epoch,
           loop_lib.format_metrics(results['test'], loop_lib.shown_keys(config)), path)
  return results
